"""The self-labelling stage: a trained method's clustering refined by fine-tuning its encoder
(:mod:`unsupervised_jax.methods.self_label`) on the confident part, then scored."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Dict
from typing import NamedTuple

import jax
import numpy as np

from unsupervised_jax import metrics
from unsupervised_jax import settings
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import self_label
from unsupervised_jax.training import loop


class Refinement(NamedTuple):
  """What :func:`refine` gives back."""

  scores: Dict[str, float]  # acc, nmi, ari of the refined clusters; pseudo_label_acc
  predictions: np.ndarray  # [M] int: the refined clusters of splits.score
  train_s: float  # seconds the fine-tuning trained, over every process that trained it (to its last log)
  earlier_s: float  # of which earlier processes' (a resumed fine-tuning's, or all of a reused one's)


def refine(
  method,
  state,
  evaluation: protocol.Evaluation,
  splits: protocol.EvalData,
  config: self_label.SelfLabelConfig,
  train: loop.TrainConfig,
  n_clusters: int,
  key: jax.Array,
  workdir,
  mesh,
) -> Refinement:
  """Refines ``evaluation``'s clustering of ``splits.cluster`` by self-labelling and scores it on ``splits.score``.

  The fine-tuning runs in ``<workdir>/<fingerprint>/``, one folder per
  settings and pseudo-labels (their hash), so a stale fine-tuning is never
  resumed and none is ever removed.

  Args:
    method: the trained method (needs a ``backbone``); ``state`` its trained state.
    evaluation: its evaluation (``assignments`` of ``splits.cluster``, ``cluster_codes``).
    key: the fine-tuning's key (head initialisation, batches, augmentations).

  Returns:
    A :class:`Refinement`: the scores (``acc``, ``nmi``, ``ari`` of the refined clusters and
    ``pseudo_label_acc``, the share of the confident examples whose cluster is their class under the
    matching of all clusters), the refined clusters ``[M]`` of ``splits.score``, and the fine-tuning's
    training seconds, in all and in earlier processes (a crash's, or those of a fine-tuning reused whole).
  """
  if not method.fine_tunable:
    raise ValueError(f'self-labelling needs a method with an encoder and augmentations; {method.name} has none.')
  assignments = np.asarray(evaluation.assignments, np.int32)
  confidence = self_label.neighbour_agreement(evaluation.cluster_codes, assignments, config.neighbors)
  chosen = self_label.select_confident(assignments, confidence, config.fraction)
  # What the fine-tuning learns from: its settings and the pseudo-labels themselves (another clustering
  # of the same codes gives other ones).
  fingerprint = hashlib.sha256(chosen.astype(np.int64).tobytes() + assignments[chosen].tobytes()).hexdigest()
  stage_settings = dict(settings.as_dict(config), pseudo_labels=fingerprint)
  folder = hashlib.sha256(json.dumps(stage_settings, sort_keys=True).encode()).hexdigest()[:12]
  workdir = pathlib.Path(workdir) / folder
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'settings.json').write_text(json.dumps(stage_settings, indent=2) + '\n')

  refiner = self_label.self_label(config, method.backbone, method.backbone.params(state), n_clusters)
  init_key, data_key = jax.random.split(key)
  stage_train = dataclasses.replace(  # its own length; drawn with replacement, whatever the method trained with
    train,
    num_steps=config.steps,
    num_epochs=0.0,
    sampling='replacement',
    checkpoint_every=min(train.checkpoint_every, config.steps),
    eval_every=0,
  )
  earlier_s = loop.trained_seconds(workdir)
  fine_tuned = loop.train(
    refiner,
    refiner.init(init_key, splits.cluster.images[:1]),
    self_label.pseudo_labelled(config, splits.cluster.images, assignments, chosen),
    stage_train,
    workdir,
    key=data_key,
  )
  predictions = np.asarray(protocol.mapper(refiner.assign, mesh)(fine_tuned, splits.score.images))
  scores = metrics.clustering_scores(np.asarray(splits.score.labels), predictions)
  # Purity of the pseudo-labels, a diagnostic: clusters matched to classes on all the clustered images.
  labels = np.asarray(splits.cluster.labels)
  mapping = metrics.match_clusters(labels, assignments)
  matched_class = np.array([mapping.get(cluster, -1) for cluster in range(int(assignments.max()) + 1)])
  scores['pseudo_label_acc'] = float(np.mean(matched_class[assignments[chosen]] == labels[chosen]))
  return Refinement(scores, predictions, loop.trained_seconds(workdir), earlier_s)
