"""MiCE, Mixture of Contrastive Experts (Tsai, Li, Zhu, ICLR 2021) on the method contract.

Model (one encoder with K + 1 heads, as the official code's ResNet):

* gating: a unit embedding ``g_n`` of view ``x3``; ``p(z_n = k | x_n) = softmax_k(omega_k . g_n / kappa)``
  with K fixed gating prototypes ``omega [K, D]`` on an equiangular simplex (unit norm, pairwise inner
  product ``-1/(K-1)``; the official ``kernel_paras/craft_MMcenters.m``);
* experts: K unit student embeddings ``f_{n,k}`` of view ``x1``, the EMA teacher's ``v_{n,k}`` of view ``x2``,
  unit cluster prototypes ``mu_k``; ``Phi(x_n, y_n, k) = exp(v_{n,k} . (f_{n,k} + mu_k) / tau)``, normalised
  over a queue of teacher embeddings per expert, ``queue [nu, K, D]`` in the state
  (:func:`unsupervised_jax.losses.mice_log_expert`).

EM, all inside jitted pure functions:

* E-step: ``q_nk = pi_nk phi_nk / sum_k' pi_nk' phi_nk'`` (:func:`unsupervised_jax.losses.mice_posterior`),
  held fixed (``stop_gradient``) in the M-step; as ``q`` is the exact posterior this gives the same gradient
  as the official code's loss, which differentiates through ``q``.
* M-step: SGD on ``-ELBO = -mean_n sum_k q_nk (log phi_nk + log pi_nk - log q_nk)`` for the network
  (theta, psi) and ``mu`` (:func:`unsupervised_jax.losses.mice_loss`); and once per epoch the analytic
  update (the paper's eq. 13, :mod:`unsupervised_jax.methods.mice_prototypes`) through the contract's
  :class:`~unsupervised_jax.training.contract.EpochEnd`. As the official ``train_MiCE.py``, its sums run over
  the epoch's training batches as they go by, kept in the state (``epoch_sums``, added over the devices);
  ``--prototype_pass`` (a deviation) sums over a pass of the un-augmented images after the epoch instead. The
  learning rate is set per epoch (:func:`learning_rate_schedule`); epochs are shuffled passes
  (``TrainConfig.sampling='epochs'``, MiCE's default). Deviations and their reasons: docs/mice.md.

``assign``: the posterior's argmax on un-augmented images, networks in evaluation mode (the official
``eval_MiCE.py``); the epoch's end logs cluster sizes and empty experts. ``embed``: the backbone's features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from typing import Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax import augment
from unsupervised_jax import losses
from unsupervised_jax import settings
from unsupervised_jax.methods import base
from unsupervised_jax.methods import mice_prototypes as prototypes
from unsupervised_jax.models import conv
from unsupervised_jax.models import mice as models_mice
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract
from unsupervised_jax.training import parallel

BACKBONES = ('convnet', 'resnet34_cifar', 'resnet34')
PROTOTYPE_UPDATES = ('hard', 'soft', 'none')
GATING_INITS = ('simplex', 'uniform')


LR_SCHEDULES = ('epochs', 'steps')


@flax.struct.dataclass
class MiceState:
  """``step``; ``params`` = {'net': encoder and heads, 'mu': [K, D] cluster prototypes (normalised when
  used), 'omega': [K, D] gating prototypes (frozen unless learned)}; ``batch_stats`` of the student's
  BatchNorm ({} for the ConvNet); SGD ``opt_state``; the EMA teacher's ``teacher_params`` (of 'net') and its
  own ``teacher_batch_stats``; ``queue [nu, K, D]`` of teacher embeddings per expert; ``queue_ptr`` [] int32;
  ``epoch_sums``, this epoch's training-batch sums so far (:func:`epoch_sums`; zero after each epoch's end)."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  teacher_params: Any
  teacher_batch_stats: Any
  queue: jax.Array
  queue_ptr: jax.Array
  epoch_sums: Any


@dataclasses.dataclass(frozen=True)
class MiceConfig:
  experts: int = setting(10, 'Number of clusters (experts) K.', minimum=2)
  embedding_dim: int = setting(128, 'Size D of the unit embeddings f, v, g and of the prototypes.', minimum=1)
  queue_size: int = setting(
    16384, 'Queue length nu, in teacher embeddings per expert (a multiple of the global batch).', minimum=1
  )
  tau: float = setting(1.0, 'Temperature of the experts.', above=0)
  kappa: float = setting(1.0, 'Concentration of the gating softmax (the official code ties it to tau).', above=0)
  momentum: float = setting(0.999, 'EMA momentum of the teacher, in [0, 1).', minimum=0)
  learning_rate: float = setting(1.0, 'SGD learning rate after the warm-up.', above=0)
  sgd_momentum: float = setting(0.9, 'SGD momentum.', minimum=0)
  weight_decay: float = setting(1e-4, 'Weight decay (also on mu and a learned omega, as the official code).', minimum=0)
  warmup_epochs: float = setting(10.0, 'Linear learning-rate warm-up, in epochs.', minimum=0)
  lr_decay_epochs: Tuple[int, ...] = setting(
    (480, 640, 800), 'Epochs after which the learning rate is multiplied by lr_decay_rate.', minimum=0
  )
  lr_decay_rate: float = setting(0.1, 'Step decay factor.', above=0)
  lr_schedule: str = setting(
    'epochs',
    "'epochs': the learning rate set once an epoch (the official code: 0 through "
    "epoch 0); 'steps': warmed up and decayed per step (a deviation).",
    choices=LR_SCHEDULES,
  )
  prototype_update: str = setting(
    'hard',
    "Analytic mu update once per epoch: 'hard' = argmax of q (official code), 'soft' = q (paper), 'none' (ablation).",
    choices=PROTOTYPE_UPDATES,
  )
  prototype_pass: bool = setting(
    False,
    'Sum the analytic update over a pass of the un-augmented images after each '
    "epoch (a deviation) instead of the epoch's training batches (the official code).",
  )
  prototype_gradient: bool = setting(True, 'SGD on mu through the ELBO (--noprototype_gradient: ablation).')
  gating_init: str = setting(
    'simplex',
    "Gating prototypes omega: 'simplex' (equiangular) or 'uniform' (random directions, ablation).",
    choices=GATING_INITS,
  )
  learn_gating: bool = setting(False, 'Learn omega by gradient (ablation); fixed by default.')
  backbone: str = setting(
    'convnet', "Encoder: the poster's small ConvNet, or ResNet-34 with the CIFAR or ImageNet stem.", choices=BACKBONES
  )
  view: str = setting('natural', 'Augmentation family of the three views.', choices=tuple(sorted(augment.VIEWS)))
  conv_implementation: str = setting(
    'auto', "ConvNet convolution: 'auto' = matrix products on CPU, XLA's elsewhere.", choices=conv.IMPLEMENTATIONS
  )

  def validate(self, train):
    """Raises ValueError (one line) on a bad setting; ``train`` is the run's ``TrainConfig``."""
    settings.check(self)
    if not self.momentum < 1:
      raise ValueError(f'momentum must be in [0, 1), got {self.momentum}.')
    if self.gating_init == 'simplex' and self.embedding_dim < self.experts - 1:
      raise ValueError(
        f'embedding_dim {self.embedding_dim} is too small for {self.experts} equiangular gating '
        f'prototypes (needs >= {self.experts - 1}).'
      )
    if train.batch_size >= 1 and (self.queue_size < train.batch_size or self.queue_size % train.batch_size):
      raise ValueError(
        f'queue_size {self.queue_size} must be a multiple of the global batch size '
        f'{train.batch_size} (whole batches of teacher embeddings are enqueued).'
      )


def learning_rate_schedule(config: MiceConfig, steps_per_epoch: int):
  """``step -> lr`` ([] float32).

  ``lr_schedule='epochs'`` (the official ``util.adjust_learning_rate``, called before each epoch ``e``):
  ``lr * e / warmup_epochs`` while ``e <= warmup_epochs`` (0 through epoch 0), then ``lr`` times
  ``lr_decay_rate`` per boundary of ``lr_decay_epochs`` that ``e`` has passed (``e > boundary``); after the
  warm-up and before the first decay the rate stays at the last warm-up epoch's (``lr`` when
  ``warmup_epochs`` is whole). ``'steps'``: a per-step linear warm-up over ``warmup_epochs`` (from
  ``lr / warm-up steps``), then ``lr`` times ``lr_decay_rate`` per boundary reached (``step >= boundary``
  steps).
  """
  rate, warmup = config.learning_rate, config.warmup_epochs
  decays_at = jnp.asarray(config.lr_decay_epochs or (np.iinfo(np.int32).max,), jnp.int32)

  if config.lr_schedule == 'epochs':

    def ramp(epoch):  # the official linear_rampup
      return jnp.where(epoch >= warmup, 1.0, epoch / warmup) if warmup > 0 else 1.0

    def schedule(step):
      epoch = step // steps_per_epoch
      decays = jnp.sum(epoch > decays_at)
      after_warmup = jnp.where(decays > 0, config.lr_decay_rate**decays, ramp(math.floor(warmup)))
      return jnp.asarray(rate * jnp.where(epoch <= warmup, ramp(epoch), after_warmup), jnp.float32)

    return schedule

  warmup_steps = warmup * steps_per_epoch
  boundaries = decays_at * steps_per_epoch if config.lr_decay_epochs else decays_at

  def schedule(step):
    ramp = jnp.minimum(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return jnp.asarray(rate * ramp * config.lr_decay_rate ** jnp.sum(step >= boundaries), jnp.float32)

  return schedule


def mice(config: MiceConfig, train, data: contract.DataInfo) -> contract.Method:
  """MiCE as a :class:`~unsupervised_jax.training.contract.Method` (see the module docstring).

  Args:
    config: MiCE's settings.
    train: the run's ``TrainConfig`` (global batch for the queue and the epoch).
    data: the training images: ``N`` makes an epoch of ``N // batch_size`` steps (the official loader drops
      the last partial batch), the period of the analytic update and the unit of the schedule; the channels
      are checked against the view.

  Raises:
    ValueError: a bad setting, fewer images than a batch, or a view that cannot take the images' channels.
  """
  config.validate(train)
  augment.check_view(config.view, data.image_shape[-1])
  k, d = config.experts, config.embedding_dim
  steps_per_epoch = parallel.steps_per_epoch(data.num_examples, train.batch_size)
  model = models_mice.MiceNet(k, d, config.backbone, config.conv_implementation)
  has_bn = config.backbone != 'convnet'
  schedule = learning_rate_schedule(config, steps_per_epoch)
  sgd = optax.chain(
    optax.add_decayed_weights(config.weight_decay),  # PyTorch's SGD: decay before momentum
    optax.sgd(schedule, momentum=config.sgd_momentum or None),
  )
  trained = {
    'net': 'train',
    'mu': 'train' if config.prototype_gradient else 'frozen',
    'omega': 'train' if config.learn_gating else 'frozen',
  }
  optimizer = optax.multi_transform(
    {'train': sgd, 'frozen': optax.set_to_zero()},
    lambda params: {name: jax.tree.map(lambda _: trained[name], tree) for name, tree in params.items()},
  )
  view = augment.VIEWS[config.view]

  def apply(net_params, batch_stats, x, train_mode):
    """``((f, g), batch_stats)``; in training mode BatchNorm uses the batch (its new running averages are
    averaged over the devices, so every device keeps the same state)."""
    variables = {'params': net_params, **({'batch_stats': batch_stats} if has_bn else {})}
    if train_mode and has_bn:
      out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
      return out, jax.lax.pmean(updates['batch_stats'], base.AXIS)
    return model.apply(variables, x, train=False), batch_stats

  def unit_prototypes(params):
    """``(mu [K, D], omega [K, D])``, unit rows (as the official ``F.normalize(expert_prototype)``)."""
    return losses.l2_normalize(params['mu']), losses.l2_normalize(params['omega'])

  def init(key, sample):
    net_key, mu_key, omega_key, queue_key = jax.random.split(key, 4)
    variables = model.init(net_key, augment.to_float(sample))
    net_params = variables['params']
    batch_stats = variables.get('batch_stats', {})
    if config.gating_init == 'simplex':
      omega = jnp.asarray(models_mice.simplex_prototypes(k, d))
    else:
      omega = losses.l2_normalize(jax.random.uniform(omega_key, (k, d), minval=-1.0, maxval=1.0))
    mu = losses.l2_normalize(jax.random.normal(mu_key, (k, d)))
    bound = math.sqrt(3.0 / d)  # the official queue: uniform(-stdv, stdv), stdv = 1 / sqrt(D / 3)
    queue = jax.random.uniform(queue_key, (config.queue_size, k, d), minval=-bound, maxval=bound)
    params = {'net': net_params, 'mu': mu, 'omega': omega}
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # own buffers: the train step donates the state
    return MiceState(
      base.zeros_step(),
      params,
      batch_stats,
      optimizer.init(params),
      copy(net_params),
      copy(batch_stats),
      queue,
      jnp.zeros((), jnp.int32),
      zero_sums(),
    )

  def zero_sums():
    return jax.tree.map(
      jnp.zeros_like,
      prototypes.epoch_sums(jnp.zeros((1, k)), jnp.zeros((1, k)), jnp.zeros((1, k, d)), config.prototype_update),
    )

  def train_step(state, images, example_keys):
    b = images.shape[0]
    views = jax.vmap(lambda key, x: jnp.stack([view(k_, x) for k_ in jax.random.split(key, 3)]))(
      example_keys, augment.to_float(images)
    )  # [B, 3, H, W, C]: x1 (experts), x2 (teacher), x3 (gating)
    teacher_params = base.ema(state.teacher_params, state.params['net'], config.momentum)
    (v, _), teacher_stats = apply(teacher_params, state.teacher_batch_stats, views[:, 1], True)
    v = jax.lax.stop_gradient(v)

    def loss_fn(params):
      (f, g), batch_stats = apply(params['net'], state.batch_stats, jnp.concatenate([views[:, 0], views[:, 2]]), True)
      mu = params['mu'] if config.prototype_gradient else jax.lax.stop_gradient(params['mu'])
      omega = losses.l2_normalize(params['omega'] if config.learn_gating else jax.lax.stop_gradient(params['omega']))
      loss, (log_pi, log_phi, q) = losses.mice_loss(f[:b], v, g[b:], mu, omega, state.queue, config.tau, config.kappa)
      kl = jnp.mean(jnp.sum(q * (jnp.log(jnp.maximum(q, 1e-30)) - log_pi), axis=-1))
      return loss, (
        batch_stats,
        log_pi,
        q,
        {'elbo': -loss, 'kl': kl, 'log_expert': kl - loss, 'posterior_max': jnp.mean(jnp.max(q, axis=-1))},
      )

    (loss, (batch_stats, log_pi, q, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = base.apply_gradients(optimizer, grads, state.params, state.opt_state)
    # Every device enqueues the whole global batch of teacher embeddings, in device order.
    queue, queue_ptr = base.enqueue(state.queue, state.queue_ptr, jax.lax.all_gather(v, base.AXIS, tiled=True))
    sums = state.epoch_sums
    if not config.prototype_pass:  # the official update's sums, over this step's global batch
      batch_sums = jax.lax.psum(prototypes.epoch_sums(q, log_pi, v, config.prototype_update), base.AXIS)
      sums = jax.tree.map(jnp.add, sums, batch_sums)
    new = state.replace(
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      teacher_params=teacher_params,
      teacher_batch_stats=teacher_stats,
      queue=queue,
      queue_ptr=queue_ptr,
      epoch_sums=sums,
    )
    return new, dict(metrics, loss=loss, learning_rate=schedule(state.step))

  def posterior_terms(state, images):
    """``(v [B, K, D], log_pi [B, K], log_phi [B, K])`` of un-augmented images, networks in evaluation mode."""
    x = augment.to_float(images)
    (f, g), _ = apply(state.params['net'], state.batch_stats, x, False)
    (v, _), _ = apply(state.teacher_params, state.teacher_batch_stats, x, False)
    mu, omega = unit_prototypes(state.params)
    return v, losses.mice_log_gating(g, omega, config.kappa), losses.mice_log_expert(f, v, mu, state.queue, config.tau)

  def assign(state, images):
    _, log_pi, log_phi = posterior_terms(state, images)
    return jnp.argmax(log_pi + log_phi, axis=-1).astype(jnp.int32)  # argmax of the posterior

  def accumulate(state, images, mask):  # --prototype_pass: the un-augmented images, evaluation mode
    v, log_pi, log_phi = posterior_terms(state, images)
    return prototypes.epoch_sums(losses.mice_posterior(log_pi, log_phi), log_pi, v, config.prototype_update, mask)

  def finalize(state, sums):
    """The analytic update from the epoch's sums (the state's, or the pass's); the state's sums restart at 0."""
    sums = state.epoch_sums if sums is None else sums
    params = state.params
    if config.prototype_update != 'none':
      params = dict(params, mu=prototypes.update(sums['centres'], params['mu']))
    count = jnp.maximum(sums['count'], 1.0)
    metrics = {
      'cluster_sizes': sums['sizes'],
      'gating_cluster_sizes': sums['gating_sizes'],
      'largest_cluster_fraction': jnp.max(sums['sizes']) / count,
      'empty_clusters': jnp.sum(sums['sizes'] == 0),
      'gating_agreement': sums['agree'] / count,
    }
    return state.replace(params=params, epoch_sums=zero_sums()), metrics

  def embed(state, images):
    variables = {'params': state.params['net'], **({'batch_stats': state.batch_stats} if has_bn else {})}
    return model.apply(variables, augment.to_float(images), False, method='features')

  backbone = None
  if not has_bn:  # the self-labelling stage fine-tunes parameters only
    backbone = contract.Backbone(model, 'features', lambda state: state.params['net'], view)
  epoch_end = contract.EpochEnd(steps_per_epoch, accumulate if config.prototype_pass else None, finalize)
  return contract.Method(
    'mice', init, train_step, embed, assign=assign, epoch_end=epoch_end, backbone=backbone, config=config
  )
