"""MoCo (He et al. 2020) on the shared training core.

State: the query encoder's ``params``, the key encoder as an EMA teacher
(``teacher_params``), and the queue of earlier keys as a ring buffer
(``queue [K, D]``, ``queue_ptr``), all in one pytree through a pure step.
The poster's small ConvNet has no BatchNorm, so the batch-statistics leak that
shuffle-BN guards against cannot happen; a BN backbone would need shuffle-BN.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from unsupervised_jax import augment
from unsupervised_jax import losses
from unsupervised_jax.models import conv
from unsupervised_jax.models import convnet
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel

MOMENTUM_SCHEDULES = ('constant', 'cosine')
VIEWS = {'digits': augment.digits_view, 'digits_strong': augment.strong_digits_view,
         'natural': augment.natural_view}


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
  queue_size: int = 4096  # K, in keys (not batches)
  momentum: float = 0.99  # EMA momentum of the key encoder (at step 0 when scheduled)
  momentum_schedule: str = 'constant'  # or 'cosine': from `momentum` up to 1 over `num_steps` (BYOL)
  num_steps: int = 0  # training length, for the cosine schedule
  temperature: float = 0.1
  learning_rate: float = 1e-3
  feature_dim: int = 128
  mlp_head: bool = False  # MoCo v2: a 2-layer MLP projection head
  view: str = 'digits'
  conv_implementation: str = 'auto'  # models.conv.Conv: matmul on CPU, XLA's convolution elsewhere

  def validate(self, global_batch: int):
    if not self.temperature > 0:
      raise ValueError(f'temperature must be > 0, got {self.temperature}.')
    if not 0 <= self.momentum < 1:
      raise ValueError(f'momentum must be in [0, 1), got {self.momentum}.')
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}.')
    if self.queue_size < global_batch or self.queue_size % global_batch:
      raise ValueError(f'queue_size {self.queue_size} must be a multiple of the global batch size '
                       f'{global_batch} (whole batches of keys are enqueued).')
    if self.momentum_schedule not in MOMENTUM_SCHEDULES:
      raise ValueError(f'momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {self.momentum_schedule!r}.')
    if self.momentum_schedule == 'cosine' and self.num_steps <= 0:
      raise ValueError('the cosine momentum schedule needs num_steps > 0.')
    if self.conv_implementation not in conv.IMPLEMENTATIONS:
      raise ValueError(f'conv_implementation must be one of {conv.IMPLEMENTATIONS}, got {self.conv_implementation!r}.')
    if self.view not in VIEWS:
      raise ValueError(f'view must be one of {sorted(VIEWS)}, got {self.view!r}.')


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


def enqueue(queue: jax.Array, queue_ptr: jax.Array, keys: jax.Array):
  """Writes ``keys [B, D]`` at ``queue_ptr`` of the ring buffer ``queue [K, D]`` (K a multiple of B).

  Returns ``(queue, queue_ptr)`` with the pointer advanced by B modulo K.
  """
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (queue_ptr, 0))
  return queue, (queue_ptr + keys.shape[0]) % queue.shape[0]


def momentum_at(config: MoCoConfig, step: jax.Array) -> jax.Array:
  """The key encoder's EMA momentum at ``step``: constant, or BYOL's cosine from ``momentum`` to 1."""
  if config.momentum_schedule == 'constant':
    return jnp.asarray(config.momentum, jnp.float32)
  progress = jnp.minimum(step / config.num_steps, 1.0)
  return 1.0 - (1.0 - config.momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema(teacher_params, params, momentum):
  """``momentum * teacher + (1 - momentum) * params``, leaf by leaf."""
  return optax.incremental_update(params, teacher_params, step_size=1.0 - momentum)


class MoCo:
  """Model, optimizer and the pure functions the trainer and the evaluation need."""

  def __init__(self, config: MoCoConfig, image_shape: Sequence[int], global_batch: int):
    config.validate(global_batch)
    self.config = config
    self.image_shape = tuple(image_shape)
    self.model = Encoder(config.feature_dim, config.mlp_head, config.conv_implementation)
    self.optimizer = optax.adam(config.learning_rate)
    self.view = VIEWS[config.view]

  def init(self, key: jax.Array) -> MoCoState:
    params_key, queue_key = jax.random.split(key)
    params = self.model.init(params_key, jnp.zeros((1,) + self.image_shape))['params']
    queue = losses.l2_normalize(jax.random.normal(queue_key, (self.config.queue_size, self.config.feature_dim)))
    teacher_params = jax.tree.map(jnp.copy, params)  # own buffers: the train step donates the state
    return MoCoState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params), teacher_params, queue,
                     jnp.zeros((), jnp.int32))

  def train_step(self, state: MoCoState, images, example_keys):
    views = jax.vmap(lambda k, x: jnp.stack([self.view(k_, x) for k_ in jax.random.split(k)]))(
        example_keys, augment.to_float(images))  # [B, 2, H, W, C]
    teacher_params = ema(state.teacher_params, state.params, momentum_at(self.config, state.step))
    keys = self.model.apply({'params': teacher_params}, views[:, 1])

    def loss_fn(params):
      queries = self.model.apply({'params': params}, views[:, 0])
      return losses.moco_loss(queries, keys, state.queue, self.config.temperature)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    # Every device enqueues the whole global batch of keys, in device order.
    global_keys = jax.lax.all_gather(losses.l2_normalize(keys), parallel.AXIS, tiled=True)
    queue, queue_ptr = enqueue(state.queue, state.queue_ptr, global_keys)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                         teacher_params=teacher_params, queue=queue, queue_ptr=queue_ptr), {'loss': loss}

  def method(self) -> loop.Method:
    return loop.Method(train_step=self.train_step)

  def embed(self, params, images):
    """Backbone features ``[B, feature_dim]`` of uint8 ``images [B, H, W, C]``."""
    return self.model.apply({'params': params}, augment.to_float(images), method='features')
