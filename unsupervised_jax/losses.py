"""Losses as pure functions, importable on their own."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """``x / max(||x||, eps)`` along ``axis``, with that function's gradient everywhere.

  Computed as ``x * rsqrt(max(|x|^2, eps^2))``: at ``x = 0`` the gradient is
  ``1 / eps`` (finite), where differentiating ``||x||`` itself gives ``0 / 0``.
  """
  dtype = jnp.promote_types(x.dtype, jnp.float32)  # eps^2 underflows in float16
  sq_norm = jnp.sum(jnp.square(x.astype(dtype)), axis=axis, keepdims=True)
  return (x * jax.lax.rsqrt(jnp.maximum(sq_norm, jnp.asarray(eps, dtype) ** 2))).astype(x.dtype)


def info_nce(query: Array, positive_key: Array, negatives: Array, temperature: float) -> Array:
  """InfoNCE (van den Oord et al. 2018) with one positive per query and shared negatives.

  ``-log exp(q.k+ / t) / (exp(q.k+ / t) + sum_j exp(q.n_j / t))``, averaged over the batch.

  Args:
    query: ``[B, D]``.
    positive_key: ``[B, D]``, the positive of each query.
    negatives: ``[K, D]``, shared by all queries.
    temperature: ``t > 0``.

  Returns:
    ``[]`` mean loss. Inputs are used as given: L2-normalise them for the
    cosine-similarity form of MoCo.
  """
  positive = jnp.sum(query * positive_key, axis=-1, keepdims=True)  # [B, 1]
  negative = query @ negatives.T  # [B, K]
  logits = jnp.concatenate([positive, negative], axis=1) / temperature
  labels = jnp.zeros(query.shape[0], jnp.int32)  # the positive is logit 0
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def moco_loss(query: Array, key: Array, queue: Array, temperature: float) -> Array:
  """MoCo's contrastive loss: InfoNCE of normalised queries ``[B, D]`` against their keys ``[B, D]``
  (no gradient, they come from the EMA teacher) and the queue ``[K, D]`` of earlier keys."""
  return info_nce(l2_normalize(query), jax.lax.stop_gradient(l2_normalize(key)), jax.lax.stop_gradient(queue),
                  temperature)
