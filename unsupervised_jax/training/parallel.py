"""Data parallelism, pmap-style: per-device code over a named ``'batch'`` axis.

The per-device step is ordinary JAX code that sees its share of the global
batch and uses explicit collectives on :data:`AXIS` (``lax.pmean`` of
gradients, ``lax.all_gather`` where a method needs the global batch). It is
compiled with ``jax.jit(jax.shard_map(...))`` over a 1-D device mesh, which is
what ``jax.pmap`` itself lowers to in current JAX; the same code runs on one
CPU, eight GPUs or a TPU slice.

Batches are drawn inside the compiled step: the data set is replicated on
every device (MNIST is 55 MB as uint8), and example ``g`` of the global batch
at step ``s`` is either ``images[randint(fold_in(fold_in(key, s), g))]``
(``sampling='replacement'``) or, with ``sampling='epochs'``, position
``(s mod E) B + g`` of epoch ``s // E``'s permutation of the ``N`` examples
(``E = N // B`` steps an epoch, the last partial batch dropped, as PyTorch's
``DataLoader(shuffle=True, drop_last=True)``); its augmentation key is
``fold_in(fold_in(key, s), g)`` either way. The data set may be a pytree of
per-example arrays (images and pseudo-labels, say); every leaf is indexed
alike. Nothing depends on how the batch is split or on where a run was
stopped and resumed, so a run gives the same result on 1 or 8 devices up to
the order of floating-point reductions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Tuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from unsupervised_jax.training import contract

AXIS = 'batch'
SAMPLINGS = ('replacement', 'epochs')
# fold_in data of the epochs' permutation keys (a step index never reaches it).
_EPOCH_ORDER = 0xFFFFFFFF


def make_mesh(num_devices: Optional[int] = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (all by default), axis :data:`AXIS`.

  Auto axis types: in JAX >= 0.10 ``jax.make_mesh`` defaults to Explicit axes,
  where ``shard_map`` does not reshard its inputs.
  """
  devices = jax.devices()
  num_devices = num_devices or len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f'num_devices={num_devices} but {len(devices)} devices are available.')
  return jax.make_mesh((num_devices,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:num_devices])


def replicate(tree, mesh: jax.sharding.Mesh):
  """Puts every array of ``tree`` on all devices of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh):
  if global_batch < 1 or global_batch % mesh.size:
    raise ValueError(
      f'batch size {global_batch} must be a positive multiple of the {mesh.size} devices; '
      f'use e.g. {max(1, global_batch // mesh.size) * mesh.size}.'
    )


def tree_all_finite(tree) -> jax.Array:
  """``[]`` bool: every floating leaf of ``tree`` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def finite_parts(state, metrics) -> Dict[str, jax.Array]:
  """``{name: [] bool}``: whether each metric (``loss``, ...) and each field of ``state`` (``params``,
  ``opt_state``, ``queue``, ...) is finite, every floating leaf of it."""
  parts = {name: tree_all_finite(value) for name, value in metrics.items()}
  fields = [f.name for f in dataclasses.fields(state)] if dataclasses.is_dataclass(state) else []
  parts.update({f'state.{name}': tree_all_finite(getattr(state, name)) for name in fields if name != 'step'})
  if not fields:
    parts['state'] = tree_all_finite(state)
  return parts


def num_examples(dataset) -> int:
  """N of a data set given as one ``[N, ...]`` array or a pytree of them (all the same N)."""
  sizes = {leaf.shape[0] for leaf in jax.tree.leaves(dataset)}
  if len(sizes) != 1:
    raise ValueError(f'every array of the data set must have the same number of examples, got {sorted(sizes)}.')
  return sizes.pop()


def steps_per_epoch(n: int, global_batch: int) -> int:
  """Whole batches in one pass over ``n`` examples, ``n // global_batch`` (the last partial batch dropped).

  Raises:
    ValueError: fewer examples than one batch.
  """
  if n < global_batch:
    raise ValueError(f'an epoch of {n} examples holds no whole batch of {global_batch}; lower --batch_size.')
  return n // global_batch


def sample_batch(
  images, key: jax.Array, step: jax.Array, global_batch: int, sampling: str = 'replacement'
) -> Tuple[Any, jax.Array]:
  """This device's examples of the global batch at ``step`` and their augmentation keys.

  Must run inside ``shard_map`` over :data:`AXIS`. ``images`` is ``[N, ...]``
  or a pytree of such arrays, indexed alike. ``sampling`` is ``'replacement'``
  (independent draws) or ``'epochs'`` (shuffled passes without replacement,
  ``N // global_batch`` steps each; see the module docstring).

  Returns:
    ``(images [B_local, ...] (same pytree), example_keys [B_local])``.

  Raises:
    ValueError: an unknown ``sampling``, or ``'epochs'`` with fewer than ``global_batch`` examples.
  """
  if sampling not in SAMPLINGS:
    raise ValueError(f'sampling must be one of {", ".join(SAMPLINGS)}; got {sampling!r}.')
  per_device = global_batch // jax.lax.axis_size(AXIS)
  positions = jax.lax.axis_index(AXIS) * per_device + jnp.arange(per_device)  # in the global batch
  step_key = jax.random.fold_in(key, step)
  example_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, positions)
  index_keys, augment_keys = jax.vmap(jax.random.split, out_axes=1)(example_keys)
  n = num_examples(images)
  if sampling == 'epochs':
    epoch_steps = steps_per_epoch(n, global_batch)
    epoch, within = step // epoch_steps, step % epoch_steps
    order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, _EPOCH_ORDER), epoch), n)
    indices = order[within * global_batch + positions]
  else:
    indices = jax.vmap(lambda k: jax.random.randint(k, (), 0, n))(index_keys)
  return jax.tree.map(lambda leaf: leaf[indices], images), augment_keys


def data_parallel_step(
  step_fn: contract.StepFn, mesh: jax.sharding.Mesh, global_batch: int, sampling: str = 'replacement'
):
  """Compiles one training step over ``mesh``.

  Returns ``train_step(state, images, key) -> (state, metrics)`` where
  ``images [N, H, W, C]`` (or a pytree of per-example arrays) is the replicated data set and ``key`` the run's
  base PRNG key. Per device it draws its batch (:func:`sample_batch` with ``sampling``), calls
  ``step_fn``, averages the metrics over devices, and keeps the old state when any metric or any part of the
  new state is non-finite (:func:`finite_parts`): ``metrics['finite']`` is then False and
  ``metrics['finite_parts']`` says which, so a NaN or inf never reaches the state that is kept (and
  checkpointed). ``state.step`` is incremented here, only for a kept update. The state argument is donated.
  """
  check_batch_size(global_batch, mesh)
  if sampling not in SAMPLINGS:
    raise ValueError(f'sampling must be one of {", ".join(SAMPLINGS)}; got {sampling!r}.')

  def per_device(state, images, key):
    batch, example_keys = sample_batch(images, key, state.step, global_batch, sampling)
    new_state, metrics = step_fn(state, batch, example_keys)
    metrics = jax.lax.pmean(metrics, AXIS)
    parts = finite_parts(new_state, metrics)  # the state about to be kept, not only the metrics
    finite = jnp.all(jnp.stack(list(parts.values())))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    new_state = new_state.replace(step=state.step + finite.astype(state.step.dtype))
    return new_state, dict(metrics, finite=finite, finite_parts=parts)

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P()), out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)


# One compiled map per (fn, mesh, batch_size): evaluations during training ask for it again at every
# eval_every, and a new jit of a new closure would compile it again each time.
@functools.lru_cache(maxsize=64)
def data_parallel_map(fn: Callable[[Any, jax.Array], jax.Array], mesh: jax.sharding.Mesh, batch_size: int):
  """``apply(params, inputs [N, ...]) -> outputs [N, ...]``: ``fn(params, chunk)`` over batches split across devices.

  For evaluation (embedding a data set): each device walks its share of the
  inputs with ``lax.map`` inside ``shard_map``, in the fewest blocks of at most
  ``batch_size`` inputs, all of one size, so the padding is under one input per
  block and device (16 images are not padded to ``batch_size``: on 96x96 images
  that padding made a 16-image evaluation cost as much as 1,024). Each distinct
  ``N`` compiles once.

  Raises:
    ValueError: ``batch_size < 1``.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')

  def per_device(params, blocks):
    out = jax.lax.map(lambda b: fn(params, b), blocks[0])  # [blocks, block, ...] on this device
    return out.reshape((-1,) + out.shape[2:])

  sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS), check_vma=False))

  def apply(params, inputs):
    inputs = np.asarray(inputs)
    n, devices = inputs.shape[0], mesh.size
    num_blocks = max(1, -(-n // (batch_size * devices)))  # per device
    block = max(1, -(-n // (num_blocks * devices)))
    padded = np.pad(inputs, [(0, block * num_blocks * devices - n)] + [(0, 0)] * (inputs.ndim - 1))
    blocks = padded.reshape((devices, num_blocks, block) + inputs.shape[1:])
    blocks = jax.device_put(blocks, NamedSharding(mesh, P(AXIS)))
    return sharded(params, blocks)[:n]

  return apply


def data_parallel_epoch_end(epoch_end, mesh: jax.sharding.Mesh, chunk_size: int):
  """Compiles a method's epoch-end update (:class:`unsupervised_jax.training.contract.EpochEnd`).

  Returns ``update(state, dataset) -> (state, metrics)`` where ``dataset`` is
  the replicated data set (as the training step takes it). Without
  ``epoch_end.accumulate`` it is ``epoch_end.finalize(state, None)`` (an update
  from what the train steps accumulated in the state). With it, device ``d``
  takes the ``d``-th contiguous share of the ``N`` examples and walks it in
  chunks of ``chunk_size`` (``lax.map``; the last chunk padded and masked),
  summing ``epoch_end.accumulate`` over its chunks; the sums are added over
  devices (``lax.psum``) and ``epoch_end.finalize`` makes the new state on
  every device. The state argument is donated.
  """
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be >= 1, got {chunk_size}.')

  def per_device(state, dataset):
    if epoch_end.accumulate is None:
      return epoch_end.finalize(state, None)
    n = num_examples(dataset)
    share = -(-n // jax.lax.axis_size(AXIS))  # examples per device, the last device's share padded
    num_chunks = -(-share // chunk_size)
    first = jax.lax.axis_index(AXIS) * share

    def chunk_sums(c):
      positions = first + c * chunk_size + jnp.arange(chunk_size)
      mask = (positions < n) & (positions < first + share)
      chunk = jax.tree.map(lambda leaf: leaf[jnp.minimum(positions, n - 1)], dataset)
      return epoch_end.accumulate(state, chunk, mask)

    sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), jax.lax.map(chunk_sums, jnp.arange(num_chunks)))
    new_state, metrics = epoch_end.finalize(state, jax.lax.psum(sums, AXIS))
    return new_state, metrics

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P()), out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)
