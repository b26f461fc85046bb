"""Autoencoder trained with MSE (optionally denoising) on the shared training core."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from unsupervised_jax import augment
from unsupervised_jax.models import autoencoder as models
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel


@flax.struct.dataclass
class AEState:
  """``step`` [] int32, ``params`` of the model, ``opt_state`` of the optax optimizer."""
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class AEConfig:
  architecture: str = 'mlp'  # 'mlp' or 'conv'
  hidden: Tuple[int, ...] = (128,)  # MLP widths; the poster's 784-128-12
  latent_dim: int = 12
  learning_rate: float = 1e-3
  noise_std: float = 0.0  # > 0: denoising autoencoder (Gaussian input noise)

  def validate(self):
    if self.architecture not in ('mlp', 'conv'):
      raise ValueError(f"architecture must be 'mlp' or 'conv', got {self.architecture!r}.")
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}.')
    if self.latent_dim < 1 or any(h < 1 for h in self.hidden):
      raise ValueError(f'latent_dim and hidden widths must be >= 1, got {self.latent_dim}, {self.hidden}.')
    if self.noise_std < 0:
      raise ValueError(f'noise_std must be >= 0, got {self.noise_std}.')


class Autoencoder:
  """Model, optimizer and the pure functions the trainer and the evaluation need."""

  def __init__(self, config: AEConfig, image_shape: Sequence[int]):
    config.validate()
    self.config = config
    image_shape = tuple(image_shape)
    if config.architecture == 'mlp':
      self.model = models.MLPAutoencoder(image_shape, tuple(config.hidden), config.latent_dim)
    else:
      self.model = models.ConvAutoencoder(image_shape, latent_dim=config.latent_dim)
    self.optimizer = optax.adam(config.learning_rate)
    self.image_shape = image_shape

  def init(self, key: jax.Array) -> AEState:
    params = self.model.init(key, jnp.zeros((1,) + self.image_shape))['params']
    return AEState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params))

  def loss(self, params, images, keys):
    """Mean squared reconstruction error of uint8 ``images [B, H, W, C]``."""
    x = augment.to_float(images)
    inputs = x
    if self.config.noise_std > 0:
      inputs = jax.vmap(augment.gaussian_noise, in_axes=(0, 0, None))(keys, x, self.config.noise_std)
    reconstruction = self.model.apply({'params': params}, inputs)
    return jnp.mean((reconstruction - x) ** 2)

  def train_step(self, state: AEState, images, keys):
    loss, grads = jax.value_and_grad(self.loss)(state.params, images, keys)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), {'loss': loss}

  def method(self) -> loop.Method:
    return loop.Method(train_step=self.train_step)

  def embed(self, params, images):
    """Codes ``[B, latent_dim]`` of uint8 ``images [B, H, W, C]``."""
    return self.model.apply({'params': params}, augment.to_float(images), method='encode')

  def reconstruct(self, params, images):
    return self.model.apply({'params': params}, augment.to_float(images))

  def figures(self, state: AEState, images, workdir):
    """Inputs (top rows) against reconstructions (bottom rows) of 20 test images."""
    import numpy as np

    from unsupervised_jax import plots
    sample = np.asarray(images[:20])
    reconstructions = np.asarray(jax.jit(self.reconstruct)(state.params, sample))
    plots.image_grid(np.concatenate([sample.astype(np.float32) / 255, reconstructions]),
                     f'{workdir}/reconstructions.png', ncols=10,
                     suptitle='inputs (rows 1-2) and reconstructions (rows 3-4)')
