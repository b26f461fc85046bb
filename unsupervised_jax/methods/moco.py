"""MoCo (He et al. 2020) on the shared training core.

State: the query encoder's ``params``, the key encoder as an EMA teacher
(``teacher_params``), and the queue of earlier keys as a ring buffer
(``queue [K, D]``, ``queue_ptr``), all in one pytree through a pure step.
The poster's small ConvNet has no BatchNorm, so the batch-statistics leak that
shuffle-BN guards against cannot happen; a BN backbone would need shuffle-BN.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from unsupervised_jax import augment
from unsupervised_jax import losses
from unsupervised_jax import settings
from unsupervised_jax.methods import base
from unsupervised_jax.models import conv
from unsupervised_jax.models import convnet
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract

MOMENTUM_SCHEDULES = ('constant', 'cosine')


@flax.struct.dataclass
class MoCoState:
  """``step``; query encoder ``params`` and ``opt_state``; key encoder ``teacher_params``
  (EMA of ``params``); ``queue [K, D]`` of L2-normalised keys; ``queue_ptr`` [] int32, next slot."""

  step: jax.Array
  params: Any
  opt_state: Any
  teacher_params: Any
  queue: jax.Array
  queue_ptr: jax.Array


@dataclasses.dataclass(frozen=True)
class MoCoConfig:
  queue_size: int = setting(4096, 'Queue length K, in keys (a multiple of the global batch).', minimum=1)
  momentum: float = setting(
    0.99, 'EMA momentum of the key encoder (teacher), in [0, 1) (at step 0 when scheduled).', minimum=0
  )
  momentum_schedule: str = setting(
    'constant',
    "EMA momentum schedule ('cosine': from --momentum up to 1 over the run, as BYOL).",
    choices=MOMENTUM_SCHEDULES,
  )
  temperature: float = setting(0.1, 'InfoNCE temperature.', above=0)
  learning_rate: float = setting(1e-3, 'Adam learning rate.', above=0)
  feature_dim: int = setting(128, 'Feature size.', minimum=1)
  mlp_head: bool = setting(False, 'MoCo v2 MLP projection head.')
  view: str = setting('digits', 'Augmentation family of the two views.', choices=tuple(sorted(augment.VIEWS)))
  conv_implementation: str = setting(
    'auto',
    "Convolution: 'auto' = matrix products on CPU (faster there), XLA's elsewhere.",
    choices=conv.IMPLEMENTATIONS,
  )

  def validate(self, train):
    """Raises ValueError (one line) on a bad setting; ``train`` is the run's ``TrainConfig``."""
    settings.check(self)
    if not self.momentum < 1:
      raise ValueError(f'momentum must be in [0, 1), got {self.momentum}.')
    if train.batch_size >= 1 and (self.queue_size < train.batch_size or self.queue_size % train.batch_size):
      raise ValueError(
        f'queue_size {self.queue_size} must be a multiple of the global batch size '
        f'{train.batch_size} (whole batches of keys are enqueued).'
      )


class Encoder(nn.Module):
  """Backbone, then an optional MLP head; ``features(x)`` is the representation used for evaluation."""

  feature_dim: int
  mlp_head: bool
  conv_implementation: str = 'auto'

  def setup(self):
    self.backbone = convnet.SmallConvNet(features=self.feature_dim, conv_implementation=self.conv_implementation)
    if self.mlp_head:
      self.head = [nn.Dense(self.feature_dim), nn.Dense(self.feature_dim)]

  def features(self, x):
    return self.backbone(x)

  def __call__(self, x):
    h = self.backbone(x)
    if self.mlp_head:
      h = self.head[1](nn.relu(self.head[0](h)))
    return h


def momentum_at(config: MoCoConfig, step: jax.Array, num_steps: int) -> jax.Array:
  """The key encoder's EMA momentum at ``step``: constant, or BYOL's cosine from ``momentum`` to 1 over
  ``num_steps``."""
  if config.momentum_schedule == 'constant':
    return jnp.asarray(config.momentum, jnp.float32)
  progress = jnp.minimum(step / num_steps, 1.0)
  return 1.0 - (1.0 - config.momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def moco(config: MoCoConfig, train, data: contract.DataInfo) -> contract.Method:
  """MoCo as a :class:`~unsupervised_jax.training.contract.Method`; ``embed`` gives the backbone features
  ``[B, feature_dim]`` (before the MLP head).

  Args:
    config: MoCo's settings.
    train: the run's ``TrainConfig`` (global batch for the queue, length for the momentum schedule).
    data: the training images (their channels against the view).

  Raises:
    ValueError: a bad setting, or a view that cannot take the images' channels.
  """
  config.validate(train)
  augment.check_view(config.view, data.image_shape[-1])
  model = Encoder(config.feature_dim, config.mlp_head, config.conv_implementation)
  optimizer = optax.adam(config.learning_rate)
  view = augment.VIEWS[config.view]

  def init(key, sample):
    params_key, queue_key = jax.random.split(key)
    params = model.init(params_key, augment.to_float(sample))['params']
    queue = losses.l2_normalize(jax.random.normal(queue_key, (config.queue_size, config.feature_dim)))
    teacher_params = jax.tree.map(jnp.copy, params)  # own buffers: the train step donates the state
    return MoCoState(base.zeros_step(), params, optimizer.init(params), teacher_params, queue, jnp.zeros((), jnp.int32))

  def train_step(state, images, example_keys):
    views = jax.vmap(lambda k, x: jnp.stack([view(k_, x) for k_ in jax.random.split(k)]))(
      example_keys, augment.to_float(images)
    )  # [B, 2, H, W, C]
    teacher_params = base.ema(state.teacher_params, state.params, momentum_at(config, state.step, train.num_steps))
    keys = model.apply({'params': teacher_params}, views[:, 1])

    def loss_fn(params):
      queries = model.apply({'params': params}, views[:, 0])
      return losses.moco_loss(queries, keys, state.queue, config.temperature)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    params, opt_state = base.apply_gradients(optimizer, grads, state.params, state.opt_state)
    # Every device enqueues the whole global batch of keys, in device order.
    global_keys = jax.lax.all_gather(losses.l2_normalize(keys), base.AXIS, tiled=True)
    queue, queue_ptr = base.enqueue(state.queue, state.queue_ptr, global_keys)
    return state.replace(
      params=params, opt_state=opt_state, teacher_params=teacher_params, queue=queue, queue_ptr=queue_ptr
    ), {'loss': loss}

  def embed(state, images):
    return model.apply({'params': state.params}, augment.to_float(images), method='features')

  backbone = contract.Backbone(model, 'features', lambda state: state.params, view)
  return contract.Method('moco', init, train_step, embed, backbone=backbone, config=config)
