"""One experiment's settings, validated as a whole, and its folders.

An :class:`Experiment` gathers the configs written once elsewhere: where the
data and the outputs are (:class:`RunConfig`), how training runs
(:class:`~unsupervised_jax.training.loop.TrainConfig`), how the codes are
evaluated (:class:`~unsupervised_jax.evaluation.protocol.EvalConfig`), the
optional self-labelling stage
(:class:`~unsupervised_jax.methods.self_label.SelfLabelConfig`) and the
method's own config. :meth:`Experiment.validate` checks all of them before any
data is read or file written. Records and workdirs store the settings as one
flat dict keyed by flag name (:func:`flat_settings`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any
from typing import Dict
from typing import NamedTuple
from typing import Optional
from typing import Tuple

import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import settings
from unsupervised_jax.evaluation import protocol as evaluation_protocol
from unsupervised_jax.methods import self_label
from unsupervised_jax.settings import setting
from unsupervised_jax.training import loop


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Data, seeds and where the outputs go (the flags every entry point shares)."""

  dataset: str = setting(
    'digits', f'One of {", ".join(sorted(data.DATASETS))}, or the path of an .npz with x_<split>/y_<split>.'
  )
  data_dir: Optional[str] = setting(None, f'Local data directory (also tfds data_dir); default ${data.DATA_DIR_ENV}.')
  protocol: str = setting(
    'all',
    "'all': fit and score on train+test (as MiCE); 'train->test': fit on train, score test.",
    choices=evaluation_protocol.PROTOCOLS,
  )
  seeds: Tuple[int, ...] = setting((0, 1, 2), 'Seeds; metrics are reported as mean ± std over them.', minimum=0)
  workdir: Optional[str] = setting(None, 'Output directory; default runs/<method>_<dataset>.')
  results_dir: Optional[str] = setting(None, 'If set, also write <results_dir>/<results_name>.json.')
  results_name: Optional[str] = setting(None, 'Name of the results record; default <method>_<dataset>.')
  figures: bool = setting(True, 'Write the t-SNE of the codes and the method figures (--nofigures: skip).')
  reuse_record: bool = setting(
    False,
    'With --results_dir: when the record there holds a run of these settings and '
    'seeds, print "reusing" and stop instead of running again (experiments.reproduce).',
  )

  def validate(self):
    settings.check(self)
    if not self.seeds:
      raise ValueError('give at least one seed.')
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'seeds must differ, got {list(self.seeds)}.')
    if not self.dataset.endswith('.npz'):
      data.info(self.dataset)
    for name in ('workdir', 'results_dir'):
      path = getattr(self, name)
      if path and pathlib.Path(path).exists() and not pathlib.Path(path).is_dir():
        raise ValueError(f'--{name}={path} is a file, not a folder; choose another.')

  def label(self) -> str:
    """Short data set name for records: the name, or the file stem of a custom ``.npz``."""
    return dataset_label(self.dataset)


def dataset_label(dataset: str) -> str:
  """The data set's name, or the file stem of a custom ``.npz``."""
  return pathlib.Path(dataset).stem if dataset.endswith('.npz') else dataset


class SeedKeys(NamedTuple):
  """Independent keys of one seed's run: ``init`` (parameters), ``data`` (batches, augmentations),
  ``evaluation`` (K-means/GMM, UMAP) and ``fine_tune`` (the self-labelling stage)."""

  init: jax.Array
  data: jax.Array
  evaluation: jax.Array
  fine_tune: jax.Array


def seed_keys(seed: int) -> SeedKeys:
  """``fold_in(key(seed), i)`` for each use, so no two uses share a random stream."""
  root = jax.random.key(seed)
  return SeedKeys(*(jax.random.fold_in(root, i) for i in range(4)))


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything one learned-method run needs; see the module docstring."""

  method: str
  run: RunConfig
  train: loop.TrainConfig
  eval: evaluation_protocol.EvalConfig
  self_label: self_label.SelfLabelConfig
  method_config: Any

  def validate(self):
    """Raises ValueError (one line) on any bad setting, before anything is read or written."""
    self.run.validate()
    self.train.validate()
    self.eval.validate()
    self.self_label.validate()
    if self.method_config is not None:  # a method built without a config (tests, notebooks) checks itself
      self.method_config.validate(self.train)

  def workdir(self) -> pathlib.Path:
    return pathlib.Path(self.run.workdir or f'runs/{self.method}_{self.run.label()}')

  def settings(self) -> Dict[str, Any]:
    """The flat record of every setting (flag name -> value), ``method`` and ``method_config``."""
    flat = {'method': self.method}
    flat.update(settings.as_dict(self.run))
    flat.update(settings.as_dict(self.train))
    flat.update(settings.as_dict(self.eval))
    flat.update({self_label.SelfLabelConfig.PREFIX + k: v for k, v in settings.as_dict(self.self_label).items()})
    flat['method_config'] = settings.as_dict(self.method_config) if dataclasses.is_dataclass(self.method_config) else {}
    return flat


# Settings that may differ between processes sharing one workdir: seeds run apart, reporting, where the
# run and the data live (a workdir copied from another machine resumes), and the evaluation of the codes
# (a finished run can be re-evaluated from its last checkpoint without training).
EVALUATION_SETTINGS = tuple(f.name for f in dataclasses.fields(evaluation_protocol.EvalConfig)) + tuple(
  self_label.SelfLabelConfig.PREFIX + f.name for f in dataclasses.fields(self_label.SelfLabelConfig)
)
REPORTING_SETTINGS = (
  'workdir',
  'data_dir',
  'results_dir',
  'results_name',
  'reuse_record',
  'progress',
  'figures',
  'log_every',
  'eval_every',
  'checkpoint_every',
  'keep_checkpoints',
  'num_devices',
)
NOT_RUN_DEFINING = ('seeds',) + REPORTING_SETTINGS + EVALUATION_SETTINGS


def default_clusters(dataset: str, labels) -> int:
  """The data set's number of classes; for a custom ``.npz``, its distinct labels (ignoring -1).

  Raises:
    ValueError: the data carry no labels (give ``--n_clusters``).
  """
  if not dataset.endswith('.npz'):
    return data.info(dataset).num_classes
  classes = len(np.setdiff1d(np.unique(labels), [-1]))
  if not classes:
    raise ValueError(f'{dataset} has no labels: give --n_clusters.')
  return int(classes)


def from_legacy(flat: Dict[str, Any]) -> Dict[str, Any]:
  """A record's settings in today's flat form. Records before the method contract kept a learned
  method's clustering options as ``cluster_options`` ({'n_init', 'covariance_type'}), a pixel
  clustering's as ``options``, and ``n_clusters`` 0 for the number of classes (now the value used);
  records before a setting existed ran with the behaviour it was added to keep where its default
  changed it (``sampling``, MiCE's ``lr_schedule`` and ``prototype_pass``, the SCAE's
  ``attention_pooling``)."""
  flat = dict(flat)
  flat.update(flat.pop('options', None) or {})
  if flat.get('n_clusters') == 0 and 'manifold' not in flat and 'pca_dim' in flat:
    del flat['n_clusters']
  options = flat.pop('cluster_options', None)
  if options is not None:
    flat.setdefault('cluster_n_init', options.get('n_init', 1))
    flat.setdefault('covariance_type', options.get('covariance_type', 'full'))
  flat.get('method_config', {}).pop('num_steps', None)  # MoCo's schedule now reads the training length
  flat.setdefault('sampling', 'replacement')  # batches were drawn with replacement before the setting existed
  if flat.get('method') == 'mice':  # MiCE before the official epoch: per-step schedule, prototypes from a pass
    flat['method_config'].setdefault('lr_schedule', 'steps')
    flat['method_config'].setdefault('prototype_pass', True)
  if flat.get('method') == 'scae':  # the SCAE before the official attention pooling pooled each part with its map
    flat['method_config'].setdefault('attention_pooling', 'per_part')
  return flat


def differing(previous: Dict[str, Any], current: Dict[str, Any], ignore) -> list:
  """Names of the settings (outside ``ignore``) whose values differ between two flat records.

  Only settings both records know are compared: one written before a setting existed ran with the
  behaviour that setting's default keeps.
  """
  previous = from_legacy(json.loads(json.dumps(previous, default=str)))
  current = from_legacy(json.loads(json.dumps(current, default=str)))
  return sorted(k for k in set(previous) & set(current) if k not in ignore and previous[k] != current[k])


def check_resumable(workdir, current: Dict[str, Any]):
  """Raises ValueError if ``workdir`` holds a run (checkpoints, finished seeds) of other settings."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    return
  names = differing(json.loads(path.read_text()), current, NOT_RUN_DEFINING)
  if names:
    raise ValueError(f'{path.parent} holds a run with other settings ({", ".join(names)}); choose another --workdir.')


def write_config(workdir, flat: Dict[str, Any]) -> pathlib.Path:
  """Creates ``workdir`` and writes the resolved settings to ``config.json``."""
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / 'config.json').write_text(json.dumps(flat, indent=2, default=str) + '\n')
  return path
