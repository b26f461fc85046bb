"""The one training loop every learned method runs on.

``train(method, state, images, config, workdir)``: compiled data-parallel
steps (:mod:`unsupervised_jax.training.parallel`), a progress bar with rate and
ETA, metrics as JSON lines in ``<workdir>/metrics.jsonl``, periodic
evaluation, an optional once-per-epoch whole-data-set update (MiCE's analytic
prototypes), orbax checkpoints every N steps (keep last k) and automatic
resume from the latest one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import numpy as np

from unsupervised_jax.training import checkpoints
from unsupervised_jax.training import parallel

# Test hook: kill -9 this process right after this step (checks crash + resume).
CRASH_ENV = 'UNSUPERVISED_JAX_CRASH_AFTER_STEP'


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite metric; the last good checkpoint is left as it was."""


class Method(NamedTuple):
  """What a learned method gives the trainer.

  Attributes:
    train_step: per-device ``(state, images [B_local, H, W, C] uint8,
      example_keys [B_local]) -> (state, metrics)`` (``images`` is a pytree of
      batches when the data set is a pytree); averages its gradients
      with ``lax.pmean(..., 'batch')``. ``state`` is a ``flax.struct``
      dataclass with an int32 ``step`` field (incremented by the trainer).
    epoch_end: optional ``(state, images [N, H, W, C], key) -> state``, run
      jitted every ``steps_per_epoch`` steps over the whole data set.
  """
  train_step: parallel.StepFn
  epoch_end: Optional[Callable[[Any, jax.Array, jax.Array], Any]] = None


@dataclasses.dataclass
class LoopConfig:
  num_steps: int
  batch_size: int
  seed: int = 0
  log_every: int = 100
  eval_every: int = 0  # 0: only at the end
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  num_devices: Optional[int] = None
  progress: bool = True

  def validate(self):
    for name in ('num_steps', 'batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}.')
    if self.eval_every < 0:
      raise ValueError(f'eval_every must be >= 0, got {self.eval_every}.')


def _needs_step_sync(mesh) -> bool:
  """XLA:CPU collectives across several fake devices can abort on a busy 2-core host
  ("Expected N threads to join the rendezvous") when steps pile up; waiting for
  each step there removed the failures. Accelerators keep asynchronous dispatch."""
  return mesh.size > 1 and mesh.devices.flat[0].platform == 'cpu'


class MetricsWriter:
  """Appends ``{"step": ..., name: value}`` lines to ``<workdir>/metrics.jsonl``."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'

  def write(self, step: int, metrics: Dict[str, Any]):
    line = {'step': int(step), **{k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist())
                                  for k, v in metrics.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(line) + '\n')


def train(method: Method, state: Any, images: np.ndarray, config: LoopConfig, workdir,
          evaluate: Optional[Callable[[Any], Dict[str, float]]] = None, steps_per_epoch: int = 0):
  """Trains ``state`` for ``config.num_steps`` steps (resuming from ``workdir`` if it holds checkpoints).

  Args:
    method: the method's per-device step (and optional epoch-end update).
    state: freshly initialised train state (used as is when nothing to resume).
    images: ``[N, H, W, C]`` uint8 data set, put on every device once; or a
      pytree of per-example ``[N, ...]`` arrays (the step then gets the same
      pytree of batches).
    config: loop settings.
    workdir: checkpoints and ``metrics.jsonl`` go here.
    evaluate: ``state -> {name: value}``, run every ``eval_every`` steps and at the end.
    steps_per_epoch: period of ``method.epoch_end``.

  Returns:
    The final state.

  Raises:
    NonFiniteLossError: a step produced NaN/inf; nothing after the last good
      checkpoint is saved.
  """
  config.validate()
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch_size(config.batch_size, mesh)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mngr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  state = parallel.replicate(state, mesh)
  restored = checkpoints.restore_latest(mngr, state)
  if restored is not None:
    state = parallel.replicate(restored, mesh)
  start = int(jax.device_get(state.step))
  writer = MetricsWriter(workdir)
  if start >= config.num_steps:
    return state
  parallel.num_examples(images)  # one N for every array, checked before compiling
  images = parallel.replicate(jax.tree.map(np.asarray, images), mesh)
  key = jax.random.key(config.seed)
  epoch_key = jax.random.split(key)[1]  # a stream apart from the steps' fold_in(key, step)
  step_fn = parallel.data_parallel_step(method.train_step, mesh, config.batch_size)
  epoch_end = jax.jit(method.epoch_end, donate_argnums=0) if method.epoch_end and steps_per_epoch else None
  sync_every_step = _needs_step_sync(mesh)
  crash_after = int(os.environ.get(CRASH_ENV, '-1'))

  from tqdm import auto as tqdm
  bar = tqdm.tqdm(total=config.num_steps, initial=start, disable=not config.progress, unit='step',
                  dynamic_ncols=True, desc=workdir.name)
  all_finite = True
  window_start, window_steps = time.perf_counter(), 0
  for step in range(start + 1, config.num_steps + 1):
    state, metrics = step_fn(state, images, key)
    all_finite = metrics['finite'] & all_finite  # stays on device: no sync
    if sync_every_step:
      jax.block_until_ready(state)
    window_steps += 1
    if epoch_end is not None and step % steps_per_epoch == 0:
      state = epoch_end(state, images, jax.random.fold_in(epoch_key, step))
    last = step == config.num_steps
    if step % config.log_every == 0 or step % config.checkpoint_every == 0 or last:
      if not bool(all_finite):
        bar.close()
        mngr.wait_until_finished()  # the last good checkpoint must be complete on disk
        raise NonFiniteLossError(
            f'non-finite training metrics before step {step} (last: {jax.device_get(metrics)}); stopped. '
            f'The last good checkpoint ({mngr.latest_step()}) in {workdir / "checkpoints"} is intact; '
            'lower the learning rate or check the data.')
    if step % config.log_every == 0 or last:
      values = {k: v for k, v in jax.device_get(metrics).items() if k != 'finite'}
      elapsed = time.perf_counter() - window_start
      values['images_per_s'] = window_steps * config.batch_size / max(elapsed, 1e-9)
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
  mngr.wait_until_finished()
  return state
