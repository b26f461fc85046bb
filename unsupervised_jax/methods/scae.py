"""Stacked Capsule Autoencoder (Kosiorek et al. 2019) on the shared training core.

State: the model's ``params`` and the RMSProp state. Every image (train and
evaluation alike) is padded onto a ``canvas_size`` square with a random integer
shift of up to ``max_shift`` pixels each way (the official ``pad_and_shift``).
The loss is the official one::

  L = -log p(y) - log p(x_parts) + 10 L2(dynamic OP)
      + w_pw H_within(posterior) - w_pb H_between(posterior)
      + w_rw L2_within(prior) + w_rb L2_between(prior)

with the posterior ``sum_m p(k | x_m) / M`` and the prior ``max_m a_k a_km``
(:mod:`unsupervised_jax.losses`). ``embed`` gives the object capsules' prior
presences ``[B, K]`` (``codes='posterior'``: the posterior), which K-means
clusters. The presence noise stays on in ``embed``, as in the official code;
its key (and the shift's) comes from each image's pixels, so an image's code
does not depend on the batch it is in.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Optional
from typing import Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from unsupervised_jax import augment
from unsupervised_jax import losses
from unsupervised_jax import settings
from unsupervised_jax.methods import base
from unsupervised_jax.models import capsules
from unsupervised_jax.models import set_transformer
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract

CODES = ('prior', 'posterior')


@flax.struct.dataclass
class SCAEState:
  """``step``; the SCAE's ``params`` and their RMSProp ``opt_state``."""

  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class SCAEConfig:
  n_part_caps: int = setting(40, 'Part capsules (templates), M.', minimum=1)
  n_obj_caps: int = setting(32, 'Object capsules, K.', minimum=1)
  n_part_features: int = setting(16, 'Special features per part (colour the template, feed the OCAE).', minimum=0)
  n_obj_params: int = setting(32, 'Feature size of each object capsule.', minimum=1)
  template_size: int = setting(11, 'Template side, in pixels (<= canvas_size).', minimum=2)
  canvas_size: int = setting(40, 'Images are padded onto a canvas of this side (MNIST: 40).', minimum=2)
  max_shift: int = setting(
    6, 'Random shift of the image on the canvas, in pixels each way (train and evaluation).', minimum=0
  )
  encoder_channels: int = setting(128, 'Channels of the part encoder CNN.', minimum=1)
  encoder_strides: Tuple[int, ...] = setting(
    (2, 2, 1, 1), 'Strides of the part encoder 3x3 VALID convolutions.', minimum=1
  )
  learning_rate: float = setting(3e-5, 'RMSProp learning rate (constant, as the official code runs).', above=0)
  presence_noise: float = setting(
    4.0, 'Width s of the U(-s/2, s/2) noise on presence logits (also in embed).', minimum=0
  )
  part_ll_weight: float = setting(1.0, 'Weight of the part log-likelihood.', minimum=0)
  dynamic_l2_weight: float = setting(10.0, 'Weight of the L2 penalty on the dynamic object-part relations.', minimum=0)
  posterior_within_weight: float = setting(0.7, 'Posterior within-example entropy weight.', minimum=0)
  posterior_between_weight: float = setting(0.2, 'Posterior between-example entropy weight.', minimum=0)
  prior_within_weight: float = setting(2.0, 'Prior within-example L2 weight.', minimum=0)
  prior_between_weight: float = setting(0.35, 'Prior between-example L2 weight.', minimum=0)
  prior_within_constant: float = setting(
    0.0,
    'Active object capsules per image the prior L2 aims at; 0 = K / '
    'num_classes (what the official MNIST run uses: 32/10).',
    minimum=0,
  )
  num_classes: int = setting(10, 'Classes assumed by the sparsity terms.', minimum=1)
  normalize_part_mixture: bool = setting(
    False,
    "Normalise the part mixture's weights a_k a_km per part (the "
    "poster's equation); default: the official code's unnormalised logits "
    'log a_k a_km, whose gradient raises the responsible capsules\' presences '
    '(normalised, only their ratios count and every presence settles near '
    '0.1: docs/scae.md).',
  )
  presence_mask: str = setting(
    'official',
    "How the Set Transformer's attention weighs parts by presence d: "
    "'official' subtracts (1 - d) 1e32 from the logits, which with fractional "
    "presences attends only to the most present part; 'log' adds log d (weights "
    "proportional to d; the same for d in {0, 1}; docs/scae.md).",
    choices=set_transformer.PRESENCE_MASKS,
  )
  attention_pooling: str = setting(
    'official',
    "How the part encoder pools its 1x1 convolution over positions: "
    "'official' (value channel i with attention map i mod M, the official reshape "
    "without a transpose) or 'per_part' (part m with its own map m, the paper's "
    'description; docs/scae.md).',
    choices=capsules.ATTENTION_POOLINGS,
  )
  codes: str = setting(
    'prior',
    "What embed returns: the object capsules' prior presences max_m a_k a_km, or the "
    'posterior part mass sum_m p(k|x_m) / M.',
    choices=CODES,
  )

  def validate(self, train=None):
    """Raises ValueError (one line) on a bad setting; ``train`` is the run's ``TrainConfig``."""
    settings.check(self)
    if self.template_size > self.canvas_size:
      raise ValueError(f'template_size {self.template_size} exceeds canvas_size {self.canvas_size}.')
    if not self.encoder_strides:
      raise ValueError('encoder_strides needs at least one convolution.')
    side = self.canvas_size
    for stride in self.encoder_strides:
      side = (side - 3) // stride + 1
    if side < 1:
      raise ValueError(
        f'the part encoder (strides {list(self.encoder_strides)}) leaves nothing of a {self.canvas_size}-pixel canvas.'
      )


def pad_and_shift(key: jax.Array, image: jax.Array, canvas_size: int, max_shift: int) -> jax.Array:
  """``image [h, w, C]`` centred on a zero ``[S, S, C]`` canvas, shifted by integers in ``[-max_shift, max_shift]``
  each way (clamped to stay on the canvas)."""
  h, w, c = image.shape
  shift = jax.random.randint(key, (2,), -max_shift, max_shift + 1)
  top = jnp.clip((canvas_size - h) // 2 + shift[0], 0, canvas_size - h)
  left = jnp.clip((canvas_size - w) // 2 + shift[1], 0, canvas_size - w)
  return jax.lax.dynamic_update_slice(jnp.zeros((canvas_size, canvas_size, c), image.dtype), image, (top, left, 0))


def image_keys(images: jax.Array) -> jax.Array:
  """One key per image ``[B]`` from its pixels (a weighted checksum), for evaluation-time noise."""
  flat = images.reshape(images.shape[0], -1).astype(jnp.uint32)
  weights = (jnp.arange(flat.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)
  checksum = jnp.sum(flat * weights, axis=1, dtype=jnp.uint32)
  return jax.vmap(lambda c: jax.random.fold_in(jax.random.key(0), c))(checksum)


def tf_rmsprop(learning_rate: float, batch_size: int) -> optax.GradientTransformation:
  """TF1's ``RMSPropOptimizer(lr, decay=0.9, momentum=0.9, epsilon=1e-2 / batch^2)``: the mean square starts at
  1, ``eps`` is inside the root, and ``mom = 0.9 mom + lr g / sqrt(ms + eps)`` (optax scales after the
  momentum, the same for a constant rate)."""
  return optax.rmsprop(
    learning_rate, decay=0.9, eps=1e-2 / batch_size**2, initial_scale=1.0, eps_in_sqrt=True, momentum=0.9
  )


def scae_loss(config: SCAEConfig, out, axis_name: Optional[str] = None) -> Tuple[jax.Array, dict]:
  """The official SCAE objective (module docstring) from the model's outputs; returns ``(loss, metrics)``.

  The sparsity terms are over the batch: with ``axis_name`` (inside the data-parallel step) the capsule
  activations of every device's examples are gathered first (``lax.all_gather``), so the terms, and the run,
  are those of the global batch whatever the device count (the gradient of the gathered copy reaches each
  device's own examples).
  """
  gather = (lambda x: jax.lax.all_gather(x, axis_name, tiled=True)) if axis_name else (lambda x: x)
  n_parts = out['posterior'].shape[-1]
  post_within, post_between = losses.capsule_entropy_sparsity(gather(out['posterior'].sum(-1) / n_parts))
  prior_within, prior_between = losses.capsule_l2_sparsity(
    gather(out['prior']), config.num_classes, config.prior_within_constant
  )
  image_ll, part_ll = jnp.mean(out['image_ll']), jnp.mean(out['part_ll'])
  loss = (
    -image_ll
    - config.part_ll_weight * part_ll
    + config.dynamic_l2_weight * out['dynamic_l2']
    + config.posterior_within_weight * post_within
    - config.posterior_between_weight * post_between
    + config.prior_within_weight * prior_within
    + config.prior_between_weight * prior_between
  )
  return loss, {
    'loss': loss,
    'image_ll': image_ll,
    'part_ll': part_ll,
    'dynamic_l2': out['dynamic_l2'],
    'posterior_within': post_within,
    'posterior_between': post_between,
    'prior_within': prior_within,
    'prior_between': prior_between,
    'part_presence': jnp.mean(out['part_presence'].sum(-1)),
    'object_presence': jnp.mean(out['prior'].sum(-1)),
    # Parts an image at presence exactly 1.0: beside the most present one, all the official mask lets
    # the object capsules see (docs/scae.md).
    'saturated_parts': jnp.mean(jnp.sum(out['part_presence'] == 1.0, -1)),
  }


def model_of(config: SCAEConfig, channels: int = 1) -> capsules.SCAE:
  return capsules.SCAE(
    config.n_part_caps,
    config.n_obj_caps,
    config.n_part_features,
    config.n_obj_params,
    config.template_size,
    channels,
    config.encoder_channels,
    tuple(config.encoder_strides),
    config.normalize_part_mixture,
    config.presence_mask,
    config.attention_pooling,
  )


def canvas(config: SCAEConfig, keys: jax.Array, images: jax.Array) -> jax.Array:
  """uint8 ``images [B, H, W, C]`` as floats on the ``[B, S, S, C]`` canvas, each shifted by its key ``[B]``.

  Raises:
    ValueError: the images do not fit the canvas.
  """
  if images.shape[1] > config.canvas_size or images.shape[2] > config.canvas_size:
    raise ValueError(f'images of {images.shape[1]}x{images.shape[2]} do not fit canvas_size {config.canvas_size}.')
  return jax.vmap(lambda k, x: pad_and_shift(k, x, config.canvas_size, config.max_shift))(
    keys, augment.to_float(images)
  )


def split_keys(keys: jax.Array):
  """Per-example keys ``[B]`` -> ``(shift keys [B], noise keys [B])``."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


def _noise(config: SCAEConfig, keys: jax.Array):
  # One noise key per example: an image's noise does not depend on its batch.
  return jax.vmap(lambda k: capsules.presence_noise(k, config.n_part_caps, config.n_obj_caps, config.presence_noise))(
    keys
  )


def forward(config: SCAEConfig, params, images: jax.Array, keys: jax.Array):
  """The model's outputs (:class:`~unsupervised_jax.models.capsules.SCAE`) on uint8 ``images [B, H, W, C]``
  with one key ``[B]`` per image (its shift and its presence noise)."""
  shift_keys, noise_keys = split_keys(keys)
  return model_of(config, images.shape[-1]).apply(
    {'params': params}, canvas(config, shift_keys, images), _noise(config, noise_keys)
  )


def reconstruct(config: SCAEConfig, params, images: jax.Array):
  """``(canvas [B, S, S, C], reconstruction [B, S, S, C])``: the padded, shifted inputs (keys from their
  pixels, :func:`image_keys`) and the part capsules' mixture mean ``sum_m w_m mu_m`` per pixel (the background
  one of the components)."""
  keys = image_keys(images)
  out = forward(config, params, images, keys)
  weights = jax.nn.softmax(out['log_weights'], axis=1)[..., None]  # [B, M + 1, S, S, 1]
  return canvas(config, split_keys(keys)[0], images), jnp.sum(weights * out['means'], axis=1)


def distinct_templates(templates: jax.Array, tolerance: float = 0.05) -> jax.Array:
  """How many of the templates ``[M, t, t, C]`` (values in [0, 1]) differ: those farther than ``tolerance``
  (RMS over pixels) from every earlier template, ``[]`` int32 (1: all nearly identical; M: all apart)."""
  flat = templates.reshape(templates.shape[0], -1)
  distance = jnp.sqrt(jnp.mean(jnp.square(flat[:, None] - flat[None]), axis=-1))  # [M, M]
  earlier = jnp.tril(jnp.ones(distance.shape, bool), k=-1)
  return jnp.sum(~jnp.any(earlier & (distance <= tolerance), axis=1)).astype(jnp.int32)


def scae(config: SCAEConfig, train, data: contract.DataInfo) -> contract.Method:
  """The SCAE as a :class:`~unsupervised_jax.training.contract.Method`; ``embed`` gives ``[B, n_obj_caps]``
  presences; ``monitor`` the part capsules' reconstruction error beside a blank canvas's
  (``reconstruction_mse``, ``blank_canvas_mse``, mean squared over canvas pixels in [0, 1]) and
  ``distinct_templates`` (:func:`distinct_templates`).

  Args:
    config: the SCAE's settings.
    train: the run's ``TrainConfig`` (RMSProp's epsilon is ``1e-2 / batch_size^2``, as the official code).
    data: the training images (they must fit the canvas).

  Raises:
    ValueError: a bad setting, or images larger than the canvas.
  """
  config.validate(train)
  height, width = data.image_shape[:2]
  if height > config.canvas_size or width > config.canvas_size:
    raise ValueError(f'images of {height}x{width} do not fit canvas_size {config.canvas_size}.')
  optimizer = tf_rmsprop(config.learning_rate, train.batch_size)

  def init(key, sample):
    params_key, data_key = jax.random.split(key)
    shift_keys, noise_keys = split_keys(data_key[None])
    init_fn = jax.jit(
      lambda k, x: model_of(config, sample.shape[-1]).init(k, canvas(config, shift_keys, x), _noise(config, noise_keys))
    )
    params = init_fn(params_key, sample)['params']
    return SCAEState(base.zeros_step(), params, optimizer.init(params))

  def train_step(state, images, example_keys):
    def loss_fn(params):
      return scae_loss(config, forward(config, params, images, example_keys), base.AXIS)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = base.apply_gradients(optimizer, grads, state.params, state.opt_state)
    return state.replace(params=params, opt_state=opt_state), metrics

  def embed(state, images):
    out = forward(config, state.params, images, image_keys(images))
    if config.codes == 'prior':
      return out['prior']
    return out['posterior'].sum(-1) / out['posterior'].shape[-1]

  def monitor(state, images):
    target, reconstruction = reconstruct(config, state.params, images)
    templates = model_of(config, images.shape[-1]).apply({'params': state.params}, method='templates')
    return {
      'reconstruction_mse': jnp.mean(jnp.square(target - reconstruction)),
      'blank_canvas_mse': jnp.mean(jnp.square(target)),
      'distinct_templates': distinct_templates(templates),
    }

  return contract.Method('scae', init, train_step, embed, config=config, monitor=monitor)
