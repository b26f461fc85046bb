"""Every method's configuration in one command, resumable: ``python -m experiments.reproduce --budget=quick|full``.

Each configuration runs as its own entry point's command, ``python -m experiments.<method>
--flagfile=experiments/configs/<name>.flags`` in a subprocess, so the data path, the training loop and the
evaluation are the entry points' own and nothing is written twice:

- ``full`` runs the flagfiles as they are: the headline numbers, recorded under the headline records'
  names (``results/kmeans_mnist.json``, ...);
- ``quick`` adds the flags that shrink each one to a check that every method runs end to end in about 20
  minutes on a 2-core CPU (K-means and GMM as their flagfiles on MNIST, the poster's autoencoder for 1,000
  MNIST steps, the others short runs on the 8x8 digits); its records are named ``<name>_<dataset>_quick``
  and its folder is ``results/quick/``, so its numbers never replace the headline records;
- ``tiny`` is the end-to-end test's setting (digits, a few steps; its numbers mean nothing).

Every command gets ``--seeds``, its own ``--workdir`` under the reproduction's, ``--results_dir``,
``--results_name`` and ``--reuse_record``: a configuration whose record already holds these settings and
seeds is reused, not run again (the runners' own test,
:func:`unsupervised_jax.runner.records.holds_all_seeds`); one killed part-way resumes from the checkpoints
and finished seeds in its workdir, and a learned method's record written seed by seed continues with its
missing seeds (:func:`unsupervised_jax.runner.records.finished_seeds`). MoCo + self-labelling shares MoCo's
workdir, so it only fine-tunes the MoCo seeds trained there (a MoCo seed known only from its record has no
checkpoint: its self-labelling trains MoCo again). Then :func:`write_table` writes ``<results_dir>/table.md``
from the records (:func:`unsupervised_jax.runner.tables.summary_table`) and copies each run's figures to
``<results_dir>/figures/<record>/``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from typing import List
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple

from unsupervised_jax import registry
from unsupervised_jax import results
from unsupervised_jax import settings
from unsupervised_jax.runner import tables
from unsupervised_jax.runner.configurations import BUDGETS
from unsupervised_jax.runner.configurations import CONFIGURATIONS
from unsupervised_jax.runner.configurations import NAMES
from unsupervised_jax.runner.configurations import Configuration
from unsupervised_jax.settings import setting

CAPTIONS = {
  'full': 'Budget `full`: every flagfile as it is, the headline numbers (the README\'s table shows the same records).',
  'quick': 'Budget `quick`: a check that every method runs end to end in about 20 minutes on a 2-core CPU, '
  'not the headline numbers: K-means and GMM as their flagfiles on MNIST, the poster\'s autoencoder '
  'for 1,000 MNIST steps instead of 8,200, the other methods short runs on the 8x8 digits (the `data` '
  'column). The references beside them are MNIST numbers after full training, not what these runs '
  'aim at.',
  'tiny': 'Budget `tiny`: the end-to-end test\'s setting (digits, a few steps); its numbers mean nothing.',
}


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
  """What ``experiments.reproduce`` runs and where it writes."""

  budget: Optional[str] = setting(
    None,
    "'full': the flagfiles as they are (the headline numbers, into results/); "
    "'quick': short runs, ~20 min on a 2-core CPU (into results/quick/); 'tiny': the "
    "end-to-end test's setting.",
    choices=BUDGETS,
  )
  methods: Tuple[str, ...] = setting(
    registry.names(),
    'Methods (every configuration of each) or configurations (ae_poster, '
    'ae_n2d, moco_selflabel) to run; the table lists them all.',
  )
  seeds: Tuple[int, ...] = setting((0, 1, 2), 'Seeds of every configuration.', minimum=0)
  workdir: Optional[str] = setting(
    None, 'Where the runs go, one folder per configuration; default runs/reproduce_<budget>.'
  )
  results_dir: Optional[str] = setting(
    None, 'Where the records, table.md and figures go; default results/ for full, results/<budget>/ otherwise.'
  )
  data_dir: Optional[str] = setting(
    None, 'Passed on to every command (default: $UNSUPERVISED_JAX_DATA_DIR, else tensorflow-datasets).'
  )
  dry_run: bool = setting(False, 'Print the commands and write nothing.')

  def validate(self):
    settings.check(self)
    if self.budget is None:
      raise ValueError(
        'give --budget=quick (~20 min on a 2-core CPU, results/quick/) or --budget=full (the '
        'flagfiles as they are, results/).'
      )
    unknown = [m for m in self.methods if m not in registry.names() and m not in NAMES]
    if unknown or not self.methods:
      raise ValueError(
        f'--methods must name some of {", ".join(registry.names())} or of {", ".join(NAMES)}; got '
        f'{",".join(self.methods) or "nothing"}.'
      )
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'--seeds must be distinct, at least one; got {list(self.seeds)}.')
    for name in ('workdir', 'results_dir', 'data_dir'):
      if getattr(self, name) == '':
        raise ValueError(f'--{name} is empty.')

  def selected(self) -> List[Configuration]:
    return [c for c in CONFIGURATIONS if c.name in self.methods or c.method in self.methods]


class Step(NamedTuple):
  """One configuration's command."""

  configuration: Configuration
  record: str  # the record's name in the results folder
  argv: List[str]  # after the Python executable
  workdir: pathlib.Path  # absolute


def _shown(path: pathlib.Path, root: pathlib.Path) -> str:
  """``path`` as the commands show it: relative to the clone's root inside it, absolute elsewhere."""
  try:
    return str(path.relative_to(root))
  except ValueError:
    return str(path)


def plan(config: ReproduceConfig, root) -> Tuple[List[Step], pathlib.Path]:
  """The commands of the selected configurations and the results folder (absolute), validated first.

  Args:
    config: the reproduction's settings.
    root: the clone's root (the entry points and their flagfiles live there; commands run from it).

  Raises:
    ValueError: a bad setting, a missing flagfile, or a budget other than ``full`` aimed at ``results/``.
  """
  config.validate()
  root = pathlib.Path(root).resolve()
  workdir = pathlib.Path(config.workdir or f'runs/reproduce_{config.budget}').resolve()
  default_results = 'results' if config.budget == 'full' else f'results/{config.budget}'
  results_dir = pathlib.Path(config.results_dir or default_results).resolve()
  if config.budget != 'full' and results_dir == root / 'results':
    raise ValueError(
      f'--budget={config.budget} keeps its records apart from the headline records in results/: '
      'give another --results_dir.'
    )
  steps = []
  for configuration in config.selected():
    flagfile = root / 'experiments' / 'configs' / configuration.flagfile
    if not flagfile.is_file():
      raise ValueError(f'{flagfile} is missing.')
    record, extra = configuration.budgets[config.budget]
    run_dir = workdir / configuration.workdir
    argv = [
      '-m',
      f'experiments.{configuration.method}',
      f'--flagfile={_shown(flagfile, root)}',
      *extra,
      f'--seeds={",".join(map(str, config.seeds))}',
      f'--workdir={_shown(run_dir, root)}',
      f'--results_dir={_shown(results_dir, root)}',
      f'--results_name={record}',
      '--reuse_record',
    ]
    if config.data_dir:
      argv.append(f'--data_dir={pathlib.Path(config.data_dir).resolve()}')
    steps.append(Step(configuration, record, argv, run_dir))
  return steps, results_dir


def command_line(step: Step) -> str:
  return 'python ' + ' '.join(shlex.quote(a) for a in step.argv)


def record_names(budget: str) -> Mapping[str, str]:
  """Every configuration's table row -> its record name under ``budget``."""
  return {c.label: c.budgets[budget][0] for c in CONFIGURATIONS}


def write_table(results_dir, budget: str, command: str) -> pathlib.Path:
  """``<results_dir>/table.md``: the caption of ``budget``, the records' table
  (:func:`unsupervised_jax.runner.tables.summary_table`, a "not run" row where a record is absent), the commands
  that made them and links to their figures."""
  results_dir = pathlib.Path(results_dir)
  names = record_names(budget)
  lines = [
    f'# Reproduction, budget `{budget}`',
    '',
    CAPTIONS[budget],
    '',
    f'Written by `{command}` from the records in this folder (`tables.summary_table`): ACC, NMI and ARI '
    'of the clustering, kNN and linear-probe accuracy of the codes (learned methods), mean ± std over seeds '
    'as fractions; wall (s) is the record\'s own (training, clustering and scoring, summed over seeds).',
    '',
    '<!-- table:begin -->',
    tables.summary_table(results_dir, names, detail=True, missing='not run'),
    '<!-- table:end -->',
    '',
    'Records (command, machine, commit):',
    '',
    tables.provenance(results_dir, list(names.values())),
  ]
  figures = sorted((results_dir / 'figures').glob('*/*.png'))
  if figures:
    lines += ['', 'Figures:', '']
    for folder in sorted({f.parent for f in figures}):
      lines.append(
        f'- `{folder.name}`: '
        + ', '.join(f'[{f.name}](figures/{folder.name}/{f.name})' for f in sorted(folder.glob('*.png')))
      )
  path = results_dir / 'table.md'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('\n'.join(lines) + '\n')
  return path


def copy_figures(step: Step, results_dir: pathlib.Path) -> None:
  """The run's figures (``<workdir>/*.png``) to ``<results_dir>/figures/<record>/``."""
  pictures = sorted(step.workdir.glob('*.png'))
  if pictures:
    target = results_dir / 'figures' / step.record
    target.mkdir(parents=True, exist_ok=True)
    for picture in pictures:
      shutil.copy2(picture, target / picture.name)


def _run_child(argv: Sequence[str], cwd, env: Optional[Mapping[str, str]] = None) -> int:
  """Runs ``argv`` (with ``env`` added to this process's environment) and returns its exit status; a child
  still running when this process is stopped (Ctrl-C, or SIGTERM turned into ``SystemExit``) is stopped too,
  so a re-run does not race it."""
  child = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else {**os.environ, **env})
  try:
    return child.wait()
  finally:
    if child.poll() is None:
      child.terminate()
      try:
        child.wait(timeout=30)
      except subprocess.TimeoutExpired:
        child.kill()


def run(config: ReproduceConfig, root, command: Optional[str] = None) -> Optional[pathlib.Path]:
  """Runs (or, with ``dry_run``, prints) every selected configuration's command, then writes the table.

  Returns:
    The table's path (None on a dry run).

  Raises:
    ValueError: a bad setting (before anything runs or is written), or, after the table is written, the
      configurations whose command failed.
  """
  steps, results_dir = plan(config, root)
  if config.dry_run:
    for step in steps:
      print(command_line(step))
    print(f'# then {_shown(results_dir / "table.md", pathlib.Path(root).resolve())}')
    return None
  failed, outcome, start = [], [], time.perf_counter()
  # One XLA compilation cache for the reproduction's processes (JAX's persistent cache): every seed and every
  # configuration of a method compiles the same train step and evaluation programs, minutes on a 2-core CPU.
  # An environment that already names a cache keeps it.
  env = (
    {}
    if 'JAX_COMPILATION_CACHE_DIR' in os.environ or not steps
    else {'JAX_COMPILATION_CACHE_DIR': str(steps[0].workdir.parent / 'xla_cache')}
  )  # in the reproduction's workdir
  for i, step in enumerate(steps, 1):
    record_path = results_dir / f'{step.record}.json'
    before = record_path.stat().st_mtime_ns if record_path.is_file() else None
    print(f'[{i}/{len(steps)}] {step.configuration.name}: {command_line(step)}', flush=True)
    began = time.perf_counter()
    returncode = _run_child([sys.executable, *step.argv], root, env)
    took = time.perf_counter() - began
    if returncode:
      failed.append(f'{step.configuration.name} (exit {returncode})')
      outcome.append(f'{step.configuration.name}: failed after {took:.0f} s')
      continue
    reused = before is not None and record_path.stat().st_mtime_ns == before
    outcome.append(f'{step.configuration.name}: {"reused" if reused else "ran"} in {took:.0f} s')
    copy_figures(step, results_dir)
  table = write_table(results_dir, config.budget, command or results.command())
  print('\n'.join(outcome), flush=True)
  print(f'wrote {table} ({time.perf_counter() - start:.0f} s)', flush=True)
  if failed:
    raise ValueError(
      f'{", ".join(failed)} failed (output above); the table lists the others; run the same command again to resume.'
    )
  return table
