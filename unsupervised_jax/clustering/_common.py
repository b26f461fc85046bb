"""Input checks and blocked distance computations shared by K-means and the GMM."""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Largest [block, K] (or [block, D]) intermediate materialised at once: 2^24
# float32 = 64 MiB. MNIST with K=10 fits in one block; K=1000 on 1M points is
# split into blocks of 16k rows.
DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 24


def is_concrete(x) -> bool:
  """True when ``x`` holds values (not a tracer inside ``jit``/``vmap``)."""
  return not isinstance(x, jax.core.Tracer)


def check_points(x, n_clusters: int, *, name: str = 'x', what: str = 'n_clusters'):
  """Validates a ``[N, D]`` data matrix before any compilation.

  Shape checks always run; the finiteness check runs when ``x`` is concrete
  (a jitted caller is responsible for its own data).

  Raises:
    ValueError: wrong rank, empty data, ``n_clusters`` outside ``[1, N]``,
      non-floating dtype, NaN or inf values.
  """
  shape = np.shape(x)
  if len(shape) != 2:
    raise ValueError(
        f'{name} must be a 2-D [N, D] array of points, got shape {shape}; '
        'flatten images first, e.g. x.reshape(len(x), -1).')
  n, d = shape
  if n == 0 or d == 0:
    raise ValueError(f'{name} is empty (shape {shape}): need at least one point with one feature.')
  if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
    raise ValueError(f'{what} must be a positive integer, got {n_clusters!r}.')
  if n_clusters > n:
    raise ValueError(f'{what}={n_clusters} is larger than the number of points N={n}; '
                     f'use at most {n} clusters or more data.')
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f'{name} must be floating point, got dtype {jnp.result_type(x)}; '
                     'convert it, e.g. images.astype(np.float32) / 255.')
  if is_concrete(x):
    finite = np.isfinite(np.asarray(x)).all() if isinstance(x, np.ndarray) else bool(jnp.isfinite(x).all())
    if not finite:
      raise ValueError(f'{name} contains NaN or inf values; clean or impute them before clustering.')


def map_blocks(fn: Callable, xs, block_rows: int):
  """Applies a row-wise ``fn`` to the arrays ``xs`` (a pytree, leading dim N) in blocks of rows.

  ``fn`` maps blocks ``[B, ...]`` to outputs with leading dim B. Padding rows
  are computed on zeros and dropped, so the result equals ``fn(xs)`` while
  peak memory is that of one block.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  if n <= block_rows:
    return fn(xs)
  n_blocks = math.ceil(n / block_rows)
  pad = n_blocks * block_rows - n
  blocked = jax.tree.map(
      lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape((n_blocks, block_rows) + a.shape[1:]), xs)
  out = jax.lax.map(fn, blocked)
  return jax.tree.map(lambda o: o.reshape((n_blocks * block_rows,) + o.shape[2:])[:n], out)


def block_rows_for(n_columns: int, max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS) -> int:
  """Rows per block so that a ``[rows, n_columns]`` intermediate stays bounded."""
  return max(1, max_block_elements // max(1, n_columns))


def squared_distances(x: Array, centers: Array, x_sq_norms: Array | None = None) -> Array:
  """Squared Euclidean distances ``[N, K]`` between ``x [N, D]`` and ``centers [K, D]``.

  Uses ``|x|^2 - 2 x.c + |c|^2`` (one matmul); clipped at 0 against round-off.
  Pass ``x_sq_norms [N]`` to avoid recomputing them every iteration.
  """
  if x_sq_norms is None:
    x_sq_norms = jnp.sum(x * x, axis=-1)
  c_sq_norms = jnp.sum(centers * centers, axis=-1)
  cross = jnp.dot(x, centers.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(x_sq_norms[:, None] - 2.0 * cross + c_sq_norms[None, :], 0.0)
