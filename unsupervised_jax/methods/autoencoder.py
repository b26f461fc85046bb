"""Autoencoder trained with MSE (optionally denoising) on the shared training core.

The poster's baseline (784-128-12, then a GMM on the codes) and DEC's
784-500-500-2000-10 (Xie et al. 2016), whose codes N2D (McConville et al.
2019) clusters after UMAP.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from unsupervised_jax import augment
from unsupervised_jax import settings
from unsupervised_jax.methods import base
from unsupervised_jax.models import autoencoder as models
from unsupervised_jax.settings import setting
from unsupervised_jax.training import contract


@flax.struct.dataclass
class AEState:
  """``step`` [] int32, ``params`` of the model, ``opt_state`` of the optax optimizer."""

  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class AEConfig:
  architecture: str = setting('mlp', 'Autoencoder architecture.', choices=('mlp', 'conv'))
  hidden: Tuple[int, ...] = setting(
    (128,), "MLP hidden widths of the encoder (the decoder mirrors them); the poster's 784-128-12.", minimum=1
  )
  latent_dim: int = setting(12, 'Code size.', minimum=1)
  learning_rate: float = setting(1e-3, 'Adam learning rate.', above=0)
  noise_std: float = setting(0.0, 'Input noise of a denoising autoencoder; 0 = plain.', minimum=0)

  def validate(self, train=None):
    """Raises ValueError (one line) on a bad setting."""
    del train
    settings.check(self)


def _model(config: AEConfig, image_shape):
  image_shape = tuple(image_shape)
  if config.architecture == 'mlp':
    return models.MLPAutoencoder(image_shape, tuple(config.hidden), config.latent_dim)
  return models.ConvAutoencoder(image_shape, latent_dim=config.latent_dim)


def reconstruct(config: AEConfig, params, images):
  """Reconstructions ``[B, H, W, C]`` in [0, 1] of uint8 ``images [B, H, W, C]``."""
  return _model(config, images.shape[1:]).apply({'params': params}, augment.to_float(images))


def autoencoder(config: AEConfig, train, data: contract.DataInfo) -> contract.Method:
  """The autoencoder as a :class:`~unsupervised_jax.training.contract.Method`; ``embed`` gives the codes
  ``[B, latent_dim]``. ``train`` and ``data`` are not needed (the factory signature of every method).

  Raises:
    ValueError: a bad setting.
  """
  del train, data
  config.validate()
  optimizer = optax.adam(config.learning_rate)

  def init(key, sample):
    params = _model(config, sample.shape[1:]).init(key, augment.to_float(sample))['params']
    return AEState(base.zeros_step(), params, optimizer.init(params))

  def loss(params, images, keys):
    """Mean squared reconstruction error of uint8 ``images [B, H, W, C]``."""
    x = augment.to_float(images)
    inputs = x
    if config.noise_std > 0:
      inputs = jax.vmap(augment.gaussian_noise, in_axes=(0, 0, None))(keys, x, config.noise_std)
    return jnp.mean((_model(config, images.shape[1:]).apply({'params': params}, inputs) - x) ** 2)

  def train_step(state, images, keys):
    value, grads = jax.value_and_grad(loss)(state.params, images, keys)
    params, opt_state = base.apply_gradients(optimizer, grads, state.params, state.opt_state)
    return state.replace(params=params, opt_state=opt_state), {'loss': value}

  def embed(state, images):
    return _model(config, images.shape[1:]).apply({'params': state.params}, augment.to_float(images), method='encode')

  return contract.Method('autoencoder', init, train_step, embed, config=config)


def figures(config: AEConfig, state, images, workdir, matching=None):
  """``reconstructions.png``: inputs (top rows) against reconstructions (bottom rows) of 20 of ``images``."""
  del matching  # the autoencoder's clusters come from the evaluation's clustering of its codes
  import numpy as np

  from unsupervised_jax import plots

  sample = np.asarray(images[:20])
  reconstructions = np.asarray(jax.jit(reconstruct, static_argnums=0)(config, state.params, sample))
  plots.image_grid(
    np.concatenate([sample.astype(np.float32) / 255, reconstructions]),
    f'{workdir}/reconstructions.png',
    ncols=10,
    suptitle='inputs (rows 1-2) and reconstructions (rows 3-4)',
  )
