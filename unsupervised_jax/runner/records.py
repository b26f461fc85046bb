"""A run's record: its protocol in words, and where it is written without overwriting another run's."""

from __future__ import annotations

import json
import pathlib
from typing import Any
from typing import Dict

from unsupervised_jax import results
from unsupervised_jax.runner import config as run_config

# Settings that do not change what a record reports: where things live, logging, devices.
_NOT_RECORD_DEFINING = run_config.REPORTING_SETTINGS


def protocol_description(flat: Dict[str, Any], n_clusters: int, assigns: bool = False) -> str:
  """The record's ``protocol``: how a learned method was trained and evaluated, in words.

  Args:
    flat: the run's settings (:meth:`unsupervised_jax.runner.config.Experiment.settings`, or a record's).
    n_clusters: the clusters used.
    assigns: the method assigns its own clusters (no clustering of codes).
  """
  flat = run_config.from_legacy(flat)
  all_data = flat['protocol'] == 'all'
  parts = [
    f'{flat["method"]} trained {flat["num_steps"]} steps x batch {flat["batch_size"]} on '
    f'{"train+test" if all_data else "train"}{" in shuffled epochs" if flat["sampling"] == "epochs" else ""}'
  ]
  if assigns:
    parts.append(f'its own clusters (K={n_clusters}) of {"train+test" if all_data else "test"}')
  else:
    options = {'n_init': flat['cluster_n_init']}
    if flat['cluster_method'] == 'gmm':
      options['covariance_type'] = flat['covariance_type']
    manifold = (
      f'UMAP({flat["manifold_neighbors"]} neighbours, min_dist 0, {n_clusters} dims) of the '
      if flat['manifold'] == 'umap'
      else ''
    )
    parts.append(
      f'{flat["cluster_method"]} (K={n_clusters}, {json.dumps(options, sort_keys=True)}) on the '
      f'{manifold}codes of {"train+test" if all_data else "train, scored on test"}'
    )
  if flat.get('self_label_steps'):
    parts.append(self_label_description(flat))
  parts.append(f'kNN (cosine, k={flat["knn_k"]}) and linear probe train -> test')
  return '; '.join(parts)


def self_label_description(flat: Dict[str, Any]) -> str:
  """The self-labelling stage of :func:`protocol_description`."""
  threshold = flat.get('self_label_threshold', 0.0)
  online = f', the others once predicted with probability > {threshold:g}' if threshold else ''
  return (
    f'refined by self-labelling ({flat["self_label_steps"]} steps on the {flat["self_label_fraction"]:g} most '
    f'confident of each cluster by {flat["self_label_neighbors"]}-NN agreement{online})'
  )


def record_path(results_dir, results_name, method: str, dataset: str) -> pathlib.Path:
  """``<results_dir>/<results_name or method_dataset>.json``."""
  return pathlib.Path(results_dir) / f'{results_name or f"{method}_{run_config.dataset_label(dataset)}"}.json'


def check_replaceable(path, flat: Dict[str, Any]):
  """Raises ValueError when ``path`` holds a record of other settings or seeds: a record is replaced only
  by a run of the same settings and seeds (evaluation included), or continued by one of the same settings
  whose seeds include the record's (:func:`finished_seeds`); anything else needs its own name."""
  path = pathlib.Path(path)
  if not path.is_file():
    return
  previous = json.loads(path.read_text())
  if 'config' not in previous:
    raise ValueError(f'{path} is not a record this run can replace; pass another --results_name.')
  names = run_config.differing(previous['config'], flat, _NOT_RECORD_DEFINING + ('seeds',))
  if not (_same_seeds(previous, flat) or _continued_by(previous, flat)):
    names = sorted(names + ['seeds'])
  if names:
    raise ValueError(
      f'{path} holds a record of other settings ({", ".join(names)}); pass --results_name=<name> to keep both.'
    )


def _seeds(flat: Dict[str, Any]) -> list:
  return [int(s) for s in flat.get('seeds', ())]


def _same_seeds(previous: Dict[str, Any], flat: Dict[str, Any]) -> bool:
  return _seeds(previous['config']) == _seeds(flat)


def _continued_by(previous: Dict[str, Any], flat: Dict[str, Any]) -> bool:
  """A record written seed by seed (it has ``seed_runs``) whose seeds all are among the run's."""
  return 'seed_runs' in previous and set(_seeds(previous['config'])) <= set(_seeds(flat))


def holds_all_seeds(path, flat: Dict[str, Any]) -> bool:
  """Whether ``path`` holds a record of the run's seeds (call after :func:`check_replaceable` passed)."""
  path = pathlib.Path(path)
  return path.is_file() and set(_seeds(json.loads(path.read_text())['config'])) == set(_seeds(flat))


def finished_seeds(path, flat: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
  """The seeds a record at ``path`` already holds for this run: ``{seed: seed run}``, each seed run
  ``{'seed', 'scores', 'wall_time_s', 'git_commit', 'machine'}``.

  A learned method's record is rewritten after every seed (:func:`seed_record`), so a run whose process or
  machine ended part-way (a session, a preempted VM) keeps its finished seeds in the results; where that
  record reaches the next machine (committed or copied; the workdir need not), the same command continues
  with the other seeds. Records written before ``seed_runs`` existed give ``{}``. Call after
  :func:`check_replaceable` passed. To measure a recorded seed again, write to another ``--results_name``.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    return {}
  previous = json.loads(path.read_text())
  if not _continued_by(previous, flat):
    return {}
  return {int(run['seed']): run for run in previous['seed_runs']}


def seed_record(method: str, dataset: str, protocol: str, seed_runs, config: Dict[str, Any]) -> Dict[str, Any]:
  """The record of the finished ``seed_runs`` (in the run's seed order): the schema's fields over them, the
  wall time their sum, ``machine`` each distinct host they ran on (joined by ``' + '``), and ``seed_runs``
  for continuing and for each seed's own commit. ``git_commit`` and ``command`` are the process's that
  writes the record."""
  record = results.method_record(
    method,
    dataset,
    protocol,
    [run['seed'] for run in seed_runs],
    [run['scores'] for run in seed_runs],
    sum(run['wall_time_s'] for run in seed_runs),
    config=dict(config, seeds=[run['seed'] for run in seed_runs]),
  )
  machines = list(dict.fromkeys(run['machine'] for run in seed_runs))
  record['machine'] = ' + '.join(machines)
  record['seed_runs'] = list(seed_runs)
  return record


def reuse(path) -> Dict[str, Any]:
  """The record at ``path``, announced as reused: call it when :func:`holds_all_seeds` (``--reuse_record``)."""
  record = json.loads(pathlib.Path(path).read_text())
  print(f'reusing {path}: a record of the same settings and seeds', flush=True)
  return record


def write(path, record: Dict[str, Any]) -> pathlib.Path:
  path = results.write_json(path, record)
  print(f'wrote {path}')
  return path


def check_replaceable_table(path, title: str, cells) -> None:
  """Raises ValueError when ``path`` holds an ablation table of another title, other cells, or cells
  run with other settings or seeds; ``cells`` are ``(cell settings, flat run settings)`` pairs."""
  path = pathlib.Path(path)
  if not path.is_file():
    return
  previous = json.loads(path.read_text())
  same_cells = [c['settings'] for c in previous.get('cells', [])] == [settings for settings, _ in cells]
  if (
    previous.get('title') != title
    or not same_cells
    or any(
      run_config.differing(old['record'].get('config', {}), flat, _NOT_RECORD_DEFINING)
      for old, (_, flat) in zip(previous['cells'], cells)
    )
  ):
    raise ValueError(f'{path} holds another grid or other settings; pass --results_name=<name> to keep both.')
