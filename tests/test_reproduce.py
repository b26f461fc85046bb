"""experiments.reproduce: every configuration's command, the table from the records, reuse of finished ones."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from unsupervised_jax import registry
from unsupervised_jax.runner import reproduce
from unsupervised_jax.runner import tables

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  return subprocess.run(
    [sys.executable, '-m', 'experiments.reproduce', *args], cwd=ROOT, capture_output=True, text=True, timeout=600
  )


def _table(path):
  match = re.search('<!-- table:begin -->\n(.*?)\n<!-- table:end -->', path.read_text(), re.S)
  assert match, f'{path} has no table block'
  return match.group(1)


@pytest.mark.parametrize('budget', ['quick', 'full'])
def test_dry_run_prints_every_methods_command_and_writes_nothing(tmp_path, budget):
  proc = _run(f'--budget={budget}', '--dry_run')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  commands, last = lines[:-1], lines[-1]
  assert len(commands) == len(reproduce.CONFIGURATIONS) == 9
  assert last == ('# then results/table.md' if budget == 'full' else f'# then results/{budget}/table.md')
  entries = [
    re.match(r'python -m experiments\.(\w+) --flagfile=experiments/configs/\w+\.flags ', c).group(1) for c in commands
  ]
  assert sorted(set(entries)) == sorted(registry.names())  # every registered method
  names = [re.search(r'--results_name=(\S+)', c).group(1) for c in commands]
  if budget == 'full':  # the flagfiles as they are, under the headline records' names
    for command in commands:
      assert re.fullmatch(
        r'python -m experiments\.\w+ --flagfile=\S+ --seeds=0,1,2 --workdir=runs/reproduce_full/\w+ '
        r'--results_dir=results --results_name=\w+ --reuse_record',
        command,
      ), command
    assert [n for n in names if n in tables.headline_records().values()] == [
      n for n in tables.headline_records().values() if n
    ]
  else:
    assert all(n.endswith('_quick') for n in names) and sum('--dataset=digits' in c for c in commands) == 6
    for command in commands:
      assert ' --seeds=0,1,2 --workdir=runs/reproduce_quick/' in command and command.endswith('--reuse_record')
      assert ' --results_dir=results/quick ' in command
  # MoCo + self-labelling fine-tunes the MoCo seeds of the same workdir.
  assert len({re.search(r'--workdir=(\S+)', c).group(1) for c in commands if 'experiments.moco ' in c}) == 1
  elsewhere = _run(
    f'--budget={budget}', '--dry_run', f'--workdir={tmp_path / "runs"}', f'--results_dir={tmp_path / "results"}'
  )
  assert elsewhere.returncode == 0 and f'--workdir={tmp_path / "runs"}/kmeans ' in elsewhere.stdout
  assert not list(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize(
  'args,match',
  [
    (['--budget=fast'], 'budget must be one of quick, full, tiny'),
    ([], 'give --budget=quick'),
    (['--budget=quick', '--methods=dec'], '--methods must name some of'),
    (['--budget=quick', '--seeds=0,0'], '--seeds must be distinct'),
    (['--budget=quick', '--seeds=a'], '--seeds must be a list of int'),
    (['--budget=quick', '--results_dir=results'], 'apart from the headline'),
    (['--budget=quick', '--nosuchflag'], "Unknown command line flag 'nosuchflag'"),
  ],
)
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, args, match):
  proc = _run(*args, f'--workdir={tmp_path / "runs"}')
  assert proc.returncode != 0 and match in proc.stderr, proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and not proc.stdout
  assert not list(tmp_path.iterdir())


def test_tiny_budget_end_to_end_writes_the_table_and_reuses_finished_configurations(tmp_path):
  args = (
    '--budget=tiny',
    '--methods=kmeans,ae_poster',
    '--seeds=0,1',
    f'--workdir={tmp_path / "runs"}',
    f'--results_dir={tmp_path / "results"}',
  )
  proc = _run(*args)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  out = tmp_path / 'results'
  table_path = out / 'table.md'
  table = _table(table_path)
  assert table == tables.summary_table(out, reproduce.record_names('tiny'), detail=True, missing='not run')
  rows = {line.split(' | ')[0].lstrip('| '): line for line in table.splitlines()[2:]}
  assert list(rows) == [c.label for c in reproduce.CONFIGURATIONS]
  assert re.match(
    r'\| K-means \| 0\.\d{3} ± 0\.\d{3} \|.* \| 2 \| [\d,]+ \| CPU, \d+ cores \| '
    r'0\.752 \(poster\) \| digits \| `kmeans_digits_tiny` \|$',
    rows['K-means'],
  ), rows['K-means']
  ae = rows['AE + GMM'].split(' | ')
  assert ae[1].startswith('0.') and ae[4].startswith('0.') and ae[5].startswith('0.')  # ACC, kNN, linear
  assert '| 0.912 (poster) | digits, 20 steps | `ae_poster_digits_tiny` |' in rows['AE + GMM']
  assert rows['MoCo'].startswith('| MoCo | not run |') and '| 0.969 (poster) |' in rows['MoCo']
  text = table_path.read_text()
  assert 'Budget `tiny`' in text and '--budget=tiny' in text
  assert (
    '`kmeans_digits_tiny`: `python -m experiments.kmeans --flagfile=experiments/configs/kmeans_mnist.flags '
    '--dataset=digits' in text
  )
  assert '[centers.png](figures/kmeans_digits_tiny/centers.png)' in text
  assert (out / 'figures' / 'kmeans_digits_tiny' / 'centers.png').stat().st_size > 1000
  record = json.loads((out / 'ae_poster_digits_tiny.json').read_text())
  assert record['seeds'] == [0, 1] and record['config']['num_steps'] == 20
  assert record['config']['method_config']['hidden'] == [128]  # the poster's flagfile, shrunk by the budget
  stamps = {p: p.stat().st_mtime_ns for p in [*out.glob('*.json'), *(tmp_path / 'runs').rglob('eval.json')]}
  assert len(stamps) == 4

  again = _run(*args)  # both finished: reused, nothing runs again
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('reusing ') == 2
  assert 'kmeans: reused' in again.stdout and 'ae_poster: reused' in again.stdout
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert _table(table_path) == table


def _record(acc, **extra):
  metric = lambda mean: {'mean': mean, 'std': 0.01, 'per_seed': [mean - 0.01, mean + 0.01]}
  return dict(
    {
      'method': 'moco',
      'dataset': 'digits',
      'protocol': 'p',
      'command': 'python -m experiments.moco',
      'git_commit': 'abc+dirty',
      'machine': '2 cores AMD EPYC; jax 0.10.2 on 1 x cpu (cpu)',
      'wall_time_s': 1234.4,
      'seeds': [0, 1],
      'metrics': {'acc': metric(acc), 'nmi': metric(0.5), 'ari': metric(0.25)},
    },
    **extra,
  )


def test_detailed_summary_table_adds_probes_wall_time_and_data_and_marks_missing_records(tmp_path):
  record = _record(0.9, config={'num_steps': 500, 'self_label_steps': 300, 'protocol': 'all'})
  record['metrics']['knn_acc'] = record['metrics']['acc']
  (tmp_path / 'm.json').write_text(json.dumps(record))
  lines = tables.summary_table(
    tmp_path, {'MoCo + self-labelling': 'm', 'MiCE': 'absent', 'InfoGAN': None}, detail=True, missing='not run'
  ).splitlines()
  assert lines[0].startswith('| method | ACC | NMI | ARI | kNN | linear | seeds | wall (s) | ran on |')
  assert lines[2] == (
    '| MoCo + self-labelling | 0.900 ± 0.010 | 0.500 ± 0.010 | 0.250 ± 0.010 | 0.900 ± 0.010 |  '
    "| 2 | 1,234 | CPU, 2 cores | 0.969 (poster's MoCo) | digits, 500 steps + 300 self-labelling "
    '| `m` |'
  )
  assert lines[3] == '| MiCE | not run |  |  |  |  |  |  |  |  |  | `absent` |'
  assert lines[4] == '| InfoGAN | not yet |  |  |  |  |  |  |  | 0.920 (poster) |  |  |'
  assert all(line.count('|') == lines[0].count('|') for line in lines)
  with pytest.raises(ValueError, match='absent.json is missing'):
    tables.summary_table(tmp_path, {'MiCE': 'absent'}, detail=True)
  assert tables.provenance(tmp_path, ['m', 'absent']) == (
    '- `m`: `python -m experiments.moco` on 2 cores AMD EPYC; jax 0.10.2 on 1 x cpu (cpu), commit `abc+dirty`.'
  )


def test_a_record_of_seeds_run_on_two_machines_names_both_and_each_seeds_commit(tmp_path):
  gpu = '16 cores Intel Xeon; jax 0.10.2 on 1 x NVIDIA H100 80GB HBM3 (gpu)'
  cpu = '2 cores AMD EPYC; jax 0.10.2 on 1 x cpu (cpu)'
  runs = [
    {'seed': 0, 'git_commit': 'a' * 40, 'machine': cpu},
    {'seed': 1, 'git_commit': 'b' * 40 + '+dirty', 'machine': gpu},
  ]
  (tmp_path / 'm.json').write_text(json.dumps(_record(0.9, machine=f'{cpu} + {gpu}', seed_runs=runs)))
  row = tables.summary_table(tmp_path, {'MoCo': 'm'}, detail=True).splitlines()[2]
  assert '| CPU, 2 cores + 1 x H100 |' in row
  assert tables.provenance(tmp_path, ['m']).endswith(f"(seeds by commit: `{'a' * 12}` 0; `{'b' * 12}+dirty` 1).")


def test_committed_table_is_the_table_of_the_committed_records():
  path = ROOT / 'results' / 'table.md'
  if not path.is_file():
    pytest.skip('no results/table.md')
  assert _table(path) == tables.summary_table(
    ROOT / 'results', reproduce.record_names('full'), detail=True, missing='not run'
  ), (
    'results/ changed: python -m experiments.reproduce --budget=full --methods=kmeans reuses its record and '
    'writes the table of all of them again'
  )
