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
