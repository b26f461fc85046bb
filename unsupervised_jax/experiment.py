"""What every experiment entry point shares: config checks, the workdir, result records.

Entry points in ``experiments/`` only turn flags into a config and call the
``run_*`` function here, so each run is reproducible from Python as well.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import evaluation
from unsupervised_jax import manifold
from unsupervised_jax import metrics
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


# Settings that may differ between processes sharing one workdir: seeds run apart, reporting, where the
# run and the data live (a workdir copied from another machine resumes), and the evaluation of the codes
# (a finished run can be re-evaluated from its last checkpoint without training).
_EVALUATION_SETTINGS = ('cluster_method', 'cluster_options', 'manifold', 'manifold_neighbors', 'n_clusters',
                        'knn_k', 'self_label_steps', 'self_label_fraction', 'self_label_neighbors',
                        'self_label_threshold')
_NOT_RUN_DEFINING = ('workdir', 'data_dir', 'seeds', 'results_dir', 'results_name', 'progress', 'figures', 'log_every',
                     'eval_every', 'checkpoint_every', 'keep_checkpoints') + _EVALUATION_SETTINGS


def check_resumable(workdir: Optional[str], method: str, dataset: str, config: Dict[str, Any]):
  """Raises ValueError if ``workdir`` holds a run (checkpoints, finished seeds) of other settings."""
  path = pathlib.Path(workdir or f'runs/{method}_{dataset_label(dataset)}') / 'config.json'
  if not path.is_file():
    return
  previous = json.loads(path.read_text())
  current = json.loads(json.dumps(config, default=str))  # as it would be written
  differing = sorted(k for k in set(previous) | set(current)
                     if k not in _NOT_RUN_DEFINING and previous.get(k) != current.get(k))
  if differing:
    raise ValueError(f'{path.parent} holds a run with other settings ({", ".join(differing)}); '
                     'choose another --workdir or remove it.')


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
  results_name: Optional[str] = None  # default <method>_<dataset>

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


def default_clusters(dataset: str, labels) -> int:
  """The data set's number of classes; for a custom ``.npz``, the distinct labels (ignoring -1)."""
  if not dataset.endswith('.npz'):
    return data.info(dataset).num_classes
  return int(len(np.setdiff1d(np.unique(labels), [-1]))) or 1


def write_result(config, record) -> pathlib.Path:
  """Writes a run's record to ``<results_dir>/<results_name or method_dataset>.json``."""
  name = config.results_name or f'{config.method}_{dataset_label(config.dataset)}'
  return results.write_json(pathlib.Path(config.results_dir) / f'{name}.json', record)


def _features(images, pca, whiten):
  x = data.as_float_features(images)
  return x if pca is None else np.asarray(preprocessing.transform(pca, x, whiten))


def run_pixel_clustering(config: PixelClusteringConfig) -> Dict[str, Any]:
  """Runs the experiment; writes ``metrics.json`` and ``centers.png`` into the workdir.

  Returns the record (also written to ``<results_dir>/<method>_<dataset>.json``
  when ``results_dir`` is set).
  """
  results.git_commit()  # pin the commit of the code that runs
  config.validate()
  fit_split, eval_split = load_protocol_splits(config.dataset, config.protocol, config.data_dir)
  if config.pca_dim > fit_split.images[0].size:
    raise ValueError(f'pca_dim={config.pca_dim} exceeds the {fit_split.images[0].size} pixels per image.')
  n_clusters = config.n_clusters or default_clusters(config.dataset, fit_split.labels)
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
    path = write_result(config, record)
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


# ---------------------------------------------------------------------------
# Learned methods: train on the core, then the shared evaluation protocol.


@dataclasses.dataclass
class LearnedRunConfig:
  """A learned method trained over seeds and evaluated with the shared protocol.

  Protocol ``'all'``: train on train+test, cluster all of it (as MiCE);
  ``'train->test'``: train on train, fit the clustering on train codes and
  score test. kNN and linear probe always go train -> test.
  """
  method: str
  dataset: str = 'digits'
  data_dir: Optional[str] = None
  protocol: str = 'all'
  seeds: Sequence[int] = (0,)
  num_steps: int = 1000
  batch_size: int = 256
  log_every: int = 100
  eval_every: int = 0
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  num_devices: Optional[int] = None
  cluster_method: str = 'gmm'
  cluster_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  manifold: str = 'none'  # 'umap': N2D's manifold step on the codes before clustering
  manifold_neighbors: int = 20
  n_clusters: int = 0
  knn_k: int = 200
  workdir: Optional[str] = None
  results_dir: Optional[str] = None
  results_name: Optional[str] = None  # default <method>_<dataset>
  progress: bool = True
  figures: bool = True  # t-SNE of the codes and the method's own figures, once per workdir
  # > 0: refine the clustering of the codes by self-labelling (methods.self_label) for this many steps
  self_label_steps: int = 0
  self_label_fraction: float = 0.5
  self_label_neighbors: int = 20
  self_label_threshold: float = 0.0  # > 0: the other images join once the classifier is this sure of them

  def loop_config(self, seed: int):
    from unsupervised_jax.training import loop
    return loop.LoopConfig(num_steps=self.num_steps, batch_size=self.batch_size, seed=seed,
                           log_every=self.log_every, eval_every=self.eval_every,
                           checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
                           num_devices=self.num_devices, progress=self.progress)

  def self_label_config(self):
    from unsupervised_jax.methods import self_label
    return self_label.SelfLabelConfig(num_steps=self.self_label_steps, confident_fraction=self.self_label_fraction,
                                      neighbors=self.self_label_neighbors,
                                      online_threshold=self.self_label_threshold)

  def validate(self):
    if self.protocol not in PROTOCOLS:
      raise ValueError(f'protocol must be one of {PROTOCOLS}, got {self.protocol!r}.')
    if self.cluster_method not in evaluation.CLUSTERING_METHODS:
      raise ValueError(f'cluster_method must be one of {evaluation.CLUSTERING_METHODS}, got {self.cluster_method!r}.')
    if not self.seeds:
      raise ValueError('give at least one seed.')
    if self.manifold not in manifold.MANIFOLDS:
      raise ValueError(f'manifold must be one of {manifold.MANIFOLDS}, got {self.manifold!r}.')
    if not self.dataset.endswith('.npz'):
      data.info(self.dataset)
    self.loop_config(0).validate()
    if self.self_label_steps < 0:
      raise ValueError(f'self_label_steps must be >= 0, got {self.self_label_steps}.')
    if self.self_label_steps:
      self.self_label_config().validate()
    from unsupervised_jax.training import parallel
    parallel.check_batch_size(self.batch_size, parallel.make_mesh(self.num_devices))


def evaluate_codes(fit_codes, fit_labels, test_codes, test_labels, n_clusters, config: LearnedRunConfig,
                   seed: int, cluster_codes=None, cluster_labels=None) -> Tuple[Dict[str, float], evaluation.ClusteringOutcome]:
  """ACC/NMI/ARI of clustering the codes, kNN and linear-probe accuracy (train -> test).

  Returns the scores and the clustering (its ``model.labels`` are the clusters of ``cluster_codes``).
  """
  if cluster_codes is None:
    cluster_codes, cluster_labels = fit_codes, fit_labels
  eval_codes = None if config.protocol == 'all' else test_codes
  mapping = manifold.fit(config.manifold, cluster_codes, n_clusters, n_neighbors=config.manifold_neighbors,
                         seed=seed)
  if mapping is not None:
    cluster_codes = mapping.fit_codes
    eval_codes = None if eval_codes is None else mapping.transform(eval_codes)
  outcome = evaluation.cluster_and_score(
      jax.random.key(seed), cluster_codes, cluster_labels, n_clusters, config.cluster_method,
      config.cluster_options, eval_codes, None if eval_codes is None else test_labels)
  scores = dict(outcome.scores)
  scores['knn_acc'] = evaluation.knn_accuracy(fit_codes, fit_labels, test_codes, test_labels, k=config.knn_k)
  scores['linear_acc'] = evaluation.linear_probe_accuracy(fit_codes, fit_labels, test_codes, test_labels)
  return scores, outcome


def self_label_scores(learner, params, images, labels, codes, assignments, score_images, score_labels, n_clusters,
                      config: LearnedRunConfig, seed: int, workdir) -> Tuple[Dict[str, float], np.ndarray]:
  """Refines a clustering by self-labelling (:mod:`unsupervised_jax.methods.self_label`) and scores it.

  Args:
    learner: the trained method; gives the encoder (``model``, ``features``) and the augmentation (``view``).
    params: its trained parameters.
    images: ``[N, H, W, C]`` uint8, the clustered images; ``labels [N]`` their classes (for the
      pseudo-label diagnostic only), ``codes [N, D]`` their codes and ``assignments [N]`` their clusters.
    score_images, score_labels: the images whose refined clusters are scored, and their classes.
    workdir: the fine-tuning's checkpoints and metrics (cleared when it holds other settings).

  Returns:
    The scores: ``acc``, ``nmi``, ``ari`` of the refined clusters and ``pseudo_label_acc``, the share
    of the confident examples whose cluster is their class under the matching of all clusters; and the
    refined clusters ``[M]`` of ``score_images``.
  """
  from unsupervised_jax.methods import self_label
  from unsupervised_jax.training import loop
  from unsupervised_jax.training import parallel

  if not (hasattr(learner, 'model') and hasattr(learner, 'view')):
    raise ValueError(f'self-labelling needs a method with an encoder and augmentations; {config.method} has none.')
  sl_config = config.self_label_config()
  assignments = np.asarray(assignments, np.int32)
  confidence = self_label.neighbour_agreement(codes, assignments, sl_config.neighbors)
  chosen = self_label.select_confident(assignments, confidence, sl_config.confident_fraction)
  workdir = pathlib.Path(workdir)
  # What the fine-tuning learns from: its settings and the pseudo-labels themselves (another clustering
  # of the same codes gives other ones), so a stale fine-tuning is never resumed.
  fingerprint = hashlib.sha256(chosen.astype(np.int64).tobytes() + assignments[chosen].tobytes()).hexdigest()
  settings = json.loads(json.dumps(dict(dataclasses.asdict(sl_config), pseudo_labels=fingerprint), default=str))
  settings_path = workdir / 'settings.json'
  if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
    shutil.rmtree(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  settings_path.write_text(json.dumps(settings, indent=2) + '\n')

  refiner = self_label.SelfLabel(sl_config, learner.model, params, images.shape[1:], n_clusters, learner.view)
  loop_config = dataclasses.replace(config.loop_config(seed), num_steps=sl_config.num_steps,
                                    checkpoint_every=min(config.checkpoint_every, sl_config.num_steps), eval_every=0)
  state = loop.train(refiner.method(), refiner.init(jax.random.key(seed)),
                     refiner.dataset(images, assignments, chosen), loop_config, workdir)
  mesh = parallel.make_mesh(config.num_devices)
  predict = parallel.data_parallel_map(refiner.predict, mesh, batch_size=max(1, 1024 // mesh.size))
  predictions = np.asarray(predict(state.params, score_images))
  scores = metrics.clustering_scores(np.asarray(score_labels), predictions)
  # Purity of the pseudo-labels, a diagnostic: clusters matched to classes on all the clustered images.
  mapping = metrics.match_clusters(labels, assignments)
  matched_class = np.array([mapping.get(cluster, -1) for cluster in range(int(assignments.max()) + 1)])
  scores['pseudo_label_acc'] = float(np.mean(matched_class[assignments[chosen]] == np.asarray(labels)[chosen]))
  return scores, predictions


def protocol_description(config: LearnedRunConfig, n_clusters: int) -> str:
  """The record's ``protocol``: how a learned method was trained and evaluated, in words."""
  fit_split = 'train+test' if config.protocol == 'all' else 'train'
  manifold = (f'UMAP({config.manifold_neighbors} neighbours, min_dist 0, {n_clusters} dims) of the '
              if config.manifold == 'umap' else '')
  parts = [f'{config.method} trained {config.num_steps} steps x batch {config.batch_size} on {fit_split}',
           f'{config.cluster_method} (K={n_clusters}, {json.dumps(config.cluster_options, sort_keys=True)}) on the '
           f'{manifold}codes of {"train+test" if config.protocol == "all" else "train, scored on test"}']
  if config.self_label_steps:
    parts.append(self_label_description(config))
  parts.append(f'kNN (cosine, k={config.knn_k}) and linear probe train -> test')
  return '; '.join(parts)


def self_label_description(config: LearnedRunConfig) -> str:
  """The self-labelling stage of :func:`protocol_description`."""
  online = (f', the others once predicted with probability > {config.self_label_threshold:g}'
            if config.self_label_threshold else '')
  return (f'refined by self-labelling ({config.self_label_steps} steps on the {config.self_label_fraction:g} most '
          f'confident of each cluster by {config.self_label_neighbors}-NN agreement{online})')


def run_learned(config: LearnedRunConfig, make_learner) -> Dict[str, Any]:
  """Trains ``make_learner(image_shape)`` per seed on the core and evaluates it.

  The learner provides ``init(key) -> state``, ``method() -> training.loop.Method``,
  ``embed(params, images) -> codes`` and optionally ``figures(state, images, workdir)``.
  Writes per seed ``<workdir>/seed_<s>/`` (checkpoints, metrics.jsonl,
  ``eval.json``), figures, and the record to ``<workdir>/metrics.json`` and
  ``results_dir``. A seed whose ``eval.json`` holds the same evaluation
  settings is reused, not rerun, so seeds can run as separate processes (or
  resume after a crash) into one record; with other evaluation settings
  (clustering, manifold, kNN) a trained seed is re-evaluated from its last
  checkpoint without training again.
  """
  from unsupervised_jax.training import loop
  from unsupervised_jax.training import parallel

  results.git_commit()  # pin the commit of the code that runs
  config.validate()
  train_split = data.load(config.dataset, 'train', config.data_dir)
  test_split = data.load(config.dataset, 'test', config.data_dir)
  learner = make_learner(train_split.images.shape[1:])  # validates the method's own config
  train_images = (np.concatenate([train_split.images, test_split.images]) if config.protocol == 'all'
                  else train_split.images)
  n_clusters = config.n_clusters or default_clusters(config.dataset, train_split.labels)
  method_config = getattr(learner, 'config', None)
  full_config = dict(dataclasses.asdict(config),
                     method_config=dataclasses.asdict(method_config) if dataclasses.is_dataclass(method_config) else {})
  check_resumable(config.workdir, config.method, config.dataset, full_config)
  workdir = prepare_workdir(config.workdir, config.method, config.dataset, full_config)
  mesh = parallel.make_mesh(config.num_devices)
  embed = parallel.data_parallel_map(learner.embed, mesh, batch_size=max(1, 1024 // mesh.size))

  per_seed, seed_walls = [], []
  evaluation_settings = {k: full_config[k] for k in _EVALUATION_SETTINGS}
  for seed in config.seeds:
    seed_dir = workdir / f'seed_{seed}'
    finished = seed_dir / 'eval.json'
    done = json.loads(finished.read_text()) if finished.is_file() else {}
    if done.get('evaluation') == evaluation_settings:  # evaluated alike before (another process, a crash)
      per_seed.append(done['scores'])
      seed_walls.append(done['wall_s'])
      print(f'seed {seed}: reusing {finished}', flush=True)
      continue
    start = time.perf_counter()
    state = learner.init(jax.random.key(seed))

    def evaluate_during_training(state):
      # Cheap progress signal (no manifold step): kNN accuracy and K-means on the test codes.
      codes = np.asarray(embed(state.params, test_split.images))
      model = evaluation.fit_clustering(jax.random.key(seed), codes, n_clusters, 'kmeans', {'n_init': 1})
      return {'kmeans_acc_test': metrics.cluster_accuracy(test_split.labels, np.asarray(model.labels)),
              'knn_acc': evaluation.knn_accuracy(np.asarray(embed(state.params, train_split.images)),
                                                 train_split.labels, codes, test_split.labels, k=config.knn_k)}

    state = loop.train(learner.method(), state, train_images, config.loop_config(seed), seed_dir,
                       evaluate=evaluate_during_training if config.eval_every else None)
    # Re-evaluating a trained seed restores its last checkpoint: count the training time it took then.
    train_s = time.perf_counter() - start + done.get('train_s', done.get('wall_s', 0.0))
    start = time.perf_counter()
    params = state.params
    fit_codes = np.asarray(embed(params, train_split.images))
    test_codes = np.asarray(embed(params, test_split.images))
    cluster_codes, cluster_labels = fit_codes, train_split.labels
    if config.protocol == 'all':
      cluster_codes = np.concatenate([fit_codes, test_codes])
      cluster_labels = np.concatenate([train_split.labels, test_split.labels])
    scores, outcome = evaluate_codes(fit_codes, train_split.labels, test_codes, test_split.labels, n_clusters,
                                     config, seed, cluster_codes, cluster_labels)
    cluster_images = train_images  # the images of cluster_codes, in the same order
    score_images, score_labels = ((cluster_images, cluster_labels) if config.protocol == 'all'
                                  else (test_split.images, test_split.labels))
    scored_clusters = {'codes': outcome.predictions}  # the clusterings scored, of score_images
    if config.self_label_steps:
      refined, scored_clusters['refined'] = self_label_scores(
          learner, params, cluster_images, cluster_labels, cluster_codes, outcome.model.labels, score_images,
          score_labels, n_clusters, config, seed, seed_dir / 'self_label')
      scores = dict(scores, **refined, **{f'codes_{k}': scores[k] for k in ('acc', 'nmi', 'ari')})
    print(f'seed {seed}: ' + '  '.join(f'{k} {v:.4f}' for k, v in scores.items()), flush=True)
    confusions = {name: metrics.matched_confusion(score_labels, clusters)
                  for name, clusters in scored_clusters.items()}
    for name, confusion in confusions.items():
      print(f'seed {seed}: largest confusions of the {name} clusters: {metrics.largest_confusions(confusion)}',
            flush=True)
    per_seed.append(scores)
    seed_walls.append(train_s + time.perf_counter() - start)
    confusion_lists = {name: {field: value.tolist() for field, value in confusion._asdict().items()}
                       for name, confusion in confusions.items()}
    results.write_json(finished, {'scores': scores, 'wall_s': seed_walls[-1], 'train_s': train_s,
                                  'evaluation': evaluation_settings,
                                  'confusion': confusion_lists})  # before the slow figures
    if config.figures and seed == config.seeds[0] and not (workdir / 'tsne.png').is_file():
      evaluation.tsne_figure(cluster_codes, cluster_labels, workdir / 'tsne.png',
                             title=f'{config.method} codes, {dataset_label(config.dataset)} (t-SNE)')
      if hasattr(learner, 'figures'):
        learner.figures(state, test_split.images, workdir)
  wall = sum(seed_walls)  # seeds may have run in separate processes: the sum of their own wall times

  protocol = protocol_description(config, n_clusters)
  record = results.method_record(config.method, dataset_label(config.dataset), protocol, config.seeds, per_seed,
                                 wall, config=full_config)
  results.write_json(workdir / 'metrics.json', record)
  if config.results_dir:
    path = write_result(config, record)
    print(f'wrote {path}')
  print(f'{config.method} on {dataset_label(config.dataset)} over seeds {list(config.seeds)}: ' + '  '.join(
      f'{k} {v["mean"]:.4f} ± {v["std"]:.4f}' for k, v in record['metrics'].items()) + f'  ({wall:.0f} s)')
  return record


def run_ablation(cells: Sequence[Tuple[Dict[str, Any], LearnedRunConfig, Any]], out_dir,
                 title: str, reference: Optional[Dict[str, Any]] = None,
                 results_path: Optional[str] = None) -> pathlib.Path:
  """Runs :func:`run_learned` for each ``(settings, config, make_learner)`` and tabulates them.

  Each cell reuses what :func:`run_learned` reuses: seeds already evaluated
  alike are read, seeds trained but evaluated otherwise are re-evaluated from
  their last checkpoint, so an interrupted grid resumes and cells may be
  trained and evaluated by separate processes. Writes
  ``<out_dir>/ablation.json`` (settings and the record of every cell) and
  ``ablation.md`` (mean ± std per metric), with ``reference`` (published
  numbers to compare against: ``{'source': str, <metric>: value}``) under the table;
  the JSON also to ``results_path`` when given (the ablation form of the results schema).
  """
  out_dir = pathlib.Path(out_dir)
  rows = [{'settings': settings, 'record': run_learned(config, make_learner)}
          for settings, config, make_learner in cells]
  table = {'title': title, 'command': results.command(), 'git_commit': results.git_commit(),
           'reference': reference, 'cells': rows}
  results.write_json(out_dir / 'ablation.json', table)
  if results_path:
    print(f'wrote {results.write_json(results_path, table)}')
  names = list(rows[0]['settings'])
  metric_names = list(rows[0]['record']['metrics'])
  lines = [f'# {title}', '', '| ' + ' | '.join(names + metric_names) + ' |',
           '|' + ' --- |' * (len(names) + len(metric_names))]
  for row in rows:
    m = row['record']['metrics']
    lines.append('| ' + ' | '.join([str(row['settings'][n]) for n in names] +
                                   [f'{m[k]["mean"]:.4f} ± {m[k]["std"]:.4f}' for k in metric_names]) + ' |')
  if reference:
    lines += ['', f'Reference ({reference["source"]}): ' + ', '.join(
        f'{k} {v}' for k, v in reference.items() if k != 'source') + '.']
  path = out_dir / 'ablation.md'
  path.write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return path
