"""A grid of learned-method runs (an ablation) in one command, tabulated."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any
from typing import Dict
from typing import Optional
from typing import Sequence
from typing import Tuple

from unsupervised_jax import results
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import learned
from unsupervised_jax.runner import records
from unsupervised_jax.training import contract


def cell(base: run_config.Experiment, method_config, out_dir, name: str) -> run_config.Experiment:
  """One cell's experiment: ``base`` with ``method_config``, run in ``<out_dir>/<name>`` and writing no record of
  its own (the grid's table is the record)."""
  return dataclasses.replace(
    base, method_config=method_config, run=dataclasses.replace(base.run, workdir=f'{out_dir}/{name}', results_dir=None)
  )


def results_path(base: run_config.Experiment, default_name: str) -> Optional[str]:
  """Where the grid's table goes: ``<results_dir>/<results_name or default_name>.json``; None without a results_dir."""
  if not base.run.results_dir:
    return None
  return f'{base.run.results_dir}/{base.run.results_name or default_name}.json'


def grid(
  base: run_config.Experiment,
  cells: Sequence[Tuple[str, Dict[str, Any], Dict[str, Any]]],
  title: str,
  name: str,
  reference: Optional[Dict[str, Any]] = None,
) -> pathlib.Path:
  """An ablation command's grid: every cell ``(cell name, its settings in the table, overrides of the method's
  config)`` built on ``base`` and validated (its method built for the data, loaded once) before any runs, then
  :func:`run` into ``<base workdir or runs/<name>>/<cell name>`` with the table in
  ``<results_dir>/<results_name or name>.json``."""
  loaded = learned.load(base.run)
  out_dir = base.run.workdir or f'runs/{name}'
  built = []
  for cell_name, settings, overrides in cells:
    experiment = learned.for_data(
      cell(base, dataclasses.replace(base.method_config, **overrides), out_dir, cell_name), loaded
    )
    experiment.validate()
    built.append((settings, experiment, learned.build(experiment, loaded)))
  return run(built, out_dir, title, reference, results_path(base, name), loaded)


def run(
  cells: Sequence[Tuple[Dict[str, Any], run_config.Experiment, contract.Method]],
  out_dir,
  title: str,
  reference: Optional[Dict[str, Any]] = None,
  results_path: Optional[str] = None,
  loaded: Optional[learned.Data] = None,
) -> pathlib.Path:
  """Runs :func:`unsupervised_jax.runner.learned.run` for each ``(settings, experiment, method)`` (on the data
  ``loaded`` once, :func:`unsupervised_jax.runner.learned.load`) and tabulates them.

  Every cell is validated before any runs. Each cell reuses what the runner reuses: seeds already evaluated
  alike are read, seeds trained but evaluated otherwise are re-evaluated from
  their last checkpoint, so an interrupted grid resumes and cells may be
  trained and evaluated by separate processes. Writes
  ``<out_dir>/ablation.json`` (settings and the record of every cell) and
  ``ablation.md`` (mean ± std per metric), with ``reference`` (published
  numbers to compare against: ``{'source': str, <metric>: value}``) under the table;
  the JSON also to ``results_path`` when given (the ablation form of the results schema).
  """
  out_dir = pathlib.Path(out_dir)
  for _, experiment, _ in cells:
    experiment.validate()
  if results_path:
    records.check_replaceable_table(
      results_path, title, [(settings, experiment.settings()) for settings, experiment, _ in cells]
    )
  rows = [
    {'settings': settings, 'record': learned.run(experiment, method, loaded)} for settings, experiment, method in cells
  ]
  table = {
    'title': title,
    'command': results.command(),
    'git_commit': results.git_commit(),
    'reference': reference,
    'cells': rows,
  }
  results.write_json(out_dir / 'ablation.json', table)
  if results_path:
    print(f'wrote {results.write_json(results_path, table)}')
  names = list(rows[0]['settings'])
  metric_names = list(rows[0]['record']['metrics'])
  lines = [
    f'# {title}',
    '',
    '| ' + ' | '.join(names + metric_names) + ' |',
    '|' + ' --- |' * (len(names) + len(metric_names)),
  ]
  for row in rows:
    m = row['record']['metrics']
    lines.append(
      '| '
      + ' | '.join(
        [str(row['settings'][n]) for n in names] + [f'{m[k]["mean"]:.4f} ± {m[k]["std"]:.4f}' for k in metric_names]
      )
      + ' |'
    )
  if reference:
    lines += [
      '',
      f'Reference ({reference["source"]}): '
      + ', '.join(f'{k} {v}' for k, v in reference.items() if k != 'source')
      + '.',
    ]
  path = out_dir / 'ablation.md'
  path.write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return path
