"""Convolutions as matrix products, for XLA:CPU: stride-1 'SAME' and strided 'VALID'.

XLA:CPU's convolution is slow where the training step needs it most: for the
poster's 32->64 3x3 layer at batch 256 on a 2-core CPU, its weight gradient
took about 8x the forward pass (measured: 2,340 vs 255 ms; PyTorch's whole
backward 431 ms). Written as im2col matrix products, forward and both
gradients are dots XLA:CPU does well; building the patches a few images at a
time keeps them in cache (a whole batch of patches, 231 MB, took longer to
write than the product took to compute). :func:`conv_relu_max_pool` adds the
ReLU and a 2x2 max-pool to the layer with a gradient of its own, because XLA's
max-pool gradient is slow there too. On GPU and TPU the native convolution is
the fast one, so :class:`Conv` uses it there.
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


def use_matmul(implementation: str) -> bool:
  """Whether ``implementation`` ('auto', 'xla' or 'matmul') means the matrix-product form on this backend.

  Raises:
    ValueError: an implementation not in :data:`IMPLEMENTATIONS`.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.')
  return implementation == 'matmul' or (implementation == 'auto' and jax.default_backend() == 'cpu')


def _valid_patches(x: Array, kernel_size: Tuple[int, int], stride: int = 1) -> Array:
  """``[B, H, W, C]`` -> ``[B * out_h * out_w, kh * kw * C]`` 'VALID' patches at ``stride`` (the one im2col here),
  ordered (row offset, column offset, channel), with ``out_h = (H - kh) // stride + 1`` (and ``out_w`` alike)."""
  kh, kw = kernel_size
  b, h, w, c = x.shape
  out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
  taps = [
    x[:, dy : dy + stride * (out_h - 1) + 1 : stride, dx : dx + stride * (out_w - 1) + 1 : stride]
    for dy in range(kh)
    for dx in range(kw)
  ]
  return jnp.concatenate(taps, axis=-1).reshape(b * out_h * out_w, kh * kw * c)


def _patches(x: Array, kernel_size: Tuple[int, int]) -> Array:
  """``[B, H, W, C]`` -> ``[B * H * W, kh * kw * C]`` stride-1 'SAME' patches: the 'VALID' ones of the padded input."""
  kh, kw = kernel_size
  padded = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
  return _valid_patches(padded, kernel_size)


def _chunked(x: Array) -> Array:
  """``[B, ...]`` -> ``[B / n, n, ...]`` with n the largest of ``_IMAGES_PER_CHUNK``'s divisors dividing B."""
  n = math.gcd(x.shape[0], _IMAGES_PER_CHUNK)
  return x.reshape((x.shape[0] // n, n) + x.shape[1:])


def _correlate(x: Array, kernel: Array) -> Array:
  """``x [n, H, W, C_in]`` -> ``[n, H, W, C_out]``: a few images' patches times the kernel."""
  kh, kw, _, c_out = kernel.shape
  return (_patches(x, (kh, kw)) @ kernel.reshape(-1, c_out)).reshape(x.shape[:3] + (c_out,))


def _kernel_gradient(x: Array, grad_y: Array, kernel: Array) -> Array:
  """``x [n, H, W, C_in]``, ``grad_y [n, H, W, C_out]`` -> these images' share ``[kh kw C_in, C_out]``."""
  kh, kw, _, c_out = kernel.shape
  return _patches(x, (kh, kw)).T @ grad_y.reshape(-1, c_out)


def _forward(x: Array, kernel: Array) -> Array:
  chunks = _chunked(x)
  return jax.lax.map(lambda xc: _correlate(xc, kernel), chunks).reshape(x.shape[:3] + (kernel.shape[-1],))


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
    return grad_kernel + _kernel_gradient(xc, gc, kernel), None

  x_chunks, g_chunks = _chunked(x), _chunked(grad_y)
  grad_kernel, _ = jax.lax.scan(accumulate, jnp.zeros((kh * kw * c_in, c_out), kernel.dtype), (x_chunks, g_chunks))
  grad_x = _input_gradient(grad_y, kernel)  # XLA drops it where nothing uses it (a network's first layer)
  return grad_x, grad_kernel.reshape(kernel.shape)


def _input_gradient(grad_y: Array, kernel: Array) -> Array:
  """The gradient with respect to the input: col2im (see :func:`_col2im`), a few images at a time."""
  chunks = _chunked(grad_y)
  return jax.lax.map(lambda gc: _col2im(gc, kernel), chunks).reshape(grad_y.shape[:3] + (kernel.shape[2],))


def _col2im(grad_y: Array, kernel: Array) -> Array:
  """``grad_y [n, H, W, C_out]`` -> ``[n, H, W, C_in]``: every output pixel's gradient times the kernel,
  added back at the pixels it read.

  (Measured 15% faster here than correlating grad_y with the flipped kernel, whose patches are twice
  as wide when C_out = 2 C_in; the nine shifted slices are summed in one fusion rather than added
  into a zero buffer one by one, ~10% faster.)
  """
  kh, kw, c_in, c_out = kernel.shape
  n, h, w, _ = grad_y.shape
  taps = (grad_y.reshape(-1, c_out) @ kernel.reshape(kh * kw * c_in, c_out).T).reshape(n, h, w, kh * kw, c_in)
  top, left = kh // 2, kw // 2
  padded = jnp.pad(taps, ((0, 0), (kh - 1 - top, top), (kw - 1 - left, left), (0, 0), (0, 0)))
  return sum(
    padded[:, kh - 1 - dy : kh - 1 - dy + h, kw - 1 - dx : kw - 1 - dx + w, dy * kw + dx]
    for dy in range(kh)
    for dx in range(kw)
  )


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def conv_valid(x: Array, kernel: Array, stride: int = 1) -> Array:
  """'VALID' cross-correlation with a square ``stride``, as one im2col matrix product; equal to
  ``lax.conv_general_dilated(x, kernel, (stride, stride), 'VALID')`` (NHWC, HWIO).

  Autodiff writes both gradients as dots and strided slices, not XLA:CPU's convolution weight gradient
  (the SCAE's part encoder, 3x3 stride 2, 2, 1, 1 with 128 channels at batch 32: 0.11 s forward and
  backward against XLA's 0.21 s, timed once by hand with the host loaded; not a benchmark record).

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]``, ``kh <= H``, ``kw <= W``.
    stride: >= 1.

  Returns:
    ``[B, (H - kh) // stride + 1, (W - kw) // stride + 1, C_out]``.
  """
  kh, kw, _, c_out = kernel.shape
  b, h, w, _ = x.shape
  out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
  return (_valid_patches(x, (kh, kw), stride) @ kernel.reshape(-1, c_out)).reshape(b, out_h, out_w, c_out)


_NO_GRADIENT = 4  # pooling-window index of a window whose maximum is <= 0: ReLU passes no gradient


def _conv_relu_pool_chunk(x: Array, kernel: Array, bias: Array) -> Tuple[Array, Array]:
  """``x [n, H, W, C_in]`` -> pooled ``[n, H//2, W//2, C_out]`` and, per pooled value, the int8 index
  (0-3, row-major in the 2x2 window) of the pixel its gradient goes to, or ``_NO_GRADIENT``."""
  h, w = x.shape[1:3]
  y = _correlate(x, kernel) + bias
  corners = [y[:, a : 2 * (h // 2) : 2, b : 2 * (w // 2) : 2] for a in (0, 1) for b in (0, 1)]
  maximum = jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))
  argmax = jnp.full(maximum.shape, _NO_GRADIENT, jnp.int8)
  for k in (3, 2, 1, 0):  # ties go to the first maximum, as in XLA's max-pool gradient
    argmax = jnp.where(corners[k] == maximum, jnp.int8(k), argmax)
  argmax = jnp.where(maximum > 0, argmax, jnp.int8(_NO_GRADIENT))
  return jax.nn.relu(maximum), argmax


def _conv_relu_pool(x, kernel, bias):
  b, h, w, _ = x.shape
  chunks = _chunked(x)
  pooled, argmax = jax.lax.map(lambda xc: _conv_relu_pool_chunk(xc, kernel, bias), chunks)
  shape = (b, h // 2, w // 2, kernel.shape[-1])
  return pooled.reshape(shape), argmax.reshape(shape)


@jax.custom_vjp
def conv_relu_max_pool(x: Array, kernel: Array, bias: Array) -> Array:
  """``max_pool(relu(conv_same(x, kernel) + bias), 2x2, stride 2)``, in one pass and with its own gradient.

  The 2x2 max-pool's gradient is XLA's select-and-scatter, slow on CPU (~190 ms of the 32->64 layer's
  ~850 ms forward and backward at batch 256); here the forward keeps each pooled value's argmax (int8)
  instead of the full-size activations, and the backward routes the gradient back with it, then builds
  the weight and input gradients chunk by chunk in one scan. Rows or columns left over when H or W is
  odd are dropped by the pool, as with 'VALID' pooling.

  Args:
    x: ``[B, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]``, odd kh and kw.
    bias: ``[C_out]``.

  Returns:
    ``[B, H // 2, W // 2, C_out]``.
  """
  return _conv_relu_pool(x, kernel, bias)[0]


def _conv_relu_max_pool_fwd(x, kernel, bias):
  pooled, argmax = _conv_relu_pool(x, kernel, bias)
  return pooled, (x, kernel, argmax)


def _unpool(grad_pooled: Array, argmax: Array, shape: Tuple[int, ...]) -> Array:
  """``grad_pooled [n, H//2, W//2, C]`` -> ``[n, H, W, C]``, each value at its window's argmax pixel."""
  n, h2, w2, c = grad_pooled.shape
  corners = [jnp.where(argmax == k, grad_pooled, 0) for k in range(4)]
  rows = [jnp.stack(corners[0:2], axis=3), jnp.stack(corners[2:4], axis=3)]  # [n, h2, w2, 2, C] each
  full = jnp.stack(rows, axis=2).reshape(n, 2 * h2, 2 * w2, c)
  return jnp.pad(full, ((0, 0), (0, shape[1] - 2 * h2), (0, shape[2] - 2 * w2), (0, 0)))


def _conv_relu_max_pool_bwd(residuals, grad_pooled):
  x, kernel, argmax = residuals
  kh, kw, c_in, c_out = kernel.shape

  def one_chunk(grads, chunk):
    grad_kernel, grad_bias = grads
    xc, gc, ac = chunk
    grad_y = _unpool(gc, ac, xc.shape)
    grads = grad_kernel + _kernel_gradient(xc, grad_y, kernel), grad_bias + grad_y.sum((0, 1, 2))
    return grads, _col2im(grad_y, kernel)

  x_chunks, g_chunks, a_chunks = map(_chunked, (x, grad_pooled, argmax))
  zeros = (jnp.zeros((kh * kw * c_in, c_out), kernel.dtype), jnp.zeros((c_out,), kernel.dtype))
  (grad_kernel, grad_bias), grad_x = jax.lax.scan(one_chunk, zeros, (x_chunks, g_chunks, a_chunks))
  return grad_x.reshape(x.shape), grad_kernel.reshape(kernel.shape), grad_bias


conv_relu_max_pool.defvjp(_conv_relu_max_pool_fwd, _conv_relu_max_pool_bwd)


class Conv(nn.Module):
  """Convolution with bias; the parameters (``kernel`` HWIO, ``bias``) are ``nn.Conv``'s.

  ``padding`` 'SAME' (stride 1 only, odd kernels) or 'VALID' (any ``strides``).
  ``implementation``: 'xla' (``lax`` convolution), 'matmul' (:func:`conv_same`, :func:`conv_valid`),
  or 'auto' (matmul on CPU, where it is faster, XLA elsewhere). With ``relu_max_pool`` the layer is
  followed by ReLU and a 2x2 max-pool of stride 2 ('VALID'), fused on the matmul path
  (:func:`conv_relu_max_pool`).

  Raises:
    ValueError: an unknown implementation or padding, an even 'SAME' kernel, a stride < 1 or a
      strided 'SAME' convolution.
  """

  features: int
  kernel_size: Tuple[int, int] = (3, 3)
  implementation: str = 'auto'
  relu_max_pool: bool = False
  strides: int = 1
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    matmul = use_matmul(self.implementation)
    if self.padding not in ('SAME', 'VALID'):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}.")
    if self.strides < 1 or (self.padding == 'SAME' and self.strides != 1):
      raise ValueError(f"strides must be >= 1 (1 with 'SAME' padding), got {self.strides}.")
    if self.padding == 'SAME' and any(k % 2 == 0 for k in self.kernel_size):
      raise ValueError(f'kernel_size must be odd, got {self.kernel_size}.')
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), tuple(self.kernel_size) + (x.shape[-1], self.features)
    )
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    if matmul and self.relu_max_pool and self.padding == 'SAME':
      return conv_relu_max_pool(x, kernel, bias)
    if matmul:
      y = conv_same(x, kernel) if self.padding == 'SAME' else conv_valid(x, kernel, self.strides)
    else:
      y = jax.lax.conv_general_dilated(
        x, kernel, (self.strides, self.strides), self.padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
      )
    y = y + bias
    if self.relu_max_pool:
      y = nn.max_pool(nn.relu(y), (2, 2), strides=(2, 2))
    return y
