"""The one evaluation of a trained method: its clusters scored (ACC, NMI, ARI), kNN and linear probe.

Clusters are the method's own (``Method.assign``: InfoGAN's categorical code,
MiCE's posterior) when it has them; otherwise K-means or a GMM on its codes
(``Method.embed``), optionally after N2D's UMAP step. kNN and the linear probe
always go train -> test on the codes.
"""

from __future__ import annotations

import dataclasses
from typing import Dict
from typing import NamedTuple
from typing import Optional

import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import manifold
from unsupervised_jax import metrics
from unsupervised_jax import settings
from unsupervised_jax.evaluation import clustering
from unsupervised_jax.evaluation import probes
from unsupervised_jax.settings import setting
from unsupervised_jax.training import parallel

PROTOCOLS = ('all', 'train->test')


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How the codes of a trained method are clustered and probed (the evaluation flags)."""

  cluster_method: str = setting(
    'gmm',
    'Clustering of the learned codes (when the method does not assign its own).',
    choices=clustering.CLUSTERING_METHODS,
  )
  covariance_type: str = clustering.covariance_type_setting()
  cluster_n_init: int = setting(
    10,
    'Clustering restarts (K-means: k-means++ seedings; GMM: K-means-initialised EM '
    'runs); the best objective is kept. One GMM run on 12-d autoencoder codes swings '
    'ACC by ~0.1 on tiny numerical differences; restarts make it stable.',
    minimum=1,
  )
  manifold: str = setting(
    'none', "Manifold step on the codes before clustering ('umap': N2D).", choices=manifold.MANIFOLDS
  )
  manifold_neighbors: int = setting(20, 'UMAP neighbours.', minimum=2)
  n_clusters: int = clustering.n_clusters_setting()
  knn_k: int = setting(200, 'Neighbours of the kNN accuracy.', minimum=1)

  def cluster_options(self) -> Dict[str, object]:
    """The options of :func:`unsupervised_jax.evaluation.clustering.fit_clustering`."""
    options = {'n_init': self.cluster_n_init}
    if self.cluster_method == 'gmm':
      options['covariance_type'] = self.covariance_type
    return options

  def validate(self, num_examples: Optional[int] = None, num_train: Optional[int] = None):
    """Raises ValueError (one line) on a bad setting, more clusters than the ``num_examples`` clustered, or more
    neighbours than the ``num_train`` training images the kNN probe votes with."""
    settings.check(self)
    if num_examples is not None and self.n_clusters > num_examples:
      raise ValueError(f'n_clusters={self.n_clusters} exceeds the {num_examples} images clustered.')
    if num_train is not None and self.knn_k > num_train:
      raise ValueError(f'knn_k={self.knn_k} exceeds the {num_train} training images the kNN probe votes with.')


class EvalData(NamedTuple):
  """The splits of a protocol: ``train`` and ``test`` (kNN, linear probe), ``cluster`` (the images whose
  codes are clustered; the training set) and ``score`` (the images whose clusters are scored)."""

  train: data.Dataset
  test: data.Dataset
  cluster: data.Dataset
  score: data.Dataset
  protocol: str


def eval_data(train: data.Dataset, test: data.Dataset, protocol: str) -> EvalData:
  """``'all'``: cluster and score train+test (as MiCE); ``'train->test'``: cluster train, score test."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {", ".join(PROTOCOLS)}; got {protocol!r}.')
  if protocol == 'all':
    both = data.Dataset(np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels]))
    return EvalData(train, test, both, both, protocol)
  return EvalData(train, test, train, test, protocol)


class Evaluation(NamedTuple):
  """``scores`` ({'acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'}); ``predictions [M]``, the scored clusters of
  ``EvalData.score``; ``assignments [N]``, the clusters of ``EvalData.cluster``; ``cluster_codes [N, D]``."""

  scores: Dict[str, float]
  predictions: np.ndarray
  assignments: np.ndarray
  cluster_codes: np.ndarray


def mapper(fn, mesh, batch_size: int = 1024):
  """``apply(state, images [N, ...]) -> [N, ...]``: ``fn(state, batch)`` over the data, split across devices."""
  return parallel.data_parallel_map(fn, mesh, batch_size=max(1, batch_size // mesh.size))


def evaluate(method, state, splits: EvalData, config: EvalConfig, n_clusters: int, key: jax.Array, mesh) -> Evaluation:
  """Scores a trained ``method`` (:class:`unsupervised_jax.training.contract.Method`) at ``state``.

  Args:
    key: the clustering's key (K-means / GMM initialisation).
    mesh: devices that embed (and assign) the images.
  """
  embed = mapper(method.embed, mesh)
  train_codes = np.asarray(embed(state, splits.train.images))
  test_codes = np.asarray(embed(state, splits.test.images))
  cluster_codes = np.concatenate([train_codes, test_codes]) if splits.protocol == 'all' else train_codes
  if method.assigns:
    assign = mapper(method.assign, mesh)
    assignments = np.asarray(assign(state, splits.cluster.images))
    predictions = assignments if splits.protocol == 'all' else np.asarray(assign(state, splits.score.images))
    scores = metrics.clustering_scores(splits.score.labels, predictions)
  else:
    outcome = cluster_codes_and_score(
      cluster_codes, splits, None if splits.protocol == 'all' else test_codes, config, n_clusters, key
    )
    scores, predictions, assignments = dict(outcome.scores), outcome.predictions, np.asarray(outcome.model.labels)
  scores['knn_acc'] = probes.knn_accuracy(
    train_codes, splits.train.labels, test_codes, splits.test.labels, k=config.knn_k
  )
  scores['linear_acc'] = probes.linear_probe_accuracy(train_codes, splits.train.labels, test_codes, splits.test.labels)
  return Evaluation(scores, predictions, assignments, cluster_codes)


def cluster_codes_and_score(
  cluster_codes, splits: EvalData, test_codes, config: EvalConfig, n_clusters: int, key: jax.Array
) -> clustering.ClusteringOutcome:
  """K-means / GMM (after the optional manifold step) on ``cluster_codes``, scored on ``splits.score``."""
  eval_codes = test_codes
  mapping = manifold.fit(
    config.manifold, cluster_codes, n_clusters, n_neighbors=config.manifold_neighbors, seed=_seed_of(key)
  )
  if mapping is not None:
    cluster_codes = mapping.fit_codes
    eval_codes = None if eval_codes is None else mapping.transform(eval_codes)
  return clustering.cluster_and_score(
    key,
    cluster_codes,
    splits.cluster.labels,
    n_clusters,
    config.cluster_method,
    config.cluster_options(),
    eval_codes,
    None if eval_codes is None else splits.score.labels,
  )


def _seed_of(key: jax.Array) -> int:
  """A 32-bit integer seed for non-JAX code (UMAP) from a JAX key (``key(s)`` gives ``s``)."""
  return int(np.asarray(jax.random.key_data(key)).ravel()[-1])


def progress(
  method, state, splits: EvalData, n_clusters: int, key: jax.Array, knn_k: int, mesh, monitor_images: int = 256
) -> Dict[str, float]:
  """A cheap signal during training (no manifold step): ACC, NMI and ARI of K-means (one start; or the
  method's own clusters) on the test images' codes, ``cluster_{acc,nmi,ari}_test``; ``knn_acc`` and
  ``linear_acc`` (train codes -> test codes); and the method's ``monitor`` on the first ``monitor_images``
  test images."""
  embed = mapper(method.embed, mesh)
  codes = np.asarray(embed(state, splits.test.images))
  if method.assigns:
    clusters = np.asarray(mapper(method.assign, mesh)(state, splits.test.images))
  else:
    clusters = np.asarray(clustering.fit_clustering(key, codes, n_clusters, 'kmeans', {'n_init': 1}).labels)
  scores = metrics.clustering_scores(splits.test.labels, clusters)
  train_codes = np.asarray(embed(state, splits.train.images))
  values = {
    **{f'cluster_{name}_test': value for name, value in scores.items()},
    'knn_acc': probes.knn_accuracy(train_codes, splits.train.labels, codes, splits.test.labels, k=knn_k),
    'linear_acc': probes.linear_probe_accuracy(train_codes, splits.train.labels, codes, splits.test.labels),
  }
  if method.monitor is not None:
    values.update(method.monitor(state, splits.test.images[:monitor_images]))
  return values
