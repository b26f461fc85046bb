import jax
import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax import evaluation
from unsupervised_jax import metrics
from unsupervised_jax.methods import moco
from unsupervised_jax.methods import self_label
from unsupervised_jax.training import loop


def _numpy_agreement(codes, assignments, k):
  unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
  similarity = unit @ unit.T
  np.fill_diagonal(similarity, -np.inf)
  neighbours = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
  return (assignments[neighbours] == assignments[:, None]).mean(1)


def test_neighbour_agreement_matches_numpy_with_a_ragged_last_block():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(37, 5)).astype(np.float32)
  assignments = rng.integers(0, 3, size=37)
  out = self_label.neighbour_agreement(codes, assignments, k=4, block_size=16)  # blocks 0, 16, 21 (shifted)
  np.testing.assert_allclose(out, _numpy_agreement(codes, assignments, 4), atol=1e-6)


def test_select_confident_keeps_the_top_fraction_of_every_cluster():
  assignments = np.array([0, 0, 0, 0, 1, 1, 2])
  confidence = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.0])
  chosen = self_label.select_confident(assignments, confidence, 0.5)
  np.testing.assert_array_equal(chosen, [1, 3, 5, 6])  # 2 of 4, 1 of 2, and at least 1 of the singleton


@pytest.mark.parametrize('kwargs,match', [({'num_steps': 0}, 'num_steps'), ({'confident_fraction': 0}, 'fraction'),
                                          ({'confident_fraction': 1.5}, 'fraction'), ({'neighbors': 0}, 'neighbors'),
                                          ({'learning_rate': 0}, 'learning_rate')])
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    self_label.SelfLabelConfig(**kwargs).validate()


def test_self_labelling_beats_the_clustering_it_starts_from(tmp_path):
  # Pixel K-means on digits (~0.8 ACC) as the clustering; a MoCo encoder at its initialisation as the
  # network: fine-tuned on the clusters' confident halves, its arg-max must cluster better than K-means did.
  split = data.load('digits', 'all')
  pixels = data.as_float_features(split.images)
  assignments = np.asarray(evaluation.fit_clustering(jax.random.key(0), pixels, 10, 'kmeans', {'n_init': 3}).labels)
  start_acc = metrics.cluster_accuracy(split.labels, assignments)
  confidence = self_label.neighbour_agreement(pixels, assignments, k=10)
  chosen = self_label.select_confident(assignments, confidence, 0.5)
  assert metrics.cluster_accuracy(split.labels[chosen], assignments[chosen]) > start_acc + 0.05  # purer

  encoder = moco.MoCo(moco.MoCoConfig(queue_size=64), split.images.shape[1:], 64)
  refiner = self_label.SelfLabel(self_label.SelfLabelConfig(num_steps=150), encoder.model,
                                 encoder.init(jax.random.key(1)).params, split.images.shape[1:], 10, encoder.view)
  state = loop.train(refiner.method(), refiner.init(jax.random.key(2)),
                     {'images': split.images[chosen], 'labels': assignments[chosen].astype(np.int32)},
                     loop.LoopConfig(num_steps=150, batch_size=64, log_every=50, checkpoint_every=150, progress=False),
                     tmp_path)
  predictions = np.asarray(jax.jit(refiner.predict)(state.params, split.images))
  assert predictions.shape == (len(split.images),)

  assert metrics.cluster_accuracy(split.labels, predictions) > start_acc + 0.015
