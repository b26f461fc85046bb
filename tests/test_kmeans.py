import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import datasets

from unsupervised_jax.clustering import kmeans


def _digits():
  return (datasets.load_digits().data / 16).astype(np.float32)


def _blobs(seed=0, n=600, k=5, d=4):
  x, _ = datasets.make_blobs(n, d, centers=k, cluster_std=1.5, random_state=seed)
  return x.astype(np.float32)


@pytest.mark.parametrize(
  'data,k,seed', [('digits', 10, 0), ('digits', 10, 1), ('digits', 7, 2), ('blobs', 5, 0), ('blobs', 8, 3)]
)
def test_same_labels_and_inertia_as_sklearn_from_same_centers(data, k, seed):
  x = _digits() if data == 'digits' else _blobs(seed)
  init = x[np.random.default_rng(seed).choice(len(x), k, replace=False)]
  ref = sk_cluster.KMeans(k, init=init, n_init=1, algorithm='lloyd').fit(x)
  ours = kmeans.kmeans(None, x, k, init=init, n_init=1)
  np.testing.assert_array_equal(np.asarray(ours.labels), ref.labels_)
  assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-4)
  assert int(ours.n_iter) == ref.n_iter_
  np.testing.assert_allclose(ours.centers, ref.cluster_centers_, atol=1e-4)


def test_empty_cluster_relocated_like_sklearn():
  x = _blobs(0, n=300, k=3, d=2)
  init = np.array([x[0], x[1], [1e3, 1e3]], np.float32)  # the third centre attracts no point
  ref = sk_cluster.KMeans(3, init=init, n_init=1, algorithm='lloyd').fit(x)
  ours = kmeans.kmeans(None, x, 3, init=init, n_init=1)
  assert len(np.unique(np.asarray(ours.labels))) == 3
  np.testing.assert_array_equal(np.asarray(ours.labels), ref.labels_)
  assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-4)


def test_relocation_moves_farthest_point_and_fixes_sums():
  x = jnp.array([[0.0], [1.0], [10.0]])
  state = kmeans.init_state(x, jnp.array([[0.5], [100.0]]))
  state = kmeans.lloyd_iteration(x, jnp.sum(x * x, -1), state, 0.0)
  # Cluster 1 was empty: it takes the point farthest from its centre (10), which leaves cluster 0.
  np.testing.assert_allclose(state.centers, [[0.5], [10.0]])
  np.testing.assert_array_equal(state.labels, [0, 0, 1])
  np.testing.assert_allclose(state.counts, [2, 1])


@pytest.mark.parametrize('seed', range(4))
def test_bounded_iterations_equal_plain_lloyd_step_by_step(seed):
  """Every iteration's labels and centres equal a plain numpy Lloyd step (the bounds skip only safe points)."""
  rng = np.random.default_rng(seed)
  x, _ = datasets.make_blobs(3000, 5, centers=12, cluster_std=3.0, random_state=seed)
  x = x.astype(np.float32)
  centers = x[rng.choice(len(x), 12, replace=False)]
  state = kmeans.init_state(jnp.asarray(x), jnp.asarray(centers))
  sq = jnp.sum(jnp.asarray(x) ** 2, -1)
  step = jax.jit(kmeans.lloyd_iteration)
  for _ in range(25):
    expected_labels = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    expected_centers = np.stack([x[expected_labels == j].mean(0) for j in range(12)])
    state = step(jnp.asarray(x), sq, state, 0.0)
    np.testing.assert_array_equal(state.labels, expected_labels)
    np.testing.assert_allclose(state.centers, expected_centers, rtol=1e-4, atol=1e-4)
    centers = np.asarray(state.centers)


def test_restarts_keep_lowest_inertia_and_match_sklearn_quality():
  x = _digits()
  result = kmeans.kmeans(jax.random.key(0), x, 10, n_init=8)
  singles = [float(kmeans.kmeans(jax.random.fold_in(jax.random.key(0), i), x, 10, n_init=1).inertia) for i in range(3)]
  ref = sk_cluster.KMeans(10, n_init=8, random_state=0).fit(x)
  assert float(result.inertia) <= min(singles) + 1e-3
  assert float(result.inertia) == pytest.approx(ref.inertia_, rel=0.01)
  assert bool(result.converged)


def test_kmeans_plusplus_picks_distinct_data_points_spread_out():
  blob_centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], np.float32)
  x, _ = datasets.make_blobs(500, 2, centers=blob_centers, cluster_std=1.0, random_state=1)
  x = x.astype(np.float32)
  centers = np.asarray(kmeans.kmeans_plusplus(jax.random.key(3), jnp.asarray(x), 4))
  distances = ((x[None] - centers[:, None]) ** 2).sum(-1)
  assert (distances.min(axis=1) == 0).all()  # every centre is a data point
  nearest_blob = ((centers[:, None] - blob_centers[None]) ** 2).sum(-1).argmin(1)
  assert len(set(nearest_blob)) == 4  # one seed in each well-separated blob


def test_jittable_end_to_end_and_deterministic():
  x = jnp.asarray(_blobs(2))
  fit = jax.jit(lambda key, x: kmeans._kmeans(key, x, n_clusters=5, n_init=3, init='k-means++', max_iter=100, tol=1e-4))
  a, b = fit(jax.random.key(1), x), fit(jax.random.key(1), x)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(a.centers, b.centers)


def test_predict_and_blocked_assignment_equal_brute_force():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1000, 6)).astype(np.float32)
  centers = rng.normal(size=(7, 6)).astype(np.float32)
  expected = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(kmeans.predict(x, centers), expected)
  blocked = kmeans.assign(jnp.asarray(x), jnp.asarray(centers), max_block_elements=7 * 64)  # 16 blocks
  np.testing.assert_array_equal(blocked.labels, expected)
  np.testing.assert_allclose(blocked.distances, ((x - centers[expected]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
  'x,k,match',
  [
    (np.array([[0.0, np.nan], [1.0, 2.0]]), 1, 'NaN or inf'),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), 1, 'NaN or inf'),
    (np.zeros((3, 2)), 4, 'larger than the number of points'),
    (np.zeros((3, 2, 2)), 2, '2-D'),
    (np.zeros((0, 2)), 1, 'empty'),
    (np.zeros((3, 2), np.int32), 2, 'floating point'),
    (np.zeros((3, 2)), 0, 'positive integer'),
  ],
)
def test_bad_input_raises_value_error(x, k, match):
  with pytest.raises(ValueError, match=match):
    kmeans.kmeans(jax.random.key(0), x, k)


def test_bad_options():
  x = _blobs()
  with pytest.raises(ValueError, match='init must be'):
    kmeans.kmeans(jax.random.key(0), x, 3, init='kmeans||')
  with pytest.raises(ValueError, match='n_init=1'):
    kmeans.kmeans(jax.random.key(0), x, 3, init=x[:3], n_init=2)
  with pytest.raises(ValueError, match='max_iter'):
    kmeans.kmeans(jax.random.key(0), x, 3, max_iter=0)


def test_points_sharded_over_two_devices_give_the_same_fit():
  """In this process: the suite runs on two CPU devices (tests/conftest.py)."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  from sklearn import datasets

  from unsupervised_jax.clustering import gmm
  from unsupervised_jax.training import parallel

  x = (datasets.load_digits().data / 16).astype(np.float32)[:1796]
  sharded = jax.device_put(x, NamedSharding(parallel.make_mesh(2), P(parallel.AXIS)))
  a, b = kmeans.kmeans(jax.random.key(0), x, 10, n_init=2), kmeans.kmeans(jax.random.key(0), sharded, 10, n_init=2)
  assert (np.asarray(a.labels) == np.asarray(b.labels)).all() and abs(float(a.inertia) - float(b.inertia)) < 1e-2
  assert b.labels.sharding.spec == P(parallel.AXIS)  # the points stayed split over the devices
  g1 = gmm.fit_gmm(jax.random.key(0), x[:, :20], 5, covariance_type='diag')
  g2 = gmm.fit_gmm(jax.random.key(0), sharded[:, :20], 5, covariance_type='diag')
  assert abs(float(g1.lower_bound) - float(g2.lower_bound)) < 1e-4


def test_inertia_from_exact_distances_not_the_expanded_form():
  """Issue #22, case 4: |x|^2 - 2x.c + |c|^2 cancels to 0 in float32; the inertia is 4.0013e-08."""
  x = np.array([[-1.0001], [-0.9999], [0.9999], [1.0001]], np.float32)
  ours = kmeans.kmeans(jax.random.key(0), x, 2, n_init=1)
  ref = sk_cluster.KMeans(2, init=np.asarray(ours.centers, np.float64), n_init=1).fit(x.astype(np.float64))
  np.testing.assert_allclose(np.sort(np.asarray(ours.centers).ravel()), [-1, 1], atol=1e-6)
  assert ref.inertia_ == pytest.approx(4.0013276e-08, rel=1e-4)
  assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-4)


def test_restarts_chosen_by_exact_inertia():
  """Two tight pairs and a lone point near +-1: the optima differ by ~1e-8, below the expanded form's round-off."""
  x = np.array([[-1.0002], [-0.9998], [-1.0], [0.9999], [1.0001], [1.0]], np.float32)
  result = kmeans.kmeans(jax.random.key(0), x, 3, n_init=10)
  x64 = x.astype(np.float64)
  singles = []
  for i in range(10):
    one = kmeans.kmeans(jax.random.fold_in(jax.random.key(0), i), x, 3, n_init=1)
    singles.append(((x64 - np.asarray(one.centers, np.float64)[np.asarray(one.labels)]) ** 2).sum())
  ref = sk_cluster.KMeans(3, n_init=10, random_state=0).fit(x64)
  assert float(result.inertia) == pytest.approx(min(singles), rel=1e-3)
  assert float(result.inertia) == pytest.approx(ref.inertia_, rel=1e-3)


@pytest.mark.parametrize('offset', [1e4, -3e3])
def test_far_from_origin_same_labels_and_inertia_as_sklearn_float64(offset):
  x = (_blobs(1, n=300, k=4, d=3) * 0.01 + offset).astype(np.float32)
  init = x[np.random.default_rng(0).choice(len(x), 4, replace=False)]
  ref = sk_cluster.KMeans(4, init=init.astype(np.float64), n_init=1, algorithm='lloyd').fit(x.astype(np.float64))
  ours = kmeans.kmeans(None, x, 4, init=init, n_init=1)
  np.testing.assert_array_equal(np.asarray(ours.labels), ref.labels_)
  assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-4)
  # predict: the exact closest of the (float32) centres it is given.
  exact = ((x[:, None].astype(np.float64) - np.asarray(ours.centers, np.float64)[None]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(kmeans.predict(x, ours.centers), exact)
