"""The method contract: what every learned method gives the trainer and the evaluation.

A method is a :class:`Method`, a NamedTuple of pure functions built by a
factory from the method's config (as ``optax.adam(...)`` builds a
``GradientTransformation``)::

  method = moco.moco(config, global_batch=256, num_steps=5000)
  state = method.init(key, sample)                        # sample [1, H, W, C] uint8
  state, metrics = method.train_step(state, batch, keys)  # per device, inside the data-parallel step
  codes = method.embed(state, images)                     # [B, D]
  clusters = method.assign(state, images)                 # [B] int32, when the method clusters itself

State is one pytree (a ``flax.struct`` dataclass) with an int32 ``step``
field, owned by the trainer (:func:`unsupervised_jax.training.parallel.data_parallel_step`
increments it; methods only read it). Everything a method learns or keeps
(parameters, EMA teacher, queues, optimizer states, batch statistics) lives in
it and is passed into and returned from every function: no globals, no
hidden mutation.

Shared pieces live here once: :func:`apply_gradients` (the gradient ->
``pmean`` -> optimizer update of every method), :func:`ema` (EMA teachers) and
:func:`enqueue` (ring-buffer queues of any trailing shape).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from unsupervised_jax.training import parallel

AXIS = parallel.AXIS

State = Any
Metrics = Dict[str, jax.Array]
# (state, images [B_local, H, W, C] uint8 (or a pytree of per-example arrays), example_keys [B_local])
#   -> (state, metrics); runs per device inside the data-parallel step, averaging gradients over AXIS.
StepFn = parallel.StepFn


class EpochEnd(NamedTuple):
  """An update every ``period`` steps (once an epoch), from the state alone or from a pass over the data set.

  Without ``accumulate`` the trainer calls ``finalize(state, None)``: the
  update reads what the train steps summed into the state through the epoch
  (MiCE's analytic prototype update, as the official code). With it the
  update is a whole-data-set pass written as map-reduce: the trainer splits
  the data set over the devices and, per device, into chunks; ``accumulate``
  maps a chunk to partial sums, which the trainer adds over chunks and
  devices (``lax.psum``); ``finalize`` turns the totals into the new state.
  Either way the result does not depend on the device count (up to the order
  of floating-point sums).

  Attributes:
    period: steps between calls (>= 1); called after steps ``period, 2 period, ...``.
    accumulate: ``None``, or ``(state, images [C, H, W, C'] uint8, mask [C] bool) -> sums``, a
      pytree of arrays summed over the chunk's examples where ``mask`` is True
      (padding is False).
    finalize: ``(state, sums) -> (state, metrics)`` with the data set's totals (``sums`` is ``None``
      without ``accumulate``).
  """
  period: int
  accumulate: Optional[Callable[[State, jax.Array, jax.Array], Any]]
  finalize: Callable[[State, Any], Tuple[State, Metrics]]


class Backbone(NamedTuple):
  """The encoder a later stage fine-tunes (self-labelling), and the augmentation it trains under.

  Attributes:
    module: a flax module; ``getattr(module, feature_method)(x)`` maps float
      images ``[B, H, W, C]`` in [0, 1] to features ``[B, D]``.
    feature_method: the name of that method of ``module``.
    params: ``state -> params`` of ``module``.
    view: ``(key, image [H, W, C] float) -> image``, one augmented view.
  """
  module: Any
  feature_method: str
  params: Callable[[State], Any]
  view: Callable[[jax.Array, jax.Array], jax.Array]


class Method(NamedTuple):
  """A learned method on the training core (see the module docstring).

  Attributes:
    name: the method's name in records (``results.METHODS``).
    init: ``(key, sample [1, H, W, C] uint8) -> state``.
    train_step: per-device step, :data:`StepFn`.
    embed: ``(state, images [B, H, W, C] uint8) -> codes [B, D]`` float, the
      representation that kNN, the linear probe and the clustering of codes use.
    assign: optional ``(state, images [B, H, W, C] uint8) -> clusters [B] int32``,
      the method's own clustering (InfoGAN's categorical code, MiCE's
      posterior); when given, the evaluation scores it instead of clustering
      the codes.
    epoch_end: optional :class:`EpochEnd`.
    figures: optional ``(state, images [N, H, W, C] uint8, workdir, matching=None) -> None``,
      writes the method's own figures; ``matching`` is the Hungarian ``{cluster: class}`` of the
      method's own clusters (``assign``) on the scored images (``metrics.match_clusters``), ``None``
      when the method does not assign or the data carry no labels.
    backbone: optional :class:`Backbone`, for fine-tuning stages.
    config: the method's config (a dataclass), recorded with every run.
    monitor: optional ``(state, images [N, H, W, C] uint8) -> {name: float}``, the method's own diagnostics
      on evaluation images, logged beside each evaluation during training (``eval_every``).
  """
  name: str
  init: Callable[[jax.Array, jax.Array], State]
  train_step: StepFn
  embed: Callable[[State, jax.Array], jax.Array]
  assign: Optional[Callable[[State, jax.Array], jax.Array]] = None
  epoch_end: Optional[EpochEnd] = None
  figures: Optional[Callable[[State, Any, Any], None]] = None
  backbone: Optional[Backbone] = None
  config: Any = None
  monitor: Optional[Callable[[State, jax.Array], Dict[str, float]]] = None


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
