"""The runner of learned methods: per seed, train on the core, evaluate, record.

``run(experiment)`` loads the data once, builds the method from the registry
(:mod:`unsupervised_jax.registry`) and validates everything first (settings,
the data's size against ``n_clusters``, a stage the method cannot do, a workdir
or record of other settings), then per seed trains
(:func:`unsupervised_jax.training.loop.train`), evaluates
(:func:`unsupervised_jax.evaluation.protocol.evaluate`), optionally refines by
self-labelling (:mod:`unsupervised_jax.runner.self_label_stage`), and writes
the record (:mod:`unsupervised_jax.results`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any
from typing import Dict
from typing import NamedTuple
from typing import Optional

import numpy as np

from unsupervised_jax import data
from unsupervised_jax import metrics
from unsupervised_jax import plots
from unsupervised_jax import registry
from unsupervised_jax import results
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import records
from unsupervised_jax.runner import self_label_stage
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel


class Data(NamedTuple):
  """A run's data, loaded once: the data set's ``train`` and ``test`` splits and the protocol's ``splits``."""

  train: data.Dataset
  test: data.Dataset
  splits: protocol.EvalData

  @property
  def info(self) -> contract.DataInfo:
    """What the method trains on (``splits.cluster``): its count and image shape."""
    images = self.splits.cluster.images
    return contract.DataInfo(len(images), tuple(images.shape[1:]))


def load(run_settings: run_config.RunConfig) -> Data:
  """The run's data set, its splits under the run's protocol (one-line ValueError on bad data)."""
  train_split = data.load(run_settings.dataset, 'train', run_settings.data_dir)
  test_split = data.load(run_settings.dataset, 'test', run_settings.data_dir)
  return Data(train_split, test_split, protocol.eval_data(train_split, test_split, run_settings.protocol))


def for_data(experiment: run_config.Experiment, loaded: Data) -> run_config.Experiment:
  """The experiment with its training length in steps for the loaded data (``--num_epochs``)."""
  return dataclasses.replace(experiment, train=experiment.train.for_data(loaded.info.num_examples))


def build(experiment: run_config.Experiment, loaded: Data) -> contract.Method:
  """The experiment's method from the registry's factory, for the loaded data (one-line ValueError)."""
  return registry.get(experiment.method).factory(experiment.method_config, experiment.train, loaded.info)


def _figures(method: contract.Method, state, images, workdir, matching=None):
  """The method's registered figures (:data:`unsupervised_jax.registry.FiguresFn`), where it has any."""
  draw = registry.get(method.name).figures
  if draw is not None:
    draw(method.config, state, images, workdir, matching)


def progress(method, state, splits, n_clusters, key, knn_k, mesh, seed_dir, figures: bool) -> Dict[str, float]:
  """An evaluation during training (:func:`unsupervised_jax.evaluation.protocol.progress`) and, with
  ``figures``, the method's figures of that step in ``<seed_dir>/figures/step_<N>/``."""
  values = protocol.progress(method, state, splits, n_clusters, key, knn_k, mesh)
  if figures:
    _figures(method, state, splits.test.images, seed_dir / 'figures' / f'step_{int(state.step)}')
  return values


def run(
  experiment: run_config.Experiment, method: Optional[contract.Method] = None, loaded: Optional[Data] = None
) -> Dict[str, Any]:
  """Trains and evaluates the experiment's method over its seeds; returns the record.

  Writes per seed ``<workdir>/seed_<s>/`` (checkpoints, ``metrics.jsonl``,
  TensorBoard events, ``eval.json``), figures, the record to
  ``<workdir>/metrics.json`` and, with ``results_dir``, to the results. A seed
  whose ``eval.json`` holds the same evaluation settings is reused, not rerun,
  so seeds can run as separate processes (or resume after a crash) into one
  record; with other evaluation settings a trained seed is re-evaluated from
  its last checkpoint without training again. The record in the results is rewritten after each
  seed, with ``seed_runs``: a run of the same settings whose seeds include its seeds reuses them from
  there (a new machine or session with an empty workdir continues the same command). With
  ``reuse_record``, a record of the same settings and seeds already in the results is returned as it
  is, and nothing runs or is written.

  Args:
    experiment: the validated settings.
    method: the method; default the registry's factory of ``experiment.method`` (:func:`build`).
    loaded: the data, loaded once (:func:`load`); default loaded here.

  Raises:
    ValueError: a bad setting, data or workdir, before training or writing anything.
  """
  results.git_commit()  # pin the commit of the code that runs
  experiment.validate()
  run_settings, train = experiment.run, experiment.train
  loaded = load(run_settings) if loaded is None else loaded
  experiment = for_data(experiment, loaded)
  train = experiment.train
  method = build(experiment, loaded) if method is None else method
  train_split, test_split, splits = loaded
  experiment.eval.validate(num_examples=len(splits.cluster.images), num_train=len(splits.train.images))
  if not (np.any(splits.score.labels >= 0) and np.any(splits.train.labels >= 0)):
    raise ValueError(
      f'{run_settings.dataset} has no labels to score a learned method with; cluster unlabelled '
      'images with experiments.kmeans / experiments.gmm, or call the method from Python.'
    )
  n_clusters = experiment.eval.n_clusters or run_config.default_clusters(run_settings.dataset, train_split.labels)
  if experiment.self_label.steps and not method.fine_tunable:
    raise ValueError(f'self-labelling needs a method with an encoder and augmentations; {method.name} has none.')
  flat = experiment.settings()
  workdir = experiment.workdir()
  run_config.check_resumable(workdir, flat)
  record_path = None
  if run_settings.results_dir:
    record_path = records.record_path(
      run_settings.results_dir, run_settings.results_name, method.name, run_settings.dataset
    )
    records.check_replaceable(record_path, flat)
    if run_settings.reuse_record and records.holds_all_seeds(record_path, flat):
      return records.reuse(record_path)
  earlier = records.finished_seeds(record_path, flat) if record_path is not None else {}
  run_config.write_config(workdir, flat)
  mesh = parallel.make_mesh(train.num_devices or None)
  description = records.protocol_description(flat, n_clusters, assigns=method.assigns)

  def record_of(runs):
    return records.seed_record(
      method.name, run_settings.label(), description, [runs[s] for s in run_settings.seeds if s in runs], flat
    )

  def seed_run(seed, scores, wall_time_s, commit, machine, seed_dir):
    run = {'seed': seed, 'scores': scores, 'wall_time_s': wall_time_s, 'git_commit': commit, 'machine': machine}
    progress = loop.read_evaluations(seed_dir)  # the accuracy against steps, with eval_every
    return dict(run, progress=progress) if progress else run

  # Finished seeds, {seed: {'seed', 'scores', 'wall_time_s', 'git_commit', 'machine'[, 'progress']}}: the
  # record's and this process's. The record is rewritten after each seed where it is new or already written
  # seed by seed (a complete record of older code is replaced at the end only, as before).
  seed_runs = dict(earlier)
  write_each_seed = record_path is not None and (bool(earlier) or not record_path.is_file())
  changed = False  # whether this process added a seed (else the record is left as it is)
  figures_made = False
  evaluation_settings = {k: flat[k] for k in run_config.EVALUATION_SETTINGS}
  for seed in run_settings.seeds:
    if seed in earlier:  # finished by an earlier process or machine, kept in the record
      print(f'seed {seed}: reusing {record_path}', flush=True)
      continue
    changed = True
    seed_dir = workdir / f'seed_{seed}'
    finished = seed_dir / 'eval.json'
    done = json.loads(finished.read_text()) if finished.is_file() else {}
    if done.get('evaluation') == evaluation_settings:  # evaluated alike before (another process, a crash)
      # An eval.json of older code names no commit or machine: taken as this process's, as records always did.
      seed_runs[seed] = seed_run(
        seed,
        done['scores'],
        done['wall_s'],
        done.get('git_commit', results.git_commit()),
        done.get('machine', results.machine()),
        seed_dir,
      )
      print(f'seed {seed}: reusing {finished}', flush=True)
      continue
    keys = run_config.seed_keys(seed)
    # A seed resumed from an earlier process's checkpoints counts that process's training too (to its last log).
    resumed_s = 0.0 if done else loop.trained_seconds(seed_dir)
    start = time.perf_counter()
    state = method.init(keys.init, splits.cluster.images[:1])
    evaluate = (
      (
        lambda state, seed_dir=seed_dir: progress(
          method,
          state,
          splits,
          n_clusters,
          keys.evaluation,
          experiment.eval.knn_k,
          mesh,
          seed_dir,
          run_settings.figures,
        )
      )
      if train.eval_every
      else None
    )
    state = loop.train(method, state, splits.cluster.images, train, seed_dir, key=keys.data, evaluate=evaluate)
    # Re-evaluating a trained seed restores its last checkpoint: count the training time it took then.
    train_s = time.perf_counter() - start + done.get('train_s', done.get('wall_s', 0.0)) + resumed_s
    start = time.perf_counter()
    evaluation = protocol.evaluate(method, state, splits, experiment.eval, n_clusters, keys.evaluation, mesh)
    scores = evaluation.scores
    scored = {'assigned' if method.assigns else 'codes': evaluation.predictions}
    refinement = None
    if experiment.self_label.steps:
      refinement = self_label_stage.refine(
        method,
        state,
        evaluation,
        splits,
        experiment.self_label,
        train,
        n_clusters,
        keys.fine_tune,
        seed_dir / 'self_label',
        mesh,
      )
      scored['refined'] = refinement.predictions
      scores = dict(scores, **refinement.scores, **{f'codes_{k}': scores[k] for k in ('acc', 'nmi', 'ari')})
    print(f'seed {seed}: ' + '  '.join(f'{k} {v:.4f}' for k, v in scores.items()), flush=True)
    confusions = {name: metrics.matched_confusion(splits.score.labels, clusters) for name, clusters in scored.items()}
    for name, confusion in confusions.items():
      print(
        f'seed {seed}: largest confusions of the {name} clusters: {metrics.largest_confusions(confusion)}', flush=True
      )
    # A fine-tuning resumed or reused from earlier processes counts their training too.
    wall_s = train_s + time.perf_counter() - start + (refinement.earlier_s if refinement else 0.0)
    seed_runs[seed] = seed_run(seed, scores, wall_s, results.git_commit(), results.machine(), seed_dir)
    confusion_lists = {
      name: {field: value.tolist() for field, value in confusion._asdict().items()}
      for name, confusion in confusions.items()
    }
    evaluated = {
      'scores': scores,
      'wall_s': seed_runs[seed]['wall_time_s'],
      'train_s': train_s,
      'git_commit': seed_runs[seed]['git_commit'],
      'machine': seed_runs[seed]['machine'],
      'evaluation': evaluation_settings,
      'confusion': confusion_lists,
    }
    if refinement:
      evaluated['self_label_train_s'] = refinement.train_s
    results.write_json(finished, evaluated)  # before the slow figures
    if write_each_seed:  # the finished seeds so far: a later process or machine continues from them
      records.write(record_path, record_of(seed_runs))
    if run_settings.figures and not figures_made and not (workdir / 'tsne.png').is_file():
      figures_made = True  # the first seed trained here (the record's seeds have no state on this machine)
      plots.tsne(
        evaluation.cluster_codes,
        splits.cluster.labels,
        workdir / 'tsne.png',
        title=f'{method.name} codes, {run_settings.label()} (t-SNE)',
      )
      steps, sizes = loop.read_metrics(seed_dir, 'epoch_end/cluster_sizes')  # MiCE's epoch-end pass logs them
      if steps:
        plots.cluster_sizes(
          steps,
          sizes,
          workdir / 'cluster_sizes.png',
          title=f'{method.name} cluster sizes over training, {run_settings.label()}, seed {seed}',
        )
      matching = metrics.match_clusters(splits.score.labels, scored['assigned']) if 'assigned' in scored else None
      _figures(method, state, test_split.images, workdir, matching)
  # Seeds may have run in separate processes or machines: the wall time is the sum of their own.
  record = record_of(seed_runs)
  results.write_json(workdir / 'metrics.json', record)
  if record_path is not None and changed:
    records.write(record_path, record)
  print(
    f'{method.name} on {run_settings.label()} over seeds {list(run_settings.seeds)}: '
    + '  '.join(f'{k} {v["mean"]:.4f} ± {v["std"]:.4f}' for k, v in record['metrics'].items())
    + f'  ({record["wall_time_s"]:.0f} s)'
  )
  return record
