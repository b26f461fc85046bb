"""What every experiment entry point shares: config checks, the workdir, result records.

Entry points in ``experiments/`` only turn flags into a config and call the
``run_*`` function here, so each run is reproducible from Python as well.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import evaluation
from unsupervised_jax import plots
from unsupervised_jax import preprocessing
from unsupervised_jax import results

PROTOCOLS = ('all', 'train->test')


def dataset_label(dataset: str) -> str:
  """Short data set name for records: the name, or the file stem of a custom ``.npz``."""
  return pathlib.Path(dataset).stem if dataset.endswith('.npz') else dataset


def prepare_workdir(workdir: Optional[str], method: str, dataset: str, config: Dict[str, Any]) -> pathlib.Path:
  """Creates the workdir (default ``runs/<method>_<dataset>``) and writes the resolved config."""
  path = pathlib.Path(workdir or f'runs/{method}_{dataset_label(dataset)}')
  path.mkdir(parents=True, exist_ok=True)
  (path / 'config.json').write_text(json.dumps(config, indent=2, default=str) + '\n')
  return path


def load_protocol_splits(dataset: str, protocol: str, data_dir: Optional[str]) -> Tuple[data.Dataset, Optional[data.Dataset]]:
  """``(fit split, eval split or None)`` for a protocol (see :mod:`unsupervised_jax.evaluation`)."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'unknown protocol {protocol!r}; known: {PROTOCOLS}.')
  if protocol == 'all':
    return data.load(dataset, 'all', data_dir), None
  return data.load(dataset, 'train', data_dir), data.load(dataset, 'test', data_dir)


@dataclasses.dataclass
class PixelClusteringConfig:
  """K-means or GMM on (optionally PCA-reduced) pixels, repeated over seeds."""
  method: str = 'kmeans'
  dataset: str = 'digits'
  data_dir: Optional[str] = None
  protocol: str = 'all'
  n_clusters: int = 0  # 0: the data set's number of classes
  pca_dim: int = 0  # 0: raw pixels in [0, 1]
  pca_whiten: bool = False
  seeds: Sequence[int] = (0, 1, 2)
  options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  workdir: Optional[str] = None
  results_dir: Optional[str] = None

  def validate(self):
    if self.method not in evaluation.CLUSTERING_METHODS:
      raise ValueError(f'method must be one of {evaluation.CLUSTERING_METHODS}, got {self.method!r}.')
    if self.protocol not in PROTOCOLS:
      raise ValueError(f'protocol must be one of {PROTOCOLS}, got {self.protocol!r}.')
    if self.n_clusters < 0 or self.pca_dim < 0:
      raise ValueError(f'n_clusters and pca_dim must be >= 0, got {self.n_clusters} and {self.pca_dim}.')
    if not self.seeds:
      raise ValueError('give at least one seed.')
    if not self.dataset.endswith('.npz'):
      data.info(self.dataset)


def _features(images, pca, whiten):
  x = data.as_float_features(images)
  return x if pca is None else np.asarray(preprocessing.transform(pca, x, whiten))


def run_pixel_clustering(config: PixelClusteringConfig) -> Dict[str, Any]:
  """Runs the experiment; writes ``metrics.json`` and ``centers.png`` into the workdir.

  Returns the record (also written to ``<results_dir>/<method>_<dataset>.json``
  when ``results_dir`` is set).
  """
  config.validate()
  fit_split, eval_split = load_protocol_splits(config.dataset, config.protocol, config.data_dir)
  if config.pca_dim > fit_split.images[0].size:
    raise ValueError(f'pca_dim={config.pca_dim} exceeds the {fit_split.images[0].size} pixels per image.')
  n_clusters = config.n_clusters or (data.info(config.dataset).num_classes if not config.dataset.endswith('.npz')
                                     else len(np.unique(fit_split.labels)))
  workdir = prepare_workdir(config.workdir, config.method, config.dataset, dataclasses.asdict(config))

  start = time.perf_counter()
  x_fit = data.as_float_features(fit_split.images)
  pca = preprocessing.fit_pca(x_fit, config.pca_dim) if config.pca_dim else None
  fit_features = _features(fit_split.images, pca, config.pca_whiten)
  eval_features = None if eval_split is None else _features(eval_split.images, pca, config.pca_whiten)
  per_seed, outcome = [], None
  for seed in config.seeds:
    outcome = evaluation.cluster_and_score(
        jax.random.key(seed), fit_features, fit_split.labels, n_clusters, config.method, config.options,
        eval_features, None if eval_split is None else eval_split.labels)
    per_seed.append(outcome.scores)
    print(f'seed {seed}: ' + '  '.join(f'{k.upper()} {v:.4f}' for k, v in outcome.scores.items()), flush=True)
  wall = time.perf_counter() - start

  protocol = (f'{config.method} on {"PCA-%d%s" % (config.pca_dim, " whitened" if config.pca_whiten else "") if config.pca_dim else "raw"} '
              f'pixels in [0,1], K={n_clusters}, options={json.dumps(config.options, sort_keys=True)}; '
              f'{"fit and scored on train+test" if config.protocol == "all" else "fit on train, scored on test"}')
  record = results.method_record(config.method, dataset_label(config.dataset), protocol, config.seeds,
                                 per_seed, wall, config=dataclasses.asdict(config))
  results.write_json(workdir / 'metrics.json', record)
  _save_centers(outcome, config, fit_split, pca, workdir / 'centers.png')
  if config.results_dir:
    path = results.write_json(pathlib.Path(config.results_dir) / f'{config.method}_{dataset_label(config.dataset)}.json', record)
    print(f'wrote {path}')
  summary = record['metrics']
  print(f'{config.method} on {dataset_label(config.dataset)} over seeds {list(config.seeds)}: ' + '  '.join(
      f'{k.upper()} {v["mean"]:.4f} ± {v["std"]:.4f}' for k, v in summary.items()) + f'  ({wall:.1f} s)')
  return record


def _save_centers(outcome, config, split, pca, path):
  """Cluster means as images (mapped back through the PCA), a person's first check of a clustering."""
  means = outcome.model.centers if config.method == 'kmeans' else outcome.model.params.means
  means = np.asarray(means)
  if pca is not None:
    scale = np.sqrt(np.asarray(pca.explained_variance)) if config.pca_whiten else 1.0
    means = (means * scale) @ np.asarray(pca.components) + np.asarray(pca.mean)
  images = means.reshape((-1,) + split.images.shape[1:])
  sizes = np.bincount(outcome.predictions, minlength=len(images))
  plots.image_grid(images, path, titles=[f'#{i} n={sizes[i]}' for i in range(len(images))],
                   suptitle=f'{config.method} cluster means, {dataset_label(config.dataset)}')
