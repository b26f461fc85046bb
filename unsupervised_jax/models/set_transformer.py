"""The Set Transformer (Lee et al. 2019) as the SCAE's object capsules use it (the official ``attention.py``):
multi-head attention over parts weighed by their presence, self-attention blocks, and pooling by learned inducing
points."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _glorot_uniform_tf(shape) -> float:
  """TF1's default ``get_variable`` initializer limit for ``shape`` (fans of the last two dims times the rest)."""
  receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
  return math.sqrt(6.0 / (shape[-2] * receptive + shape[-1] * receptive))


def tf_glorot(key, shape, dtype=jnp.float32):
  """TF1's default ``get_variable`` initializer (Glorot uniform over the last two dims' fans)."""
  limit = _glorot_uniform_tf(shape)
  return jax.random.uniform(key, shape, dtype, -limit, limit)


PRESENCE_MASKS = ('official', 'log')


class MultiHeadAttention(nn.Module):
  """Multi-head QKV attention over parts of presence ``d`` in [0, 1].

  ``presence_mask='official'``: ``(1 - d) mask_scale`` is subtracted from the logits (the official
  ``attention.py`` with ``1e32``). With fractional presences every gap of ``1e32 (d_i - d_j)`` swamps the
  logits, so each query attends only to the most present part (and to every part whose presence is exactly
  1.0 in float32): until presences saturate the object capsules see one part an image. ``'log'``: ``log d`` is
  added to the scaled logits, so the weights are ``d_m exp(q.k_m / sqrt(D))`` normalised: the same as the
  official mask for presences in {0, 1}, and every part counts in proportion to its presence (a deliberate
  deviation, docs/scae.md)."""

  n_heads: int = 1
  mask_scale: float = 1e32
  presence_mask: str = 'official'

  @nn.compact
  def __call__(self, queries, keys, values, presence=None):
    outputs = []
    for _ in range(self.n_heads):
      head_dim = lambda t: int(math.ceil(t.shape[-1] / self.n_heads))
      q, k, v = nn.Dense(head_dim(queries))(queries), nn.Dense(head_dim(keys))(keys), nn.Dense(head_dim(values))(values)
      routing = jnp.einsum('bnd,bmd->bnm', q, k)
      if presence is not None and self.presence_mask == 'official':
        routing = routing - (1.0 - presence[:, None, :]) * self.mask_scale
      routing = routing / math.sqrt(q.shape[-1])
      if presence is not None and self.presence_mask == 'log':
        routing = routing + jnp.log(jnp.maximum(presence[:, None, :], 1e-30))
      routing = jax.nn.softmax(routing, axis=-1)
      outputs.append(jnp.einsum('bnm,bmd->bnd', routing, v))
    return nn.Dense(values.shape[-1])(jnp.concatenate(outputs, -1))


class SelfAttentionBlock(nn.Module):
  """``y = LN(d * (MHA(x) + x))``, ``h = LN(MLP(y) + y)`` with an MLP of ``[2 D, D]``."""

  n_heads: int = 1
  layer_norm: bool = True
  presence_mask: str = 'official'

  @nn.compact
  def __call__(self, x, presence=None):
    y = MultiHeadAttention(self.n_heads, presence_mask=self.presence_mask)(x, x, x, presence) + x
    if presence is not None:
      y = y * presence[..., None]
    if self.layer_norm:
      y = nn.LayerNorm()(y)
    h = nn.Dense(x.shape[-1])(nn.relu(nn.Dense(2 * x.shape[-1])(y))) + y
    return nn.LayerNorm()(h) if self.layer_norm else h


class SetTransformer(nn.Module):
  """Linear -> ``n_layers`` self-attention blocks -> linear -> attention from ``n_outputs`` learned
  inducing points: ``[B, N, D_in]`` (and presences ``[B, N]``) -> ``[B, n_outputs, n_output_dims]``."""

  n_outputs: int
  n_layers: int = 3
  n_heads: int = 1
  n_dims: int = 16
  n_output_dims: int = 256
  layer_norm: bool = True
  presence_mask: str = 'official'

  @nn.compact
  def __call__(self, x, presence=None):
    h = nn.Dense(self.n_dims)(x)
    for _ in range(self.n_layers):
      h = SelfAttentionBlock(self.n_heads, self.layer_norm, self.presence_mask)(h, presence)
    z = nn.Dense(self.n_output_dims)(h)
    inducing = self.param('inducing_points', tf_glorot, (1, self.n_outputs, self.n_output_dims))
    inducing = jnp.broadcast_to(inducing, (x.shape[0],) + inducing.shape[1:])
    return MultiHeadAttention(self.n_heads, presence_mask=self.presence_mask)(inducing, z, z, presence)
