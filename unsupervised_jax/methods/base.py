"""What the methods share: the gradient step, EMA teachers and queues (the contract itself is
:mod:`unsupervised_jax.training.contract`).

:func:`apply_gradients` is the gradient -> ``pmean`` -> optimizer update of every method, :func:`ema` the
EMA teachers' update and :func:`enqueue` the ring-buffer queues of any trailing shape.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import optax

from unsupervised_jax.training import parallel

AXIS = parallel.AXIS


def apply_gradients(optimizer: optax.GradientTransformation, grads, params, opt_state):
  """Averages ``grads`` over the devices (``lax.pmean`` on :data:`AXIS`) and applies one optimizer update.

  Must run inside the data-parallel step. Returns ``(params, opt_state)``.
  """
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def ema(teacher, params, momentum):
  """``momentum * teacher + (1 - momentum) * params``, leaf by leaf (an EMA teacher, MoCo's key encoder)."""
  return optax.incremental_update(params, teacher, step_size=1.0 - momentum)


def enqueue(queue: jax.Array, queue_ptr: jax.Array, items: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Writes ``items [B, ...]`` at ``queue_ptr`` of the ring buffer ``queue [K, ...]``.

  The trailing shape is any (``[K, D]`` for MoCo, ``[K, E, D]`` for per-expert
  queues); ``K`` must be a multiple of ``B`` so a batch never wraps.

  Returns:
    ``(queue, queue_ptr)`` with the pointer advanced by ``B`` modulo ``K``.

  Raises:
    ValueError: trailing shapes differ, or ``K`` is not a multiple of ``B``.
  """
  if items.shape[1:] != queue.shape[1:]:
    raise ValueError(f'items of shape {items.shape[1:]} cannot go into a queue of {queue.shape[1:]}.')
  if queue.shape[0] % items.shape[0]:
    raise ValueError(f'queue length {queue.shape[0]} must be a multiple of the {items.shape[0]} items enqueued.')
  start = (queue_ptr,) + (jnp.zeros_like(queue_ptr),) * (queue.ndim - 1)  # one index dtype (also under x64)
  queue = jax.lax.dynamic_update_slice(queue, items.astype(queue.dtype), start)
  return queue, (queue_ptr + items.shape[0]) % queue.shape[0]


def zeros_step() -> jax.Array:
  """The ``step`` of a fresh state: ``[]`` int32 zero."""
  return jnp.zeros((), jnp.int32)
