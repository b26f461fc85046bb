import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from unsupervised_jax import metrics


@pytest.mark.parametrize('seed', range(30))
def test_agrees_with_sklearn_on_random_labelings(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 400))
  n_classes, n_clusters = int(rng.integers(1, 12)), int(rng.integers(1, 15))
  y_true = rng.integers(0, n_classes, n) * 3 - 2  # arbitrary label values
  y_pred = rng.integers(0, n_clusters, n)
  if seed % 3 == 0:  # partially correlated labelings, not only noise
    y_pred = np.where(rng.random(n) < 0.7, y_true + 5, y_pred)
  assert metrics.nmi(y_true, y_pred) == pytest.approx(sk_metrics.normalized_mutual_info_score(y_true, y_pred), abs=1e-6)
  assert metrics.ari(y_true, y_pred) == pytest.approx(sk_metrics.adjusted_rand_score(y_true, y_pred), abs=1e-6)


def _brute_force_accuracy(y_true, y_pred):
  """Best accuracy over all injective cluster->class maps (tiny cases only)."""
  import itertools

  classes, clusters = np.unique(y_true), np.unique(y_pred)
  best = 0
  if len(clusters) <= len(classes):
    for perm in itertools.permutations(classes, len(clusters)):
      mapping = dict(zip(clusters, perm))
      best = max(best, np.mean([mapping[p] == t for p, t in zip(y_pred, y_true)]))
  else:
    for perm in itertools.permutations(clusters, len(classes)):
      mapping = dict(zip(perm, classes))
      best = max(best, np.mean([mapping.get(p, None) == t for p, t in zip(y_pred, y_true)]))
  return best


@pytest.mark.parametrize('seed', range(15))
def test_accuracy_is_the_best_matching(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 40))
  y_true = rng.integers(0, int(rng.integers(1, 5)), n)
  y_pred = rng.integers(0, int(rng.integers(1, 6)), n)
  assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(_brute_force_accuracy(y_true, y_pred))


def test_accuracy_invariant_to_cluster_permutation_and_perfect_is_one():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 500)
  permuted = rng.permutation(10)[y]
  assert metrics.cluster_accuracy(y, permuted) == 1.0
  assert metrics.nmi(y, permuted) == pytest.approx(1.0)
  assert metrics.ari(y, permuted) == pytest.approx(1.0)


def test_more_clusters_than_classes_leaves_surplus_unmatched():
  y_true = np.array([0, 0, 1, 1])
  y_pred = np.array([0, 1, 2, 3])
  assert metrics.cluster_accuracy(y_true, y_pred) == 0.5
  assert len(metrics.match_clusters(y_true, y_pred)) == 2


def test_contingency_counts():
  table = metrics.contingency_matrix([0, 0, 1, 2], [5, 5, 5, 7]).table
  np.testing.assert_array_equal(table, [[2, 0], [1, 0], [0, 1]])
  np.testing.assert_array_equal(table, sk_metrics.cluster.contingency_matrix([0, 0, 1, 2], [5, 5, 5, 7]))


def test_matched_confusion_puts_each_class_cluster_on_the_diagonal():
  rng = np.random.default_rng(2)
  y_true = rng.integers(0, 4, 500)
  relabel = np.array([3, 0, 2, 1, 4])  # class c -> cluster relabel[c]; some points to a surplus cluster 4
  y_pred = np.where(rng.random(500) < 0.8, relabel[y_true], rng.integers(0, 5, 500))
  table, classes, clusters = metrics.matched_confusion(y_true, y_pred)
  np.testing.assert_array_equal(clusters[:4], relabel[:4])
  assert clusters[4] == 4 and table.sum() == 500
  for c in range(4):  # numpy re-derivation of every count
    for j, cluster in enumerate(clusters):
      assert table[c, j] == np.sum((y_true == c) & (y_pred == cluster))
  assert np.trace(table) / 500 == pytest.approx(metrics.cluster_accuracy(y_true, y_pred))


def test_matched_confusion_gives_a_class_without_a_cluster_a_zero_column():
  table, _, clusters = metrics.matched_confusion([0, 0, 1, 1, 2, 2], [5, 5, 5, 5, 7, 7])
  np.testing.assert_array_equal(clusters, [5, -1, 7])
  np.testing.assert_array_equal(table, [[2, 0, 0], [2, 0, 0], [0, 0, 2]])


def test_largest_confusions_names_the_biggest_off_diagonal_counts():
  y_true = np.array([7] * 10 + [2] * 10 + [1] * 10)
  y_pred = np.array([0] * 6 + [1] * 4 + [1] * 9 + [2] + [2] * 10)  # 4 sevens and 1 two in wrong clusters
  confusion = metrics.matched_confusion(y_true, y_pred)
  assert (
    metrics.largest_confusions(confusion, top=2) == '4 of class 7 in the cluster of 2; 1 of class 2 in the cluster of 1'
  )
  assert metrics.largest_confusions(metrics.matched_confusion(y_true, y_true)) == 'none'


def test_ari_large_n_no_overflow():
  rng = np.random.default_rng(1)
  y_true = rng.integers(0, 10, 70_000)
  y_pred = np.where(rng.random(70_000) < 0.8, y_true, rng.integers(0, 10, 70_000))
  assert metrics.ari(y_true, y_pred) == pytest.approx(sk_metrics.adjusted_rand_score(y_true, y_pred), abs=1e-9)


@pytest.mark.parametrize(
  'y_true,y_pred,match', [([], [], 'empty'), ([0, 1], [0], 'differ in length'), ([[0]], [[0]], '1-D')]
)
def test_bad_labels(y_true, y_pred, match):
  with pytest.raises(ValueError, match=match):
    metrics.clustering_scores(np.asarray(y_true), np.asarray(y_pred))


def test_match_clusters_accepts_the_labels_the_other_metrics_accept():
  """Issue #22, case 8: string labels, as cluster_accuracy, nmi, ari and matched_confusion take them."""
  y_true, y_pred = ['cat', 'cat', 'dog'], ['x', 'y', 'y']
  assert metrics.match_clusters(y_true, y_pred) == {'x': 'cat', 'y': 'dog'}
  assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(2 / 3)
  assert metrics.nmi(y_true, y_pred) == pytest.approx(sk_metrics.normalized_mutual_info_score(y_true, y_pred))
  mapping = metrics.match_clusters([0, 0, 1, 1], [5, 5, 7, 7])
  assert mapping == {5: 0, 7: 1} and all(type(k) is int and type(v) is int for k, v in mapping.items())
