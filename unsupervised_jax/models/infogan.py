"""InfoGAN's MNIST networks (Chen et al. 2016, appendix C.1; openai/InfoGAN's ``run_mnist_exp.py``).

Generator ``G``: the latent ``[B, 74]`` (62 noise dims, a 10-way one-hot code, 2 continuous codes) ->
FC 1024, BN, ReLU -> FC ``s*s*128``, BN, ReLU -> 4x4 transposed conv 64 stride 2, BN, ReLU -> 4x4
transposed conv to C channels stride 2, sigmoid, with ``s = ceil(H / 4)`` (7 for MNIST, 2 for the 8x8
digits), cropped to ``H x W``. BN comes before the ReLU, as in the official code.

Discriminator ``D`` and recognition network ``Q`` share a trunk: 4x4 conv 64 stride 2, lReLU -> 4x4
conv 128 stride 2, BN, lReLU -> FC 1024, BN, lReLU (the ``features``); D's head is FC 1, Q's head
FC 128, BN, lReLU -> categorical logits and the continuous codes' means. Images are zero-padded at the
bottom and right to a multiple of 4 first (MNIST's 28 and the digits' 8 need none). Leaky slope 0.01
and weights N(0, 0.02) as the official code.

The strided and transposed 4x4 convolutions (padding 1, so ``H -> H/2`` and ``H -> 2H``, PyTorch's
``Conv2d(4, 2, 1)`` / ``ConvTranspose2d(4, 2, 1)``, and TF's 'SAME' for even sizes) have a matrix-product
form for XLA:CPU (:func:`strided_conv`, :func:`transposed_conv`), whose weight gradients autodiff
writes as plain dots rather than XLA:CPU's slow convolution weight gradient; the native convolution is
used on GPU and TPU (``implementation='auto'``, as :class:`unsupervised_jax.models.conv.Conv`).

BatchNorm: with ``axis_name`` set (the data-parallel ``'batch'`` axis) training-mode batch statistics
are averaged over the devices (``lax.pmean`` inside flax's ``BatchNorm``), so every device normalises
with the global batch's statistics and keeps identical running averages.
"""

from __future__ import annotations

from typing import Optional
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from unsupervised_jax.models import conv

Array = jax.Array
KERNEL = 4
INIT = nn.initializers.normal(0.02)
# (kernel tap, offset into the 1-padded taps) per output phase of the stride-2 transposed convolution:
# out[2m + a] = sum over (k, r) in _PHASE_TAPS[a] of taps[m + r - 1, k], from out[o] = sum_{o = 2i + k - 1} x[i] w[k].
_PHASE_TAPS = (((1, 1), (3, 0)), ((2, 1), (0, 2)))


def strided_conv(x: Array, kernel: Array) -> Array:
  """4x4 stride-2 convolution with padding 1 as one matrix product of the 16 strided taps
  (:func:`unsupervised_jax.models.conv.conv_valid` of the 1-padded input).

  Args:
    x: ``[B, H, W, C_in]``, H and W even.
    kernel: ``[4, 4, C_in, C_out]`` (HWIO).

  Returns:
    ``[B, H/2, W/2, C_out]``, equal to ``lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))``.
  """
  return conv.conv_valid(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel, stride=2)


def transposed_conv(x: Array, kernel: Array) -> Array:
  """4x4 stride-2 transposed convolution with padding 1: one matrix product, then col2im by output phase.

  Every input pixel times the kernel gives its 16 taps (``x @ kernel``, ``[B, H, W, 4, 4, C_out]``); output
  pixel ``(2m + a, 2n + b)`` is the sum of the 4 taps that land on it (:data:`_PHASE_TAPS`), and the four
  phases are interleaved.

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[4, 4, C_in, C_out]``: input pixel ``i`` adds ``x[i] kernel[k]`` to output ``2i + k - 1``.

  Returns:
    ``[B, 2H, 2W, C_out]``, equal to :func:`_xla_transposed_conv`.
  """
  b, h, w, c_in = x.shape
  c_out = kernel.shape[-1]
  weights = kernel.transpose(2, 0, 1, 3).reshape(c_in, KERNEL * KERNEL * c_out)
  taps = (x.reshape(-1, c_in) @ weights).reshape(b, h, w, KERNEL, KERNEL, c_out)
  taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
  rows = []
  for a in (0, 1):
    columns = []
    for col in (0, 1):
      columns.append(
        sum(taps[:, ry : ry + h, rx : rx + w, ky, kx] for ky, ry in _PHASE_TAPS[a] for kx, rx in _PHASE_TAPS[col])
      )
    rows.append(jnp.stack(columns, axis=3))  # [B, H, W, 2 (column phase), C_out]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, c_out)  # [B, H, 2, W, 2, C] -> [B, 2H, 2W, C]


def _xla_strided_conv(x: Array, kernel: Array) -> Array:
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _xla_transposed_conv(x: Array, kernel: Array) -> Array:
  """XLA's form: the input dilated by 2, padded by 2, correlated with the flipped kernel."""
  return jax.lax.conv_general_dilated(
    x, kernel[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


class StridedConv(nn.Module):
  """4x4 convolution, stride 2, padding 1, with bias: ``[B, H, W, C] -> [B, H/2, W/2, features]``."""

  features: int
  implementation: str = 'auto'
  transpose: bool = False  # True: the transposed convolution, ``[B, H, W, C] -> [B, 2H, 2W, features]``

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', INIT, (KERNEL, KERNEL, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    if conv.use_matmul(self.implementation):
      y = transposed_conv(x, kernel) if self.transpose else strided_conv(x, kernel)
    else:
      y = _xla_transposed_conv(x, kernel) if self.transpose else _xla_strided_conv(x, kernel)
    return y + bias


def _batch_norm(axis_name: Optional[str], name: Optional[str] = None) -> nn.BatchNorm:
  """BatchNorm whose training-mode statistics are averaged over ``axis_name`` (ignored at init and in eval)."""
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5, axis_name=axis_name, name=name)  # the official EMA decay 0.9


class Generator(nn.Module):
  """``latent [B, latent_dim] -> images [B, H, W, C]`` in [0, 1] (see the module docstring)."""

  image_shape: Tuple[int, int, int]
  implementation: str = 'auto'
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, latent: Array, train: bool = True) -> Array:
    h, w, c = self.image_shape
    sh, sw = -(-h // 4), -(-w // 4)
    norm = lambda x: _batch_norm(self.axis_name)(x, use_running_average=not train)
    x = nn.relu(norm(nn.Dense(1024, kernel_init=INIT)(latent)))
    x = nn.relu(norm(nn.Dense(sh * sw * 128, kernel_init=INIT)(x)))
    x = x.reshape(-1, sh, sw, 128)
    x = nn.relu(norm(StridedConv(64, self.implementation, transpose=True)(x)))
    x = StridedConv(c, self.implementation, transpose=True)(x)  # [B, 4 sh, 4 sw, C]
    return nn.sigmoid(x[:, :h, :w])


class Discriminator(nn.Module):
  """``images [B, H, W, C]`` in [0, 1] -> ``(d_logits [B], categorical_logits [B, K], continuous_means [B, L])``;
  ``features`` gives the shared trunk's ``[B, 1024]``."""

  num_categories: int = 10
  num_continuous: int = 2
  leaky_slope: float = 0.01
  implementation: str = 'auto'
  axis_name: Optional[str] = None

  def setup(self):
    self.conv1 = StridedConv(64, self.implementation)
    self.conv2 = StridedConv(128, self.implementation)
    self.bn_conv2 = _batch_norm(self.axis_name)
    self.fc = nn.Dense(1024, kernel_init=INIT)
    self.bn_fc = _batch_norm(self.axis_name)
    self.d_head = nn.Dense(1, kernel_init=INIT)
    self.q_fc = nn.Dense(128, kernel_init=INIT)
    self.bn_q = _batch_norm(self.axis_name)
    self.q_out = nn.Dense(self.num_categories + self.num_continuous, kernel_init=INIT)

  def features(self, x: Array, train: bool = False) -> Array:
    """The shared trunk: ``[B, H, W, C] -> [B, 1024]``."""
    lrelu = lambda v: nn.leaky_relu(v, self.leaky_slope)
    h, w = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)))
    x = lrelu(self.conv1(x))
    x = lrelu(self.bn_conv2(self.conv2(x), use_running_average=not train))
    return lrelu(self.bn_fc(self.fc(x.reshape(x.shape[0], -1)), use_running_average=not train))

  def __call__(self, x: Array, train: bool = True):
    trunk = self.features(x, train)
    q = nn.leaky_relu(self.bn_q(self.q_fc(trunk), use_running_average=not train), self.leaky_slope)
    q = self.q_out(q)
    return self.d_head(trunk)[:, 0], q[:, : self.num_categories], q[:, self.num_categories :]
