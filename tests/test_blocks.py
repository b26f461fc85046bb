"""Row-blocked helpers of the clustering code: the same values as the unblocked computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax.clustering import _common


@pytest.mark.parametrize('n,block_rows', [(10, 3), (9, 3), (4, 8), (1, 1)])
def test_map_blocks_equals_the_rowwise_function_on_every_row(n, block_rows):
  rng = np.random.default_rng(0)
  x, labels = rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, n)
  fn = lambda rows: (jnp.sum(rows[0] ** 2, axis=1) + rows[1], rows[0][:, :2] * 2)
  norms, firsts = _common.map_blocks(fn, (jnp.asarray(x), jnp.asarray(labels)), block_rows)
  np.testing.assert_allclose(norms, (x**2).sum(1) + labels, rtol=1e-6)
  np.testing.assert_array_equal(firsts, x[:, :2] * 2)


@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('n,block_rows', [(10, 3), (9, 3), (4, 8)])
def test_weighted_sums_over_row_blocks_count_every_row_once(n, block_rows, k):
  """The last block overlaps its predecessor: its repeated rows must not be summed twice."""
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(n, 4)), rng.uniform(size=(n, k))
  centres = rng.normal(size=(k, 4))
  labels = rng.integers(0, k, n)
  fn = lambda rows: jnp.square(rows[0] - _common.table_rows(jnp.asarray(centres, jnp.float32), rows[1]))
  got = _common.weighted_sums_over_row_blocks(
    fn, jnp.asarray(w, jnp.float32), (jnp.asarray(x, jnp.float32), jnp.asarray(labels)), block_rows
  )
  np.testing.assert_allclose(got, w.T @ (x - centres[labels]) ** 2, rtol=1e-5)
