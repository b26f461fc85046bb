"""Blocked nearest-neighbour search on cosine similarity, shared by kNN accuracy and self-labelling."""

from __future__ import annotations

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax import losses


@functools.partial(jax.jit, static_argnames=('k', 'block_size', 'exclude_self'))
def _block_top_k(queries, database, start, *, k: int, block_size: int, exclude_self: bool):
  block = jax.lax.dynamic_slice_in_dim(queries, start, block_size)
  similarity = block @ database.T
  if exclude_self:  # query i is database row i: not its own neighbour
    rows = jnp.arange(block_size)
    similarity = similarity.at[rows, start + rows].set(-jnp.inf)
  return jax.lax.top_k(similarity, k)


def cosine_top_k(
  queries, database, k: int, *, exclude_self: bool = False, block_size: int = 1024
) -> Tuple[np.ndarray, np.ndarray]:
  """The ``k`` most cosine-similar database rows of every query, in blocks of queries.

  Args:
    queries: ``[M, D]`` features (L2-normalised here).
    database: ``[N, D]`` features (L2-normalised here).
    k: neighbours per query (at most ``N``, or ``N - 1`` with ``exclude_self``).
    exclude_self: the queries are the database (``M == N``); row ``i`` is not its own neighbour.
    block_size: queries per compiled block; the last block is shifted back
      (overlapping rows give the same values), so one program serves every block.

  Returns:
    ``(similarities [M, k] float32, indices [M, k] int32)``, most similar first.

  Raises:
    ValueError: ``k`` out of range, or ``exclude_self`` with ``M != N``.
  """
  queries = losses.l2_normalize(jnp.asarray(queries, jnp.float32))
  database = losses.l2_normalize(jnp.asarray(database, jnp.float32))
  m, n = queries.shape[0], database.shape[0]
  if exclude_self and m != n:
    raise ValueError(f'exclude_self needs the queries to be the database, got {m} queries and {n} rows.')
  if not 1 <= k <= n - exclude_self:
    raise ValueError(f'k must be in [1, {n - exclude_self}], got {k}.')
  block_size = min(block_size, m)
  similarities, indices = np.empty((m, k), np.float32), np.empty((m, k), np.int32)
  for start in range(0, m, block_size):
    start = min(start, m - block_size)
    sim, idx = _block_top_k(queries, database, start, k=k, block_size=block_size, exclude_self=exclude_self)
    similarities[start : start + block_size], indices[start : start + block_size] = np.asarray(sim), np.asarray(idx)
  return similarities, indices
