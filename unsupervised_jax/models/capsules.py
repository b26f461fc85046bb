"""Stacked Capsule Autoencoder (Kosiorek, Sabour, Teh, Hinton, NeurIPS 2019) as flax modules.

Part capsule autoencoder (PCAE): a CNN and attention pooling give every part
``m`` a pose ``x_m`` (6-D affine, :func:`~unsupervised_jax.rendering.geometric_transform`),
a presence ``d_m`` and special features ``z_m``; learned templates ``T_m``
(sigmoid, with an alpha channel), coloured by an MLP of ``z_m``, are placed by
``x_m`` (:func:`~unsupervised_jax.rendering.render_batch`, ``vmap`` over parts
and images) and the image is a per-pixel Gaussian mixture over them and a
learned background (:func:`~unsupervised_jax.losses.scae_image_log_likelihood`).

Object capsule autoencoder (OCAE): a Set Transformer over the parts (gradient
stopped into the PCAE's poses, presences and templates) gives ``K`` object
capsules; each has a presence ``a_k``, an object-viewer pose ``OV_k`` and
features from which per-capsule MLPs predict part presences ``a_km`` and the
object-part relations ``OP_km = static + dynamic``, so votes are
``V_km = OV_k OP_km`` (:func:`~unsupervised_jax.losses.scae_part_log_likelihood`).

Presence noise ``U(-s/2, s/2)`` on the part and object logits is an input
(:func:`presence_noise`, per example; the official code adds it in training and
evaluation alike).
Shapes follow the official TF1 code's MNIST model (``configs/model_config.py``).
"""

from __future__ import annotations

import math
from typing import Any
from typing import Dict
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax import losses
from unsupervised_jax import rendering
from unsupervised_jax.models import conv
from unsupervised_jax.models import set_transformer

Array = jax.Array


def presence_noise(key: Array, n_parts: int, n_objects: int, scale: float) -> Dict[str, Array]:
  """One example's presence-logit noise ``U(-scale/2, scale/2)``: ``parts [M]``, ``objects [K]``, ``votes [K, M]``
  (``jax.vmap`` it over per-example keys)."""
  parts, objects, votes = jax.random.split(key, 3)
  draw = lambda k, shape: (jax.random.uniform(k, shape) - 0.5) * scale
  return {
    'parts': draw(parts, (n_parts,)),
    'objects': draw(objects, (n_objects,)),
    'votes': draw(votes, (n_objects, n_parts)),
  }


def orthogonal_templates(key, n_templates: int, size: int, channels: int) -> Array:
  """Template logits ``[M, t, t, C]`` that are orthogonal at init, rescaled to [0, 1] (the official init)."""
  n_elems = size * size * channels
  n = max(n_templates, n_elems)
  q, _ = jnp.linalg.qr(jax.random.uniform(key, (n, n)))
  q = q[:n_templates, :n_elems].reshape(n_templates, size, size, channels)
  return (q - q.min()) / (q.max() - q.min())


ATTENTION_POOLINGS = ('official', 'per_part')


def attention_pool(out: Array, n_parts: int, pooling: str = 'official') -> Array:
  """The part encoder's attention pooling: ``out [B, P, M (D + 1)]`` (``M D`` values, then ``M`` attention
  logits, at ``P`` positions) -> ``[B, M, D]``, each map a softmax over the positions (:class:`PartEncoder`).

  Raises:
    ValueError: an unknown ``pooling``, or channels that are not ``M (D + 1)``.
  """
  n_dims, rest = divmod(out.shape[-1], n_parts)
  n_dims -= 1
  if rest or n_dims < 1:
    raise ValueError(f'{out.shape[-1]} channels cannot be {n_parts} parts of values and an attention map.')
  values = out[..., : n_parts * n_dims]  # [B, P, M D]
  attention = jax.nn.softmax(out[..., n_parts * n_dims :], axis=1)  # [B, P, M], over positions
  if pooling == 'official':  # channel d M + m with map m; the [D, M] result read as [M, D]
    pooled = jnp.einsum('bpdm,bpm->bdm', values.reshape(values.shape[:2] + (n_dims, n_parts)), attention)
    return pooled.reshape(out.shape[0], n_parts, n_dims)
  if pooling == 'per_part':
    return jnp.einsum('bpmd,bpm->bmd', values.reshape(values.shape[:2] + (n_parts, n_dims)), attention)
  raise ValueError(f'pooling must be one of {", ".join(ATTENTION_POOLINGS)}; got {pooling!r}.')


class PartEncoder(nn.Module):
  """CNN (3x3 VALID, ReLU) -> per-position bias -> 1x1 conv -> attention pooling (``conv_att`` of the official
  ``primary.py``).

  The convolutions are :class:`~unsupervised_jax.models.conv.Conv` (``nn.Conv``'s parameters; im2col
  products on CPU, XLA's convolution elsewhere). The 1x1 convolution gives ``M * D`` values (``D = 6 + F + 1``)
  and ``M`` attention maps, each a softmax over the positions. ``pooling='official'``: value channel ``i`` is
  pooled with map ``i mod M`` and the pooled ``[M * D]`` read as ``[M, D]`` (the official code reshapes the
  channels to ``[D, M]``, pools, and reshapes the result to ``[M, D]`` without a transpose, so part ``m``'s
  ``d``-th value comes from map ``(m D + d) mod M``); ``'per_part'``: part ``m``'s values all use map ``m``
  (the paper's description; a deviation).

  ``__call__(x [B, S, S, C])`` -> ``(raw_pose [B, M, 6], features [B, M, F], presence_logit [B, M])``.
  """

  n_parts: int
  n_features: int
  channels: int = 128
  strides: Sequence[int] = (2, 2, 1, 1)
  pooling: str = 'official'

  @nn.compact
  def __call__(self, x):
    h = x
    for stride in self.strides:
      h = nn.relu(conv.Conv(self.channels, (3, 3), strides=stride, padding='VALID')(h))
    h = h + self.param('position_bias', nn.initializers.zeros_init(), h.shape[1:])
    n_dims = 6 + self.n_features + 1
    out = nn.Dense(self.n_parts * (n_dims + 1))(h)  # a 1x1 convolution
    out = out.reshape(x.shape[0], -1, out.shape[-1])  # [B, P, M (D + 1)]
    pooled = attention_pool(out, self.n_parts, self.pooling)
    return pooled[..., :6], pooled[..., 6 : 6 + self.n_features], pooled[..., -1]


class BatchDense(nn.Module):
  """``K`` independent dense layers on ``[B, K, D]`` (weights ``[K, D, U]``, truncated normal 1/sqrt(D))."""

  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.truncated_normal(1.0 / math.sqrt(x.shape[-1]))
    kernel = self.param('kernel', init, (x.shape[1], x.shape[-1], self.features))
    y = jnp.einsum('bkd,kdu->bku', x, kernel)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros_init(), (x.shape[1], self.features))
    return y


class ObjectCapsules(nn.Module):
  """The official ``CapsuleLayer`` for images: object features ``[B, K, D]`` -> votes for every part.

  Per capsule (separate weights): ``c_k = MLP_[128, P](h_k)``, then ``MLP_[128, out]([c_k, 1])`` (no
  final bias) split into the dynamic OP ``[M, 6]``, OV ``[6]``, presence logit ``[1]``, per-vote
  presence logits ``[M]`` and scales ``[M]``, the last four with a per-capsule bias. ``OP_km =
  geometric_transform(dynamic + static)``, ``V_km = OV_k OP_km``, ``a_k = sigmoid(logit + noise)``,
  ``a_km = sigmoid(vote logit + noise)`` (``noise``: ``objects [B, K]``, ``votes [B, K, M]``),
  ``lambda_km = softplus(s + 0.5) + 0.01``.
  """

  n_parts: int
  n_params: int = 32
  n_hiddens: int = 128

  @nn.compact
  def __call__(self, h, noise) -> Dict[str, Array]:
    batch, n_caps, m = h.shape[0], h.shape[1], self.n_parts
    params = BatchDense(self.n_params)(nn.relu(BatchDense(self.n_hiddens)(h)))  # [B, K, P]
    params = jnp.concatenate([params, jnp.ones_like(params[..., :1])], -1)
    splits = [m * 6, 6, 1, m, m]
    out = BatchDense(sum(splits), use_bias=False)(nn.relu(BatchDense(self.n_hiddens)(params)))
    cpr_dynamic, ccr, caps_logit, vote_logit, vote_scale = jnp.split(out, np.cumsum(splits)[:-1], axis=-1)
    cpr_dynamic = cpr_dynamic.reshape(batch, n_caps, m, 6)
    bias = lambda name, x: x + self.param(name, nn.initializers.zeros_init(), x.shape[1:])
    ccr, caps_logit, vote_logit, vote_scale = (
      bias(name, x)
      for name, x in zip(
        ('ov_bias', 'presence_bias', 'vote_presence_bias', 'scale_bias'), (ccr, caps_logit, vote_logit, vote_scale)
      )
    )
    caps_logit = caps_logit[..., 0] + noise['objects']
    vote_logit = vote_logit + noise['votes']
    cpr_static = self.param('cpr_static', set_transformer.tf_glorot, (n_caps, m, 6))
    ov = rendering.to_matrix(rendering.geometric_transform(ccr))  # [B, K, 3, 3]
    op = rendering.to_matrix(rendering.geometric_transform(cpr_dynamic + cpr_static))  # [B, K, M, 3, 3]
    votes = rendering.from_matrix(ov[:, :, None] @ op)  # [B, K, M, 6]
    presence = jax.nn.sigmoid(caps_logit)
    vote_presence = presence[..., None] * jax.nn.sigmoid(vote_logit)
    return {
      'votes': votes,
      'scales': jax.nn.softplus(vote_scale + 0.5) + 1e-2,
      'vote_presence': vote_presence,
      'object_presence': presence,
      'dynamic_l2': 0.5 * jnp.sum(jnp.square(cpr_dynamic)) / batch,
    }


class SCAE(nn.Module):
  """Both autoencoders; ``__call__(images [B, S, S, C] in [0, 1], noise)`` (:func:`presence_noise`, batched) returns
  a dict of ``[B]`` log-likelihoods
  (``image_ll``, ``part_ll``), ``dynamic_l2``, part ``poses [B, M, 6]``, ``part_presence [B, M]``,
  ``prior [B, K]`` (``max_m a_k a_km``, the object presences), ``posterior [B, K, M]``, the placed
  templates ``rendered [B, M, S, S, C]`` and the mixture's ``log_weights [B, M + 1, S, S]`` and
  ``means [B, M + 1, S, S, C]``."""

  n_parts: int = 40
  n_objects: int = 32
  n_part_features: int = 16
  n_object_params: int = 32
  template_size: int = 11
  channels: int = 1
  encoder_channels: int = 128
  encoder_strides: Sequence[int] = (2, 2, 1, 1)
  normalize_part_mixture: bool = False
  presence_mask: str = 'official'
  attention_pooling: str = 'official'

  def setup(self):
    self.part_encoder = PartEncoder(
      self.n_parts, self.n_part_features, self.encoder_channels, tuple(self.encoder_strides), self.attention_pooling
    )
    self.template_logits = self.param(
      'template_logits', lambda k: orthogonal_templates(k, self.n_parts, self.template_size, self.channels)
    )
    self.template_alpha = self.param(
      'template_alpha', nn.initializers.zeros_init(), (self.n_parts, self.template_size, self.template_size, 1)
    )
    self.colour_hidden, self.colour_out = nn.Dense(32), nn.Dense(self.channels)
    self.background_value = self.param('background_value', nn.initializers.zeros_init(), (self.channels,))
    self.background_logit = self.param('background_mixing_logit', nn.initializers.zeros_init(), ())
    self.set_transformer = set_transformer.SetTransformer(self.n_objects, presence_mask=self.presence_mask)
    self.object_capsules = ObjectCapsules(self.n_parts, self.n_object_params)

  def templates(self) -> Array:
    """The learned templates ``[M, t, t, C]`` in [0, 1] (before colouring)."""
    return jax.nn.sigmoid(self.template_logits)

  def __call__(self, images, noise) -> Dict[str, Any]:
    batch, canvas = images.shape[0], images.shape[1]
    raw_pose, features, presence_logit = self.part_encoder(images)
    presence_logit = presence_logit + noise['parts']
    presence = jax.nn.sigmoid(presence_logit)
    poses = rendering.geometric_transform(raw_pose)
    colour = jax.nn.sigmoid(self.colour_out(nn.relu(self.colour_hidden(features))))  # [B, M, C]
    coloured = self.templates()[None] * colour[:, :, None, None, :]  # [B, M, t, t, C]

    # OCAE: the parts, with their templates, gradient stopped into the PCAE (the features are not).
    stop = jax.lax.stop_gradient
    set_input = jnp.concatenate(
      [stop(poses), stop(1.0 - presence[..., None]), features, stop(coloured.reshape(batch, self.n_parts, -1))], -1
    )
    objects = self.object_capsules(self.set_transformer(set_input, stop(presence)), noise)
    part_ll, posterior = losses.scae_part_log_likelihood(
      stop(poses),
      stop(presence),
      objects['votes'],
      objects['scales'],
      objects['vote_presence'],
      normalize=self.normalize_part_mixture,
    )

    # PCAE: colour and alpha channels placed together, one vmapped render.
    alpha = jnp.broadcast_to(self.template_alpha[None], coloured.shape[:-1] + (1,))
    rendered = rendering.render_batch(jnp.concatenate([coloured, alpha], -1), poses, canvas)
    background = jnp.broadcast_to(jax.nn.sigmoid(self.background_value), rendered[:, :1, ..., :-1].shape)
    means = jnp.concatenate([rendered[..., :-1], background], axis=1)
    log_weights = losses.scae_image_mixing_log_weights(
      rendered[..., -1], presence, jax.nn.softplus(self.background_logit)
    )
    image_ll = losses.scae_image_log_likelihood(images, means, log_weights)
    return {
      'image_ll': image_ll,
      'part_ll': part_ll,
      'dynamic_l2': objects['dynamic_l2'],
      'poses': poses,
      'part_presence': presence,
      'prior': objects['vote_presence'].max(-1),
      'posterior': posterior,
      'rendered': rendered[..., :-1],
      'log_weights': log_weights,
      'means': means,
    }
