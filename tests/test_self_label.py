import jax
import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax import evaluation
from unsupervised_jax import metrics
from unsupervised_jax.methods import moco
from unsupervised_jax.methods import self_label
from unsupervised_jax.training import contract
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
  out = self_label.neighbour_agreement(codes, assignments, k=4)
  np.testing.assert_allclose(out, _numpy_agreement(codes, assignments, 4), atol=1e-6)


def test_select_confident_keeps_the_top_fraction_of_every_cluster():
  assignments = np.array([0, 0, 0, 0, 1, 1, 2])
  confidence = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.0])
  chosen = self_label.select_confident(assignments, confidence, 0.5)
  np.testing.assert_array_equal(chosen, [1, 3, 5, 6])  # 2 of 4, 1 of 2, and at least 1 of the singleton


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'steps': -1}, 'self_label_steps'),
    ({'fraction': 0}, 'self_label_fraction'),
    ({'fraction': 1.5}, 'self_label_fraction'),
    ({'neighbors': 0}, 'self_label_neighbors'),
    ({'learning_rate': 0}, 'self_label_learning_rate'),
    ({'threshold': 1.0}, 'self_label_threshold'),
  ],
)
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

  encoder = moco.moco(
    moco.MoCoConfig(queue_size=64), loop.TrainConfig(batch_size=64), contract.DataInfo.of(split.images)
  )
  config = self_label.SelfLabelConfig(steps=150)
  refiner = self_label.self_label(
    config, encoder.backbone, encoder.init(jax.random.key(1), split.images[:1]).params, 10
  )
  state = loop.train(
    refiner,
    refiner.init(jax.random.key(2), split.images[:1]),
    self_label.pseudo_labelled(config, split.images, assignments, chosen),
    loop.TrainConfig(num_steps=150, batch_size=64, log_every=50, checkpoint_every=150, progress=False),
    tmp_path,
    key=jax.random.key(2),
  )
  predictions = np.asarray(jax.jit(refiner.assign)(state, split.images))
  assert predictions.shape == (len(split.images),)

  assert metrics.cluster_accuracy(split.labels, predictions) > start_acc + 0.015


def test_online_targets_take_sure_predictions_and_ignore_the_rest():
  images = data.load('digits', 'all').images[:4]
  encoder = moco.moco(moco.MoCoConfig(queue_size=64), loop.TrainConfig(batch_size=64), contract.DataInfo.of(images))
  config = self_label.SelfLabelConfig(steps=10, threshold=0.9)
  refiner = self_label.self_label(config, encoder.backbone, encoder.init(jax.random.key(0), images[:1]).params, 10)
  params = refiner.init(jax.random.key(1), images[:1]).params
  model = self_label.Classifier(encoder.backbone.module, 10)
  labels, confident = np.array([1, 2, 5, 6], np.int32), np.array([True, False, True, False])
  x = images.astype(np.float32) / 255
  for bias, expected_targets, expected_weights in (
    (0.0, None, [1, 0, 1, 0]),  # uniform 0.1: not sure
    (30.0, [1, 3, 5, 3], [1, 1, 1, 1]),
  ):  # sure of class 3
    head = {'kernel': np.zeros_like(params['head']['kernel']), 'bias': np.eye(10, dtype=np.float32)[3] * bias}
    targets, weights = self_label.targets(model, 0.9, dict(params, head=head), x, labels, confident)
    np.testing.assert_array_equal(weights, expected_weights)
    if expected_targets is not None:
      np.testing.assert_array_equal(targets, expected_targets)
  dataset = self_label.pseudo_labelled(config, images, labels, np.array([0, 2]))
  assert len(dataset['images']) == 4 and dataset['confident'].tolist() == [True, False, True, False]
  offline = self_label.SelfLabelConfig(steps=10)
  assert self_label.pseudo_labelled(offline, images, labels, np.array([0, 2]))['labels'].tolist() == [1, 5]
