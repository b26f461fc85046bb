"""Clustering metrics: accuracy under Hungarian matching, NMI and ARI.

All functions take label vectors of the same length ``[N]`` (integers, strings,
anything ``np.unique`` sorts) and run on
the host in float64 (they are evaluation code, called once per evaluation, and
the Hungarian matching needs scipy anyway). The definitions are those of
scikit-learn (NMI with arithmetic normalisation), which the tests check to 1e-6.
"""

from __future__ import annotations

from typing import Dict
from typing import Hashable
from typing import NamedTuple

import numpy as np
from scipy import optimize


class Contingency(NamedTuple):
  """Counts of (true class, predicted cluster) pairs.

  Attributes:
    table: ``[C, K]`` int64, ``table[i, j]`` = #samples of class ``classes[i]``
      put in cluster ``clusters[j]``.
    classes: ``[C]`` the sorted distinct true labels.
    clusters: ``[K]`` the sorted distinct predicted labels.
  """

  table: np.ndarray
  classes: np.ndarray
  clusters: np.ndarray


def _as_labels(y_true, y_pred):
  y_true = np.asarray(y_true)
  y_pred = np.asarray(y_pred)
  if y_true.ndim != 1 or y_pred.ndim != 1:
    raise ValueError(f'labels must be 1-D, got shapes {y_true.shape} and {y_pred.shape}.')
  if y_true.shape != y_pred.shape:
    raise ValueError(f'y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}.')
  if y_true.size == 0:
    raise ValueError('labels are empty: need at least one sample to score a clustering.')
  return y_true, y_pred


def contingency_matrix(y_true, y_pred) -> Contingency:
  """Contingency table of true classes (rows) against predicted clusters (columns)."""
  y_true, y_pred = _as_labels(y_true, y_pred)
  classes, class_idx = np.unique(y_true, return_inverse=True)
  clusters, cluster_idx = np.unique(y_pred, return_inverse=True)
  table = np.zeros((classes.size, clusters.size), np.int64)
  np.add.at(table, (class_idx, cluster_idx), 1)
  return Contingency(table, classes, clusters)


def match_clusters(y_true, y_pred) -> Dict[Hashable, Hashable]:
  """Hungarian matching: ``{cluster: class}`` maximising the matched samples.

  Keys and values are the labels as given, as Python scalars (``int`` for
  integer labels, ``str`` for strings). With more clusters than classes the
  surplus clusters stay unmatched (absent from the dict); with fewer, some
  classes get no cluster.
  """
  table, classes, clusters = contingency_matrix(y_true, y_pred)
  rows, cols = optimize.linear_sum_assignment(table, maximize=True)
  return {clusters[c].item(): classes[r].item() for r, c in zip(rows, cols)}


def cluster_accuracy(y_true, y_pred) -> float:
  """Fraction of samples whose cluster maps to their class under the best one-to-one matching."""
  table = contingency_matrix(y_true, y_pred).table
  rows, cols = optimize.linear_sum_assignment(table, maximize=True)
  return float(table[rows, cols].sum() / table.sum())


def matched_confusion(y_true, y_pred) -> Contingency:
  """The contingency table with each class's matched cluster in its column: a confusion matrix.

  Columns follow the Hungarian matching of :func:`match_clusters`: column ``i``
  is the cluster matched to ``classes[i]`` (its diagonal is what
  :func:`cluster_accuracy` counts); clusters left unmatched follow, and a
  class left without a cluster gets an all-zero column. ``clusters[j]`` names
  column ``j``'s cluster, -1 for such a zero column.
  """
  table, classes, clusters = contingency_matrix(y_true, y_pred)
  rows, cols = optimize.linear_sum_assignment(table, maximize=True)
  column_of_class = np.full(classes.size, -1)
  column_of_class[rows] = cols
  unmatched = np.setdiff1d(np.arange(clusters.size), cols)
  order = np.concatenate([column_of_class, unmatched])
  padded = np.concatenate([table, np.zeros((classes.size, 1), table.dtype)], axis=1)  # column -1: zeros
  named = np.concatenate([clusters, [-1]])
  return Contingency(padded[:, order], classes, named[order])


def largest_confusions(confusion: Contingency, top: int = 3) -> str:
  """``'795 of class 7 in the cluster of 2; ...'``: the ``top`` largest off-diagonal counts.

  Args:
    confusion: a :func:`matched_confusion`. Only matched clusters are named (a
      surplus cluster is no class's cluster).
  """
  table, classes, _ = confusion
  off = table[:, : classes.size].copy()
  np.fill_diagonal(off, 0)
  order = np.argsort(-off, axis=None, kind='stable')[:top]
  parts = [
    f'{off.flat[i]} of class {classes[i // classes.size]} in the cluster of {classes[i % classes.size]}'
    for i in order
    if off.flat[i]
  ]
  return '; '.join(parts) or 'none'


def _entropy(counts: np.ndarray) -> float:
  counts = counts[counts > 0].astype(np.float64)
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> float:
  """Mutual information (nats) of a contingency table."""
  n = table.sum()
  nz_rows, nz_cols = np.nonzero(table)
  n_ij = table[nz_rows, nz_cols].astype(np.float64)
  a = table.sum(axis=1).astype(np.float64)[nz_rows]
  b = table.sum(axis=0).astype(np.float64)[nz_cols]
  mi = (n_ij / n) * (np.log(n_ij) + np.log(n) - np.log(a) - np.log(b))
  return float(max(mi.sum(), 0.0))


def nmi(y_true, y_pred) -> float:
  """Normalised mutual information, ``MI / mean(H(true), H(pred))`` (sklearn's 'arithmetic')."""
  table, classes, clusters = contingency_matrix(y_true, y_pred)
  if classes.size == clusters.size == 1:
    return 1.0  # Neither labelling splits the data: identical.
  mi = mutual_information(table)
  if mi == 0.0:
    return 0.0
  h_true = _entropy(table.sum(axis=1))
  h_pred = _entropy(table.sum(axis=0))
  return float(mi / max((h_true + h_pred) / 2, np.finfo(np.float64).eps))


def ari(y_true, y_pred) -> float:
  """Adjusted Rand index from the pair-confusion counts (exact integer arithmetic)."""
  table = contingency_matrix(y_true, y_pred).table
  n = int(table.sum())
  sum_squares = int((table.astype(object) ** 2).sum())
  class_sizes = [int(v) for v in table.sum(axis=1)]
  cluster_sizes = [int(v) for v in table.sum(axis=0)]
  # Ordered pairs of distinct samples: same class & same cluster (tp), same class
  # only (fn), same cluster only (fp), neither (tn). Python ints: tp * tn
  # overflows int64 already at N ~ 60k.
  tp = sum_squares - n
  fn = sum(s * s for s in class_sizes) - sum_squares
  fp = sum(s * s for s in cluster_sizes) - sum_squares
  tn = n * n - fp - fn - sum_squares
  if fn == 0 and fp == 0:
    return 1.0
  return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def clustering_scores(y_true, y_pred) -> Dict[str, float]:
  """``{'acc', 'nmi', 'ari'}`` of a clustering against true labels."""
  return {'acc': cluster_accuracy(y_true, y_pred), 'nmi': nmi(y_true, y_pred), 'ari': ari(y_true, y_pred)}
