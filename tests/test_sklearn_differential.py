"""K-means, GMM and PCA against scikit-learn in float64 over generated float32 inputs (issue #22).

``hypothesis`` draws the structure of each input: offset (0 to 1e6), scale
(1e-3 to 1e3), how many distinct points (down to one, fewer than K),
duplicates, constant features, K up to N, initial centres or labels; the
values themselves come from a seeded numpy generator, so shrinking simplifies
the structure without manufacturing exact ties (equidistant points, where
two correct implementations may break the tie differently).

Shapes are fixed (N = 12, D = 3) so that each function compiles once per K
or covariance type, and the example counts keep the module to well under a
minute.

The references get the very float32 values ours gets, as float64. Two
limits of float32 itself (scikit-learn's float32 shares them) are left out of
the GMM checks: a component narrower than 1e3 units in the last place of the
coordinates (a component collapsed onto duplicates, width sqrt(reg_covar),
1e4 from the origin: its float32 mean is off by a fair fraction of its
width), and, for 'full', a covariance with condition number above 1e3 (a
float32 Cholesky factor resolves eigenvalues down to eps times the largest). The GMM
reference runs on the data centred in float64 (with its initial means shifted
to match): scikit-learn's own float64 expansions (``X^2 @ P - 2 X @ (mu P)``)
lose every digit at an offset of 1e6 with a spread of 1e-3, and the lower
bound and responsibilities do not depend on the shift.
"""

import warnings

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import scipy.special
from sklearn import cluster as sk_cluster
from sklearn import decomposition
from sklearn import mixture

from unsupervised_jax import preprocessing
from unsupervised_jax.clustering import gmm
from unsupervised_jax.clustering import kmeans

N, D = 12, 3
SETTINGS = hypothesis.settings(
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much],
)


def examples(n):
  return hypothesis.settings(SETTINGS, max_examples=n)


@st.composite
def point_sets(draw):
  """``[N, D]`` float32 points of a generated structure."""
  seed = draw(st.integers(0, 2**32 - 1))
  n_distinct = draw(st.integers(1, N))
  offset = draw(st.sampled_from([0.0, 1.0, 1e2, 1e4, 1e6])) * draw(st.sampled_from([1.0, -1.0]))
  scale = 10.0 ** draw(st.integers(-3, 3))
  constant = draw(st.lists(st.booleans(), min_size=D, max_size=D))
  spread = draw(st.sampled_from(['blobs', 'uniform']))
  rng = np.random.default_rng(seed)
  if spread == 'blobs':  # tight groups, far apart relative to their size
    base = rng.normal(size=(n_distinct, D)) * 1e-3 + rng.integers(-3, 4, (n_distinct, D))
  else:
    base = rng.uniform(-1, 1, (n_distinct, D))
  base[:, constant] = base[0, constant]
  rows = np.concatenate([np.arange(n_distinct), rng.integers(0, n_distinct, N - n_distinct)])
  x = base[rng.permutation(rows)] * scale + offset * rng.uniform(0.5, 1.0, D)
  return x.astype(np.float32)


def _sum_of_squares(x64):
  return float(((x64 - x64.mean(0)) ** 2).sum())


@examples(40)
@hypothesis.given(x=point_sets(), k=st.sampled_from([1, 3, N]), data=st.data())
def test_kmeans_inertia_as_sklearn_from_the_same_centres(x, k, data):
  init = x[data.draw(st.lists(st.integers(0, N - 1), min_size=k, max_size=k), label='init rows')]
  x64 = x.astype(np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # fewer distinct points than clusters
    ref = sk_cluster.KMeans(k, init=init.astype(np.float64), n_init=1, algorithm='lloyd').fit(x64)
  ours = kmeans.kmeans(None, x, k, init=init, n_init=1)
  centred_max = np.abs(x64 - x64.mean(0)).max()
  floor = N * (float(np.finfo(np.float32).eps) * centred_max) ** 2  # float32 round-off of the centred centres
  assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-4, abs=1e-9 * _sum_of_squares(x64) + floor)
  # It is the inertia of its own labels and centres (returned in float32: half an ulp of the offset).
  own = ((x64 - np.asarray(ours.centers, np.float64)[np.asarray(ours.labels)]) ** 2).sum()
  assert float(ours.inertia) == pytest.approx(
    own, rel=1e-4, abs=N * float(np.spacing(np.float32(np.abs(x).max()))) ** 2
  )


@st.composite
def gmm_problems(draw):
  x = draw(point_sets())
  labels = np.asarray(draw(st.lists(st.integers(0, 2), min_size=N, max_size=N)))
  return x, labels


def _initial_parameters(x64, labels, k, covariance_type, reg_covar):
  """float64 parameters of the hard assignment ``labels``, as scikit-learn's M-step computes them."""
  resp = np.eye(k)[labels]
  nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
  means = resp.T @ x64 / nk[:, None]
  compute = {
    'full': mixture._gaussian_mixture._estimate_gaussian_covariances_full,
    'diag': mixture._gaussian_mixture._estimate_gaussian_covariances_diag,
    'spherical': mixture._gaussian_mixture._estimate_gaussian_covariances_spherical,
  }[covariance_type]
  return nk / len(x64), means, compute(resp, x64, nk, means, reg_covar)


def _min_std(covariances, covariance_type):
  c = np.asarray(covariances, np.float64)
  if covariance_type == 'full':
    return float(np.sqrt(max(np.linalg.eigvalsh(c)[:, 0].min(), 0.0)))
  return float(np.sqrt(c.min()))


def _resolved(x, covariances, covariance_type):
  """float32 coordinates resolve every component to 1e-3 of its width (else float32's limit, not ours)."""
  return _min_std(covariances, covariance_type) >= 1e3 * float(np.finfo(np.float32).eps) * float(np.abs(x).max())


def _max_condition(covariances):
  eigenvalues = np.linalg.eigvalsh(np.asarray(covariances, np.float64))
  if (eigenvalues[:, 0] <= 0).any():
    return np.inf
  return float((eigenvalues[:, -1] / eigenvalues[:, 0]).max())


@pytest.mark.parametrize('covariance_type', ['full', 'diag', 'spherical'])
def test_gmm_lower_bound_and_responsibilities_as_sklearn(covariance_type):
  k, n_iter = 3, 3

  @examples(15)
  @hypothesis.given(problem=gmm_problems())
  def check(problem):
    x, labels = problem
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(0)
    # Collapsed components get a width of 10% of the data's spread (sklearn's reg_covar is absolute).
    reg_covar = float(1e-2 * centred.var(0).mean() + 1e-6)
    # Both start from the same float32 numbers (the means rounded where the data are).
    weights, means, covariances = (
      np.asarray(a, np.float32) for a in _initial_parameters(centred, labels, k, covariance_type, reg_covar)
    )
    means = (means + x64.mean(0)).astype(np.float32)
    start = gmm.make_params(weights, means, covariances, covariance_type)
    if covariance_type == 'full':  # float32 Cholesky factors resolve eigenvalues down to eps * largest only
      hypothesis.assume(_max_condition(covariances) < 1e3)
    hypothesis.assume(_resolved(x, covariances, covariance_type))
    weights, means, covariances = (a.astype(np.float64) for a in (weights, means, covariances))
    weights, means = weights / weights.sum(), means - x64.mean(0)  # sklearn checks the sum to 1e-8
    if covariance_type == 'full':
      precisions = np.linalg.inv(covariances)
      precisions = (precisions + np.swapaxes(precisions, 1, 2)) / 2
    else:
      precisions = 1.0 / covariances
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # tol=0: not converged on purpose
      history = []
      for m in range(1, n_iter + 1):  # the lower bound after each iteration
        last = mixture.GaussianMixture(
          k,
          covariance_type=covariance_type,
          reg_covar=reg_covar,
          tol=0.0,
          max_iter=m,
          weights_init=weights,
          means_init=means,
          precisions_init=precisions,
        ).fit(centred)
        history.append(last.lower_bound_)
    if covariance_type == 'full':
      hypothesis.assume(_max_condition(last.covariances_) < 1e3)
    hypothesis.assume(_resolved(x, last.covariances_, covariance_type))
    ours = gmm.fit_gmm(
      None, x, k, covariance_type=covariance_type, init_params=start, tol=0.0, max_iter=n_iter, reg_covar=reg_covar
    )
    np.testing.assert_allclose(np.asarray(ours.lower_bound_history), history, atol=1e-3, rtol=1e-5)
    # Responsibilities at the common start (the fitted float32 means are rounded where the data lie,
    # which moves responsibilities of components as narrow as that rounding).
    log_prob = mixture._gaussian_mixture._estimate_log_gaussian_prob(
      centred,
      means,
      mixture._gaussian_mixture._compute_precision_cholesky(covariances, covariance_type),
      covariance_type,
    ) + np.log(weights)
    expected = np.exp(log_prob - scipy.special.logsumexp(log_prob, axis=1, keepdims=True))
    np.testing.assert_allclose(gmm.predict_proba(x, start, covariance_type), expected, atol=1e-4)

  check()


@pytest.mark.filterwarnings('ignore:invalid value encountered in divide:RuntimeWarning')  # sklearn, all rows equal
@examples(30)
@hypothesis.given(x=point_sets(), n_components=st.integers(1, D))
def test_pca_as_sklearn(x, n_components):
  x64 = x.astype(np.float64)
  ref = decomposition.PCA(n_components, svd_solver='full', whiten=True).fit(x64)
  ours = preprocessing.fit_pca(x, n_components)
  variances = np.asarray(ours.explained_variance, np.float64)
  top = max(ref.explained_variance_[0], np.finfo(np.float64).tiny)
  assert (variances >= 0).all()
  np.testing.assert_allclose(variances, ref.explained_variance_, rtol=1e-3, atol=1e-5 * top)
  # Axes and whitened coordinates where float32 resolves them: variance not negligible, and
  # separated from the other axes' (the data's own variances, not only the n_components kept).
  all_variances = decomposition.PCA(svd_solver='full').fit(x64).explained_variance_
  z = np.asarray(preprocessing.transform(ours, x, whiten=True), np.float64)
  z_ref = ref.transform(x64)
  for i in range(n_components):
    lam = all_variances[i]
    gaps = np.abs(np.delete(all_variances, i) - lam)
    if lam < 1e-4 * top or (gaps.size and gaps.min() < 1e-2 * top):
      continue
    assert abs(np.dot(np.asarray(ours.components[i], np.float64), ref.components_[i])) == pytest.approx(1.0, abs=1e-4)
    sign = np.sign(np.dot(z[:, i], z_ref[:, i])) or 1.0
    np.testing.assert_allclose(sign * z[:, i], z_ref[:, i], atol=1e-3)
  assert np.isfinite(z).all()
