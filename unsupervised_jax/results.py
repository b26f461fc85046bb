"""The one JSON schema for reproduction runs and benchmarks under ``results/``.

Method runs::

  {"method", "dataset", "protocol", "command", "git_commit", "machine",
   "wall_time_s", "seeds", "metrics": {name: {"mean", "std", "per_seed"}}, ...}

A learned method's record also lists ``"seed_runs": [{"seed", "scores", "wall_time_s", "git_commit",
"machine"}]``: it is rewritten after each seed, so seeds run in different sessions or on different
machines make one record (``wall_time_s`` their sum, ``machine`` each distinct host). A seed trained with
``eval_every`` adds ``"progress": {"step": [E], "cluster_acc_test": [E], "cluster_nmi_test": [E],
"cluster_ari_test": [E], "knn_acc": [E]}``, the
accuracy against steps of the evaluations during training (test split, K-means with one start).

Ablations (one method run per cell of a grid)::

  {"title", "command", "git_commit", "reference", "cells": [{"settings": {...}, "record": <method run>}]}

Benchmarks::

  {"benchmark", "command", "git_commit", "machine", "ours", "reference", "speedup"}

Accuracies are fractions in [0, 1]. Records are written by the code that
measured them, never by hand.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np

BENCHMARKS = ('kmeans_iteration', 'gmm_iteration', 'moco_step', 'infogan_step', 'scae_step', 'mice_step')


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
  """``HEAD`` of the repository holding this package, ``+dirty`` with uncommitted code changes.

  Read once per process (entry points call it as they start), so a record names
  the code that ran even if the tree changes while it runs.
  """
  root = pathlib.Path(__file__).resolve().parent.parent
  try:
    head = subprocess.run(
      ['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
    # results/ itself changes as runs write into it: not a change of the code.
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no', '--', '.', ':!results'],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=10,
    ).stdout.strip()
    return head + ('+dirty' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def machine() -> str:
  """A one-line description of the host and the JAX backend."""
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      fields = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines() if ':' in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    cpu = fields['model name']
    if 'cpu family' in fields:  # 'AMD EPYC' names neither generation: family 23 is Zen 1/2, 25 Zen 3/4
      cpu += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
  except (OSError, KeyError):
    pass
  devices = jax.devices()
  return (
    f'{os.cpu_count()} cores {cpu}; jax {jax.__version__} on {len(devices)} x '
    f'{devices[0].device_kind} ({jax.default_backend()})'
  )


def command() -> str:
  """The command line that is running, as a user would type it."""
  argv = list(sys.argv)
  main = sys.modules.get('__main__')
  spec = getattr(main, '__spec__', None)
  if spec is not None and spec.name:
    argv[0] = f'python -m {spec.name.removesuffix(".__main__")}'
  else:
    argv[0] = f'python {argv[0]}'
  return ' '.join(argv)


def summarize(per_seed: Sequence[Mapping[str, float]]) -> Dict[str, Dict[str, Any]]:
  """``[{name: value}]`` over seeds -> ``{name: {"mean", "std", "per_seed"}}`` (population std)."""
  if not per_seed:
    raise ValueError('no per-seed metrics to summarise.')
  out = {}
  for name in per_seed[0]:
    values = np.asarray([float(m[name]) for m in per_seed])
    out[name] = {'mean': float(values.mean()), 'std': float(values.std()), 'per_seed': values.tolist()}
  return out


def method_record(
  method: str,
  dataset: str,
  protocol: str,
  seeds: Sequence[int],
  per_seed_metrics: Sequence[Mapping[str, float]],
  wall_time_s: float,
  config: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
  """A reproduction-run record in the schema above."""
  record = {
    'method': method,
    'dataset': dataset,
    'protocol': protocol,
    'command': command(),
    'git_commit': git_commit(),
    'machine': machine(),
    'wall_time_s': float(wall_time_s),
    'seeds': [int(s) for s in seeds],
    'metrics': summarize(per_seed_metrics),
  }
  if config is not None:
    record['config'] = dict(config)
  return record


def benchmark_record(
  benchmark: str, ours: Mapping[str, Any], reference: Mapping[str, Any], throughput_key: str
) -> Dict[str, Any]:
  """A benchmark record; ``speedup = ours[throughput_key] / reference[throughput_key]``."""
  if benchmark not in BENCHMARKS:
    raise ValueError(f'unknown benchmark {benchmark!r}; known: {BENCHMARKS}.')
  return {
    'benchmark': benchmark,
    'command': command(),
    'git_commit': git_commit(),
    'machine': machine(),
    'ours': dict(ours),
    'reference': dict(reference),
    'speedup': float(ours[throughput_key]) / float(reference[throughput_key]),
  }


def write_json(path, record: Mapping[str, Any]) -> pathlib.Path:
  """Writes ``record`` to ``path`` atomically (a crash never leaves half a file)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + '\n')
  os.replace(tmp, path)
  return path
