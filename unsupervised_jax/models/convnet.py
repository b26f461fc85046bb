"""Small ConvNets (Flax Linen)."""

from __future__ import annotations

import flax.linen as nn

from unsupervised_jax.models import conv


class SmallConvNet(nn.Module):
  """The poster's MNIST encoder: 2 conv, 1 max-pool, FC; no BatchNorm (so no batch-statistics leak
  between MoCo's queries and keys). ``[B, H, W, C]`` in [0, 1] -> ``[B, features]``."""

  channels: tuple = (32, 64)
  hidden: int = 128
  features: int = 128
  conv_implementation: str = 'auto'  # see models.conv.Conv

  @nn.compact
  def __call__(self, x):
    x = nn.relu(conv.Conv(self.channels[0], (3, 3), self.conv_implementation)(x))
    x = conv.Conv(self.channels[1], (3, 3), self.conv_implementation, relu_max_pool=True)(x)
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.features)(x)
