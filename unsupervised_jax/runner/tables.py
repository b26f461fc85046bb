"""The results tables: the README's (one row a configuration, :mod:`unsupervised_jax.runner.configurations`),
docs/records.md's (every record) and the reproduction's, all from the records in ``results/`` (the schema of
:mod:`unsupervised_jax.results`). ``python -m unsupervised_jax.runner.tables [results]`` prints records.md's.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any
from typing import Mapping
from typing import Optional
from typing import Sequence

from unsupervised_jax.runner.configurations import CONFIGURATIONS


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
  lines = [
    '| record | method | dataset | ACC | NMI | ARI | kNN | linear | seeds | wall (s) | command |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for r in records:
    if 'method' in r:
      m = r['metrics']
      scores = ' | '.join(_score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'))
      lines.append(
        f'| `{r["record"]}` | {r["method"]} | {r["dataset"]} | {scores} | '
        f'{len(r["seeds"])} | {r["wall_time_s"]:.0f} | `{r["command"]}` |'
      )
  lines += ['', '| benchmark | ours | reference | speedup | command |', '| --- | --- | --- | --- | --- |']

  def speed(side):
    if 'ms_per_iteration' in side:
      return f'{side["ms_per_iteration"]:.1f} ms/iter'
    return f'{side["images_per_s"]:.0f} img/s'

  for r in records:
    if 'benchmark' in r:
      lines.append(
        f'| {r["benchmark"]} | {speed(r["ours"])} | {speed(r["reference"])} | {r["speedup"]:.2f}x | `{r["command"]}` |'
      )
  for r in records:
    if 'cells' in r:
      settings = list(r['cells'][0]['settings'])
      lines += [
        '',
        f'`{r["record"]}`: {r["title"]} (`{r["command"]}`)',
        '',
        '| ' + ' | '.join(settings) + ' | ACC | NMI | ARI | kNN | linear | seeds |',
        '|' + ' --- |' * (len(settings) + 6),
      ]
      for cell in r['cells']:
        m = cell['record']['metrics']
        lines.append(
          '| '
          + ' | '.join(str(cell['settings'][k]) for k in settings)
          + ' | '
          + ' | '.join(_score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'))
          + f' | {len(cell["record"]["seeds"])} |'
        )
      if r.get('reference'):
        lines += [
          '',
          f'Reference ({r["reference"]["source"]}): '
          + ', '.join(f'{k} {v}' for k, v in r['reference'].items() if k != 'source')
          + '.',
        ]
  return '\n'.join(lines)


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


def headline_records() -> Mapping[str, Optional[str]]:
  """Every configuration's row label -> its headline record (the ``full`` budget's), ``None`` while the row shows
  an interim record instead (its configuration's ``interim``)."""
  return {c.label: None if c.interim else c.budgets['full'][0] for c in CONFIGURATIONS}


def summary_table(
  directory, records: Optional[Mapping[str, Optional[str]]] = None, detail: bool = False, missing: Optional[str] = None
) -> str:
  """The README's short results table from ``directory``: one markdown row per configuration.

  ACC / NMI / ARI as mean ± std over seeds (fractions), the number of seeds, where it ran, the published
  reference ACC with its source, our protocol and the record. A row without a headline record shows its
  configuration's ``interim`` record where that record exists (short table only), else a "not yet" row.

  Args:
    directory: the folder of the records.
    records: row label -> record name, None for a row without a headline record (interim or "not yet");
      default :func:`headline_records`.
    detail: the table ``experiments.reproduce`` writes: also kNN and linear-probe accuracy (where the record
      has them) and wall time, and the record's data and training length instead of our protocol in words.
    missing: the text of a row whose record is absent; None raises instead.

  Raises:
    ValueError: a record is missing and ``missing`` is None.
  """
  directory = pathlib.Path(directory)
  records = headline_records() if records is None else records
  rows = {c.label: c for c in CONFIGURATIONS}
  if detail:
    lines = [
      '| method | ACC | NMI | ARI | kNN | linear | seeds | wall (s) | ran on | reference ACC | data | record |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
  else:
    lines = [
      '| method | ACC | NMI | ARI | seeds | ran on | reference ACC | protocol (ours) | record |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
  for label, name in records.items():
    row = rows.get(label)
    value, source = row.reference if row is not None and row.reference else (None, '')
    reference = f'{value:.3f} ({source})' if value is not None else ''
    protocol = row.protocol if row is not None else None
    if name is None and not detail and row is not None and row.interim:
      interim, protocol = row.interim
      if (directory / f'{interim}.json').is_file():
        name = interim
    path = None if name is None else directory / f'{name}.json'
    if path is None or not path.is_file():
      if path is not None and missing is None:
        raise ValueError(
          f'headline record {path} is missing; run its command or change the configuration of '
          f'{label!r} (unsupervised_jax/runner/configurations.py).'
        )
      text, record_cell = ('not yet', '') if path is None else (missing, f'`{name}`')
      blanks = '  |' * (7 if detail else 4)  # the cells between the first and the reference
      lines.append(f'| {label} | {text} |{blanks} {reference} |  | {record_cell} |')
      continue
    record = json.loads(path.read_text())
    m = record['metrics']
    if detail:
      scores = ' | '.join(_score(m.get(k)) for k in ('acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'))
      lines.append(
        f'| {label} | {scores} | {len(record["seeds"])} | {record["wall_time_s"]:,.0f} | '
        f'{_where(record["machine"])} | {reference} | {_data(record)} | `{name}` |'
      )
    else:
      scores = ' | '.join(_score(m[k]) for k in ('acc', 'nmi', 'ari'))
      lines.append(
        f'| {label} | {scores} | {len(record["seeds"])} | '
        f'{_where(record["machine"])} | {reference} | {protocol} | `{name}` |'
      )
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


if __name__ == '__main__':
  print(markdown_table(sys.argv[1] if len(sys.argv) > 1 else 'results'))
