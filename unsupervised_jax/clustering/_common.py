"""Input checks and blocked distance computations shared by K-means and the GMM.

Numerics: the fits run on centred data (:func:`centre`), and every squared
distance computed through the fast expanded form ``|x|^2 - 2 x.c + |c|^2``
comes with a rigorous bound on its round-off (:func:`expansion_error`). Where
that bound leaves a decision open (which centre is closest, whether a point
sits on a centre), the distances of those rows are recomputed from their
differences (:func:`refine_rows`), which has no cancellation. The expanded
form thus only ever decides what it can decide exactly."""

from __future__ import annotations

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
      'flatten images first, e.g. x.reshape(len(x), -1).'
    )
  n, d = shape
  if n == 0 or d == 0:
    raise ValueError(f'{name} is empty (shape {shape}): need at least one point with one feature.')
  if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
    raise ValueError(f'{what} must be a positive integer, got {n_clusters!r}.')
  if n_clusters > n:
    raise ValueError(
      f'{what}={n_clusters} is larger than the number of points N={n}; use at most {n} clusters or more data.'
    )
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(
      f'{name} must be floating point, got dtype {jnp.result_type(x)}; '
      'convert it, e.g. images.astype(np.float32) / 255.'
    )
  if is_concrete(x):
    finite = np.isfinite(np.asarray(x)).all() if isinstance(x, np.ndarray) else bool(jnp.isfinite(x).all())
    if not finite:
      raise ValueError(f'{name} contains NaN or inf values; clean or impute them before clustering.')


def _row_block(xs, b, block_rows: int, n: int):
  """Block ``b`` of ``block_rows`` rows of every array in ``xs``, read in place: the last block is
  shifted back to end at row ``n`` (overlapping its predecessor). Returns ``(start, block)``."""
  start = jnp.minimum(b * block_rows, n - block_rows)
  return start, jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, block_rows), xs)


def map_and_sum_blocks(fn: Callable, xs, block_rows: int):
  """Row outputs and sums of a blocked pass: ``fn(block, fresh) -> (rows, sums)`` over the rows of ``xs``.

  ``xs`` is a pytree of arrays with leading dim N, read ``block_rows`` rows at
  a time in place; ``rows`` (a pytree with leading dim B) are written into
  ``[N, ...]`` outputs in place, ``sums`` (a pytree of any shapes) are added
  up over the blocks. The last block is shifted back to end at row N and so
  overlaps its predecessor: ``fresh [B]`` bool marks the rows no earlier
  block has seen, and ``fn`` must leave the others out of its sums (its row
  outputs for them are the same values again). No intermediate is larger than
  one block's, which matters for speed as well as memory: XLA:CPU gives every
  large temporary fresh pages each call, and faulting in ``[N, D]`` of them
  costs more than the arithmetic (3-7x, by host), while a block's stay in
  cache.

  Returns:
    ``(rows [N, ...], sums)``; for ``N <= block_rows`` just ``fn(xs, all True)``.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  if n <= block_rows:
    return fn(xs, jnp.ones((n,), bool))
  block_shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct((block_rows,) + a.shape[1:], a.dtype), xs)
  row_shapes, sum_shapes = jax.eval_shape(fn, block_shapes, jax.ShapeDtypeStruct((block_rows,), bool))

  def step(b, carry):
    rows, sums = carry
    start, block = _row_block(xs, b, block_rows, n)
    block_rows_out, block_sums = fn(block, start + jnp.arange(block_rows) >= b * block_rows)
    rows = jax.tree.map(lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, start, 0), rows, block_rows_out)
    return rows, jax.tree.map(jnp.add, sums, block_sums)

  init = (
    jax.tree.map(lambda s: jnp.zeros((n,) + s.shape[1:], s.dtype), row_shapes),
    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_shapes),
  )
  return jax.lax.fori_loop(0, -(-n // block_rows), step, init)


def map_blocks(fn: Callable, xs, block_rows: int):
  """Applies a row-wise ``fn`` (``[B, ...] -> [B, ...]``) to the arrays ``xs`` (a pytree, leading dim N) in
  blocks of rows read and written in place (:func:`map_and_sum_blocks`): equals ``fn(xs)`` while no
  intermediate is larger than one block's."""
  return map_and_sum_blocks(lambda block, fresh: (fn(block), ()), xs, block_rows)[0]


def weighted_sums(weights: Array, values: Array) -> Array:
  """``weights^T values`` ``[K, D]`` for ``weights [N, K]``, ``values [N, D]``.

  A single weight column is padded to two: XLA's CPU matrix-vector product
  sums the N terms one after another (relative error up to ~N eps, 4e-4 seen
  on MNIST), its matrix-matrix product in blocks (~1e-6).
  """
  k = weights.shape[1]
  if k == 1:
    weights = jnp.pad(weights, ((0, 0), (0, 1)))
  return jnp.dot(weights.T, values, precision=jax.lax.Precision.HIGHEST)[:k]


def weighted_sums_over_row_blocks(fn: Callable, weights: Array, xs, block_rows: int) -> Array:
  """:func:`weighted_sums` of ``weights [N, K]`` and ``fn(xs)`` for a row-wise ``fn`` (``[B, ...] -> [B, D]``),
  ``block_rows`` rows at a time, so ``fn``'s ``[N, D]`` output is never made (:func:`map_and_sum_blocks`)."""

  def block(rows, fresh):
    w, block_xs = rows
    return (), weighted_sums(jnp.where(fresh[:, None], w, 0.0), fn(block_xs))

  return map_and_sum_blocks(block, (weights, xs), block_rows)[1]


def sum_over_row_blocks(fn: Callable, xs, block_rows: int) -> Array:
  """``sum_n fn(xs)[n]`` for a row-wise ``fn`` (``[B, ...] -> [B]``), ``block_rows`` rows at a time
  (:func:`map_and_sum_blocks`), so no new ``[N, D]`` buffer is made."""
  return map_and_sum_blocks(lambda block, fresh: ((), jnp.sum(jnp.where(fresh, fn(block), 0.0))), xs, block_rows)[1]


def block_rows_for(n_columns: int, max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS) -> int:
  """Rows per block so that a ``[rows, n_columns]`` intermediate stays bounded."""
  return max(1, max_block_elements // max(1, n_columns))


def centre(x: Array) -> tuple[Array, Array]:
  """``(x - offset [N, D], offset [D])`` with ``offset`` the column means of ``x [N, D]``.

  Distances and variances are invariant under the shift, and about the mean
  the expanded forms lose only what the data's own spread costs, not their
  distance from the origin.
  """
  offset = column_means(x)
  # Materialised once: left to itself, XLA fuses the subtraction into every
  # consumer inside the iterations (twice the cost of a Lloyd pass).
  return jax.lax.optimization_barrier(x - offset), offset


# Data whose mean is further from the origin than this many times their RMS
# spread (in squared norms) are centred into a copy; nearer ones are used as
# they are (the round-off bounds grow by at most this factor).
_FAR = 4.0


@jax.jit
def _offset_and_spread(x):
  offset = column_means(x)
  sq_offset = jnp.sum(offset * offset)
  return offset, sq_offset, jnp.mean(jnp.sum(x * x, axis=-1)) - sq_offset


@jax.jit
def _subtract(x, offset):
  return x - offset


def centre_if_far(x) -> tuple[Array, Array, Array]:
  """``(x - offset, offset, mean)``: :func:`centre` where the data lie far from the origin, else
  ``(x, 0, column means)``; ``mean`` is what is left of the column means (0 when centred).

  Centring materialises a copy of the data, a new ``[N, D]`` buffer (on
  MNIST 220 MB, some 54,000 page faults per call), in its own program: within
  one, XLA would recompute ``x - offset`` inside other fusions. Data near the
  origin (most features, images in [0, 1]) are used as they are; the
  round-off bounds of the expanded forms grow by at most ``1 + _FAR``. Under
  a trace (a caller's ``jit``) the data are always centred.
  """
  if not is_concrete(x):
    x_c, offset = centre(x)
    return x_c, offset, jnp.zeros_like(offset)
  offset, sq_offset, spread = _offset_and_spread(x)
  if float(sq_offset) <= _FAR * max(float(spread), 0.0):
    return x, jnp.zeros_like(offset), offset
  return _subtract(x, offset), offset, jnp.zeros_like(offset)


def column_means(x: Array) -> Array:
  """``[D]`` means of the columns of ``x [N, D]``, as a matmul with a ``[N, 2]`` block of ones.

  XLA's CPU column reduction is several times slower than its matmul, and its
  matrix-vector product sums the N terms one after another (relative error up
  to ~N eps); a two-column matmul sums in blocks (~1e-7 on 70,000 rows).
  """
  ones = jnp.full((x.shape[0], 2), 1.0 / x.shape[0], x.dtype)
  return jnp.dot(ones.T, x, precision=jax.lax.Precision.HIGHEST)[0]


def expansion_error(d: int, dtype, sq_norms_a: Array, sq_norms_b: Array) -> Array:
  """Bound on ``|computed - exact|`` of the expanded ``|a|^2 - 2 a.b + |b|^2``.

  Each of the three terms is a length-``d`` dot product, off by at most
  ``d u`` times the sum of its terms' magnitudes whatever the summation order
  (``u`` = unit round-off), and ``2|a.b| <= |a|^2 + |b|^2``; the two
  additions add ``4u``. Hence ``(2d + 4) u (|a|^2 + |b|^2) = (d + 2) eps (...)``.
  ``sq_norms_a`` and ``sq_norms_b`` broadcast against each other.
  """
  return (d + 2) * jnp.finfo(dtype).eps * (sq_norms_a + sq_norms_b)


def exact_relative_error(d: int, dtype) -> float:
  """Relative round-off bound of ``sum((a - b)^2)`` over ``d`` features (no cancellation)."""
  return float((d + 4) * jnp.finfo(dtype).eps)


def table_rows(table: Array, index: Array) -> Array:
  """``table[index]`` ``[N, D]`` for a small ``table [K, D]`` and ``index [N]``.

  A one-hot matmul (exact: one non-zero term per output), because XLA's CPU
  backend runs the equivalent gather element by element, several times
  slower (and its cost there depends on how the host vectorises scalar code).
  """
  return jnp.dot(jax.nn.one_hot(index, table.shape[0], dtype=table.dtype), table, precision=jax.lax.Precision.HIGHEST)


def exact_squared_distances(x: Array, centers: Array) -> Array:
  """``[M, K]`` squared distances of ``x [M, D]`` to ``centers [K, D]`` from their differences."""
  return jnp.sum(jnp.square(x[:, None, :] - centers[None]), axis=-1)


def fold_flagged_rows(body: Callable, rows: Array, chunk: int, carry):
  """Folds ``body(idx [chunk], valid [chunk], carry) -> carry`` over the flagged rows, ``chunk`` at a time.

  ``rows [M]`` bool flags the rows; ``idx`` holds their indices (padding
  slots hold ``M``: gather them with ``mode='clip'``, scatter with
  ``mode='drop'``, or mask them with ``valid``). There are as many steps as
  chunks of flagged rows, so the cost follows the number flagged.
  """
  m = rows.shape[0]
  chunk = max(1, min(m, chunk))
  n_chunks = -(-m // chunk)
  count = jnp.sum(rows)

  def fold(carry):
    order = jnp.nonzero(rows, size=n_chunks * chunk, fill_value=m)[0]

    def step(i, carry):
      idx = jax.lax.dynamic_slice(order, (i * chunk,), (chunk,))
      return body(idx, i * chunk + jnp.arange(chunk) < count, carry)

    return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, step, carry)

  # Nothing flagged (the usual case): not even the compaction of the flags.
  return jax.lax.cond(count > 0, fold, lambda carry: carry, carry)


def refine_rows(
  x: Array, centers: Array, d: Array, err: Array, rows: Array, max_block_elements: int = 1 << 20
) -> tuple[Array, Array]:
  """Exact distances for the flagged rows: ``d, err [M, K]`` with rows ``rows [M]`` recomputed.

  Flagged rows get :func:`exact_squared_distances` and their relative error
  bound, a chunk of rows at a time (at most ``max_block_elements``
  differences at once).
  """
  rel = exact_relative_error(x.shape[1], x.dtype)

  def body(idx, valid, carry):
    d, err = carry
    exact = exact_squared_distances(x.at[idx].get(mode='clip'), centers)
    return d.at[idx].set(exact, mode='drop'), err.at[idx].set(rel * exact, mode='drop')

  return fold_flagged_rows(body, rows, block_rows_for(d.shape[1] * x.shape[1], max_block_elements), (d, err))


def squared_distances(x: Array, centers: Array, x_sq_norms: Array | None = None) -> Array:
  """Squared Euclidean distances ``[N, K]`` between ``x [N, D]`` and ``centers [K, D]``.

  Uses ``|x|^2 - 2 x.c + |c|^2`` (one matmul); clipped at 0 against round-off,
  which is up to :func:`expansion_error`: centre the data first, and refine
  where a decision depends on it. Pass ``x_sq_norms [N]`` to avoid
  recomputing them every iteration.
  """
  if x_sq_norms is None:
    x_sq_norms = jnp.sum(x * x, axis=-1)
  c_sq_norms = jnp.sum(centers * centers, axis=-1)
  cross = jnp.dot(x, centers.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(x_sq_norms[:, None] - 2.0 * cross + c_sq_norms[None, :], 0.0)
