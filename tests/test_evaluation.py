import jax
import numpy as np
import pytest
from sklearn import datasets
from sklearn import linear_model

from unsupervised_jax import augment
from unsupervised_jax import evaluation
from unsupervised_jax.models import autoencoder as ae_models


def _reference_knn(train, train_labels, test, k, temperature, num_classes):
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  predictions = []
  for row in test @ train.T:
    neighbours = np.argsort(-row)[:k]
    votes = np.zeros(num_classes)
    np.add.at(votes, train_labels[neighbours], np.exp(row[neighbours] / temperature))
    predictions.append(votes.argmax())
  return np.array(predictions)


def test_knn_accuracy_matches_numpy_reference():
  rng = np.random.default_rng(0)
  train, test = rng.normal(size=(300, 8)), rng.normal(size=(50, 8))
  train_labels = rng.integers(0, 4, 300)
  test_labels = rng.integers(0, 4, 50)
  expected = np.mean(_reference_knn(train, train_labels, test, 20, 0.07, 4) == test_labels)
  assert evaluation.knn_accuracy(
    train, train_labels, test, test_labels, k=20, num_classes=4, block_size=16
  ) == pytest.approx(expected)


def test_linear_probe_close_to_sklearn_logistic_regression():
  x, y = datasets.load_digits(return_X_y=True)
  train, test = x[:1200], x[1200:]
  ours = evaluation.linear_probe_accuracy(train, y[:1200], test, y[1200:])
  mean, std = train.mean(0), train.std(0) + 1e-6
  ref = (
    linear_model.LogisticRegression(max_iter=2000)
    .fit((train - mean) / std, y[:1200])
    .score((test - mean) / std, y[1200:])
  )
  assert ours > 0.9 and abs(ours - ref) < 0.03


def test_affine_warp_identity_and_flip():
  image = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
  identity = np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32)
  np.testing.assert_allclose(augment.affine_warp(image, identity), image, atol=1e-6)
  mirror = np.array([[1.0, 0, 0], [0, -1.0, 0]], np.float32)
  np.testing.assert_allclose(augment.affine_warp(image, mirror), image[:, ::-1], atol=1e-6)


@pytest.mark.parametrize('view', [augment.digits_view, augment.natural_view])
def test_views_keep_shape_range_and_depend_on_the_key(view):
  image = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
  a = np.asarray(view(jax.random.key(0), image))
  b = np.asarray(view(jax.random.key(0), image))
  c = np.asarray(view(jax.random.key(1), image))
  assert a.shape == image.shape and a.min() >= 0 and a.max() <= 1
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-3


def test_conv_autoencoder_shapes():
  model = ae_models.ConvAutoencoder((28, 28, 1), latent_dim=10)
  x = np.zeros((2, 28, 28, 1), np.float32)
  params = model.init(jax.random.key(0), x)
  assert model.apply(params, x).shape == x.shape
  assert model.apply(params, x, method='encode').shape == (2, 10)
