"""The shared evaluation protocol: cluster features, match clusters to classes, score.

Protocols (``protocol`` in the results records):
  * ``'all'``: fit and score on the same images (train+test), as MiCE and
    most deep-clustering papers do;
  * ``'train->test'``: fit on train, predict and score test.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax import metrics
from unsupervised_jax.clustering import gmm as gmm_lib
from unsupervised_jax.clustering import kmeans as kmeans_lib

CLUSTERING_METHODS = ('kmeans', 'gmm')


class ClusteringOutcome(NamedTuple):
  """``scores`` ({'acc', 'nmi', 'ari'}), ``predictions [N]`` and the fitted ``model`` result."""
  scores: Dict[str, float]
  predictions: np.ndarray
  model: Any


def fit_clustering(key: jax.Array, features, n_clusters: int, method: str, options: Dict[str, Any]):
  """Fits the library's K-means or GMM on ``features [N, D]``; returns its result NamedTuple."""
  if method == 'kmeans':
    return kmeans_lib.kmeans(key, features, n_clusters, **options)
  if method == 'gmm':
    return gmm_lib.fit_gmm(key, features, n_clusters, **options)
  raise ValueError(f'unknown clustering method {method!r}; known: {CLUSTERING_METHODS}.')


def predict_clusters(model, features, method: str, options: Dict[str, Any]) -> np.ndarray:
  """Cluster index ``[N]`` of new ``features [N, D]`` under a fitted model."""
  if method == 'kmeans':
    return np.asarray(kmeans_lib.predict(features, model.centers))
  return np.asarray(gmm_lib.predict(features, model.params, options.get('covariance_type', 'full')))


def cluster_and_score(key: jax.Array, fit_features, fit_labels, n_clusters: int, method: str = 'kmeans',
                      options: Optional[Dict[str, Any]] = None, eval_features=None,
                      eval_labels=None) -> ClusteringOutcome:
  """Fits a clustering on ``fit_features`` and scores it.

  Scores the fitted points against ``fit_labels`` (protocol ``'all'``) or,
  when ``eval_features`` / ``eval_labels`` are given, the predicted clusters of
  those (protocol ``'train->test'``).
  """
  options = dict(options or {})
  model = fit_clustering(key, fit_features, n_clusters, method, options)
  if eval_features is None:
    predictions, truth = np.asarray(model.labels), np.asarray(fit_labels)
  else:
    predictions, truth = predict_clusters(model, eval_features, method, options), np.asarray(eval_labels)
  return ClusteringOutcome(metrics.clustering_scores(truth, predictions), predictions, model)


# ---------------------------------------------------------------------------
# Representations: kNN and linear-probe accuracy, the embedding figure.


def knn_accuracy(train_features, train_labels, test_features, test_labels, *, k: int = 200,
                 temperature: float = 0.07, num_classes: Optional[int] = None, block_size: int = 1024) -> float:
  """Weighted kNN accuracy on cosine similarity (the MoCo / InstDisc CIFAR protocol).

  Each test point votes with its ``k`` most similar training points, weighted
  by ``exp(similarity / temperature)``.
  """
  train = jnp.asarray(train_features, jnp.float32)
  train = train / jnp.linalg.norm(train, axis=1, keepdims=True).clip(1e-12)
  train_labels = jnp.asarray(train_labels)
  num_classes = int(num_classes or int(np.max(train_labels)) + 1)
  k = min(k, train.shape[0])

  test = jnp.asarray(test_features, jnp.float32)
  n = test.shape[0]
  block_size = min(block_size, n)

  @jax.jit  # the data are arguments, not constants baked into the program (MNIST codes: 9.2-9.6 -> 6.1-6.5 s)
  def predict(test, start, train, train_labels):
    block = jax.lax.dynamic_slice_in_dim(test, start, block_size)
    block = block / jnp.linalg.norm(block, axis=1, keepdims=True).clip(1e-12)
    similarity, neighbours = jax.lax.top_k(block @ train.T, k)
    votes = jax.nn.one_hot(train_labels[neighbours], num_classes) * jnp.exp(similarity / temperature)[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=1)

  predictions = np.empty(n, np.int32)
  for start in range(0, n, block_size):
    start = min(start, n - block_size)  # the last block shifted back (overlap: same values): one program
    predictions[start:start + block_size] = np.asarray(predict(test, start, train, train_labels))
  return float(np.mean(predictions == np.asarray(test_labels)))


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, *, steps: int = 500,
                          learning_rate: float = 0.05, weight_decay: float = 1e-4) -> float:
  """Accuracy of a softmax regression trained (full batch, Adam) on frozen, standardised features."""
  train = np.asarray(train_features, np.float32)
  mean, std = train.mean(0), train.std(0) + 1e-6
  train = jnp.asarray((train - mean) / std)
  test = jnp.asarray((np.asarray(test_features, np.float32) - mean) / std)
  labels = jnp.asarray(train_labels)
  num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
  params = (jnp.zeros((train.shape[1], num_classes)), jnp.zeros(num_classes))

  def loss(params, train, labels):
    logits = train @ params[0] + params[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit  # the data are arguments, as in knn_accuracy
  def fit(params, train, labels):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss)(params, train, labels)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params

  params = fit(params, train, labels)
  predictions = np.asarray(jnp.argmax(test @ params[0] + params[1], axis=1))
  return float(np.mean(predictions == np.asarray(test_labels)))


def tsne_figure(features, labels, path, *, max_points: int = 5000, seed: int = 0, title: str = ''):
  """2-D t-SNE (scikit-learn) of up to ``max_points`` features coloured by label, saved as PNG."""
  from sklearn import manifold

  from unsupervised_jax import plots

  rng = np.random.default_rng(seed)
  features = np.asarray(features)
  keep = rng.choice(len(features), min(max_points, len(features)), replace=False)
  points = manifold.TSNE(2, init='pca', random_state=seed).fit_transform(features[keep])
  return plots.scatter(points, np.asarray(labels)[keep], path, title=title)
