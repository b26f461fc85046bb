"""Evaluation: the one protocol (:mod:`.protocol`), clustering of features (:mod:`.clustering`),
kNN and linear probes (:mod:`.probes`), and the blocked neighbour search they share (:mod:`.neighbours`)."""

from unsupervised_jax.evaluation.clustering import CLUSTERING_METHODS
from unsupervised_jax.evaluation.clustering import ClusteringOutcome
from unsupervised_jax.evaluation.clustering import cluster_and_score
from unsupervised_jax.evaluation.clustering import fit_clustering
from unsupervised_jax.evaluation.clustering import predict_clusters
from unsupervised_jax.evaluation.probes import knn_accuracy
from unsupervised_jax.evaluation.probes import linear_probe_accuracy
from unsupervised_jax.evaluation.protocol import PROTOCOLS
from unsupervised_jax.evaluation.protocol import EvalConfig
from unsupervised_jax.evaluation.protocol import EvalData
from unsupervised_jax.evaluation.protocol import Evaluation
from unsupervised_jax.evaluation.protocol import eval_data
from unsupervised_jax.evaluation.protocol import evaluate

__all__ = [
  'CLUSTERING_METHODS',
  'ClusteringOutcome',
  'cluster_and_score',
  'fit_clustering',
  'predict_clusters',
  'knn_accuracy',
  'linear_probe_accuracy',
  'PROTOCOLS',
  'EvalConfig',
  'EvalData',
  'Evaluation',
  'eval_data',
  'evaluate',
]
