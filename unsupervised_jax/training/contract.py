"""The method contract: what every learned method gives the training core and the evaluation.

A method is a :class:`Method`, a NamedTuple of pure functions built by its factory (a :class:`Factory`,
as ``optax.adam(...)`` builds a ``GradientTransformation``) from its config, the run's
:class:`~unsupervised_jax.training.loop.TrainConfig` and what the data are (:class:`DataInfo`)::

  method = moco.moco(config, train, DataInfo(num_examples=70000, image_shape=(28, 28, 1)))
  state = method.init(key, sample)                        # sample [1, H, W, C] uint8
  state, metrics = method.train_step(state, batch, keys)  # per device, inside the data-parallel step
  codes = method.embed(state, images)                     # [B, D]
  clusters = method.assign(state, images)                 # [B] int32, when the method clusters itself

State is one pytree (a ``flax.struct`` dataclass) with an int32 ``step`` field, owned by the trainer
(:func:`unsupervised_jax.training.parallel.data_parallel_step` increments it; methods only read it).
Everything a method learns or keeps (parameters, EMA teacher, queues, optimizer states, batch statistics)
lives in it and is passed into and returned from every function: no globals, no hidden mutation. Every
function here is pure and jittable; figures, which write files, are registered beside the method
(:mod:`unsupervised_jax.registry`), not part of it.

The optional parts (``assign``, ``epoch_end``, ``backbone``, ``monitor``) are ``None`` when absent;
:class:`Method`'s properties (``assigns``, ``fine_tunable``) are the one place that reads them for the
runner and the evaluation. This module is the bottom of the package's layers: the training core imports it,
and it imports nothing of the package.
"""

from __future__ import annotations

from typing import Any
from typing import Callable
from typing import Dict
from typing import NamedTuple
from typing import Optional
from typing import Protocol
from typing import Tuple

import jax
import numpy as np

State = Any
Metrics = Dict[str, jax.Array]


class InitFn(Protocol):
  def __call__(self, key: jax.Array, sample: jax.Array) -> State:
    """A fresh state from a PRNG key and one uint8 image ``sample [1, H, W, C]``."""


class StepFn(Protocol):
  def __call__(self, state: State, images: Any, example_keys: jax.Array) -> Tuple[State, Metrics]:
    """One update on this device's share of the global batch: ``images [B_local, H, W, C]`` uint8 (or a
    pytree of per-example arrays) and one PRNG key per example ``[B_local]``; runs inside the data-parallel
    step, averaging gradients over :data:`unsupervised_jax.training.parallel.AXIS`. Returns the new state
    and scalar metrics."""


class EmbedFn(Protocol):
  def __call__(self, state: State, images: jax.Array) -> jax.Array:
    """``images [B, H, W, C]`` uint8 -> codes ``[B, D]`` float (kNN, the linear probe, clustering)."""


class AssignFn(Protocol):
  def __call__(self, state: State, images: jax.Array) -> jax.Array:
    """``images [B, H, W, C]`` uint8 -> the method's own clusters ``[B]`` int32."""


class MonitorFn(Protocol):
  def __call__(self, state: State, images: jax.Array) -> Metrics:
    """``images [N, H, W, C]`` uint8 -> scalar diagnostics, logged with each evaluation during training."""


class AccumulateFn(Protocol):
  def __call__(self, state: State, images: jax.Array, mask: jax.Array) -> Any:
    """A chunk ``images [C, H, W, C']`` uint8 with ``mask [C]`` bool (padding False) -> a pytree of sums."""


class FinalizeFn(Protocol):
  def __call__(self, state: State, sums: Any) -> Tuple[State, Metrics]:
    """The epoch's totals (``None`` for an update from the state alone) -> the new state and metrics."""


class EpochEnd(NamedTuple):
  """An update every ``period`` steps (once an epoch), from the state alone or from a pass over the data set.

  Without ``accumulate`` the trainer calls ``finalize(state, None)``: the update reads what the train steps
  summed into the state through the epoch (MiCE's analytic prototype update, as the official code). With it
  the update is a whole-data-set pass written as map-reduce: the trainer splits the data set over the
  devices and, per device, into chunks; ``accumulate`` maps a chunk to partial sums, which the trainer adds
  over chunks and devices (``lax.psum``); ``finalize`` turns the totals into the new state. Either way the
  result does not depend on the device count (up to the order of floating-point sums).

  Attributes:
    period: steps between calls (>= 1); called after steps ``period, 2 period, ...``.
    accumulate: ``None`` or an :class:`AccumulateFn`.
    finalize: a :class:`FinalizeFn`; its metrics are logged with the prefix ``epoch_end/``.
  """

  period: int
  accumulate: Optional[AccumulateFn]
  finalize: FinalizeFn


class Backbone(NamedTuple):
  """The encoder a later stage fine-tunes (self-labelling), and the augmentation it trains under.

  Attributes:
    module: a flax module; ``getattr(module, feature_method)(x)`` maps float images ``[B, H, W, C]`` in
      [0, 1] to features ``[B, D]``.
    feature_method: the name of that method of ``module``.
    params: ``state -> params`` of ``module``.
    view: ``(key, image [H, W, C] float) -> image``, one augmented view.
  """

  module: Any
  feature_method: str
  params: Callable[[State], Any]
  view: Callable[[jax.Array, jax.Array], jax.Array]


class DataInfo(NamedTuple):
  """What a factory may know of the data before training: the training images' count and shape.

  Attributes:
    num_examples: ``N``, the images the method trains on.
    image_shape: ``(H, W, C)``.
  """

  num_examples: int
  image_shape: Tuple[int, int, int]

  @classmethod
  def of(cls, images) -> 'DataInfo':
    """The info of training images ``[N, H, W, C]``."""
    return cls(len(images), tuple(int(d) for d in images.shape[1:]))


class Method(NamedTuple):
  """A learned method on the training core (see the module docstring).

  Attributes:
    name: its name in the registry and in records.
    init: :class:`InitFn`.
    train_step: :class:`StepFn`.
    embed: :class:`EmbedFn`.
    assign: optional :class:`AssignFn`; when given, the evaluation scores it instead of clustering the codes.
    epoch_end: optional :class:`EpochEnd`.
    backbone: optional :class:`Backbone`, for fine-tuning stages.
    monitor: optional :class:`MonitorFn`.
    config: the method's config (a dataclass), recorded with every run.
  """

  name: str
  init: InitFn
  train_step: StepFn
  embed: EmbedFn
  assign: Optional[AssignFn] = None
  epoch_end: Optional[EpochEnd] = None
  backbone: Optional[Backbone] = None
  monitor: Optional[MonitorFn] = None
  config: Any = None

  @property
  def assigns(self) -> bool:
    """Whether the method clusters images itself (``assign``) rather than having its codes clustered."""
    return self.assign is not None

  @property
  def fine_tunable(self) -> bool:
    """Whether a self-labelling stage can fine-tune its encoder (``backbone``)."""
    return self.backbone is not None


def check_images(images, name: str = 'images') -> None:
  """The image contract of every public entry point: uint8 ``[N, H, W, C]`` (values 0-255).

  Called by the data sources, the trainer and the one conversion to floats (``augment.to_float``, which every
  method's step, ``embed`` and ``assign`` go through). It reads only the dtype and the shape, so it works on host
  arrays and inside ``jit``.

  Raises:
    ValueError: one line naming what is wrong: a float or other dtype (images in [0, 1] would be divided by 255
      again), or not four axes.
  """
  dtype, shape = getattr(images, 'dtype', None), tuple(getattr(images, 'shape', ()))
  if dtype is None or np.dtype(dtype) != np.uint8:
    hint = (
      ' (floats in [0, 1]: multiply by 255 and round, or use data.from_arrays)'
      if dtype is not None and np.issubdtype(np.dtype(dtype), np.floating)
      else ''
    )
    raise ValueError(f'{name} must be uint8 [N, H, W, C] with values 0-255, got dtype {dtype}{hint}.')
  if len(shape) != 4 or 0 in shape[1:]:
    raise ValueError(f'{name} must be uint8 [N, H, W, C], got shape {shape}.')


class Factory(Protocol):
  def __call__(self, config: Any, train: Any, data: DataInfo) -> Method:
    """A method from its config, the run's ``TrainConfig`` and the data's :class:`DataInfo`; raises a one-line
    ``ValueError`` on a setting that does not fit them."""
