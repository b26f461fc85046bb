"""Clustering of features (K-means or GMM), matched to classes and scored (ACC, NMI, ARI).

Protocols (``protocol`` in the results records):
  * ``'all'``: fit and score on the same images (train+test), as MiCE and
    most deep-clustering papers do;
  * ``'train->test'``: fit on train, predict and score test.
"""

from __future__ import annotations

from typing import Any
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import numpy as np

from unsupervised_jax import metrics
from unsupervised_jax.clustering import gmm as gmm_lib
from unsupervised_jax.clustering import kmeans as kmeans_lib
from unsupervised_jax.settings import setting

CLUSTERING_METHODS = ('kmeans', 'gmm')


# The settings the pixel baselines and the evaluation of learned codes share, declared here once.
def n_clusters_setting():
  """``n_clusters``: K, 0 for the data set's number of classes."""
  return setting(0, 'Clusters K; 0 = the number of classes of the data set (required for unlabelled data).', minimum=0)


def covariance_type_setting():
  """``covariance_type``: the GMM's covariance parametrisation."""
  return setting('full', 'GMM covariance parametrisation.', choices=gmm_lib.COVARIANCE_TYPES)


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


def cluster_and_score(
  key: jax.Array,
  fit_features,
  fit_labels,
  n_clusters: int,
  method: str = 'kmeans',
  options: Optional[Dict[str, Any]] = None,
  eval_features=None,
  eval_labels=None,
) -> ClusteringOutcome:
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
