"""The one training loop every learned method runs on.

``train(method, state, dataset, config, workdir, key=...)``: compiled data-parallel
steps (:mod:`unsupervised_jax.training.parallel`), a progress bar with rate and
ETA, metrics as JSON lines in ``<workdir>/metrics.jsonl``, periodic
evaluation, an optional once-per-epoch whole-data-set update (MiCE's analytic
prototypes), orbax checkpoints every N steps (keep last k) and automatic
resume from the latest one, TensorBoard event files beside ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import NamedTuple
from typing import Optional
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax import settings
from unsupervised_jax.settings import setting
from unsupervised_jax.training import checkpoints
from unsupervised_jax.training import contract
from unsupervised_jax.training import parallel

# Test hook: kill -9 this process right after this step (checks crash + resume).
CRASH_ENV = 'UNSUPERVISED_JAX_CRASH_AFTER_STEP'


class NonFiniteLossError(RuntimeError):
  """A step made a metric or the state non-finite; that update was not kept, and the checkpoints hold only
  states from before it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How long and how the trainer runs (the flags of every learned method)."""

  num_steps: int = setting(1000, 'Training steps (num_epochs, when given, sets them).', minimum=1)
  num_epochs: float = setting(
    0.0,
    'Training length in epochs of the training images (N // batch_size steps each); > 0 sets num_steps, unless '
    '--num_steps is given.',
    minimum=0,
  )
  batch_size: int = setting(256, 'Global batch size (a multiple of the device count).', minimum=1)
  log_every: int = setting(100, 'Steps between metric lines (metrics.jsonl and TensorBoard).', minimum=1)
  eval_every: int = setting(0, 'Steps between evaluations during training; 0 = at the end only.', minimum=0)
  checkpoint_every: int = setting(1000, 'Steps between checkpoints (the run resumes from the latest).', minimum=1)
  keep_checkpoints: int = setting(3, 'Checkpoints kept.', minimum=1)
  sampling: str = setting(
    'replacement',
    "How batches are drawn: 'replacement' (independent draws) or 'epochs' "
    '(shuffled passes without replacement, the last partial batch dropped).',
    choices=parallel.SAMPLINGS,
  )
  num_devices: int = setting(0, 'Devices to use; 0 = all.', minimum=0)
  progress: bool = setting(True, 'Show a progress bar.')

  def for_data(self, num_examples: int) -> 'TrainConfig':
    """This config with ``num_steps`` from ``num_epochs`` for ``num_examples`` training images (itself when
    ``num_epochs`` is 0): ``round(num_epochs * (num_examples // batch_size))``.

    Raises:
      ValueError: fewer images than one batch.
    """
    if not self.num_epochs:
      return self
    steps = round(self.num_epochs * parallel.steps_per_epoch(num_examples, self.batch_size))
    return dataclasses.replace(self, num_steps=max(1, steps))

  def validate(self):
    """Raises ValueError (one line) on a bad setting, or a batch the devices cannot split."""
    settings.check(self)
    parallel.check_batch_size(self.batch_size, parallel.make_mesh(self.num_devices or None))


def _needs_step_sync(mesh) -> bool:
  """XLA:CPU collectives across several fake devices can abort on a busy 2-core host
  ("Expected N threads to join the rendezvous") when steps pile up; waiting for
  each step there removed the failures. Accelerators keep asynchronous dispatch."""
  return mesh.size > 1 and mesh.devices.flat[0].platform == 'cpu'


class MetricsWriter:
  """Appends ``{"step": ..., name: value}`` lines to ``<workdir>/metrics.jsonl`` and the same scalars
  to TensorBoard event files in ``<workdir>`` (``tensorboard --logdir runs/`` shows every run)."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self._tensorboard = None
    self._workdir = pathlib.Path(workdir)

  def write(self, step: int, metrics: Dict[str, Any]):
    line = {
      'step': int(step),
      **{k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in metrics.items()},
    }
    with self.path.open('a') as f:
      f.write(json.dumps(line) + '\n')
    if self._tensorboard is None:
      import tensorboardX  # a small, well-kept event writer (no TensorFlow)

      self._tensorboard = tensorboardX.SummaryWriter(str(self._workdir), flush_secs=30)
    for name, value in line.items():
      if name != 'step' and np.ndim(value) == 0:
        self._tensorboard.add_scalar(name, value, int(step))

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


def _logged_by_step(workdir, select: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
  """``{step: values}`` of ``select(line)`` over ``<workdir>/metrics.jsonl``'s lines (:class:`MetricsWriter`'s),
  a later line's values replacing an earlier one's at the same step (a step logged again after a resume)."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  by_step = {}
  if path.is_file():
    for line in path.read_text().splitlines():
      entry = json.loads(line)
      values = select(entry)
      if values:
        by_step.setdefault(entry['step'], {}).update(values)
  return by_step


def read_metrics(workdir, name: str) -> Tuple[List[int], List[Any]]:
  """``(steps, values)`` of metric ``name`` in ``<workdir>/metrics.jsonl`` (:class:`MetricsWriter`'s lines),
  by step; a step logged again after a resume keeps its last value. ``([], [])`` when there is none."""
  by_step = _logged_by_step(workdir, lambda entry: {name: entry[name]} if name in entry else {})
  steps = sorted(by_step)
  return steps, [by_step[s][name] for s in steps]


def read_evaluations(workdir) -> Dict[str, List[float]]:
  """The evaluations run during training (``eval_every``) from ``<workdir>/metrics.jsonl``: ``{'step': [E],
  <name>: [E]}`` for each ``eval/<name>``, by step (a step evaluated again after a resume keeps its last
  values); ``{}`` when there is none."""
  by_step = _logged_by_step(
    workdir, lambda entry: {k[len('eval/') :]: v for k, v in entry.items() if k.startswith('eval/')}
  )
  steps = sorted(by_step)
  names = sorted({name for values in by_step.values() for name in values})
  return {'step': steps, **{name: [by_step[s].get(name) for s in steps] for name in names}} if steps else {}


def trained_seconds(workdir) -> float:
  """Wall seconds spent training in ``workdir`` up to its last log, over every process that trained there
  (resumes included; evaluations during training included): the largest ``train_s`` in ``metrics.jsonl``,
  0.0 when none."""
  return float(max(read_metrics(workdir, 'train_s')[1], default=0.0))


class _Failure(NamedTuple):
  """Whether every step so far was kept, and the first rejected one: its number and its ``finite_parts``."""

  all_finite: jax.Array  # [] bool
  step: jax.Array  # [] int32, 0 while none failed
  parts: Dict[str, jax.Array]  # {name: [] bool}


@jax.jit
def _track_failure(failure: Optional[_Failure], finite, parts, state_step) -> _Failure:
  """``failure`` after a step with ``finite`` and ``parts`` (:func:`parallel.finite_parts`); a rejected step
  leaves the state's step where it was, so it is ``state_step + 1``. ``None`` before the first step."""
  if failure is None:
    failure = _Failure(jnp.array(True), jnp.zeros((), jnp.int32), parts)
  first = ~finite & (failure.step == 0)
  return _Failure(
    failure.all_finite & finite,
    jnp.where(first, state_step + 1, failure.step),
    jax.tree.map(lambda ok, before: jnp.where(first, ok, before), parts, failure.parts),
  )


def train(
  method: contract.Method,
  state: Any,
  dataset,
  config: TrainConfig,
  workdir,
  *,
  key: jax.Array,
  evaluate: Optional[Callable[[Any], Dict[str, float]]] = None,
):
  """Trains ``state`` for ``config.num_steps`` steps (resuming from ``workdir`` if it holds checkpoints).

  Args:
    method: the method (:class:`unsupervised_jax.training.contract.Method`): its
      per-device ``train_step`` and, when given, its ``epoch_end`` (run every
      ``epoch_end.period`` steps over the whole data set, sharded over the
      devices and chunked; its metrics are logged with the prefix ``epoch_end/``).
    state: freshly initialised train state (used as is when nothing to resume).
    dataset: ``[N, H, W, C]`` uint8 images, put on every device once; or a
      dict of per-example ``[N, ...]`` arrays with uint8 ``'images'`` (the step then gets the same
      dict of batches).
    config: loop settings.
    workdir: checkpoints, ``metrics.jsonl`` and TensorBoard events go here.
    key: the run's data key: batches and augmentations at step ``s`` come from
      ``fold_in(key, s)`` (:func:`unsupervised_jax.training.parallel.sample_batch`).
    evaluate: ``state -> {name: value}``, run every ``eval_every`` steps and at the end.

  Returns:
    The final state.

  Raises:
    NonFiniteLossError: a step produced NaN/inf; nothing after the last good
      checkpoint is saved.
    ValueError: a bad setting, or images that are not uint8 ``[N, H, W, C]`` (before anything is written).
  """
  config.validate()
  config = config.for_data(parallel.num_examples(dataset))  # --num_epochs: the length in steps of this data set
  contract.check_images(
    dataset['images'] if isinstance(dataset, dict) else dataset,
    'the data set' + ("'s images" if isinstance(dataset, dict) else ''),
  )
  if config.sampling == 'epochs':
    parallel.steps_per_epoch(parallel.num_examples(dataset), config.batch_size)
  process_start = time.perf_counter()
  mesh = parallel.make_mesh(config.num_devices or None)
  workdir = pathlib.Path(workdir)
  earlier_s = trained_seconds(workdir)  # the processes before a resume
  workdir.mkdir(parents=True, exist_ok=True)
  mngr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  state = parallel.replicate(state, mesh)
  restored = checkpoints.restore_latest(mngr, state)
  if restored is not None:
    state = parallel.replicate(restored, mesh)
  start = int(jax.device_get(state.step))
  if start >= config.num_steps:
    return state
  writer = MetricsWriter(workdir)
  parallel.num_examples(dataset)  # one N for every array, checked before compiling
  dataset = parallel.replicate(jax.tree.map(np.asarray, dataset), mesh)
  step_fn = parallel.data_parallel_step(method.train_step, mesh, config.batch_size, config.sampling)
  epoch_end = (
    parallel.data_parallel_epoch_end(method.epoch_end, mesh, max(1, config.batch_size // mesh.size))
    if method.epoch_end is not None
    else None
  )
  sync_every_step = _needs_step_sync(mesh)
  crash_after = int(os.environ.get(CRASH_ENV, '-1'))

  from tqdm import auto as tqdm

  bar = tqdm.tqdm(
    total=config.num_steps,
    initial=start,
    disable=not config.progress,
    unit='step',
    dynamic_ncols=True,
    desc=workdir.name,
  )
  failure = None  # the first rejected step and what it made non-finite, on device: one dispatch a step, no sync
  window_start, window_steps = time.perf_counter(), 0
  for step in range(start + 1, config.num_steps + 1):
    state, metrics = step_fn(state, dataset, key)
    failure = _track_failure(failure, metrics['finite'], metrics['finite_parts'], state.step)
    if sync_every_step:
      jax.block_until_ready(state)
    window_steps += 1
    if epoch_end is not None and step % method.epoch_end.period == 0:
      state, epoch_metrics = epoch_end(state, dataset)
      writer.write(step, {f'epoch_end/{k}': v for k, v in jax.device_get(epoch_metrics).items()})
    last = step == config.num_steps
    if step % config.log_every == 0 or step % config.checkpoint_every == 0 or last:
      if not bool(failure.all_finite):
        bar.close()
        writer.close()
        mngr.wait_until_finished()  # the last good checkpoint must be complete on disk
        failure = jax.device_get(failure)
        bad = [name for name, ok in failure.parts.items() if not ok]
        failed = int(failure.step)
        raise NonFiniteLossError(
          f'step {failed} made {", ".join(bad)} non-finite; that update was not kept and training stopped. '
          f'The checkpoints in {workdir / "checkpoints"} (latest: step {mngr.latest_step()}) hold only finite '
          'states; lower the learning rate or check the data.'
        )
    if step % config.log_every == 0 or last:
      values = {k: v for k, v in jax.device_get(metrics).items() if k not in ('finite', 'finite_parts')}
      elapsed = time.perf_counter() - window_start
      values['images_per_s'] = window_steps * config.batch_size / max(elapsed, 1e-9)
      values['train_s'] = earlier_s + time.perf_counter() - process_start
      writer.write(step, values)
      bar.set_postfix({k: f'{v:.4g}' for k, v in values.items()}, refresh=False)
      window_start, window_steps = time.perf_counter(), 0
    bar.update(1)
    if evaluate is not None and ((config.eval_every and step % config.eval_every == 0) or last):
      results = evaluate(state)
      writer.write(step, {f'eval/{k}': v for k, v in results.items()})
      bar.write(f'step {step}: ' + '  '.join(f'{k} {v:.4f}' for k, v in results.items()))
    if step % config.checkpoint_every == 0 or last:
      checkpoints.save(mngr, step, state)
    if step == crash_after:
      mngr.wait_until_finished()
      os.kill(os.getpid(), signal.SIGKILL)
  bar.close()
  writer.close()
  mngr.wait_until_finished()
  return state
