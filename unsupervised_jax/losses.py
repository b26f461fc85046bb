"""Losses as pure functions, importable on their own."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """``x / max(||x||, eps)`` along ``axis``."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


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


def gan_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
  """The GAN discriminator's loss (Goodfellow et al. 2014): ``-E[log D(x)] - E[log(1 - D(G(z)))]``.

  Written with logits (``log sigmoid``), not the official InfoGAN code's ``log(D + 1e-8)``.

  Args:
    real_logits: ``[B]`` logits of D on real images.
    fake_logits: ``[B']`` logits of D on generated images.

  Returns:
    ``[]`` the sum of the two batch means.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def gan_generator_loss(fake_logits: Array) -> Array:
  """The non-saturating generator loss (Goodfellow et al. 2014): ``-E[log D(G(z))]`` from D's logits ``[B]``; ``[]``."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def categorical_entropy(probs: Array) -> Array:
  """``H(c) = -sum_k p_k log p_k`` (nats) of a categorical ``probs [..., K]`` -> ``[...]``; ``log K`` when uniform."""
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def infogan_mutual_information(categorical_logits: Array, categories: Array, continuous_means: Array,
                               continuous_codes: Array, categorical_weight: float = 1.0,
                               continuous_weight: float = 1.0) -> tuple[Array, Array, Array]:
  """InfoGAN's variational lower bound on ``I(c; G(z, c))`` (Chen et al. 2016, Eq. 4 and Lemma 5.1).

  ``L_I = E[log Q(c|x)] + H(c)`` on generated images ``x = G(z, c)``, for a uniform K-way categorical code
  (``H = log K``; ``Q`` a softmax of ``categorical_logits``) and L continuous codes from U(-1, 1)
  (``H = L log 2``; ``Q`` a Gaussian of mean ``continuous_means`` and unit standard deviation, as the
  official code's ``Uniform(1, fix_std=True)``, so its log-likelihood is ``-(c - mu)^2 / 2 - log(2 pi) / 2``
  per code). The official code adds the same estimate, ``H(c) - E[-log Q(c|x)]``, with weight 1 for both.

  Args:
    categorical_logits: ``[B, K]`` Q's logits on the generated images.
    categories: ``[B]`` int, the categorical codes the images were generated from.
    continuous_means: ``[B, L]`` Q's means of the continuous codes.
    continuous_codes: ``[B, L]`` the continuous codes the images were generated from.
    categorical_weight: weight of the categorical term (official: 1).
    continuous_weight: weight of the continuous term (official: 1).

  Returns:
    ``(weighted L_I, categorical term, continuous term)``, each ``[]`` (nats; the bound to maximise).
  """
  num_categories, num_continuous = categorical_logits.shape[-1], continuous_codes.shape[-1]
  log_q = jnp.take_along_axis(jax.nn.log_softmax(categorical_logits), categories[:, None].astype(jnp.int32),
                              axis=-1)[:, 0]
  categorical = jnp.mean(log_q) + jnp.log(num_categories)
  log_q_continuous = jnp.sum(-0.5 * (continuous_codes - continuous_means) ** 2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
  continuous = jnp.mean(log_q_continuous) + num_continuous * jnp.log(2.0)
  return categorical_weight * categorical + continuous_weight * continuous, categorical, continuous
