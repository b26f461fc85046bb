"""Autoencoders (Flax Linen, used functionally through ``init`` / ``apply``)."""

from __future__ import annotations

from typing import Sequence
from typing import Tuple

import flax.linen as nn


class MLPAutoencoder(nn.Module):
  """Fully connected autoencoder: pixels ``[B, H, W, C]`` in [0, 1] -> code ``[B, latent_dim]`` -> pixels.

  ``hidden=(128,), latent_dim=12`` is the poster's 784-128-12; ``(500, 500, 2000)``
  with ``latent_dim=10`` is DEC's.
  """

  image_shape: Tuple[int, int, int]
  hidden: Sequence[int] = (128,)
  latent_dim: int = 12

  def setup(self):
    self.encoder_layers = [nn.Dense(h) for h in self.hidden] + [nn.Dense(self.latent_dim)]
    size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    self.decoder_layers = [nn.Dense(h) for h in reversed(self.hidden)] + [nn.Dense(size)]

  def encode(self, x):
    h = x.reshape(x.shape[0], -1)
    for layer in self.encoder_layers[:-1]:
      h = nn.relu(layer(h))
    return self.encoder_layers[-1](h)

  def decode(self, z):
    h = z
    for layer in self.decoder_layers[:-1]:
      h = nn.relu(layer(h))
    return nn.sigmoid(self.decoder_layers[-1](h)).reshape((z.shape[0],) + tuple(self.image_shape))

  def __call__(self, x):
    return self.decode(self.encode(x))


class ConvAutoencoder(nn.Module):
  """Small convolutional autoencoder for 28x28 (or any H, W divisible by 4) images."""

  image_shape: Tuple[int, int, int]
  features: Sequence[int] = (32, 64)
  latent_dim: int = 10

  def setup(self):
    self.convs = [nn.Conv(f, (3, 3), strides=(2, 2)) for f in self.features]
    self.to_code = nn.Dense(self.latent_dim)
    h, w = self.image_shape[0] // 4, self.image_shape[1] // 4
    self.from_code = nn.Dense(h * w * self.features[-1])
    self.deconvs = [nn.ConvTranspose(f, (3, 3), strides=(2, 2)) for f in reversed(self.features[:-1])]
    self.to_pixels = nn.ConvTranspose(self.image_shape[2], (3, 3), strides=(2, 2))

  def encode(self, x):
    h = x
    for conv in self.convs:
      h = nn.relu(conv(h))
    return self.to_code(h.reshape(h.shape[0], -1))

  def decode(self, z):
    h = nn.relu(self.from_code(z)).reshape(
      (z.shape[0], self.image_shape[0] // 4, self.image_shape[1] // 4, self.features[-1])
    )
    for deconv in self.deconvs:
      h = nn.relu(deconv(h))
    return nn.sigmoid(self.to_pixels(h))

  def __call__(self, x):
    return self.decode(self.encode(x))
