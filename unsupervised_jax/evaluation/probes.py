"""Representation probes on frozen features: weighted kNN and linear-probe accuracy (train -> test)."""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unsupervised_jax.evaluation import neighbours


def knn_accuracy(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  k: int = 200,
  temperature: float = 0.07,
  num_classes: Optional[int] = None,
  block_size: int = 1024,
) -> float:
  """Weighted kNN accuracy on cosine similarity (the MoCo / InstDisc CIFAR protocol; Wu et al. 2018).

  Each test point votes with its ``k`` most similar training points, weighted
  by ``exp(similarity / temperature)``.

  Args:
    train_features: ``[N, D]``; ``train_labels [N]`` int.
    test_features: ``[M, D]``; ``test_labels [M]`` int.

  Returns:
    The share of test points whose vote is their label, in [0, 1].
  """
  train_labels = np.asarray(train_labels)
  num_classes = int(num_classes or int(np.max(train_labels)) + 1)
  k = min(k, len(train_labels))
  similarity, indices = neighbours.cosine_top_k(test_features, train_features, k, block_size=block_size)
  predictions = _vote(jnp.asarray(similarity), jnp.asarray(train_labels[indices]), temperature, num_classes)
  return float(np.mean(np.asarray(predictions) == np.asarray(test_labels)))


@functools.partial(jax.jit, static_argnames='num_classes')
def _vote(similarity, neighbour_labels, temperature, num_classes: int):
  votes = jax.nn.one_hot(neighbour_labels, num_classes) * jnp.exp(similarity / temperature)[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=1)


def linear_probe_accuracy(
  train_features,
  train_labels,
  test_features,
  test_labels,
  *,
  steps: int = 500,
  learning_rate: float = 0.05,
  weight_decay: float = 1e-4,
) -> float:
  """Accuracy of a softmax regression trained (full batch, Adam) on frozen, standardised features."""
  train = np.asarray(train_features, np.float32)
  mean, std = train.mean(0), train.std(0) + 1e-6
  train = jnp.asarray((train - mean) / std)
  test = jnp.asarray((np.asarray(test_features, np.float32) - mean) / std)
  labels = jnp.asarray(train_labels)
  num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
  params = (jnp.zeros((train.shape[1], num_classes)), jnp.zeros(num_classes))

  def loss(params, train, labels):
    logits = train @ params[0] + params[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit  # the data are arguments, as in knn_accuracy
  def fit(params, train, labels):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss)(params, train, labels)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params

  params = fit(params, train, labels)
  predictions = np.asarray(jnp.argmax(test @ params[0] + params[1], axis=1))
  return float(np.mean(predictions == np.asarray(test_labels)))
