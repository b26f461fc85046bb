"""Losses as pure functions, importable on their own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """``x / max(||x||, eps)`` along ``axis`` (PyTorch's ``F.normalize``), for any finite ``x``, with that function's
  gradient everywhere.

  The rows are first divided by their largest magnitude ``s`` (a constant to the gradient: the result does not
  depend on it), so the sum of squares lies in ``[1, D]`` and cannot overflow or underflow: rows of norm up to
  float32's largest value come back unit (squaring them directly overflows above ~1.8e19). The result is then
  ``y * rsqrt(max(|y|^2, (eps / s)^2))`` with ``y = x / s``: at ``x = 0`` the gradient is ``1 / eps`` (finite),
  where differentiating ``||x||`` itself gives ``0 / 0``.
  """
  dtype = jnp.promote_types(x.dtype, jnp.float32)  # eps^2 underflows in float16
  x32 = x.astype(dtype)
  scale = jax.lax.stop_gradient(jnp.max(jnp.abs(x32), axis=axis, keepdims=True))
  scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
  y = x32 / scale
  floor = jnp.square(jnp.asarray(eps, dtype) / scale)
  return (y * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(y), axis=axis, keepdims=True), floor))).astype(x.dtype)


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
  return info_nce(
    l2_normalize(query), jax.lax.stop_gradient(l2_normalize(key)), jax.lax.stop_gradient(queue), temperature
  )


# Stacked Capsule Autoencoders (Kosiorek, Sabour, Teh, Hinton, NeurIPS 2019): likelihoods and sparsity terms,
# following the equations of the poster's appendix and the official code's choices where it differs.
import math  # noqa: E402  (appended section)
from typing import Tuple  # noqa: E402

_DUMMY_LOG = -2.0 * math.log(10.0)  # the official code's dummy component: log-probability and mixing logit


def safe_log(x: Array, eps: float = 1e-16) -> Array:
  """``log(x)``, and ``-1e8`` (with no gradient) where ``x < eps`` (the SCAE code's ``math_ops.safe_log``)."""
  small = x < eps
  return jnp.where(small, -1e8, jnp.log(jnp.where(small, 1.0, x)))


def scae_image_mixing_log_weights(alpha_logits: Array, presence: Array, background_logit: Array) -> Array:
  """Log mixing weights ``[B, M + 1, H, W]`` of the per-pixel template mixture (the last is the background).

  ``pi_m(p) = a_m exp(alpha_m(p)) / (sum_n a_n exp(alpha_n(p)) + exp(b))``: presence ``a_m`` times the
  transformed alpha channel, against the learned background logit ``b`` (official: ``softplus`` of a
  variable), normalised per pixel.

  Args:
    alpha_logits: ``[B, M, H, W]`` transformed alpha channels (zero outside a template, as sampled).
    presence: ``[B, M]`` part presences in [0, 1].
    background_logit: ``[]``.
  """
  logits = alpha_logits + safe_log(presence)[:, :, None, None]
  background = jnp.broadcast_to(background_logit, logits[:, :1].shape)
  return jax.nn.log_softmax(jnp.concatenate([logits, background], axis=1), axis=1)


def scae_image_log_likelihood(images: Array, means: Array, log_weights: Array, scale: float = 1.0) -> Array:
  """``log p(y) = sum_p sum_c log sum_m pi_m(p) N(y_pc | T_m(p)_c, scale^2)`` per image ``[B]``.

  Args:
    images: ``[B, H, W, C]`` in [0, 1].
    means: ``[B, M + 1, H, W, C]``, the transformed (coloured) templates and the background last.
    log_weights: ``[B, M + 1, H, W]`` from :func:`scae_image_mixing_log_weights` (each channel is its own
      mixture with these weights, as the official ``MixtureDistribution`` over ``tfd.Normal``).
  """
  log_normal = -0.5 * jnp.square((images[:, None] - means) / scale) - math.log(scale) - 0.5 * math.log(2 * math.pi)
  per_pixel = jax.nn.logsumexp(log_weights[..., None] + log_normal, axis=1)  # [B, H, W, C]
  return jnp.sum(per_pixel, axis=(1, 2, 3))


def scae_part_log_likelihood(
  parts: Array, part_presence: Array, votes: Array, scales: Array, vote_presence: Array, normalize: bool = False
) -> Tuple[Array, Array]:
  """The object capsules' likelihood of the part poses, per image ``[B]``, and the posterior ``[B, K, M]``.

  ``log p(x) = sum_m d_m log sum_k w_km N(x_m | V_km, lambda_km^2 I)``, with the official dummy component
  (``log N = log w = -2 log 10``) as ``k = K + 1`` and ``d_m`` the part's presence. By default ``w_km =
  a_k a_km`` unnormalised (``log w`` = ``log a_k a_km``), as the official ``CapsuleLikelihood`` runs: its
  gradient pushes the responsible capsules' presences up. ``normalize=True`` gives the poster's ``w_km =
  a_k a_km / (sum_i a_i a_im + dummy)`` (its ``a_k a_kn / sum_i a_i sum_j a_ij``; in the image model object
  ``k`` votes once per part template, so ``n = m``), where only the presences' ratios count. The posterior
  is the same either way.

  Args:
    parts: ``[B, M, 6]`` part poses.
    part_presence: ``[B, M]``.
    votes: ``[B, K, M, 6]``, object ``k``'s prediction of part ``m``'s pose.
    scales: ``[B, K, M]`` standard deviations of the votes.
    vote_presence: ``[B, K, M]``, ``a_k a_km``.

  Returns:
    ``(log_likelihood [B], posterior [B, K, M])``: the posterior is the responsibility of object ``k``
    for part ``m`` (the dummy's dropped).
  """
  scales = scales[..., None]
  log_normal = (
    -0.5 * jnp.square((parts[:, None] - votes) / scales) - jnp.log(scales) - 0.5 * math.log(2 * math.pi)
  ).sum(-1)  # [B, K, M]
  dummy = jnp.full_like(log_normal[:, :1], _DUMMY_LOG)
  log_normal = jnp.concatenate([log_normal, dummy], axis=1)
  logits = jnp.concatenate([safe_log(vote_presence), dummy], axis=1)  # [B, K + 1, M]
  if normalize:
    logits = jax.nn.log_softmax(logits, axis=1)
  joint = logits + log_normal
  per_part = jax.nn.logsumexp(joint, axis=1) * part_presence  # [B, M]
  return per_part.sum(-1), jax.nn.softmax(joint, axis=1)[:, :-1]


def capsule_entropy_sparsity(probs: Array) -> Tuple[Array, Array]:
  """Entropy sparsity of capsule activations ``probs [B, K]``: ``(within, between)``, both ``[]``.

  ``within = mean_b H(p_b / sum_k p_bk)`` (to be lowered: few capsules per image) and
  ``between = H(sum_b p_b / sum_bk p_bk)`` (to be raised: every capsule used in the batch); the
  official ``_capsule_entropy`` (normalisation adds 1e-8).
  """

  def entropy(p, axis):
    return -jnp.sum(p * safe_log(p), axis=axis)

  p_within = probs / (probs.sum(1, keepdims=True) + 1e-8)
  within = jnp.mean(entropy(p_within, 1))
  total = probs.sum(0)
  between = entropy(total / (total.sum() + 1e-8), 0)
  return within, between


def capsule_l2_sparsity(probs: Array, num_classes: int, within_constant: float = 0.0) -> Tuple[Array, Array]:
  """L2 sparsity of capsule presences ``probs [B, K]``: ``(within, between)`` penalties, both ``[]`` (added).

  ``within = sum_b (sum_k p_bk - c)^2 / B`` with ``c = within_constant`` or, when 0, ``K / num_classes``;
  ``between = sum_k (sum_b p_bk - B / num_classes)^2 / K`` (the official ``_caps_pres_l2``, which returns
  ``-between`` and subtracts it).
  """
  batch, caps = probs.shape
  within_constant = within_constant or caps / num_classes
  within = jnp.sum(jnp.square(probs.sum(1) - within_constant)) / batch
  between = jnp.sum(jnp.square(probs.sum(0) - batch / num_classes)) / caps
  return within, between


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
  # One contraction for f and mu together (v.(f + mu) is linear), batched over the experts in the leading
  # axis (XLA's CPU dot is ~4x faster that way than over a middle batch axis, gradient included), and the
  # positive joined to the negatives' log-sum-exp by logaddexp rather than a concatenated [B, K, nu + 1] copy.
  query = student + prototypes[None]  # [B, K, D]
  positive = jnp.sum(teacher * query, axis=-1) / tau  # [B, K]
  negative = jnp.einsum('kbd,kjd->kbj', jnp.transpose(query, (1, 0, 2)), jnp.transpose(queue, (1, 0, 2))) / tau
  return positive - jnp.logaddexp(positive, jax.nn.logsumexp(negative, axis=-1).T)  # [K, B, nu] -> [B, K]


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


def mice_loss(
  student: Array,
  teacher: Array,
  gating: Array,
  prototypes: Array,
  gating_prototypes: Array,
  queue: Array,
  tau: float,
  kappa: float,
) -> Tuple[Array, Tuple[Array, Array, Array]]:
  """MiCE's training loss, ``-ELBO``, as the official ``MiCE_ELBO.forward`` computes it.

  The cluster prototypes are normalised here (the official ``F.normalize(expert_prototype)``, so the
  gradient reaches the raw prototypes through the normalisation); the gating prototypes are used as given
  (unit vectors, fixed in the official code). The posterior is the E-step, held fixed in the M-step
  (:func:`mice_elbo`).

  Args:
    student: ``[B, K, D]`` unit student embeddings ``f``.
    teacher: ``[B, K, D]`` unit teacher embeddings ``v`` (used as given; stop their gradient).
    gating: ``[B, D]`` unit gating embeddings ``g``.
    prototypes: ``[K, D]`` cluster prototypes ``mu`` before normalisation.
    gating_prototypes: ``[K, D]`` unit gating prototypes ``omega``.
    queue: ``[nu, K, D]`` queued teacher embeddings per expert.
    tau, kappa: the experts' temperature and the gating's concentration, ``> 0``.

  Returns:
    ``(neg_elbo [], (log_gating [B, K], log_expert [B, K], posterior [B, K]))``.
  """
  log_gating = mice_log_gating(gating, gating_prototypes, kappa)
  log_expert = mice_log_expert(student, teacher, l2_normalize(prototypes), queue, tau)
  posterior = jax.lax.stop_gradient(mice_posterior(log_gating, log_expert))
  return -mice_elbo(log_gating, log_expert, posterior), (log_gating, log_expert, posterior)


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


def infogan_mutual_information(
  categorical_logits: Array,
  categories: Array,
  continuous_means: Array,
  continuous_codes: Array,
  categorical_weight: float = 1.0,
  continuous_weight: float = 1.0,
) -> tuple[Array, Array, Array]:
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
  log_q = jnp.take_along_axis(jax.nn.log_softmax(categorical_logits), categories[:, None].astype(jnp.int32), axis=-1)[
    :, 0
  ]
  categorical = jnp.mean(log_q) + jnp.log(num_categories)
  log_q_continuous = jnp.sum(-0.5 * (continuous_codes - continuous_means) ** 2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
  continuous = jnp.mean(log_q_continuous) + num_continuous * jnp.log(2.0)
  return categorical_weight * categorical + continuous_weight * continuous, categorical, continuous
