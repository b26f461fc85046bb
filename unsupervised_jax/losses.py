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


def mice_log_gating(gating: Array, prototypes: Array, kappa: float) -> Array:
  """MiCE's gating network (Tsai et al. 2021, ICLR): ``log p(z = k | x) = log softmax_k(omega_k . g / kappa)``.

  Args:
    gating: ``[B, D]`` unit gating embeddings ``g_n``.
    prototypes: ``[K, D]`` unit gating prototypes ``omega_k``.
    kappa: concentration ``> 0``.

  Returns:
    ``[B, K]`` log prior over the clusters.
  """
  return jax.nn.log_softmax(gating @ prototypes.T / kappa, axis=-1)


def mice_log_expert(student: Array, teacher: Array, prototypes: Array, queue: Array, tau: float) -> Array:
  """MiCE's contrastive experts: ``log p(y_n | x_n, z_n = k)`` with the normaliser over a queue.

  ``Phi(x_n, y_n, k) = exp(v_{n,k} . (f_{n,k} + mu_k) / tau)``, normalised over the positive and the
  ``nu`` queued teacher embeddings of expert ``k``::

    log phi_nk = v_nk.(f_nk + mu_k)/tau - log[exp(v_nk.(f_nk + mu_k)/tau) + sum_j exp(u_jk.(f_nk + mu_k)/tau)]

  (the official ``MiCE_ELBO.forward``: one ``(nu + 1)``-way log-softmax per expert).

  Args:
    student: ``[B, K, D]`` unit student embeddings ``f_{n,k}``.
    teacher: ``[B, K, D]`` unit teacher embeddings ``v_{n,k}`` (used as given; stop their gradient).
    prototypes: ``[K, D]`` unit cluster prototypes ``mu_k``.
    queue: ``[nu, K, D]`` earlier teacher embeddings ``u_{j,k}``, per expert.
    tau: temperature ``> 0``.

  Returns:
    ``[B, K]`` log expert likelihoods.
  """
  positive = jnp.sum(teacher * (student + prototypes[None]), axis=-1) / tau  # [B, K]
  negative = (jnp.einsum('bkd,jkd->bkj', student, queue) +
              jnp.einsum('kd,jkd->kj', prototypes, queue)[None]) / tau  # [B, K, nu]
  logits = jnp.concatenate([positive[..., None], negative], axis=-1)
  return positive - jax.nn.logsumexp(logits, axis=-1)


def mice_posterior(log_gating: Array, log_expert: Array) -> Array:
  """MiCE's E-step: ``q(z_n = k | x_n, y_n) = pi_nk phi_nk / sum_k' pi_nk' phi_nk'``, ``[B, K]``."""
  return jax.nn.softmax(log_gating + log_expert, axis=-1)


def mice_elbo(log_gating: Array, log_expert: Array, posterior: Array) -> Array:
  """MiCE's ELBO, averaged over the batch, ``[]``.

  ``mean_n sum_k q_nk (log phi_nk + log pi_nk - log q_nk) = E_q[log phi] - KL(q || pi)``. With ``q`` the
  exact posterior (:func:`mice_posterior`) it equals ``mean_n log sum_k pi_nk phi_nk``, and its gradient
  with ``q`` held fixed (``stop_gradient``) equals the gradient through ``q``.
  """
  log_q = jnp.log(jnp.maximum(posterior, 1e-30))
  return jnp.mean(jnp.sum(posterior * (log_expert + log_gating - log_q), axis=-1))
