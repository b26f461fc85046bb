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


def test_conv_implementations_share_parameters_and_outputs():
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  nets = {impl: convnet.SmallConvNet(conv_implementation=impl) for impl in ('xla', 'matmul')}
  params = nets['xla'].init(jax.random.key(2), x)
  flax_conv = jax.tree.map(jnp.shape, nn.Conv(32, (3, 3)).init(jax.random.key(0), x))
  assert jax.tree.map(jnp.shape, params['params']['Conv_0']) == flax_conv['params']  # nn.Conv's names/shapes
  np.testing.assert_allclose(nets['matmul'].apply(params, x), nets['xla'].apply(params, x), atol=1e-4)


def test_bad_conv_settings():
  x = jnp.zeros((1, 5, 5, 1))
  with pytest.raises(ValueError, match='implementation'):
    conv.Conv(2, implementation='cudnn').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='odd'):
    conv.Conv(2, (2, 2)).init(jax.random.key(0), x)
