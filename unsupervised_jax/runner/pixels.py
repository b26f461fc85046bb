"""K-means or GMM on (optionally PCA-reduced) pixels over seeds: the classical baselines' runner."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple
from typing import Union

import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import metrics
from unsupervised_jax import plots
from unsupervised_jax import preprocessing
from unsupervised_jax import results
from unsupervised_jax import settings
from unsupervised_jax.evaluation import clustering
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import records
from unsupervised_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class PixelConfig:
  """What is clustered."""

  n_clusters: int = clustering.n_clusters_setting()
  pca_dim: int = setting(0, 'Cluster the first pca_dim principal components; 0 = raw pixels in [0, 1].', minimum=0)
  pca_whiten: bool = setting(False, 'Scale the principal components to unit variance.')

  def validate(self):
    settings.check(self)


@dataclasses.dataclass(frozen=True)
class KMeansOptions:
  """scikit-learn's K-means settings (``clustering.kmeans.kmeans``)."""

  n_init: int = setting(10, 'k-means++ restarts (run in parallel); the lowest inertia is kept.', minimum=1)
  max_iter: int = setting(300, 'Lloyd iteration cap.', minimum=1)
  tol: float = setting(1e-4, 'Relative tolerance on the centre shift (as scikit-learn).', minimum=0)

  def validate(self):
    settings.check(self)


@dataclasses.dataclass(frozen=True)
class GMMOptions:
  """scikit-learn's GaussianMixture settings (``clustering.gmm.fit_gmm``)."""

  covariance_type: str = clustering.covariance_type_setting()
  reg_covar: float = setting(1e-6, 'Added to covariance diagonals.', minimum=0)
  n_init: int = setting(1, 'K-means-initialised EM restarts; the highest likelihood is kept.', minimum=1)
  max_iter: int = setting(100, 'EM iteration cap.', minimum=1)
  tol: float = setting(1e-3, 'Stop when the mean log-likelihood changes by less.', minimum=0)

  def validate(self):
    settings.check(self)


OPTIONS = {'kmeans': KMeansOptions, 'gmm': GMMOptions}


def _features(images, pca, whiten):
  x = data.as_float_features(images)
  return x if pca is None else np.asarray(preprocessing.transform(pca, x, whiten))


def run(
  method: str, run_settings: run_config.RunConfig, pixels: PixelConfig, options: Union[KMeansOptions, GMMOptions]
) -> Optional[Dict[str, Any]]:
  """Runs the experiment; writes ``config.json``, ``metrics.json``, ``clusters.npz`` and ``centers.png``.

  Unlabelled data (labels all -1) are clustered, not scored: ``clusters.npz``
  holds every seed's clusters and no record is written (returns None).

  Returns:
    The record (also written to the results with ``results_dir``); with ``reuse_record``, the record of the
    same settings and seeds already in the results, and nothing runs or is written.

  Raises:
    ValueError: a bad setting or data, before anything is written.
  """
  results.git_commit()  # pin the commit of the code that runs
  if method not in OPTIONS:
    raise ValueError(f'method must be one of {", ".join(OPTIONS)}; got {method!r}.')
  run_settings.validate()
  pixels.validate()
  options.validate()
  all_data = run_settings.protocol == 'all'
  fit_split = data.load(run_settings.dataset, 'all' if all_data else 'train', run_settings.data_dir)
  eval_split = None if all_data else data.load(run_settings.dataset, 'test', run_settings.data_dir)
  labelled = bool(np.any(fit_split.labels >= 0))
  if pixels.pca_dim > min(fit_split.images[0].size, len(fit_split.images)):
    raise ValueError(
      f'pca_dim={pixels.pca_dim} exceeds min(pixels per image, images) = '
      f'{min(fit_split.images[0].size, len(fit_split.images))}.'
    )
  if pixels.n_clusters > len(fit_split.images):
    raise ValueError(f'n_clusters={pixels.n_clusters} exceeds the {len(fit_split.images)} images clustered.')
  if not labelled and not pixels.n_clusters:
    raise ValueError(f'{run_settings.dataset} has no labels: give --n_clusters.')
  n_clusters = pixels.n_clusters or run_config.default_clusters(run_settings.dataset, fit_split.labels)
  flat = dict(method=method, **settings.as_dict(run_settings), **settings.as_dict(pixels), **settings.as_dict(options))
  flat.update(n_clusters=n_clusters, workdir=str(_workdir(method, run_settings)))  # the values used
  record_path = None
  if run_settings.results_dir and labelled:
    record_path = records.record_path(run_settings.results_dir, run_settings.results_name, method, run_settings.dataset)
    records.check_replaceable(record_path, flat)
    if run_settings.reuse_record and records.holds_all_seeds(record_path, flat):
      return records.reuse(record_path)
  workdir = run_config.write_config(_workdir(method, run_settings), flat)

  start = time.perf_counter()
  pca = preprocessing.fit_pca(data.as_float_features(fit_split.images), pixels.pca_dim) if pixels.pca_dim else None
  fit_features = _features(fit_split.images, pca, pixels.pca_whiten)
  eval_features = None if eval_split is None else _features(eval_split.images, pca, pixels.pca_whiten)
  per_seed, clusters, outcome = [], {}, None
  for seed in run_settings.seeds:
    model = clustering.fit_clustering(jax.random.key(seed), fit_features, n_clusters, method, settings.as_dict(options))
    predictions = (
      np.asarray(model.labels)
      if eval_features is None
      else clustering.predict_clusters(model, eval_features, method, settings.as_dict(options))
    )
    clusters[f'seed_{seed}'] = predictions
    outcome = (model, predictions)
    if labelled:
      truth = fit_split.labels if eval_split is None else eval_split.labels
      per_seed.append(metrics.clustering_scores(truth, predictions))
      print(f'seed {seed}: ' + '  '.join(f'{k.upper()} {v:.4f}' for k, v in per_seed[-1].items()), flush=True)
  wall = time.perf_counter() - start
  np.savez(workdir / 'clusters.npz', **clusters)
  if run_settings.figures:
    _save_centers(outcome, method, run_settings, fit_split, pca, pixels.pca_whiten, workdir / 'centers.png')
  if not labelled:
    print(
      f'{run_settings.dataset} has no labels: clusters of seeds {list(run_settings.seeds)} written to '
      f'{workdir / "clusters.npz"} (nothing to score).'
    )
    return None

  features = f'PCA-{pixels.pca_dim}{" whitened" if pixels.pca_whiten else ""}' if pixels.pca_dim else 'raw'
  description = (
    f'{method} on {features} pixels in [0,1], K={n_clusters}, '
    f'options={json.dumps(settings.as_dict(options), sort_keys=True)}; '
    f'{"fit and scored on train+test" if eval_split is None else "fit on train, scored on test"}'
  )
  record = results.method_record(
    method, run_settings.label(), description, run_settings.seeds, per_seed, wall, config=flat
  )
  results.write_json(workdir / 'metrics.json', record)
  if record_path is not None:
    records.write(record_path, record)
  print(
    f'{method} on {run_settings.label()} over seeds {list(run_settings.seeds)}: '
    + '  '.join(f'{k.upper()} {v["mean"]:.4f} ± {v["std"]:.4f}' for k, v in record['metrics'].items())
    + f'  ({wall:.1f} s)'
  )
  return record


def _workdir(method, run_settings) -> pathlib.Path:
  return pathlib.Path(run_settings.workdir or f'runs/{method}_{run_settings.label()}')


def _save_centers(outcome: Tuple[Any, np.ndarray], method, run_settings, split, pca, whiten, path):
  """Cluster means as images (mapped back through the PCA), a person's first check of a clustering."""
  model, predictions = outcome
  means = np.asarray(model.centers if method == 'kmeans' else model.params.means)
  if pca is not None:
    scale = np.sqrt(np.asarray(pca.explained_variance)) if whiten else 1.0
    means = (means * scale) @ np.asarray(pca.components) + np.asarray(pca.mean)
  images = means.reshape((-1,) + split.images.shape[1:])
  sizes = np.bincount(predictions, minlength=len(images))
  plots.image_grid(
    images,
    path,
    titles=[f'#{i} n={sizes[i]}' for i in range(len(images))],
    suptitle=f'{method} cluster means, {run_settings.label()}',
  )
