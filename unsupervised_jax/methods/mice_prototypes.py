"""MiCE's analytic prototype update (Tsai, Li, Zhu, ICLR 2021, eq. 13; the official ``train_MiCE.py`` and
``MiCE_ELBO.update_cluster``): each batch's share of the sums, and the normalised update from an epoch's totals.
:mod:`unsupervised_jax.methods.mice` accumulates them through the epoch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unsupervised_jax import losses


def epoch_sums(posterior: jax.Array, log_gating: jax.Array, teacher: jax.Array, rule: str, mask=None):
  """One batch's share of the analytic prototype update and of the epoch's cluster statistics.

  Args:
    posterior: ``[B, K]`` q(z | x, y), the E-step.
    log_gating: ``[B, K]`` log p(z | x), the gating.
    teacher: ``[B, K, D]`` teacher embeddings ``v``.
    rule: ``'hard'`` (weights ``one_hot(argmax_k q)``, the official ``train_MiCE.py``), ``'soft'`` (``q``,
      the paper's eq. 13) or ``'none'`` (as ``'hard'``: only the statistics are used).
    mask: optional ``[B]`` bool, the examples to count (padding is False).

  Returns:
    ``{'centres': [K, D] sum_n w_nk v_nk, 'sizes': [K] argmax-q counts, 'gating_sizes': [K] argmax-pi counts,
    'agree': [] examples whose two argmaxes agree, 'count': [] examples}``, float32.
  """
  k = posterior.shape[-1]
  m = jnp.ones(posterior.shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
  hard = jax.nn.one_hot(jnp.argmax(posterior, axis=-1), k) * m[:, None]
  gating = jax.nn.one_hot(jnp.argmax(log_gating, axis=-1), k) * m[:, None]
  weights = posterior * m[:, None] if rule == 'soft' else hard
  return {
    'centres': jnp.einsum('nk,nkd->kd', weights.astype(teacher.dtype), teacher),
    'sizes': jnp.sum(hard, axis=0),
    'gating_sizes': jnp.sum(gating, axis=0),
    'agree': jnp.sum(hard * gating),
    'count': jnp.sum(m),
  }


def update(centres: jax.Array, previous: jax.Array) -> jax.Array:
  """The analytic update ``mu_k = normalise(sum_n w_nk v_nk)`` (the paper's eq. 13, the official
  ``MiCE_ELBO.update_cluster``), ``[K, D]``.

  An expert whose sum is zero (no image chose it) keeps ``previous[k]``; the official code writes the zero
  vector there, whose normalisation then has a ``1 / eps`` gradient (docs/mice.md).

  Args:
    centres: ``[K, D]`` sums over the epoch.
    previous: ``[K, D]`` the prototypes before the update.
  """
  empty = jnp.all(centres == 0, axis=-1, keepdims=True)
  return jnp.where(empty, previous, losses.l2_normalize(centres))
