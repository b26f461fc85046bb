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
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

METHODS = ('kmeans', 'gmm', 'autoencoder', 'infogan', 'moco', 'scae', 'mice')
BENCHMARKS = ('kmeans_iteration', 'gmm_iteration', 'moco_step', 'infogan_step', 'scae_step', 'mice_step')


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
  """``HEAD`` of the repository holding this package, ``+dirty`` with uncommitted code changes.

  Read once per process (entry points call it as they start), so a record names
  the code that ran even if the tree changes while it runs.
  """
  root = pathlib.Path(__file__).resolve().parent.parent
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()
    # results/ itself changes as runs write into it: not a change of the code.
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.', ':!results'], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
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
  return (f'{os.cpu_count()} cores {cpu}; jax {jax.__version__} on {len(devices)} x '
          f'{devices[0].device_kind} ({jax.default_backend()})')


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


def method_record(method: str, dataset: str, protocol: str, seeds: Sequence[int],
                  per_seed_metrics: Sequence[Mapping[str, float]], wall_time_s: float,
                  config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """A reproduction-run record in the schema above."""
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; known: {METHODS}.')
  record = {'method': method, 'dataset': dataset, 'protocol': protocol, 'command': command(),
            'git_commit': git_commit(), 'machine': machine(), 'wall_time_s': float(wall_time_s),
            'seeds': [int(s) for s in seeds], 'metrics': summarize(per_seed_metrics)}
  if config is not None:
    record['config'] = dict(config)
  return record


def benchmark_record(benchmark: str, ours: Mapping[str, Any], reference: Mapping[str, Any],
                     throughput_key: str) -> Dict[str, Any]:
  """A benchmark record; ``speedup = ours[throughput_key] / reference[throughput_key]``."""
  if benchmark not in BENCHMARKS:
    raise ValueError(f'unknown benchmark {benchmark!r}; known: {BENCHMARKS}.')
  return {'benchmark': benchmark, 'command': command(), 'git_commit': git_commit(),
          'machine': machine(), 'ours': dict(ours), 'reference': dict(reference),
          'speedup': float(ours[throughput_key]) / float(reference[throughput_key])}


def write_json(path, record: Mapping[str, Any]) -> pathlib.Path:
  """Writes ``record`` to ``path`` atomically (a crash never leaves half a file)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + '\n')
  os.replace(tmp, path)
  return path


def _score(metric: Optional[Mapping[str, Any]]) -> str:
  """A metric's ``{'mean', 'std', 'per_seed'}`` as ``'0.964 ± 0.005'``; one seed's alone (no spread to show)."""
  if not metric:
    return ''
  if len(metric.get('per_seed', ())) == 1:
    return f'{metric["mean"]:.3f}'
  return f'{metric["mean"]:.3f} ± {metric["std"]:.3f}'


def markdown_table(directory) -> str:
  """The method runs and benchmarks in ``directory`` as two markdown tables, then one per ablation."""
  records = [dict(json.loads(p.read_text()), record=p.stem) for p in sorted(pathlib.Path(directory).glob('*.json'))]
  lines = ['| record | method | dataset | ACC | NMI | ARI | kNN | linear | seeds | wall (s) | command |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in records:
    if 'method' in r:
      m = r['metrics']
      scores = ' | '.join(_score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'))
      lines.append(f'| `{r["record"]}` | {r["method"]} | {r["dataset"]} | {scores} | '
                   f'{len(r["seeds"])} | {r["wall_time_s"]:.0f} | `{r["command"]}` |')
  lines += ['', '| benchmark | ours | reference | speedup | command |', '| --- | --- | --- | --- | --- |']

  def speed(side):
    if 'ms_per_iteration' in side:
      return f'{side["ms_per_iteration"]:.1f} ms/iter'
    return f'{side["images_per_s"]:.0f} img/s'

  for r in records:
    if 'benchmark' in r:
      lines.append(f'| {r["benchmark"]} | {speed(r["ours"])} | {speed(r["reference"])} | {r["speedup"]:.2f}x | '
                   f'`{r["command"]}` |')
  for r in records:
    if 'cells' in r:
      settings = list(r['cells'][0]['settings'])
      lines += ['', f'`{r["record"]}`: {r["title"]} (`{r["command"]}`)', '',
                '| ' + ' | '.join(settings) + ' | ACC | NMI | ARI | kNN | linear | seeds |',
                '|' + ' --- |' * (len(settings) + 6)]
      for cell in r['cells']:
        m = cell['record']['metrics']
        lines.append('| ' + ' | '.join(str(cell['settings'][k]) for k in settings) + ' | ' + ' | '.join(
            _score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc')) +
                     f' | {len(cell["record"]["seeds"])} |')
      if r.get('reference'):
        lines += ['', f'Reference ({r["reference"]["source"]}): ' + ', '.join(
            f'{k} {v}' for k, v in r['reference'].items() if k != 'source') + '.']
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown_table(sys.argv[1] if len(sys.argv) > 1 else 'results'))


# The README's results table: one row per method, by its headline record in results/ (None: not implemented yet).
HEADLINE_RECORDS = {
    'K-means': 'kmeans_mnist',
    'GMM': 'gmm_mnist',
    'AE + GMM': 'autoencoder_mnist_poster',
    'AE + UMAP + GMM (N2D)': 'autoencoder_mnist',
    'MoCo': 'moco_mnist',
    'MoCo + self-labelling': 'moco_selflabel_mnist',
    'InfoGAN': 'infogan_mnist',
    'capsules (SCAE)': None,
    'MiCE': None,
}
# A row without a headline record shows this record instead, where it exists: a shorter configuration than
# the headline flagfile's, its protocol saying so. The headline record replaces it once it exists.
INTERIM_RECORDS = {
    'capsules (SCAE)': ('scae_mnist_cpu_log_mask_3000steps',
                        'interim: CPU flagfile, 3,000 of the official 300k steps; K-means on the object '
                        'presences, train -> test'),
    'MiCE': ('mice_mnist_cpu_2500steps', 'interim: CPU flagfile, 2,500 steps (~9 of 100 epochs); argmax of '
             'the posterior'),
}
# Published MNIST clustering accuracy (fraction) beside each row, with its source.
HEADLINE_REFERENCES = {
    'K-means': (0.752, 'poster'),
    'GMM': (0.808, 'poster'),
    'AE + GMM': (0.912, 'poster'),
    'AE + UMAP + GMM (N2D)': (0.979, 'N2D paper'),
    'MoCo': (0.969, 'poster'),
    'MoCo + self-labelling': (0.969, "poster's MoCo"),
    'InfoGAN': (0.920, 'poster'),
    'capsules (SCAE)': (0.985, 'poster'),
}
# Our protocol in a few words (every record: fit and scored on MNIST's 70,000 train+test images).
HEADLINE_PROTOCOLS = {
    'K-means': 'raw pixels; k-means++, 10 restarts',
    'GMM': 'PCA-50 pixels; full covariances',
    'AE + GMM': "the poster's MLP 784-128-12; GMM (10 restarts) on the codes",
    'AE + UMAP + GMM (N2D)': "DEC's MLP 784-500-500-2000-10; UMAP to 10-d; GMM",
    'MoCo': "the poster's ConvNet, 5,000 steps; UMAP; K-means",
    'MoCo + self-labelling': 'MoCo as above; 3,000 steps on the 70% most confident',
    'InfoGAN': "5,000 steps; argmax of Q's category (scored on an affine view in training)",
}


def _where(machine: str) -> str:
  """``'2 cores AMD EPYC; jax 0.10.2 on 1 x cpu (cpu)'`` -> ``'CPU, 2 cores'``; a GPU's kind otherwise; each
  distinct one of a record whose seeds ran on several machines (joined by ``' + '``)."""
  if ' + ' in machine:
    return ' + '.join(dict.fromkeys(_where(one) for one in machine.split(' + ')))
  head, _, devices = machine.rpartition(' on ')
  if devices.endswith('(cpu)'):
    return f'CPU, {head.split(" cores")[0]} cores'
  count, _, kind = devices.rsplit(' (', 1)[0].partition(' x ')
  return f'{count} x {kind.removeprefix("NVIDIA ").split(" ")[0]}'


def _data(record: Mapping[str, Any]) -> str:
  """``'digits, 300 steps + 200 self-labelling'``: the data set and, for a learned method, how long it trained."""
  config = record.get('config', {})
  text = record['dataset']
  if config.get('protocol') == 'train->test':
    text += ' (train -> test)'
  if config.get('num_steps'):
    text += f', {config["num_steps"]:,} steps'
  if config.get('self_label_steps'):
    text += f' + {config["self_label_steps"]:,} self-labelling'
  return text


def summary_table(directory, records: Optional[Mapping[str, Optional[str]]] = None, detail: bool = False,
                  missing: Optional[str] = None) -> str:
  """The README's short results table from ``directory``: one markdown row per :data:`HEADLINE_RECORDS` entry.

  ACC / NMI / ARI as mean ± std over seeds (fractions), the number of seeds, where it ran, the published
  reference ACC with its source, our protocol and the record. A method without a headline record shows its
  :data:`INTERIM_RECORDS` entry where that record exists (short table only), else a "not yet" row.

  Args:
    directory: the folder of the records.
    records: row label (a key of :data:`HEADLINE_REFERENCES` where it has a reference) -> record name, None
      for a row without a headline record (interim or "not yet"); default :data:`HEADLINE_RECORDS`.
    detail: the table ``experiments.reproduce`` writes: also kNN and linear-probe accuracy (where the record
      has them) and wall time, and the record's data and training length instead of our protocol in words.
    missing: the text of a row whose record is absent; None raises instead.

  Raises:
    ValueError: a record is missing and ``missing`` is None.
  """
  directory = pathlib.Path(directory)
  records = HEADLINE_RECORDS if records is None else records
  if detail:
    lines = ['| method | ACC | NMI | ARI | kNN | linear | seeds | wall (s) | ran on | reference ACC | data | record |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  else:
    lines = ['| method | ACC | NMI | ARI | seeds | ran on | reference ACC | protocol (ours) | record |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for label, name in records.items():
    value, source = HEADLINE_REFERENCES.get(label, (None, ''))
    reference = f'{value:.3f} ({source})' if value is not None else ''
    protocol = HEADLINE_PROTOCOLS.get(label)
    if name is None and not detail and label in INTERIM_RECORDS:
      interim, protocol = INTERIM_RECORDS[label]
      if (directory / f'{interim}.json').is_file():
        name = interim
    path = None if name is None else directory / f'{name}.json'
    if path is None or not path.is_file():
      if path is not None and missing is None:
        raise ValueError(f'headline record {path} is missing; run its command or change HEADLINE_RECORDS[{label!r}].')
      text, record_cell = ('not yet', '') if path is None else (missing, f'`{name}`')
      blanks = '  |' * (7 if detail else 4)  # the cells between the first and the reference
      lines.append(f'| {label} | {text} |{blanks} {reference} |  | {record_cell} |')
      continue
    record = json.loads(path.read_text())
    m = record['metrics']
    if detail:
      scores = ' | '.join(_score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'))
      lines.append(f'| {label} | {scores} | {len(record["seeds"])} | {record["wall_time_s"]:,.0f} | '
                   f'{_where(record["machine"])} | {reference} | {_data(record)} | `{name}` |')
    else:
      scores = ' | '.join(_score(m[k]) for k in ('acc', 'nmi', 'ari'))
      lines.append(f'| {label} | {scores} | {len(record["seeds"])} | '
                   f'{_where(record["machine"])} | {reference} | {protocol} | `{name}` |')
  return '\n'.join(lines)


def provenance(directory, names: Sequence[str]) -> str:
  """A markdown list: for each record of ``names`` present in ``directory``, the command, machine and commit
  that made it (the rows of :func:`summary_table` say where each number comes from)."""
  lines = []
  for name in names:
    path = pathlib.Path(directory) / f'{name}.json'
    if path.is_file():
      record = json.loads(path.read_text())
      head, plus, dirty = record['git_commit'].partition('+')
      line = f'- `{name}`: `{record["command"]}` on {record["machine"]}, commit `{head[:12]}{plus}{dirty}`'
      commits = {}  # seeds that ran in other processes (seed_runs), by the commit each ran
      for run in record.get('seed_runs', ()):
        commit = run['git_commit'][:12] + ('+dirty' if run['git_commit'].endswith('+dirty') else '')
        commits.setdefault(commit, []).append(str(run['seed']))
      if len(commits) > 1:
        line += ' (seeds by commit: ' + '; '.join(f'`{c}` {", ".join(s)}' for c, s in commits.items()) + ')'
      lines.append(line + '.')
  return '\n'.join(lines)
