import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn import decomposition
from sklearn import mixture

from unsupervised_jax.clustering import _gmm_diag
from unsupervised_jax.clustering import gmm


def _features():
  x = datasets.load_digits().data / 16
  return decomposition.PCA(8, random_state=0).fit_transform(x).astype(np.float32)


def _reference_start(x, k, covariance_type):
  """Initial parameters from one EM iteration of sklearn (so both start from the same point)."""
  start = mixture.GaussianMixture(k, covariance_type=covariance_type, random_state=0, max_iter=1).fit(x)
  return start.weights_, start.means_, start.covariances_


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_log_likelihood_matches_sklearn_from_same_start(covariance_type):
  x = _features()
  weights, means, covariances = _reference_start(x, 6, covariance_type)
  if covariance_type == 'full':
    precisions = np.linalg.inv(covariances)
    precisions = (precisions + np.swapaxes(precisions, 1, 2)) / 2  # sklearn checks exact symmetry
  else:
    precisions = 1.0 / covariances
  ref = mixture.GaussianMixture(
    6,
    covariance_type=covariance_type,
    weights_init=weights,
    means_init=means,
    precisions_init=precisions,
    max_iter=200,
    tol=1e-3,
  ).fit(x)
  start = gmm.make_params(*(a.astype(np.float32) for a in (weights, means, covariances)), covariance_type)
  ours = gmm.fit_gmm(None, x, 6, covariance_type=covariance_type, init_params=start, max_iter=200, tol=1e-3)
  assert float(gmm.score(x, ours.params, covariance_type)) == pytest.approx(ref.score(x), abs=1e-3)
  assert float(ours.lower_bound) == pytest.approx(ref.lower_bound_, abs=1e-3)
  assert int(ours.n_iter) == ref.n_iter_
  np.testing.assert_array_equal(np.asarray(ours.labels), ref.predict(x))


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')  # the 1-iteration start
@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_e_step_matches_sklearn_log_responsibilities(covariance_type):
  x = _features()
  weights, means, covariances = _reference_start(x, 4, covariance_type)
  ref = mixture.GaussianMixture(4, covariance_type=covariance_type).fit(x)  # only for its helpers
  ref.weights_, ref.means_, ref.covariances_ = weights, means, covariances
  ref.precisions_cholesky_ = mixture._gaussian_mixture._compute_precision_cholesky(covariances, covariance_type)
  params = gmm.make_params(*(a.astype(np.float32) for a in (weights, means, covariances)), covariance_type)
  mean_ll, log_resp = gmm.e_step(jnp.asarray(x), params, covariance_type)
  ref_mean_ll, ref_log_resp = ref._e_step(x)
  assert float(mean_ll) == pytest.approx(ref_mean_ll, abs=1e-4)
  np.testing.assert_allclose(np.exp(log_resp), np.exp(ref_log_resp), atol=1e-4)


def test_m_step_on_hard_assignment_gives_cluster_statistics():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 200)
  params = gmm.init_from_labels(jnp.asarray(x), jnp.asarray(labels), 3, 'full', reg_covar=0.0)
  for k in range(3):
    members = x[labels == k]
    np.testing.assert_allclose(params.means[k], members.mean(0), atol=1e-5)
    np.testing.assert_allclose(params.covariances[k], np.cov(members.T, bias=True), atol=1e-4)
    assert float(params.weights[k]) == pytest.approx(len(members) / 200, abs=1e-6)
  # diag and spherical are the diagonal and its mean.
  diag = gmm.init_from_labels(jnp.asarray(x), jnp.asarray(labels), 3, 'diag', reg_covar=0.0)
  np.testing.assert_allclose(diag.covariances, np.diagonal(params.covariances, axis1=1, axis2=2), atol=1e-4)
  sph = gmm.init_from_labels(jnp.asarray(x), jnp.asarray(labels), 3, 'spherical', reg_covar=0.0)
  np.testing.assert_allclose(sph.covariances, diag.covariances.mean(1), atol=1e-4)


def test_fit_from_kmeans_init_improves_monotonically_and_predicts():
  x = _features()
  result = gmm.fit_gmm(jax.random.key(0), x, 10, covariance_type='full', n_init=2)
  history = np.asarray(result.lower_bound_history)[: int(result.n_iter)]
  assert np.all(np.diff(history) > -1e-4)  # EM never decreases the likelihood
  assert bool(result.converged)
  proba = np.asarray(gmm.predict_proba(x, result.params, 'full'))
  np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(gmm.predict(x, result.params, 'full'), np.asarray(result.labels))
  ref = mixture.GaussianMixture(10, covariance_type='full', n_init=2, random_state=0).fit(x)
  assert float(result.lower_bound) == pytest.approx(ref.lower_bound_, abs=0.1)


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'covariance_type': 'tied'}, 'covariance_type'),
    ({'reg_covar': -1.0}, 'reg_covar'),
    ({'max_iter': 0}, 'max_iter'),
    ({'n_init': 0}, 'n_init'),
  ],
)
def test_bad_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gmm.fit_gmm(jax.random.key(0), _features(), 3, **kwargs)


def test_bad_data():
  with pytest.raises(ValueError, match='NaN'):
    gmm.fit_gmm(jax.random.key(0), np.array([[np.nan, 0.0], [1.0, 1.0]], np.float32), 1)
  with pytest.raises(ValueError, match='larger than'):
    gmm.fit_gmm(jax.random.key(0), np.zeros((2, 2), np.float32), 3)


@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_variances_and_means_of_two_far_points(covariance_type):
  """Issue #22, case 1: each point its own component: variance reg_covar exactly, means exactly the points."""
  x = np.array([[9999.0], [0.0]], np.float32)
  result = gmm.fit_gmm(jax.random.key(0), x, 2, covariance_type=covariance_type, reg_covar=0.1)
  np.testing.assert_allclose(np.asarray(result.params.covariances).ravel(), [0.1, 0.1], rtol=1e-6)
  assert sorted(np.asarray(result.params.means).ravel().tolist()) == [0.0, 9999.0]


@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_blobs_far_from_origin_match_sklearn_float64(covariance_type):
  """Issue #22, case 2: two blobs (sd 0.1, 3 apart) shifted by +1e4: not one NaN cluster."""
  rng = np.random.default_rng(0)
  x = (np.concatenate([rng.normal(0, 0.1, (30, 1)), rng.normal(3, 0.1, (30, 1))]) + 1e4).astype(np.float32)
  ref = mixture.GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(x.astype(np.float64))
  ours = gmm.fit_gmm(jax.random.key(0), x, 2, covariance_type=covariance_type)
  labels = np.asarray(ours.labels)
  assert np.isfinite(float(ours.lower_bound))
  assert (labels[:30] == labels[0]).all() and (labels[30:] == labels[30]).all() and labels[0] != labels[30]
  assert float(ours.lower_bound) == pytest.approx(ref.lower_bound_, abs=1e-3)


@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_more_components_than_distinct_values(covariance_type):
  """Issue #22, case 3: 3 values, K=5; the lower bound is sklearn's 4.8902 for every covariance type."""
  x = np.repeat([1.0, 2.0, 7.0], 10)[:, None].astype(np.float32)
  ref = mixture.GaussianMixture(5, covariance_type=covariance_type, random_state=0).fit(x.astype(np.float64))
  ours = gmm.fit_gmm(jax.random.key(0), x, 5, covariance_type=covariance_type)
  assert ref.lower_bound_ == pytest.approx(4.8902, abs=1e-4)
  assert float(ours.lower_bound) == pytest.approx(ref.lower_bound_, abs=1e-4)


@pytest.mark.parametrize('covariance_type', ['diag', 'spherical'])
def test_e_step_exact_where_the_expanded_form_cancels(covariance_type):
  """Tight components (sd 1e-3) 10 apart: the expanded Mahalanobis form is off by O(1) nats in float32."""
  rng = np.random.default_rng(1)
  x = np.concatenate([rng.normal(-5, 1e-3, (20, 2)), rng.normal(5, 1e-3, (20, 2))]).astype(np.float32)
  cov = np.full((2, 2), 1e-6) if covariance_type == 'diag' else np.full(2, 1e-6)
  means = np.array([x[:20].mean(0), x[20:].mean(0)])
  ref = mixture.GaussianMixture(2, covariance_type=covariance_type).fit(x.astype(np.float64))
  ref.weights_, ref.means_, ref.covariances_ = np.array([0.5, 0.5]), means.astype(np.float64), cov
  ref.precisions_cholesky_ = mixture._gaussian_mixture._compute_precision_cholesky(cov, covariance_type)
  params = gmm.make_params(*(np.asarray(a, np.float32) for a in ([0.5, 0.5], means, cov)), covariance_type)
  mean_ll, log_resp = gmm.e_step(jnp.asarray(x), params, covariance_type)
  ref_mean_ll, ref_log_resp = ref._e_step(x.astype(np.float64))
  assert float(mean_ll) == pytest.approx(ref_mean_ll, abs=1e-4)
  np.testing.assert_allclose(np.exp(log_resp), np.exp(ref_log_resp), atol=1e-6)
  np.testing.assert_allclose(
    gmm.score_samples(x, params, covariance_type), ref.score_samples(x.astype(np.float64)), atol=1e-4
  )
  np.testing.assert_allclose(
    gmm.log_gaussian_density(jnp.asarray(x), params, covariance_type),
    ref._estimate_log_prob(x.astype(np.float64)),
    rtol=1e-5,
  )


@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_m_step_variances_from_differences(covariance_type):
  """Points 1e4 from the origin with sd 1e-2, soft responsibilities: E[x^2] - E[x]^2 would lose every digit."""
  rng = np.random.default_rng(2)
  x = (rng.normal(0, 1e-2, (50, 3)) + 1e4).astype(np.float32)
  resp = rng.dirichlet([0.3, 0.3, 0.3], 50).astype(np.float32)
  params = gmm.m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type, reg_covar=0.0)
  x64, r64 = x.astype(np.float64), resp.astype(np.float64)
  nk = r64.sum(0)
  means = r64.T @ x64 / nk[:, None]
  diag = np.stack([(r64[:, k : k + 1] * (x64 - means[k]) ** 2).sum(0) / nk[k] for k in range(3)])
  np.testing.assert_allclose(params.means, means, rtol=1e-7, atol=2e-3)
  if covariance_type == 'full':
    full = np.stack([(r64[:, k : k + 1] * (x64 - means[k])).T @ (x64 - means[k]) / nk[k] for k in range(3)])
    np.testing.assert_allclose(params.covariances, full, rtol=1e-3, atol=1e-9)
  else:
    expected = diag if covariance_type == 'diag' else diag.mean(1)
    np.testing.assert_allclose(params.covariances, expected, rtol=1e-3)


def _em_iteration_float64(x, params, covariance_type, reg_covar):
  """One EM iteration in float64 numpy from differences (the reference for the fused iteration)."""
  x = np.asarray(x, np.float64)
  w, mu, cov = (np.asarray(a, np.float64) for a in (params.weights, params.means, params.covariances))
  n, d = x.shape
  var = cov if covariance_type == 'diag' else np.repeat(cov[:, None], d, 1)
  log_prob = np.stack(
    [-0.5 * (((x - mu[k]) ** 2 / var[k]).sum(1) + np.log(var[k]).sum() + d * np.log(2 * np.pi)) for k in range(len(w))],
    1,
  ) + np.log(w)
  log_norm = np.logaddexp.reduce(log_prob, axis=1)
  r = np.exp(log_prob - log_norm[:, None])
  nk = r.sum(0) + 10 * np.finfo(np.float64).eps
  means = r.T @ x / nk[:, None]
  scatter = np.stack([(r[:, k : k + 1] * (x - means[k]) ** 2).sum(0) for k in range(len(w))]) / nk[:, None]
  covariances = scatter + reg_covar if covariance_type == 'diag' else scatter.mean(1) + reg_covar
  return log_norm.mean(), nk / n, means, covariances


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
@pytest.mark.parametrize('iterations,exact_entries', [(0, 0), (0, 32), (0, 10**6), (30, 32)])
@pytest.mark.parametrize('covariance_type', ['diag', 'spherical'])
def test_fused_em_iteration_matches_float64_em(covariance_type, iterations, exact_entries, monkeypatch):
  """The one-pass iteration (sums about the old means, corrected) against a float64 E-step + M-step from
  differences: from the first iterations' large moves (recomputed: all, or entry by entry) to the settled
  ones (the expansion alone), 1,797 rows in overlapping blocks of 512, data 1e3 from the origin."""
  monkeypatch.setattr(_gmm_diag, '_EXACT_ENTRIES', exact_entries)  # where the fused iteration reads it
  x = _features() + np.float32(1e3)
  weights, means, covariances = _reference_start(x - 1e3, 6, covariance_type)
  params = gmm.make_params(*(a.astype(np.float32) for a in (weights, means + 1e3, covariances)), covariance_type)
  if iterations:
    params = gmm.fit_gmm(
      None, x, 6, covariance_type=covariance_type, init_params=params, max_iter=iterations, tol=0.0, reg_covar=1e-6
    ).params
  x_c, offset = gmm._common.centre(jnp.asarray(x))
  data = gmm._centred(x_c, covariance_type)
  ll, new = jax.jit(gmm._em_iteration_diag, static_argnums=(2, 3))(
    data, gmm._shift(params, offset), covariance_type, 1e-6
  )
  ref_ll, ref_weights, ref_means, ref_covariances = _em_iteration_float64(x, params, covariance_type, 1e-6)
  assert float(ll) == pytest.approx(ref_ll, abs=2e-5)
  np.testing.assert_allclose(new.weights, ref_weights, rtol=1e-5)
  np.testing.assert_allclose(new.means + offset, ref_means, rtol=0, atol=1e-3 * np.sqrt(ref_covariances.min()) + 1e-4)
  np.testing.assert_allclose(new.covariances, ref_covariances, rtol=2e-5)


@pytest.mark.parametrize('case', ['means_move_far', 'component_of_tails'])
@pytest.mark.parametrize('covariance_type', ['diag', 'spherical'])
def test_fused_em_iteration_where_its_expansion_or_tails_decide(covariance_type, case):
  """Narrow blobs (sd 1e-3) at +-5: (a) from means 1 away (1,000 sd), the sums about the old means cancel
  ~1e6-fold and must be recomputed about the new ones; (b) a third, wide component ~50 nats below every
  point holds only tail responsibilities (~1e-22), which alone place its mean and variance."""
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(-5, 1e-3, (40, 2)), rng.normal(5, 1e-3, (40, 2))]).astype(np.float32)
  if case == 'means_move_far':
    weights, means, variances = [0.5, 0.5], [[-4.0, -4.0], [4.0, 4.0]], [1.0, 1.0]
  else:
    weights, means, variances = [0.45, 0.45, 0.1], [[-5.0, -5.0], [5.0, 5.0], [0.0, 3.0]], [1e-6, 1e-6, 1.0]
  variances = (
    np.asarray(variances) if covariance_type == 'spherical' else np.repeat(np.asarray(variances)[:, None], 2, 1)
  )
  params = gmm.make_params(*(np.asarray(a, np.float32) for a in (weights, means, variances)), covariance_type)
  data = gmm._centred(jnp.asarray(x), covariance_type)
  ll, new = jax.jit(gmm._em_iteration_diag, static_argnums=(2, 3))(data, params, covariance_type, 0.0)
  ref_ll, ref_weights, ref_means, ref_covariances = _em_iteration_float64(x, params, covariance_type, 0.0)
  assert float(ll) == pytest.approx(ref_ll, rel=1e-5)
  np.testing.assert_allclose(new.weights, ref_weights, rtol=1e-4)
  np.testing.assert_allclose(new.means, ref_means, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new.covariances, ref_covariances, rtol=1e-3)


@pytest.mark.parametrize('covariance_type', ['diag', 'spherical'])
def test_m_step_component_of_tails_alone(covariance_type):
  """A third component whose responsibilities (1e-9) all sit below exp(-20) of their points' largest, on a
  narrow blob (sd 1e-3) 5 from the origin: its variance ~1e-6 is ~2.5e7 below the expanded form's terms."""
  rng = np.random.default_rng(4)
  x = np.concatenate([rng.normal(-5, 1e-3, (40, 2)), rng.normal(5, 1e-3, (40, 2))]).astype(np.float32)
  resp = np.zeros((80, 3), np.float32)
  resp[:40, 0], resp[40:, 1], resp[40:, 2] = 1.0, 1.0, 1e-9
  params = gmm.m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type, reg_covar=0.0)
  x64, r64 = x.astype(np.float64), resp.astype(np.float64)
  nk = r64.sum(0) + 10 * np.finfo(np.float64).eps
  means = r64.T @ x64 / nk[:, None]
  diag = np.stack([(r64[:, k : k + 1] * (x64 - means[k]) ** 2).sum(0) / nk[k] for k in range(3)])
  np.testing.assert_allclose(params.means, means, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(params.covariances, diag if covariance_type == 'diag' else diag.mean(1), rtol=1e-3)
