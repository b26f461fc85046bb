"""InfoGAN (Chen et al. 2016) on the shared training core; its categorical code is the clustering.

State: the generator's and the discriminator's (D and Q, one shared trunk) ``params`` and BatchNorm
``batch_stats``, and an Adam state for each, in one pytree. One ``train_step`` does what the official
code (openai/InfoGAN, ``infogan_trainer.py``) does per iteration: one D/Q update, then one G update
against the updated D/Q, each on its own fresh latents:

  D/Q: minimise  L_D(real, G(z, c)) - L_I(Q, c)     (Q's head and the shared trunk get L_I's gradient)
  G:   minimise  -E[log D(G(z', c'))] - L_I(Q, c')   (:mod:`unsupervised_jax.losses`)

With ``categorical_view_rotation > 0`` (the MNIST flagfile: 20 degrees) the categorical part of L_I is
scored on a random affine view of each generated image (:func:`information`), so the categories cannot
encode slant; 0 is the official code (docs/infogan.md: ACC 0.763 against 0.968 for seed 0).

Latents per example come from its example key: z from U(-1, 1)^62, c uniform over K categories, and the
continuous codes from U(-1, 1)^L, so a step does not depend on how the batch is split over devices.

BatchNorm over devices: the networks' ``BatchNorm(axis_name='batch')`` run inside the data-parallel
``shard_map``, so training-mode statistics are ``lax.pmean``-ed over the devices (the global batch's
statistics, as on one device) and the running averages, updated from those, are identical on every device.
D normalises real and generated batches separately (two calls, as the official code); its running
averages are updated from the real batch only (the images ``embed`` and ``assign`` see); G's from its
own update's forward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax import augment
from unsupervised_jax import losses
from unsupervised_jax import settings
from unsupervised_jax.methods import base
from unsupervised_jax.models import conv
from unsupervised_jax.models import infogan as models
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract

TRAVERSAL = (-2.0, 2.0)  # continuous codes are drawn from U(-1, 1); the figures go beyond, as the paper's


@flax.struct.dataclass
class InfoGANState:
  """``step``; ``generator`` params and ``generator_stats`` (BatchNorm); ``discriminator`` params of the
  shared trunk with the D and Q heads and ``discriminator_stats``; an Adam state for each network."""

  step: jax.Array
  generator: Any
  generator_stats: Any
  discriminator: Any
  discriminator_stats: Any
  generator_opt_state: Any
  discriminator_opt_state: Any


@dataclasses.dataclass(frozen=True)
class InfoGANConfig:
  noise_dim: int = setting(62, 'Incompressible noise dimensions, from U(-1, 1).', minimum=1)
  num_categories: int = setting(10, 'Categories of the categorical code (the clusters).', minimum=1)
  num_continuous: int = setting(2, 'Continuous codes, from U(-1, 1).', minimum=1)
  categorical_weight: float = setting(1.0, 'Weight of the categorical mutual-information term.', minimum=0)
  continuous_weight: float = setting(1.0, 'Weight of the continuous mutual-information term.', minimum=0)
  discriminator_learning_rate: float = setting(2e-4, 'Adam learning rate of D and Q.', above=0)
  generator_learning_rate: float = setting(1e-3, 'Adam learning rate of G.', above=0)
  beta1: float = setting(0.5, "Adam's beta1, in [0, 1).", minimum=0)
  leaky_slope: float = setting(0.01, 'Leaky ReLU slope of D and Q (the official code: 0.01).', minimum=0)
  categorical_view_rotation: float = setting(
    0.0,
    "Degrees: when > 0, Q's categorical term is scored on a random affine view of each generated image "
    '(rotation up to this, scale 0.9-1.1, shift up to 10%), so a category cannot be spent on slant; 0 = the '
    'official InfoGAN.',
    minimum=0,
  )
  conv_implementation: str = setting(
    'auto',
    "Strided and transposed convolutions: 'auto' = matrix products on CPU, XLA's elsewhere.",
    choices=conv.IMPLEMENTATIONS,
  )

  def validate(self, train=None):
    """Raises ValueError (one line) on a bad setting; ``train`` (the run's ``TrainConfig``) is not needed."""
    del train
    settings.check(self)
    if not self.beta1 < 1:
      raise ValueError(f'beta1 must be in [0, 1), got {self.beta1}.')

  @property
  def latent_dim(self) -> int:
    return self.noise_dim + self.num_categories + self.num_continuous


def sample_latents(config: InfoGANConfig, keys: jax.Array):
  """One latent per key: ``(noise [B, noise_dim], categories [B] int32, continuous [B, num_continuous])``."""

  def one(key):
    noise_key, category_key, continuous_key = jax.random.split(key, 3)
    return (
      jax.random.uniform(noise_key, (config.noise_dim,), minval=-1.0, maxval=1.0),
      jax.random.randint(category_key, (), 0, config.num_categories),
      jax.random.uniform(continuous_key, (config.num_continuous,), minval=-1.0, maxval=1.0),
    )

  return jax.vmap(one)(keys)


def generator_input(config: InfoGANConfig, noise, categories, continuous):
  """``[B, latent_dim]``: noise, the one-hot categorical code, the continuous codes (in the official order)."""
  return jnp.concatenate([noise, jax.nn.one_hot(categories, config.num_categories), continuous], axis=-1)


def networks(config: InfoGANConfig, image_shape):
  """``(generator, discriminator)`` modules for images of ``image_shape (H, W, C)``."""
  generator = models.Generator(tuple(image_shape), config.conv_implementation, axis_name=base.AXIS)
  discriminator = models.Discriminator(
    config.num_categories, config.num_continuous, config.leaky_slope, config.conv_implementation, axis_name=base.AXIS
  )
  return generator, discriminator


def generate(config: InfoGANConfig, state: InfoGANState, image_shape, noise, categories, continuous):
  """Images ``[B, H, W, C]`` in [0, 1] from latents, with G's running BatchNorm averages (evaluation mode)."""
  generator, _ = networks(config, image_shape)
  return generator.apply(
    {'params': state.generator, 'batch_stats': state.generator_stats},
    generator_input(config, noise, categories, continuous),
    train=False,
  )


def information(config: InfoGANConfig, generator_vars, discriminator_vars, image_shape, keys):
  """``(L_I, categorical, continuous, D's logits [B], G's new batch_stats)`` on images generated from ``keys [B]``.

  Training mode: G and D/Q normalise with this batch's statistics (averaged over :data:`base.AXIS`, so
  call it inside the data-parallel step); D's updated running averages are dropped. With
  ``config.categorical_view_rotation > 0`` the categorical logits come from a second pass of D/Q over a random
  affine view of each generated image (the view's key: the example key folded with 1), the GAN logits and the
  continuous means from the images themselves: the category must survive rotation, scaling and shifts (an
  invariance term in the spirit of IMSAT, Hu et al. 2017), which keeps it from encoding slant or position.
  """
  generator, discriminator = networks(config, image_shape)
  noise, categories, continuous = sample_latents(config, keys)
  fake, generator_stats = generator.apply(
    generator_vars, generator_input(config, noise, categories, continuous), train=True, mutable=['batch_stats']
  )
  (fake_logits, categorical_logits, means), _ = discriminator.apply(
    discriminator_vars, fake, train=True, mutable=['batch_stats']
  )
  if config.categorical_view_rotation > 0:
    views = jax.vmap(
      lambda key, image: augment.random_affine(
        jax.random.fold_in(key, 1),
        image,
        max_rotation_deg=config.categorical_view_rotation,
        scale=(0.9, 1.1),
        max_translation=0.1,
      )
    )(keys, fake)
    (_, categorical_logits, _), _ = discriminator.apply(discriminator_vars, views, train=True, mutable=['batch_stats'])
  mi, categorical, cont = losses.infogan_mutual_information(
    categorical_logits, categories, means, continuous, config.categorical_weight, config.continuous_weight
  )
  return mi, categorical, cont, fake_logits, generator_stats['batch_stats']


def category_order(num_categories: int, matching=None) -> np.ndarray:
  """Codes ``[K]`` int32 ordered by their matched class (``matching``: ``{code: class}``), unmatched codes
  last in index order; index order without ``matching``."""
  matched = sorted((matching or {}).items(), key=lambda item: (item[1], item[0]))
  first = [code for code, _ in matched if 0 <= code < num_categories]
  return np.asarray(first + [c for c in range(num_categories) if c not in first], np.int32)


def infogan(config: InfoGANConfig, train, data: contract.DataInfo) -> contract.Method:
  """InfoGAN as a :class:`~unsupervised_jax.training.contract.Method`: ``embed`` gives the shared trunk's
  features ``[B, 1024]`` and ``assign`` the argmax of Q's categorical logits ``[B]`` on real images.

  Args:
    config: InfoGAN's settings.
    train: the run's ``TrainConfig``.
    data: the training images (unused: the factory signature of every method).

  Raises:
    ValueError: a bad setting.
  """
  del data
  config.validate(train)
  discriminator_optimizer = optax.adam(config.discriminator_learning_rate, b1=config.beta1)
  generator_optimizer = optax.adam(config.generator_learning_rate, b1=config.beta1)

  def init(key, sample):
    generator, discriminator = networks(config, sample.shape[1:])
    generator_key, discriminator_key = jax.random.split(key)
    g = generator.init(generator_key, jnp.zeros((1, config.latent_dim)), train=False)
    d = discriminator.init(discriminator_key, augment.to_float(sample), train=False)
    return InfoGANState(
      base.zeros_step(),
      g['params'],
      g['batch_stats'],
      d['params'],
      d['batch_stats'],
      generator_optimizer.init(g['params']),
      discriminator_optimizer.init(d['params']),
    )

  def train_step(state, images, example_keys):
    image_shape = images.shape[1:]
    _, discriminator = networks(config, image_shape)
    real = augment.to_float(images)
    d_keys, g_keys = jax.vmap(jax.random.split, out_axes=1)(example_keys)  # fresh latents for each update
    g_vars = {'params': state.generator, 'batch_stats': state.generator_stats}

    def discriminator_loss(params):
      variables = {'params': params, 'batch_stats': state.discriminator_stats}
      (real_logits, _, _), real_stats = discriminator.apply(variables, real, train=True, mutable=['batch_stats'])
      mi, categorical, cont, fake_logits, _ = information(
        config, jax.lax.stop_gradient(g_vars), variables, image_shape, d_keys
      )
      gan = losses.gan_discriminator_loss(real_logits, fake_logits)
      return gan - mi, (real_stats['batch_stats'], gan, mi, categorical, cont)

    grads, (d_stats, d_gan, mi, categorical, cont) = jax.grad(discriminator_loss, has_aux=True)(state.discriminator)
    d_params, d_opt_state = base.apply_gradients(
      discriminator_optimizer, grads, state.discriminator, state.discriminator_opt_state
    )

    def generator_loss(params):
      d_vars = {'params': d_params, 'batch_stats': d_stats}
      g_mi, _, _, fake_logits, g_stats = information(
        config, {'params': params, 'batch_stats': state.generator_stats}, d_vars, image_shape, g_keys
      )
      gan = losses.gan_generator_loss(fake_logits)
      return gan - g_mi, (g_stats, gan)

    grads, (g_stats, g_gan) = jax.grad(generator_loss, has_aux=True)(state.generator)
    g_params, g_opt_state = base.apply_gradients(generator_optimizer, grads, state.generator, state.generator_opt_state)
    new_state = state.replace(
      generator=g_params,
      generator_stats=g_stats,
      discriminator=d_params,
      discriminator_stats=d_stats,
      generator_opt_state=g_opt_state,
      discriminator_opt_state=d_opt_state,
    )
    return new_state, {'d_loss': d_gan, 'g_loss': g_gan, 'mi': mi, 'mi_categorical': categorical, 'mi_continuous': cont}

  def _discriminator(state, images, method=None):
    _, discriminator = networks(config, images.shape[1:])
    variables = {'params': state.discriminator, 'batch_stats': state.discriminator_stats}
    return discriminator.apply(variables, augment.to_float(images), train=False, method=method)

  def embed(state, images):
    return _discriminator(state, images, method='features')

  def assign(state, images):
    return jnp.argmax(_discriminator(state, images)[1], axis=-1).astype(jnp.int32)

  return contract.Method('infogan', init, train_step, embed, assign=assign, config=config)


def figures(config: InfoGANConfig, state, images, workdir, matching=None):
  """``categories.png``: 10 noise draws (rows) x the categorical code (columns); ``continuous_<l>.png``:
  code ``l`` from -2 to 2 (columns) for each category (rows), one noise draw, the other codes 0.

  With ``matching`` (``{code: digit}``, the Hungarian matching of ``assign`` on labelled images) the
  categories are ordered by their matched digit, as the poster's grid, and titled ``code -> digit``;
  without it, in code index order.
  """
  from unsupervised_jax import plots

  image_shape = tuple(images.shape[1:])
  k, num_continuous = config.num_categories, config.num_continuous
  order = category_order(k, matching)
  names = [f'{c} -> {matching[c]}' if matching and c in matching else f'code {c}' for c in order]
  how = 'ordered by matched digit' if matching else 'code index order'
  noise = jax.random.uniform(jax.random.key(0), (10, config.noise_dim), minval=-1.0, maxval=1.0)
  render = jax.jit(lambda n, c, x, s: generate(config, s, image_shape, n, c, x))
  grid = render(jnp.repeat(noise, k, axis=0), jnp.tile(order, 10), jnp.zeros((10 * k, num_continuous)), state)
  plots.image_grid(
    np.asarray(grid),
    f'{workdir}/categories.png',
    ncols=k,
    titles=names + [''] * (9 * k),
    suptitle=f'InfoGAN: rows = noise, columns = categorical code ({how})',
  )
  values = jnp.linspace(*TRAVERSAL, 9)
  for code in range(num_continuous):
    continuous = jnp.zeros((k * 9, num_continuous)).at[:, code].set(jnp.tile(values, k))
    grid = render(jnp.repeat(noise[:1], k * 9, axis=0), jnp.repeat(order, 9), continuous, state)
    titles = [name if column == 0 else '' for name in names for column in range(9)]
    plots.image_grid(
      np.asarray(grid),
      f'{workdir}/continuous_{code}.png',
      ncols=9,
      titles=titles,
      suptitle=f'InfoGAN: continuous code {code} from {TRAVERSAL[0]:g} to {TRAVERSAL[1]:g} '
      f'(columns), one row per category ({how})',
    )
