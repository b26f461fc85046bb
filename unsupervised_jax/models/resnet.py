"""ResNets with basic blocks (He et al. 2016), as MiCE uses them (Flax Linen, NHWC).

Two stems, as the MiCE code's two ResNet-34s:

* ``'cifar'``: a 3x3 stride-1 convolution, no max-pool (CIFAR-10/100-20, 32x32);
* ``'imagenet'``: a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool (STL-10, ImageNet-Dog, 96x96).

Then four stages of basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2,
2), global average pooling: ``[B, H, W, C]`` in [0, 1] -> ``[B, 512]``.
BatchNorm keeps running averages in the ``batch_stats`` collection; call
with ``train=True`` and ``mutable=['batch_stats']`` to use (and update) the
batch's statistics.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

STEMS = ('cifar', 'imagenet')
# Blocks per stage.
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with BatchNorm, plus the (projected when the shape changes) input."""

  channels: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
    conv = functools.partial(
      nn.Conv, use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    )  # torchvision's (and MiCE's) He init on fan-out
    y = nn.relu(norm()(conv(self.channels, (3, 3), (self.stride, self.stride), padding=1)(x)))
    y = norm()(conv(self.channels, (3, 3), padding=1)(y))
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = norm()(conv(self.channels, (1, 1), (self.stride, self.stride))(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A basic-block ResNet; ``[B, H, W, C]`` float -> ``[B, 8 * width]`` after global average pooling."""

  stage_sizes: Sequence[int] = DEPTHS[34]
  stem: str = 'cifar'
  width: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.stem not in STEMS:
      raise ValueError(f'stem must be one of {", ".join(STEMS)}, got {self.stem!r}.')
    conv = functools.partial(
      nn.Conv, use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    )
    if self.stem == 'cifar':
      x = conv(self.width, (3, 3), padding=1)(x)
    else:
      x = conv(self.width, (7, 7), (2, 2), padding=3)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        x = BasicBlock(self.width * 2**stage, stride=2 if stage > 0 and block == 0 else 1)(x, train)
    return jnp.mean(x, axis=(1, 2))


def resnet34(stem: str = 'cifar') -> ResNet:
  """ResNet-34 (3, 4, 6, 3 basic blocks) with the ``'cifar'`` or ``'imagenet'`` stem; 512 features."""
  return ResNet(DEPTHS[34], stem)
