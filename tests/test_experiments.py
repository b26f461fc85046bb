"""End-to-end runs of the thin entry points, as a user types them."""

import functools
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from unsupervised_jax import results
from unsupervised_jax.runner import tables
from unsupervised_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd=ROOT):
  """An entry point in a subprocess: for the runs that check the command as a process (each entry point once)."""
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _check_record(record, method, dataset, seeds):
  assert record['method'] == method and record['dataset'] == dataset and record['seeds'] == seeds
  for key in ('protocol', 'command', 'git_commit', 'machine', 'wall_time_s'):
    assert key in record
  for name in ('acc', 'nmi', 'ari'):
    metric = record['metrics'][name]
    assert 0.0 <= metric['mean'] <= 1.0 and len(metric['per_seed']) == len(seeds)


@pytest.mark.parametrize('method,floor', [('kmeans', 0.7), ('gmm', 0.7)])
def test_no_flag_quick_start_on_digits(tmp_path, method, floor):
  proc = _run(
    f'experiments.{method}', f'--workdir={tmp_path / "run"}', f'--results_dir={tmp_path / "results"}', '--seeds=0,1'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'ACC' in proc.stdout and 'NMI' in proc.stdout and 'ARI' in proc.stdout
  record = json.loads((tmp_path / 'results' / f'{method}_digits.json').read_text())
  _check_record(record, method, 'digits', [0, 1])
  assert record['metrics']['acc']['mean'] > floor  # scikit-learn's K-means gets ~0.79 here
  assert (tmp_path / 'run' / 'centers.png').stat().st_size > 1000
  assert json.loads((tmp_path / 'run' / 'config.json').read_text())['method'] == method


@pytest.mark.parametrize(
  'flag,match', [('--dataset=mnsit', 'unknown dataset'), ('--seeds=a', 'seeds'), ('--pca_dim=-1', 'pca_dim')]
)
def test_bad_flags_fail_clearly_and_write_nothing(tmp_path, flag, match, run_entry):
  proc = run_entry('experiments.kmeans', flag, f'--workdir={tmp_path / "run"}')
  assert proc.returncode != 0
  assert match in proc.stderr
  assert not (tmp_path / 'run').exists()


def test_results_schema_helpers():
  record = results.method_record('kmeans', 'digits', 'p', [0, 1], [{'acc': 0.5}, {'acc': 0.7}], 1.0)
  assert record['metrics']['acc'] == {'mean': pytest.approx(0.6), 'std': pytest.approx(0.1), 'per_seed': [0.5, 0.7]}
  bench = results.benchmark_record('kmeans_iteration', {'iter_per_s': 4.0}, {'iter_per_s': 2.0}, 'iter_per_s')
  assert bench['speedup'] == 2.0
  with pytest.raises(ValueError, match='unknown benchmark'):
    results.benchmark_record('dec', {'x': 1.0}, {'x': 1.0}, 'x')


def test_results_table_lists_runs_benchmarks_and_ablation_cells(tmp_path):
  run = results.method_record('moco', 'mnist', 'p', [0, 1], [{'acc': 0.9, 'nmi': 0.8, 'ari': 0.7}] * 2, 12.0)
  results.write_json(tmp_path / 'moco_mnist.json', run)
  results.write_json(
    tmp_path / 'moco_step.json',
    results.benchmark_record('moco_step', {'images_per_s': 300.0}, {'images_per_s': 200.0}, 'images_per_s'),
  )
  results.write_json(
    tmp_path / 'moco_ablation.json',
    {
      'title': 'grid',
      'command': 'c',
      'git_commit': 'x',
      'reference': {'source': 's', 'acc': 0.969},
      'cells': [{'settings': {'queue': q}, 'record': run} for q in (16, 32)],
    },
  )
  table = tables.markdown_table(tmp_path)
  assert table.count('| `moco_mnist` | moco | mnist | 0.900 ± 0.000 |') == 1
  assert '| moco_step | 300 img/s | 200 img/s | 1.50x |' in table
  assert '| 16 | 0.900 ± 0.000 | 0.800 ± 0.000 | 0.700 ± 0.000 |  |  | 2 |' in table
  assert '| 32 |' in table and 'Reference (s): acc 0.969.' in table


@pytest.mark.parametrize('name', sorted(p.name for p in (ROOT / 'results').glob('*.json')))
def test_committed_results_follow_the_schema(name):
  record = json.loads((ROOT / 'results' / name).read_text())
  if 'benchmark' in record:
    assert record['benchmark'] in results.BENCHMARKS
    assert record['speedup'] > 0 and 'ours' in record and 'reference' in record
  elif 'cells' in record:
    assert record['cells'] and 'command' in record and 'git_commit' in record
    for cell in record['cells']:
      assert cell['settings']
      _check_record(cell['record'], cell['record']['method'], cell['record']['dataset'], cell['record']['seeds'])
  else:
    _check_record(record, record['method'], record['dataset'], record['seeds'])


def _learned_records():
  for path in sorted((ROOT / 'results').glob('*.json')):
    record = json.loads(path.read_text())
    for run in [record] + [cell['record'] for cell in record.get('cells', [])]:
      if 'manifold' in run.get('config', {}):  # a learned method's run
        yield pytest.param(run, id=f'{path.stem}:{run["config"]["method"]}:{len(run["protocol"])}')


@functools.lru_cache(maxsize=None)
def _methods_that_assign():
  """The names of the learned methods with their own `assign`, asked of the method objects (default configs)."""
  from unsupervised_jax import registry
  from unsupervised_jax.training import contract
  from unsupervised_jax.training import loop

  train, info = loop.TrainConfig(), contract.DataInfo(1000, (28, 28, 1))
  built = [
    registry.get(name).factory(registry.get(name).config(), train, info) for name in registry.names(learned=True)
  ]
  return {method.name for method in built if method.assigns}


@pytest.mark.parametrize('record', list(_learned_records()))
def test_committed_learned_records_protocol_is_written_from_their_config(record):
  from unsupervised_jax.runner import records

  assigns = record['config']['method'] in _methods_that_assign()
  assert (
    records.protocol_description(record['config'], record['config']['n_clusters'] or 10, assigns=assigns)
    == record['protocol']
  )


@pytest.mark.parametrize(
  'flag,match',
  [
    ('--learning_rate=-1', 'learning_rate'),
    ('--dataset=nope', 'unknown dataset'),
    ('--batch_size=0', 'batch_size'),
    ('--manifold=tsne', 'manifold'),
    ('--covariance_type=ful', 'covariance_type must be one of full'),
    ('--n_clusters=5000', 'n_clusters=5000 exceeds the 1797 images'),
    ('--seeds=a,b', '--seeds must be a list of int'),
    ('--num_steps=x', '--num_steps must be an integer'),
    ('--self_label_steps=5', 'self-labelling needs a method with an encoder'),
  ],
)
def test_autoencoder_bad_flags_fail_in_one_line_before_anything_is_written(tmp_path, flag, match, run_entry):
  proc = run_entry('experiments.autoencoder', f'--workdir={tmp_path / "run"}', '--num_steps=5', flag)
  assert proc.returncode != 0
  assert match in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert 'Traceback' not in proc.stderr and 'step' not in proc.stdout  # no training began
  assert not (tmp_path / 'run').exists()


def test_autoencoder_quick_start_on_digits(tmp_path):
  proc = _run(
    'experiments.autoencoder',
    '--num_steps=200',
    '--seeds=0',
    f'--workdir={tmp_path / "run"}',
    f'--results_dir={tmp_path / "results"}',
    '--log_every=50',
    '--checkpoint_every=100',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((tmp_path / 'results' / 'autoencoder_digits.json').read_text())
  _check_record(record, 'autoencoder', 'digits', [0])
  assert record['metrics']['knn_acc']['mean'] > 0.7 and record['metrics']['acc']['mean'] > 0.4
  for figure in ('tsne.png', 'reconstructions.png'):
    assert (tmp_path / 'run' / figure).stat().st_size > 1000
  assert len((tmp_path / 'run' / 'seed_0' / 'metrics.jsonl').read_text().splitlines()) == 4


def test_moco_ablation_runs_the_grid_and_reuses_finished_cells_or_reevaluates(tmp_path, run_entry):
  args = (
    'experiments.moco_ablation',
    '--dataset=digits',
    '--num_steps=20',
    '--batch_size=32',
    '--queue_batches=2',
    '--momenta=0.9,0.99',
    '--seeds=0',
    '--cluster_method=kmeans',
    '--knn_k=20',
    f'--workdir={tmp_path / "grid"}',
    '--log_every=10',
    '--checkpoint_every=20',
    '--nofigures',
    f'--results_dir={tmp_path / "results"}',
  )  # the shared t-SNE (~10-30 s a cell here): drawn and checked in the autoencoder and MiCE runs
  proc = _run(*args)  # the command as a process once; the reuses below in this one
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads((tmp_path / 'grid' / 'ablation.json').read_text())
  assert json.loads((tmp_path / 'results' / 'moco_ablation.json').read_text()) == table
  assert [c['settings']['momentum'] for c in table['cells']] == [0.9, 0.99]
  assert all(c['settings']['queue_keys'] == 64 for c in table['cells'])
  assert (tmp_path / 'grid' / 'ablation.md').read_text().count('\n| 2 | 64 |') == 2
  assert table['reference']['acc'] == 0.969 and 'acc 0.969' in (tmp_path / 'grid' / 'ablation.md').read_text()
  seed_dir = tmp_path / 'grid' / 'queue2_momentum0.9' / 'seed_0'
  stamp, trained = (seed_dir / 'eval.json').stat().st_mtime, (seed_dir / 'metrics.jsonl').read_text()
  assert run_entry(*args).returncode == 0
  assert (seed_dir / 'eval.json').stat().st_mtime == stamp  # reused
  # Other evaluation settings: re-evaluated from the last checkpoint, not retrained.
  refused = run_entry(*args, '--knn_k=5')  # the committed table holds other settings: kept
  assert refused.returncode != 0 and 'moco_ablation.json holds another grid or other settings' in refused.stderr
  assert json.loads((tmp_path / 'results' / 'moco_ablation.json').read_text()) == table
  assert run_entry(*args, '--knn_k=5', '--results_name=moco_ablation_knn5').returncode == 0
  assert json.loads((seed_dir / 'eval.json').read_text())['evaluation']['knn_k'] == 5
  assert (seed_dir / 'metrics.jsonl').read_text() == trained


def test_moco_with_self_labelling_records_both_clusterings_and_refines_without_retraining(tmp_path, run_entry):
  args = (
    'experiments.moco',
    '--dataset=digits',
    '--num_steps=40',
    '--batch_size=64',
    '--queue_size=256',
    '--seeds=0',
    '--cluster_method=kmeans',
    '--knn_k=20',
    '--log_every=20',
    '--checkpoint_every=40',
    '--nofigures',
    f'--workdir={tmp_path / "run"}',
    f'--results_dir={tmp_path / "results"}',
  )
  assert _run(*args).returncode == 0  # MoCo's entry point as a process once; the stages below in this one
  seed_dir = tmp_path / 'run' / 'seed_0'
  trained = (seed_dir / 'metrics.jsonl').read_text()
  refine = (*args, '--self_label_steps=30', '--self_label_threshold=0.99', '--results_name=refined')
  proc = run_entry(*refine)  # refined: MoCo is not trained again
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (seed_dir / 'metrics.jsonl').read_text() == trained
  record = json.loads((tmp_path / 'results' / 'refined.json').read_text())
  assert 'refined by self-labelling (30 steps' in record['protocol'] and 'probability > 0.99' in record['protocol']
  for name in ('acc', 'codes_acc', 'pseudo_label_acc'):
    assert 0 < record['metrics'][name]['mean'] <= 1
  confusion = json.loads((seed_dir / 'eval.json').read_text())['confusion']
  for name, metric in (('codes', 'codes_acc'), ('refined', 'acc')):  # protocol all: the 1,797 digits scored
    table = np.array(confusion[name]['table'])
    assert table.sum() == 1797 and np.trace(table) / 1797 == pytest.approx(record['metrics'][metric]['mean'])
  assert 'largest confusions of the refined clusters' in proc.stdout
  [stage] = list((seed_dir / 'self_label').iterdir())  # one folder per settings and pseudo-labels
  fine_tuned = (stage / 'metrics.jsonl').read_text()
  assert len(fine_tuned.splitlines()) == 2
  stage_s = loop.trained_seconds(stage)
  assert stage_s > 0 and json.loads((seed_dir / 'eval.json').read_text())['self_label_train_s'] == stage_s
  assert (
    run_entry(*refine, '--knn_k=5', '--results_name=refined_knn5').returncode == 0
  )  # same pseudo-labels: the fine-tuning is reused
  assert (stage / 'metrics.jsonl').read_text() == fine_tuned
  # The reused fine-tuning's time still counts (the earlier process's), beside MoCo's own training.
  evaluated = json.loads((seed_dir / 'eval.json').read_text())
  assert evaluated['self_label_train_s'] == stage_s and evaluated['evaluation']['knn_k'] == 5
  assert evaluated['wall_s'] > evaluated['train_s'] + stage_s
  settings = json.loads((stage / 'settings.json').read_text())
  assert (
    run_entry(*refine, '--cluster_method=gmm', '--results_name=refined_gmm').returncode == 0
  )  # other pseudo-labels: fine-tuned afresh, apart
  stages = sorted((seed_dir / 'self_label').iterdir(), key=lambda p: p != stage)
  assert len(stages) == 2 and (stage / 'metrics.jsonl').read_text() == fine_tuned  # nothing trained is removed
  assert json.loads((stages[1] / 'settings.json').read_text())['pseudo_labels'] != settings['pseudo_labels']
  assert len((stages[1] / 'metrics.jsonl').read_text().splitlines()) == 2
  for flag, match in (
    ('--self_label_fraction=0', 'self_label_fraction must be > 0'),
    ('--self_label_neighbors=0', 'self_label_neighbors must be >= 1'),
    ('--self_label_steps=-1', 'self_label_steps must be >= 0'),
  ):
    proc = run_entry(*args, '--self_label_steps=5', flag)
    assert proc.returncode != 0 and match in proc.stderr


def test_moco_bad_flags(tmp_path, run_entry):
  for flag, match in (
    ('--queue_size=100', 'multiple of the global batch'),
    ('--temperature=0', 'temperature'),
    ('--momentum=1', 'momentum'),
    ('--batch_size=0', 'batch_size must be >= 1'),
    ('--view=blur', 'view must be one of'),
  ):
    proc = run_entry('experiments.moco', flag, f'--workdir={tmp_path / "run"}')
    assert proc.returncode != 0 and match in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / 'run').exists()


def test_custom_npz_works_with_a_learned_method(tmp_path, run_entry):
  from sklearn import datasets

  digits = datasets.load_digits()
  images = (digits.images * 255 / 16).round().astype('uint8')[..., None]
  import numpy as np

  np.savez(
    tmp_path / 'mine.npz',
    x_train=images[:1400],
    y_train=digits.target[:1400],
    x_test=images[1400:],
    y_test=digits.target[1400:],
  )
  proc = run_entry(
    'experiments.autoencoder',
    f'--dataset={tmp_path / "mine.npz"}',
    '--num_steps=50',
    '--seeds=0',
    '--eval_every=20',
    f'--workdir={tmp_path / "run"}',
    f'--results_dir={tmp_path / "results"}',
    '--cluster_method=kmeans',
    '--nofigures',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((tmp_path / 'results' / 'autoencoder_mine.json').read_text())
  assert record['dataset'] == 'mine' and 'K=10' in record['protocol']
  # The accuracy against steps of the evaluations during training (every 20 steps and at the end).
  progress = record['seed_runs'][0]['progress']
  assert progress['step'] == [20, 40, 50]
  assert sorted(progress) == [
    'cluster_acc_test',
    'cluster_ari_test',
    'cluster_nmi_test',
    'knn_acc',
    'linear_acc',
    'step',
  ]
  assert all(0.0 <= v <= 1.0 for v in progress['cluster_acc_test'] + progress['knn_acc'])
  assert progress['knn_acc'][-1] > 0.5  # digits codes after 50 steps, 10 classes


def test_seeds_run_apart_combine_into_one_record_and_other_settings_are_refused(tmp_path, run_entry):
  common = (
    'experiments.autoencoder',
    '--num_steps=30',
    '--log_every=10',
    '--checkpoint_every=30',
    '--nofigures',
    '--cluster_method=kmeans',
    '--knn_k=20',
    f'--workdir={tmp_path / "run"}',
  )
  per_seed = {}
  for seed in (0, 1):  # as two processes (or machines sharing a disk) would run them
    proc = run_entry(*common, f'--seeds={seed}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_seed[seed] = json.loads((tmp_path / 'run' / f'seed_{seed}' / 'eval.json').read_text())
  proc = run_entry(*common, '--seeds=0,1', f'--results_dir={tmp_path / "results"}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('reusing') == 2
  record = json.loads((tmp_path / 'results' / 'autoencoder_digits.json').read_text())
  assert record['metrics']['acc']['per_seed'] == [per_seed[0]['scores']['acc'], per_seed[1]['scores']['acc']]
  assert record['wall_time_s'] == pytest.approx(per_seed[0]['wall_s'] + per_seed[1]['wall_s'])
  assert all('progress' not in run for run in record['seed_runs'])  # no evaluation during training
  assert record['config']['method_config']['learning_rate'] > 0  # the method's own settings are recorded
  proc = run_entry(*common, '--seeds=0', '--learning_rate=0.5')
  assert proc.returncode != 0 and 'other settings (method_config)' in proc.stderr
  # Other evaluation settings: re-evaluated from the last checkpoint, no training step runs again.
  lines = (tmp_path / 'run' / 'seed_0' / 'metrics.jsonl').read_text()
  proc = run_entry(*common, '--seeds=0', '--cluster_method=gmm', '--covariance_type=diag')
  assert proc.returncode == 0 and 'reusing' not in proc.stdout, proc.stderr[-3000:]
  assert (tmp_path / 'run' / 'seed_0' / 'metrics.jsonl').read_text() == lines
  redone = json.loads((tmp_path / 'run' / 'seed_0' / 'eval.json').read_text())
  assert (
    redone['evaluation']['cluster_method'] == 'gmm' and redone['scores']['knn_acc'] == per_seed[0]['scores']['knn_acc']
  )
  assert redone['train_s'] >= per_seed[0]['train_s']


def test_a_record_written_seed_by_seed_is_continued_on_another_machine(tmp_path, run_entry):
  common = (*_RECORDED, f'--results_dir={tmp_path / "results"}')  # _RECORDED: the short run below
  path = tmp_path / 'results' / 'autoencoder_digits.json'
  proc = run_entry(*common, '--seeds=1', f'--workdir={tmp_path / "first_machine"}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  first = json.loads(path.read_text())
  assert first['seeds'] == [1] and [r['seed'] for r in first['seed_runs']] == [1]
  proc = run_entry(*common, '--seeds=0', f'--workdir={tmp_path / "b"}')  # not a continuation of seed 1's record
  assert proc.returncode != 0 and 'other settings (seeds)' in proc.stderr and not (tmp_path / 'b').exists()
  # A fresh workdir (a new session's checkout): seed 1 comes from the record; seed 0 trains, and the record is
  # rewritten at once with both; seed 2 fails (its directory is blocked by a file), as a session ending would.
  second = tmp_path / 'second_machine'
  second.mkdir()
  (second / 'seed_2').write_text('in the way')
  proc = run_entry(*common, '--seeds=0,1,2', f'--workdir={second}')
  assert proc.returncode != 0 and f'seed 1: reusing {path}' in proc.stdout, proc.stdout[-3000:]
  assert not (second / 'seed_1').exists()
  record = json.loads(path.read_text())
  seed_0 = json.loads((second / 'seed_0' / 'eval.json').read_text())
  assert record['seeds'] == [0, 1] and record['config']['seeds'] == [0, 1]
  assert record['metrics']['acc']['per_seed'] == [seed_0['scores']['acc'], first['metrics']['acc']['per_seed'][0]]
  assert record['wall_time_s'] == pytest.approx(first['wall_time_s'] + seed_0['wall_s'])
  assert record['seed_runs'][1] == first['seed_runs'][0]
  # The same command again finishes seed 2 only; then --reuse_record returns the whole record and runs nothing.
  (second / 'seed_2').unlink()
  proc = run_entry(*common, '--seeds=0,1,2', f'--workdir={second}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'seed 0: reusing {path}' in proc.stdout and f'seed 1: reusing {path}' in proc.stdout
  record = json.loads(path.read_text())
  assert record['seeds'] == [0, 1, 2] and record['metrics']['acc']['per_seed'][:2] == [
    seed_0['scores']['acc'],
    first['metrics']['acc']['per_seed'][0],
  ]
  proc = run_entry(*common, '--seeds=2,1,0', f'--workdir={tmp_path / "third"}', '--reuse_record')
  assert proc.returncode == 0 and 'a record of the same settings and seeds' in proc.stdout, proc.stderr[-3000:]
  assert not (tmp_path / 'third').exists() and json.loads(path.read_text()) == record


def test_a_copied_workdir_resumes_but_other_settings_are_refused(tmp_path):
  from unsupervised_jax.runner import config as run_config

  config = {
    'method': 'moco',
    'workdir': str(tmp_path / 'gpu_run'),
    'data_dir': '/elsewhere',
    'num_steps': 50,
    'method_config': {'momentum': 0.99},
  }
  copy = tmp_path / 'copy'  # e.g. fetched from a GPU machine, the data read from another folder
  copy.mkdir()
  (copy / 'config.json').write_text(json.dumps(config))
  run_config.check_resumable(copy, dict(config, workdir=str(copy), data_dir='data'))
  with pytest.raises(ValueError, match=r'other settings \(method_config\)'):
    run_config.check_resumable(copy, dict(config, method_config={'momentum': 0.9}))


# A short autoencoder run on the digits, seeds 0 and 1, and its record: trained once for the tests below.
_RECORDED = (
  'experiments.autoencoder',
  '--num_steps=20',
  '--log_every=10',
  '--checkpoint_every=20',
  '--nofigures',
  '--cluster_method=kmeans',
  '--knn_k=20',
)


@pytest.fixture(scope='module')
def recorded_run(tmp_path_factory):
  """``results/`` of :data:`_RECORDED` run with ``--seeds=0,1`` (tests copy it before changing anything)."""
  root = tmp_path_factory.mktemp('recorded')
  proc = _run(*_RECORDED, '--seeds=0,1', f'--workdir={root / "a"}', f'--results_dir={root / "results"}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root / 'results'


def test_a_record_is_replaced_only_by_a_run_of_the_same_settings_and_seeds(tmp_path, recorded_run, run_entry):
  shutil.copytree(recorded_run, tmp_path / 'results')
  common = (*_RECORDED, f'--results_dir={tmp_path / "results"}')
  path = tmp_path / 'results' / 'autoencoder_digits.json'
  kept = path.read_text()
  for variant in ('--seeds=0', '--num_steps=10', '--knn_k=5'):  # a variant of the README command
    proc = run_entry(*common, '--seeds=0,1', f'--workdir={tmp_path / "b"}', variant)
    assert proc.returncode != 0 and 'holds a record of other settings' in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'b').exists()
    assert path.read_text() == kept
  proc = run_entry(*common, '--seeds=0', f'--workdir={tmp_path / "c"}', '--results_name=seed0')  # kept apart
  assert proc.returncode == 0 and (tmp_path / 'results' / 'seed0.json').is_file() and path.read_text() == kept
  # The same settings and seeds (another workdir, another machine): replaced, with the same scores.
  assert run_entry(*common, '--seeds=0,1', f'--workdir={tmp_path / "d"}').returncode == 0
  assert json.loads(path.read_text())['metrics'] == json.loads(kept)['metrics']


def test_unlabelled_npz_asks_for_n_clusters_and_writes_clusters_without_scores(tmp_path, run_entry):
  from sklearn import datasets

  images = (datasets.load_digits().images * 255 / 16).round().astype('uint8')[..., None]
  np.savez(tmp_path / 'mine.npz', x_train=images[:300], x_test=images[300:400])
  args = (
    'experiments.kmeans',
    f'--dataset={tmp_path / "mine.npz"}',
    '--seeds=0,1',
    f'--workdir={tmp_path / "run"}',
    f'--results_dir={tmp_path / "results"}',
  )
  proc = run_entry(*args)
  assert proc.returncode != 0 and 'has no labels: give --n_clusters' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()
  proc = run_entry(*args, '--n_clusters=4')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'ACC' not in proc.stdout and 'nothing to score' in proc.stdout
  clusters = np.load(tmp_path / 'run' / 'clusters.npz')
  assert sorted(clusters.files) == ['seed_0', 'seed_1'] and clusters['seed_0'].shape == (400,)
  assert set(np.unique(clusters['seed_0'])) == {0, 1, 2, 3}
  assert not (tmp_path / 'results').exists()
  proc = run_entry(
    'experiments.autoencoder',
    f'--dataset={tmp_path / "mine.npz"}',
    '--n_clusters=4',
    '--num_steps=5',
    f'--workdir={tmp_path / "learned"}',
  )  # a learned method scores against labels: refused, one line
  assert proc.returncode != 0 and 'has no labels to score a learned method' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'learned').exists()


def test_pixel_clustering_refuses_too_many_clusters_before_writing_and_records_the_values_used(tmp_path, run_entry):
  proc = run_entry('experiments.kmeans', '--n_clusters=5000', f'--workdir={tmp_path / "w"}')
  assert proc.returncode != 0 and 'n_clusters=5000 exceeds the 1797 images' in proc.stderr
  assert not (tmp_path / 'w').exists()
  assert run_entry('experiments.kmeans', '--seeds=0', f'--workdir={tmp_path / "v"}', '--nofigures').returncode == 0
  written = json.loads((tmp_path / 'v' / 'config.json').read_text())
  assert written['n_clusters'] == 10 and written['workdir'] == str(tmp_path / 'v')


def test_check_record_reruns_a_records_command_and_flags_scores_outside_its_std(tmp_path, recorded_run):
  shutil.copytree(recorded_run, tmp_path / 'results')
  path = tmp_path / 'results' / 'autoencoder_digits.json'
  proc = _run('experiments.check_record', f'--record={path}', '--seeds=1')
  assert proc.returncode == 0 and 'every score within its std' in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert proc.stdout.count(' ok') >= 5  # acc, nmi, ari, knn_acc, linear_acc of seed 1
  record = json.loads(path.read_text())
  record['metrics']['acc']['per_seed'][1] += 0.5  # a record that its command does not reproduce
  path.write_text(json.dumps(record))
  proc = _run('experiments.check_record', f'--record={path}', '--seeds=1')
  assert proc.returncode == 1 and 'OUTSIDE' in proc.stdout
