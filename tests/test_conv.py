"""The matmul convolution equals XLA's, in value and in both gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax.models import conv
from unsupervised_jax.models import convnet


def _xla_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('batch,kernel_size', [(6, (3, 3)), (5, (3, 5)), (8, (1, 1))])  # 5: chunks of 1 image
def test_conv_same_matches_xla_in_value_and_gradients(batch, kernel_size):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (batch, 9, 7, 3))
  kernel = jax.random.normal(kk, kernel_size + (3, 4))
  cotangent = jax.random.normal(kg, (batch, 9, 7, 4))
  np.testing.assert_allclose(conv.conv_same(x, kernel), _xla_conv(x, kernel), atol=1e-5)
  want = jax.grad(lambda x, k: jnp.sum(_xla_conv(x, k) * cotangent), (0, 1))(x, kernel)
  got = jax.grad(lambda x, k: jnp.sum(conv.conv_same(x, k) * cotangent), (0, 1))(x, kernel)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-4)


def _xla_conv_relu_max_pool(x, kernel, bias):
  return nn.max_pool(jax.nn.relu(_xla_conv(x, kernel) + bias), (2, 2), strides=(2, 2))


@pytest.mark.parametrize('batch,height,width,kernel_size', [(6, 8, 6, (3, 3)), (5, 9, 7, (3, 5))])  # odd: 'VALID' drop
def test_conv_relu_max_pool_matches_xla_in_value_and_gradients(batch, height, width, kernel_size):
  kx, kk, kb, kg = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (batch, height, width, 3))
  kernel, bias = jax.random.normal(kk, kernel_size + (3, 4)), jax.random.normal(kb, (4,))
  cotangent = jax.random.normal(kg, (batch, height // 2, width // 2, 4))
  np.testing.assert_allclose(
    conv.conv_relu_max_pool(x, kernel, bias), _xla_conv_relu_max_pool(x, kernel, bias), atol=1e-5
  )
  loss = lambda f: lambda *args: jnp.sum(f(*args) * cotangent)
  want = jax.grad(loss(_xla_conv_relu_max_pool), (0, 1, 2))(x, kernel, bias)
  got = jax.grad(loss(conv.conv_relu_max_pool), (0, 1, 2))(x, kernel, bias)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-4)


def test_conv_relu_max_pool_breaks_ties_as_xla():
  # A constant image and a positive bias: every 2x2 window away from the border holds four equal maxima
  # (> 0), and a window whose maximum is <= 0 must pass no gradient through the ReLU.
  x = jnp.ones((2, 6, 6, 1))
  kernel = jnp.ones((3, 3, 1, 2)).at[..., 1].set(-1.0)
  bias = jnp.array([0.5, -0.5])
  cotangent = jax.random.normal(jax.random.key(0), (2, 3, 3, 2))
  loss = lambda f: lambda *args: jnp.sum(f(*args) * cotangent)
  want = jax.grad(loss(_xla_conv_relu_max_pool), (0, 1, 2))(x, kernel, bias)
  got = jax.grad(loss(conv.conv_relu_max_pool), (0, 1, 2))(x, kernel, bias)
  assert np.count_nonzero(want[0]) > 0 and np.count_nonzero(want[2]) == 1  # the ReLU-dead channel: no bias gradient
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)  # same pixels; sums may round differently


def test_conv_implementations_share_parameters_and_outputs():
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  nets = {impl: convnet.SmallConvNet(conv_implementation=impl) for impl in ('xla', 'matmul')}
  params = nets['xla'].init(jax.random.key(2), x)
  flax_conv = jax.tree.map(jnp.shape, nn.Conv(32, (3, 3)).init(jax.random.key(0), x))
  assert jax.tree.map(jnp.shape, params['params']['Conv_0']) == flax_conv['params']  # nn.Conv's names/shapes
  np.testing.assert_allclose(nets['matmul'].apply(params, x), nets['xla'].apply(params, x), atol=1e-4)


@pytest.mark.parametrize('stride,kernel_size,size', [(1, (3, 3), 7), (2, (3, 3), 9), (2, (3, 3), 8), (3, (2, 4), 11)])
def test_conv_valid_matches_xla_in_value_and_gradients(stride, kernel_size, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  kernel = jax.random.normal(jax.random.key(1), kernel_size + (3, 5))
  xla = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (stride, stride), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  want, got = xla(x, kernel), conv.conv_valid(x, kernel, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), want.shape)
  loss = lambda f: lambda x, k: jnp.sum(f(x, k) * cotangent)
  for g, w in zip(
    jax.grad(loss(lambda x, k: conv.conv_valid(x, k, stride)), (0, 1))(x, kernel),
    jax.grad(loss(xla), (0, 1))(x, kernel),
  ):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_strided_valid_conv_module_shares_parameters_and_outputs_with_nn_conv():
  x = jax.random.uniform(jax.random.key(1), (2, 40, 40, 1))
  reference = nn.Conv(8, (3, 3), strides=(2, 2), padding='VALID')
  params = reference.init(jax.random.key(0), x)
  for impl in ('xla', 'matmul'):
    np.testing.assert_allclose(
      conv.Conv(8, strides=2, padding='VALID', implementation=impl).apply(params, x),
      reference.apply(params, x),
      atol=1e-5,
    )


def test_bad_conv_settings():
  x = jnp.zeros((1, 5, 5, 1))
  with pytest.raises(ValueError, match='implementation'):
    conv.Conv(2, implementation='cudnn').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='odd'):
    conv.Conv(2, (2, 2)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='strides'):
    conv.Conv(2, strides=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='strides'):
    conv.Conv(2, strides=0, padding='VALID').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='padding'):
    conv.Conv(2, padding='FULL').init(jax.random.key(0), x)
