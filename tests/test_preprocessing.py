import numpy as np
import pytest
from sklearn import datasets
from sklearn import decomposition

from unsupervised_jax import preprocessing


def test_pca_matches_sklearn():
  x = (datasets.load_digits().data / 16).astype(np.float32)
  ours = preprocessing.fit_pca(x, 10)
  ref = decomposition.PCA(10, svd_solver='full').fit(x)
  np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-3)
  # Same axes up to sign.
  np.testing.assert_allclose(np.abs(np.sum(np.asarray(ours.components) * ref.components_, axis=1)), 1.0, atol=1e-3)
  z = np.asarray(preprocessing.transform(ours, x))
  np.testing.assert_allclose(np.abs(z), np.abs(ref.transform(x)), atol=2e-3)
  zw = np.asarray(preprocessing.transform(ours, x, whiten=True))
  np.testing.assert_allclose(zw.var(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_pca_bad_components():
  with pytest.raises(ValueError, match='n_components'):
    preprocessing.fit_pca(np.zeros((5, 3), np.float32), 4)


@pytest.mark.parametrize('shape,n_components', [((3, 8), 7), ((1, 2), 2), ((1, 2), 1), ((4, 3), 4)])
def test_pca_more_components_than_min_samples_features_raises(shape, n_components):
  """Issue #22, case 6: no negative variances or NaN whitening; a ValueError naming the limit, as sklearn."""
  x = np.random.default_rng(0).random(shape).astype(np.float32)
  if shape[0] > 1:
    with pytest.raises(ValueError, match='min\\(n_samples, n_features\\)=3|min\\(n_samples, n_features\\)'):
      decomposition.PCA(n_components, svd_solver='full').fit(x)
  with pytest.raises(ValueError, match='min\\(n_samples, n_features\\)|at least 2 samples'):
    preprocessing.fit_pca(x, n_components)


def test_pca_rank_deficient_variances_nonnegative_and_whitening_finite():
  x = np.random.default_rng(0).random((3, 8)).astype(np.float32)
  ours = preprocessing.fit_pca(x, 3)  # rank 2 after centring
  ref = decomposition.PCA(3, svd_solver='full').fit(x.astype(np.float64))
  assert (np.asarray(ours.explained_variance) >= 0).all()
  np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=1e-4, atol=1e-6)
  zw = np.asarray(preprocessing.transform(ours, x, whiten=True))
  assert np.isfinite(zw).all()
  np.testing.assert_allclose(
    np.abs(zw[:, :2]),
    np.abs(ref.transform(x.astype(np.float64))[:, :2] / np.sqrt(ref.explained_variance_[:2])),
    atol=1e-4,
  )
  np.testing.assert_array_equal(zw[:, 2], 0.0)


def test_pca_whitening_zero_variance_direction_gives_zero():
  """Issue #22, case 7: sklearn returns [[-1, 0], [0, 0], [1, 0]]."""
  x = np.array([[0, 1], [1, 1], [2, 1]], np.float32)
  ours = preprocessing.fit_pca(x, 2)
  ref = decomposition.PCA(2, whiten=True).fit(x.astype(np.float64))
  zw = np.asarray(preprocessing.transform(ours, x, whiten=True))
  np.testing.assert_allclose(ref.transform(x.astype(np.float64)), [[-1, 0], [0, 0], [1, 0]], atol=1e-12)
  np.testing.assert_allclose(np.abs(zw), np.abs(ref.transform(x.astype(np.float64))), atol=1e-6)
  np.testing.assert_allclose(ours.explained_variance, [1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize('offset', [1e4, 1e6])
def test_pca_far_from_origin_matches_sklearn_float64(offset):
  rng = np.random.default_rng(3)
  x = (
    rng.normal(size=(200, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1]) @ np.linalg.qr(rng.normal(size=(5, 5)))[0] + offset
  ).astype(np.float32)
  ours = preprocessing.fit_pca(x, 5)
  ref = decomposition.PCA(5, svd_solver='full', whiten=True).fit(x.astype(np.float64))
  scale = ref.explained_variance_[0]
  np.testing.assert_allclose(ours.explained_variance, ref.explained_variance_, rtol=2e-3, atol=1e-6 * scale)
  np.testing.assert_allclose(np.abs(np.sum(np.asarray(ours.components) * ref.components_, axis=1)), 1.0, atol=1e-3)
  zw = np.asarray(preprocessing.transform(ours, x, whiten=True))
  np.testing.assert_allclose(np.abs(zw), np.abs(ref.transform(x.astype(np.float64))), atol=5e-3)


@pytest.mark.parametrize(
  'x,match',
  [
    (np.array([[0.0, np.nan], [1.0, 2.0]], np.float32), 'NaN or inf'),
    (np.zeros((3, 2, 2), np.float32), '2-D'),
    (np.zeros((3, 2), np.int32), 'floating point'),
  ],
)
def test_pca_bad_input_raises_before_compiling(x, match):
  with pytest.raises(ValueError, match=match):
    preprocessing.fit_pca(x, 1)
