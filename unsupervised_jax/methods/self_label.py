"""Self-labelling: a clustering of learned codes refined by training a classifier on its confident part.

The second stage of SCAN (Van Gansbeke et al. 2020), on the shared core. A
method's codes are clustered (K-means / GMM, optionally after UMAP); the points
whose cluster most of their nearest neighbours in code space share are taken
as pseudo-labelled examples, and the method's own encoder, with a new linear
head of ``n_clusters`` outputs, is fine-tuned on them with cross entropy under
the method's augmentations. The classifier's arg-max over all images is the
refined clustering. Why it helps: the clustering of frozen codes cannot do
better than the codes' neighbourhoods (kNN accuracy bounds it), while the
fine-tuned network learns the clusters from the pixels of their clear
members and places the ambiguous ones with the decision boundary it learns.
With ``online_threshold`` > 0 the other images join the training as the
classifier grows sure of them (SCAN's own self-labelling, FixMatch's rule):
an image outside the confident set is trained towards the classifier's
prediction on its unaugmented self when that prediction's probability
exceeds the threshold, and ignored otherwise. No label is read anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Dict

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax import augment
from unsupervised_jax import settings
from unsupervised_jax.evaluation import neighbours
from unsupervised_jax.methods import base
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract


@dataclasses.dataclass(frozen=True)
class SelfLabelConfig:
  """The self-labelling stage's settings (flags ``--self_label_<name>``)."""

  steps: int = setting(
    0,
    'Refine the clustering by self-labelling (fine-tune the encoder with a cluster head on '
    'the confident pseudo-labels, cosine-decayed learning rate) for this many steps; 0 = off.',
    minimum=0,
  )
  fraction: float = setting(
    0.5, 'Share of each cluster kept as pseudo-labels, most confident first, in (0, 1].', above=0
  )
  neighbors: int = setting(20, 'Nearest neighbours (in code space) whose clusters vote for confidence.', minimum=1)
  threshold: float = setting(
    0.0,
    "The other images join, trained towards the classifier's own prediction, once "
    'its probability exceeds this (SCAN uses 0.99), in [0, 1); 0 = off.',
    minimum=0,
  )
  learning_rate: float = setting(1e-3, 'Adam learning rate of the fine-tuning.', above=0)

  PREFIX = 'self_label_'

  def validate(self):
    """Raises ValueError (one line, naming the flag) on a bad setting."""
    settings.check(self, self.PREFIX)
    if self.fraction > 1:
      raise ValueError(f'self_label_fraction must be in (0, 1], got {self.fraction}.')
    if not self.threshold < 1:
      raise ValueError(f'self_label_threshold must be in [0, 1), got {self.threshold}.')


def neighbour_agreement(codes, assignments, k: int) -> np.ndarray:
  """``[N]``: fraction of each point's ``k`` nearest neighbours (cosine, itself excluded) in its cluster.

  Args:
    codes: ``[N, D]`` features.
    assignments: ``[N]`` int cluster of every point.
  """
  assignments = np.asarray(assignments)
  _, indices = neighbours.cosine_top_k(codes, codes, min(k, len(assignments) - 1), exclude_self=True)
  return np.mean(assignments[indices] == assignments[:, None], axis=1).astype(np.float32)


def select_confident(assignments, confidence, fraction: float) -> np.ndarray:
  """Indices of the ``fraction`` most confident points of every cluster (at least one each), sorted.

  Per cluster rather than one global threshold, so a cluster with looser
  codes still has examples to learn from.
  """
  assignments, confidence = np.asarray(assignments), np.asarray(confidence)
  keep = []
  for cluster in np.unique(assignments):
    members = np.flatnonzero(assignments == cluster)
    order = members[np.argsort(-confidence[members], kind='stable')]
    keep.append(order[: max(1, int(round(fraction * len(members))))])
  return np.sort(np.concatenate(keep))


@flax.struct.dataclass
class SelfLabelState:
  """``step``; the classifier's ``params`` (``encoder`` and ``head``) and ``opt_state``."""

  step: jax.Array
  params: Any
  opt_state: Any


class Classifier(nn.Module):
  """A method's encoder, then ReLU and a linear head: ``[B, H, W, C]`` in [0, 1] -> logits ``[B, n_clusters]``."""

  encoder: nn.Module
  n_clusters: int
  feature_method: str = 'features'

  @nn.compact
  def __call__(self, x):
    codes = getattr(self.encoder, self.feature_method)(x)
    return nn.Dense(self.n_clusters, name='head')(nn.relu(codes))


def targets(model: Classifier, threshold: float, params, images, labels, confident):
  """``(targets [B] int32, weights [B])``: the pseudo-label where ``confident``; elsewhere the classifier's
  prediction on the unaugmented float ``images [B, H, W, C]`` when its probability exceeds ``threshold``
  (weight 1), else weight 0 (FixMatch's rule, SCAN's self-labelling). ``threshold`` 0: confident ones only."""
  if not threshold:
    return labels, confident.astype(jnp.float32)
  probabilities = jax.nn.softmax(jax.lax.stop_gradient(model.apply({'params': params}, images)))
  sure = jnp.max(probabilities, axis=1) > threshold
  predicted = jnp.where(confident, labels, jnp.argmax(probabilities, axis=1).astype(labels.dtype))
  return predicted, (confident | sure).astype(jnp.float32)


def self_label(
  config: SelfLabelConfig, backbone: contract.Backbone, encoder_params, n_clusters: int
) -> contract.Method:
  """The fine-tuning as a :class:`~unsupervised_jax.training.contract.Method` whose ``assign`` is the refined
  clustering.

  Its data set is :func:`pseudo_labelled` (a pytree ``{'images', 'labels', 'confident'}``):
  with ``threshold`` 0 the confident examples only; otherwise every image, the
  unconfident ones trained towards the classifier's own sure predictions.

  Args:
    config: the stage's settings (``steps`` >= 1).
    backbone: the trained method's encoder and augmentation.
    encoder_params: its trained parameters (copied into the classifier).
    n_clusters: the head's outputs.

  Raises:
    ValueError: a bad setting.
  """
  config.validate()
  if config.steps < 1:
    raise ValueError(f'self_label_steps must be >= 1 to fine-tune, got {config.steps}.')
  model = Classifier(backbone.module, n_clusters, backbone.feature_method)
  optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps))

  def init(key, sample):
    params = model.init(key, augment.to_float(sample))['params']
    params = dict(params, encoder=jax.tree.map(jnp.copy, encoder_params))  # own buffers: donated
    return SelfLabelState(base.zeros_step(), params, optimizer.init(params))

  def train_step(state, batch, example_keys):
    images = augment.to_float(batch['images'])
    target, weights = targets(model, config.threshold, state.params, images, batch['labels'], batch['confident'])
    views = jax.vmap(backbone.view)(example_keys, images)

    def loss_fn(params):
      logits = model.apply({'params': params}, views)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, target)
      agree = jnp.argmax(logits, axis=1) == batch['labels']
      confident = batch['confident'].astype(jnp.float32)
      return (
        jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0),
        jnp.sum(confident * agree) / jnp.maximum(jnp.sum(confident), 1.0),
      )

    (loss, agreement), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = base.apply_gradients(optimizer, grads, state.params, state.opt_state)
    return state.replace(params=params, opt_state=opt_state), {
      'loss': loss,
      'pseudo_label_agreement': agreement,
      'trained_share': jnp.mean(weights),
    }

  def embed(state, images):
    """The fine-tuned encoder's features ``[B, D]``."""
    return backbone.module.apply(
      {'params': state.params['encoder']}, augment.to_float(images), method=backbone.feature_method
    )

  def assign(state, images):
    """Cluster ``[B]`` int32 of uint8 ``images [B, H, W, C]``: the classifier's arg-max."""
    logits = model.apply({'params': state.params}, augment.to_float(images))
    return jnp.argmax(logits, axis=1).astype(jnp.int32)

  return contract.Method('self_label', init, train_step, embed, assign=assign, config=config)


def pseudo_labelled(config: SelfLabelConfig, images, assignments, chosen) -> Dict[str, np.ndarray]:
  """The fine-tuning's data set from all ``images [N, ...]``, their clusters ``[N]`` and the confident indices."""
  confident = np.zeros(len(images), bool)
  confident[chosen] = True
  if not config.threshold:
    images, assignments, confident = images[chosen], np.asarray(assignments)[chosen], confident[chosen]
  return {'images': images, 'labels': np.asarray(assignments, np.int32), 'confident': confident}
