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
from typing import Any, Callable, Dict

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax import augment
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel


@dataclasses.dataclass(frozen=True)
class SelfLabelConfig:
  num_steps: int = 1000  # fine-tuning steps (cosine-decayed learning rate)
  confident_fraction: float = 0.5  # kept per cluster, most confident first
  neighbors: int = 20  # neighbours in code space whose clusters vote for a point's confidence
  learning_rate: float = 1e-3
  online_threshold: float = 0.0  # > 0: unconfident images join once the classifier's probability exceeds it

  def validate(self):
    if self.num_steps < 1:
      raise ValueError(f'self-label num_steps must be >= 1, got {self.num_steps}.')
    if not 0 < self.confident_fraction <= 1:
      raise ValueError(f'confident_fraction must be in (0, 1], got {self.confident_fraction}.')
    if self.neighbors < 1:
      raise ValueError(f'self-label neighbors must be >= 1, got {self.neighbors}.')
    if not self.learning_rate > 0:
      raise ValueError(f'self-label learning_rate must be > 0, got {self.learning_rate}.')
    if not 0 <= self.online_threshold < 1:
      raise ValueError(f'self-label online_threshold must be in [0, 1), got {self.online_threshold}.')


def neighbour_agreement(codes, assignments, k: int, block_size: int = 2048) -> np.ndarray:
  """``[N]``: fraction of each point's ``k`` nearest neighbours (cosine, itself excluded) in its cluster.

  Args:
    codes: ``[N, D]`` features.
    assignments: ``[N]`` int cluster of every point.
  """
  codes = jnp.asarray(codes, jnp.float32)
  codes = codes / jnp.linalg.norm(codes, axis=1, keepdims=True).clip(1e-12)
  assignments = jnp.asarray(assignments)
  n = codes.shape[0]
  k = min(k, n - 1)
  block_size = min(block_size, n)

  @jax.jit  # the data are arguments, not constants baked into the program
  def agreement(codes, assignments, start):
    block = jax.lax.dynamic_slice_in_dim(codes, start, block_size)
    own = start + jnp.arange(block_size)
    similarity = (block @ codes.T).at[jnp.arange(block_size), own].set(-jnp.inf)  # not its own neighbour
    _, neighbours = jax.lax.top_k(similarity, k)
    return jnp.mean(assignments[neighbours] == assignments[own][:, None], axis=1)

  out = np.empty(n, np.float32)
  for start in range(0, n, block_size):
    start = min(start, n - block_size)  # the last block is shifted back to stay in range (overlap: same values)
    out[start:start + block_size] = np.asarray(agreement(codes, assignments, start))
  return out


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
    keep.append(order[:max(1, int(round(fraction * len(members))))])
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


class SelfLabel:
  """Fine-tunes ``encoder`` (initialised from ``encoder_params``) on pseudo-labelled images.

  The trainer's data set is ``{'images': [N, H, W, C] uint8, 'labels': [N] int32,
  'confident': [N] bool}``: with ``online_threshold`` 0, the confident examples
  only (``confident`` all True); otherwise every image, the unconfident ones
  trained towards the classifier's own sure predictions.
  """

  def __init__(self, config: SelfLabelConfig, encoder: nn.Module, encoder_params, image_shape, n_clusters: int,
               view: Callable[[jax.Array, jax.Array], jax.Array], feature_method: str = 'features'):
    config.validate()
    self.config = config
    self.model = Classifier(encoder, n_clusters, feature_method)
    self.encoder_params = encoder_params
    self.image_shape = tuple(image_shape)
    self.optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.num_steps))
    self.view = view

  def init(self, key: jax.Array) -> SelfLabelState:
    params = self.model.init(key, jnp.zeros((1,) + self.image_shape))['params']
    params = dict(params, encoder=jax.tree.map(jnp.copy, self.encoder_params))  # own buffers: donated
    return SelfLabelState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params))

  def targets(self, params, images, labels, confident):
    """``(targets [B] int32, weights [B])``: the pseudo-label where confident; elsewhere the classifier's
    prediction on the unaugmented ``images`` (float) if its probability exceeds ``online_threshold``
    (weight 1), else weight 0."""
    if not self.config.online_threshold:
      return labels, confident.astype(jnp.float32)
    probabilities = jax.nn.softmax(jax.lax.stop_gradient(self.model.apply({'params': params}, images)))
    sure = jnp.max(probabilities, axis=1) > self.config.online_threshold
    targets = jnp.where(confident, labels, jnp.argmax(probabilities, axis=1).astype(labels.dtype))
    return targets, (confident | sure).astype(jnp.float32)

  def train_step(self, state: SelfLabelState, batch: Dict[str, jax.Array], example_keys):
    images = augment.to_float(batch['images'])
    targets, weights = self.targets(state.params, images, batch['labels'], batch['confident'])
    views = jax.vmap(self.view)(example_keys, images)

    def loss_fn(params):
      logits = self.model.apply({'params': params}, views)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      agree = jnp.argmax(logits, axis=1) == batch['labels']
      confident = batch['confident'].astype(jnp.float32)
      return (jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0),
              jnp.sum(confident * agree) / jnp.maximum(jnp.sum(confident), 1.0))

    (loss, agreement), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), {
        'loss': loss, 'pseudo_label_agreement': agreement, 'trained_share': jnp.mean(weights)}

  def dataset(self, images, assignments, chosen) -> Dict[str, np.ndarray]:
    """The trainer's data set from all ``images [N, ...]``, their clusters ``[N]`` and the confident indices."""
    confident = np.zeros(len(images), bool)
    confident[chosen] = True
    if not self.config.online_threshold:
      images, assignments, confident = images[chosen], assignments[chosen], confident[chosen]
    return {'images': images, 'labels': np.asarray(assignments, np.int32), 'confident': confident}

  def method(self) -> loop.Method:
    return loop.Method(train_step=self.train_step)

  def predict(self, params, images):
    """Cluster ``[B]`` int32 of uint8 ``images [B, H, W, C]``."""
    logits = self.model.apply({'params': params}, augment.to_float(images))
    return jnp.argmax(logits, axis=1).astype(jnp.int32)
