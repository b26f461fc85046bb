"""MiCE's network (Tsai, Li, Zhu, ICLR 2021): the encoder with its K expert heads and gating head, and the
gating prototypes on an equiangular simplex (:mod:`unsupervised_jax.methods.mice` is the method)."""

from __future__ import annotations

import math

import flax.linen as nn
import numpy as np

from unsupervised_jax import losses
from unsupervised_jax.models import convnet
from unsupervised_jax.models import resnet


def simplex_prototypes(k: int, d: int) -> np.ndarray:
  """``[K, D]`` float32 unit vectors with pairwise inner products ``-1/(K-1)`` (a regular simplex).

  The official ``craft_MMcenters.m`` recurrence (row ``i``'s first ``i`` coordinates from the inner products
  with the rows before, then the diagonal for unit norm); needs ``D >= K - 1``.

  Raises:
    ValueError: ``K < 2`` or ``D < K - 1``.
  """
  if k < 2 or d < k - 1:
    raise ValueError(f'{k} equiangular prototypes need K >= 2 and D >= K - 1, got D={d}.')
  m = np.zeros((k, d))
  m[0, 0] = 1.0
  for i in range(1, k):
    for j in range(i):
      m[i, j] = -(1.0 / (k - 1) + m[i] @ m[j]) / m[j, j]
    if i < d:
      m[i, i] = math.sqrt(abs(1.0 - m[i] @ m[i]))
  return m.astype(np.float32)


class MiceNet(nn.Module):
  """Backbone, then K expert heads and a gating head: ``x [B, H, W, C]`` -> ``(f [B, K, D], g [B, D])``, unit
  rows (the official ``linear_K`` and ``classifier`` layers, each L2-normalised)."""

  experts: int
  embedding_dim: int
  backbone: str = 'convnet'
  conv_implementation: str = 'auto'

  def setup(self):
    if self.backbone == 'convnet':
      self.encoder = convnet.SmallConvNet(features=128, conv_implementation=self.conv_implementation)
    else:
      self.encoder = resnet.resnet34('cifar' if self.backbone == 'resnet34_cifar' else 'imagenet')
    self.expert_head = nn.Dense(self.experts * self.embedding_dim)
    self.gating_head = nn.Dense(self.embedding_dim)

  def features(self, x, train: bool = False):
    return self.encoder(x) if self.backbone == 'convnet' else self.encoder(x, train)

  def __call__(self, x, train: bool = False):
    h = self.features(x, train)
    f = self.expert_head(h).reshape(h.shape[0], self.experts, self.embedding_dim)
    return losses.l2_normalize(f), losses.l2_normalize(self.gating_head(h))
