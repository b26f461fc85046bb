"""The README's results table and docs/records.md are what results/ holds; their links resolve."""

import json
import pathlib
import re

import pytest

from unsupervised_jax.runner import configurations
from unsupervised_jax.runner import tables

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _block(path, name):
  text = path.read_text()
  match = re.search(f'<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->', text, re.S)
  assert match, f'{path} has no <!-- {name}:begin/end --> block'
  return match.group(1)


def test_readme_results_block_is_the_summary_of_results():
  assert _block(ROOT / 'README.md', 'results') == tables.summary_table(ROOT / 'results')


def test_records_block_is_the_full_table_of_results():
  assert _block(ROOT / 'docs' / 'records.md', 'records') == tables.markdown_table(ROOT / 'results')


def test_readme_stays_a_front_door():
  assert len((ROOT / 'README.md').read_bytes()) < 12_000


@pytest.mark.parametrize(
  'page',
  [
    'README.md',
    'docs/library.md',
    'docs/moco.md',
    'docs/infogan.md',
    'docs/records.md',
    'docs/multihost.md',
    'benchmarks/README.md',
    'colab/README.md',
  ],
)
def test_relative_links_resolve(page):
  path = ROOT / page
  targets = re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', path.read_text())
  missing = [t for t in targets if not (path.parent / t).exists()]
  assert not missing, f'{page} links to missing files: {missing}'


def _record(acc, machine='2 cores AMD EPYC; jax 0.10.2 on 1 x cpu (cpu)'):
  metric = lambda mean: {'mean': mean, 'std': 0.01, 'per_seed': [mean - 0.01, mean + 0.01]}
  return {
    'method': 'kmeans',
    'dataset': 'mnist',
    'protocol': 'p',
    'command': 'c',
    'git_commit': 'g',
    'machine': machine,
    'wall_time_s': 1.0,
    'seeds': [0, 1],
    'metrics': {'acc': metric(acc), 'nmi': metric(0.5), 'ari': metric(0.25)},
  }


def test_summary_table_rows_references_and_missing_records(tmp_path):
  names = [name for name in tables.headline_records().values() if name]
  for i, name in enumerate(names):
    machine = '16 cores Xeon; jax 0.11.2 on 1 x NVIDIA H100 80GB HBM3 (gpu)' if name == 'moco_mnist' else None
    (tmp_path / f'{name}.json').write_text(json.dumps(_record(0.5 + i / 100, *([machine] if machine else []))))
  lines = tables.summary_table(tmp_path).splitlines()
  assert len(lines) == 2 + len(tables.headline_records())
  assert lines[2] == (
    '| K-means | 0.500 ± 0.010 | 0.500 ± 0.010 | 0.250 ± 0.010 | 2 | CPU, 2 cores | 0.752 (poster) | '
    'raw pixels; k-means++, 10 restarts | `kmeans_mnist` |'
  )
  moco = next(line for line in lines if line.startswith('| MoCo |'))
  assert '| 1 x H100 | 0.969 (poster) |' in moco
  assert '| capsules (SCAE) | not yet |  |  |  |  | 0.985 (poster) |  |  |' in lines
  (tmp_path / 'gmm_mnist.json').unlink()
  with pytest.raises(ValueError, match="gmm_mnist.json is missing.*configuration of 'GMM'"):
    tables.summary_table(tmp_path)


def test_a_row_without_headline_record_shows_its_interim_run_once_that_record_exists(tmp_path):
  for name in filter(None, tables.headline_records().values()):
    (tmp_path / f'{name}.json').write_text(json.dumps(_record(0.5)))
  mice_row = lambda: next(row for row in tables.summary_table(tmp_path).splitlines() if row.startswith('| MiCE |'))
  assert mice_row() == '| MiCE | not yet |  |  |  |  |  |  |  |'
  interim, protocol = next(c.interim for c in configurations.CONFIGURATIONS if c.label == 'MiCE')
  record = _record(0.64)
  record['seeds'] = [0]
  for metric in record['metrics'].values():  # one seed: its score, no spread
    metric.update(std=0.0, per_seed=[metric['mean']])
  (tmp_path / f'{interim}.json').write_text(json.dumps(record))
  assert mice_row() == (f'| MiCE | 0.640 | 0.500 | 0.250 | 1 | CPU, 2 cores |  | {protocol} | `{interim}` |')
  assert protocol.startswith('interim: ')
  # The reproduction's detailed table lists the headline records only.
  detailed = tables.summary_table(tmp_path, {'MiCE': None}, detail=True).splitlines()[2]
  assert detailed.startswith('| MiCE | not yet |')
