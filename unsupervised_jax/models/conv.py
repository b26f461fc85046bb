"""Stride-1 'SAME' convolution as matrix products, for XLA:CPU.

XLA:CPU's convolution is slow where the training step needs it most: for the
poster's 32->64 3x3 layer at batch 256 on a 2-core CPU, its weight gradient
took about 8x the forward pass (measured: 2,340 vs 255 ms; PyTorch's whole
backward 431 ms). Written as im2col matrix products, forward and both
gradients are dots XLA:CPU does well; building the patches a few images at a
time keeps them in cache (a whole batch of patches, 231 MB, took longer to
write than the product took to compute). On GPU and TPU the native
convolution is the fast one, so :class:`Conv` uses it there.
"""
from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
IMPLEMENTATIONS = ('auto', 'xla', 'matmul')
_IMAGES_PER_CHUNK = 4  # patches of 4 MNIST-size images (~7 MB) stay in cache; measured best of 4/8/16/32


def _patches(x: Array, kernel_size: Tuple[int, int]) -> Array:
  """``[B, H, W, C]`` -> ``[B * H * W, kh * kw * C]`` 'SAME' patches, ordered (row offset, column offset, channel)."""
  kh, kw = kernel_size
  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
  taps = [padded[:, dy:dy + h, dx:dx + w] for dy in range(kh) for dx in range(kw)]
  return jnp.concatenate(taps, axis=-1).reshape(b * h * w, kh * kw * c)


def _chunked(x: Array) -> Tuple[Array, int]:
  """``[B, ...]`` -> ``[B / n, n, ...]`` with n the largest of ``_IMAGES_PER_CHUNK``'s divisors dividing B."""
  n = math.gcd(x.shape[0], _IMAGES_PER_CHUNK)
  return x.reshape((x.shape[0] // n, n) + x.shape[1:]), n


def _forward(x: Array, kernel: Array) -> Array:
  kh, kw, _, c_out = kernel.shape
  chunks, _ = _chunked(x)
  flat_kernel = kernel.reshape(-1, c_out)
  y = jax.lax.map(lambda xc: _patches(xc, (kh, kw)) @ flat_kernel, chunks)
  return y.reshape(x.shape[:3] + (c_out,))


@jax.custom_vjp
def conv_same(x: Array, kernel: Array) -> Array:
  """Stride-1 'SAME' cross-correlation, equal to ``lax.conv_general_dilated`` (NHWC, HWIO).

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]``, odd kh and kw.

  Returns:
    ``[B, H, W, C_out]``.
  """
  return _forward(x, kernel)


def _conv_same_fwd(x, kernel):
  return _forward(x, kernel), (x, kernel)


def _conv_same_bwd(residuals, grad_y):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape

  def accumulate(grad_kernel, chunk):
    xc, gc = chunk
    return grad_kernel + _patches(xc, (kh, kw)).T @ gc.reshape(-1, c_out), None

  x_chunks, _ = _chunked(x)
  g_chunks, _ = _chunked(grad_y)
  grad_kernel, _ = jax.lax.scan(accumulate, jnp.zeros((kh * kw * c_in, c_out), kernel.dtype), (x_chunks, g_chunks))
  grad_x = _input_gradient(grad_y, kernel)  # XLA drops it where nothing uses it (a network's first layer)
  return grad_x, grad_kernel.reshape(kernel.shape)


def _input_gradient(grad_y: Array, kernel: Array) -> Array:
  """col2im: every output pixel's gradient times the kernel, added back at the pixels it read.

  (Measured 15% faster here than correlating grad_y with the flipped kernel,
  whose patches are twice as wide when C_out = 2 C_in.)
  """
  kh, kw, c_in, c_out = kernel.shape
  b, h, w, _ = grad_y.shape
  chunks, n = _chunked(grad_y)
  kernel_t = kernel.reshape(kh * kw * c_in, c_out).T

  def one_chunk(gc):
    taps = (gc.reshape(-1, c_out) @ kernel_t).reshape(n, h, w, kh * kw, c_in)
    padded = jnp.zeros((n, h + kh - 1, w + kw - 1, c_in), grad_y.dtype)
    for dy in range(kh):
      for dx in range(kw):
        padded = padded.at[:, dy:dy + h, dx:dx + w].add(taps[..., dy * kw + dx, :])
    return padded[:, kh // 2:kh // 2 + h, kw // 2:kw // 2 + w]

  return jax.lax.map(one_chunk, chunks).reshape(b, h, w, c_in)


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


class Conv(nn.Module):
  """Stride-1 'SAME' convolution with bias; the parameters (``kernel`` HWIO, ``bias``) are ``nn.Conv``'s.

  ``implementation``: 'xla' (``lax`` convolution), 'matmul' (:func:`conv_same`),
  or 'auto' (matmul on CPU, where it is faster, XLA elsewhere).
  """
  features: int
  kernel_size: Tuple[int, int] = (3, 3)
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.implementation not in IMPLEMENTATIONS:
      raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}.')
    if any(k % 2 == 0 for k in self.kernel_size):
      raise ValueError(f'kernel_size must be odd, got {self.kernel_size}.')
    kernel = self.param('kernel', nn.initializers.lecun_normal(), tuple(self.kernel_size) + (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    use_matmul = self.implementation == 'matmul' or (self.implementation == 'auto' and jax.default_backend() == 'cpu')
    if use_matmul:
      y = conv_same(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias
