"""Image data sets as uint8 arrays ``[N, H, W, C]`` with integer labels ``[N]``.

:func:`load` looks for a data set in this order:

1. a local directory (``data_dir``, else ``$UNSUPERVISED_JAX_DATA_DIR``)
   holding one of
     * ``<name>.npz`` with ``x_<split>`` / ``y_<split>`` arrays (the keras
       ``mnist.npz`` layout: ``x_train, y_train, x_test, y_test``),
     * MNIST-style IDX files ``train-images-idx3-ubyte[.gz]``,
       ``train-labels-idx1-ubyte[.gz]``, ``t10k-...`` (also under ``<name>/``);
2. tensorflow-datasets through ``tfds.data_source`` (ArrayRecord, numpy out,
   no TensorFlow needed), downloading and preparing it in tfds' ``data_dir``
   when online.

With nothing local and no network, it fails after a bounded check (a few
seconds) with a one-line :class:`DataUnavailableError` saying which file to
put where. A data directory that does not exist, or a local ``.npz`` that is
not one, fails at once the same way (pickled contents are never loaded).
``name`` may also be the path of an ``.npz`` file of your own, and
:func:`from_arrays` wraps in-memory arrays; either works with every method.

``digits`` (scikit-learn's bundled 1,797 real 8x8 handwritten digits) needs no
download: it is the default of the quick-start commands.

Splits: ``'train'``, ``'test'``, ``'unlabelled'`` (STL-10), joined with ``+``
(``'train+test'``); ``'all'`` means every labelled split. Unlabelled images get
label -1.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple
import zipfile

import numpy as np

from unsupervised_jax.training import contract

DATA_DIR_ENV = 'UNSUPERVISED_JAX_DATA_DIR'


class DataUnavailableError(ValueError):
  """The data set is neither local (or its local file is unreadable) nor downloadable; the message says what to
  put where."""


class Dataset(NamedTuple):
  """A data set split: ``images [N, H, W, C]`` uint8 and ``labels [N]`` int32 (-1 = unlabelled)."""

  images: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What :func:`load` knows about a named data set."""

  name: str
  tfds_name: Optional[str]
  image_shape: Tuple[int, int, int]
  num_classes: int
  splits: Tuple[str, ...]
  labelled_splits: Tuple[str, ...]
  label_key: str = 'label'
  notes: str = ''


DATASETS = {
  'digits': DatasetInfo(
    'digits',
    None,
    (8, 8, 1),
    10,
    ('train', 'test'),
    ('train', 'test'),
    notes="scikit-learn's bundled 8x8 digits (0-16 scaled to 0-255); train = first 1,437, test = last 360.",
  ),
  'mnist': DatasetInfo('mnist', 'mnist', (28, 28, 1), 10, ('train', 'test'), ('train', 'test')),
  'cifar10': DatasetInfo('cifar10', 'cifar10', (32, 32, 3), 10, ('train', 'test'), ('train', 'test')),
  'cifar100_20': DatasetInfo(
    'cifar100_20',
    'cifar100',
    (32, 32, 3),
    20,
    ('train', 'test'),
    ('train', 'test'),
    label_key='coarse_label',
    notes='CIFAR-100 labelled with its 20 coarse super-classes.',
  ),
  'stl10': DatasetInfo(
    'stl10',
    'stl10',
    (96, 96, 3),
    10,
    ('train', 'test', 'unlabelled'),
    ('train', 'test'),
    notes="'unlabelled' is the 100k extra split (labels -1).",
  ),
  'imagenet_dog': DatasetInfo(
    'imagenet_dog',
    'imagenet2012',
    (96, 96, 3),
    15,
    ('train', 'validation'),
    ('train', 'validation'),
    notes='The 15 dog classes of IMAGENET_DOG_WNIDS from a manually prepared ImageNet '
    '(tfds imagenet2012: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in '
    '<tfds data_dir>/downloads/manual/), resized to 96x96.',
  ),
}
_DIGITS_TRAIN = 1437


def info(name: str) -> DatasetInfo:
  """Metadata of a named data set; ``ValueError`` listing the known names otherwise."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
      f'unknown dataset {name!r}; known: {", ".join(sorted(DATASETS))}, '
      'or the path of an .npz file with x_<split>/y_<split> arrays.'
    ) from None


def from_arrays(images, labels=None) -> Dataset:
  """Validates in-memory images (``[N, H, W]`` or ``[N, H, W, C]`` uint8) and optional labels ``[N]``."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C] (or [N, H, W]), got shape {images.shape}.')
  if images.shape[0] == 0 or 0 in images.shape:
    raise ValueError(f'images are empty (shape {images.shape}).')
  if images.dtype != np.uint8:
    if np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
      images = images.astype(np.uint8)
    else:
      raise ValueError(
        f'images must be uint8 in [0, 255], got dtype {images.dtype}; e.g. '
        '(np.clip(x, 0, 1) * 255).round().astype(np.uint8) for floats in [0, 1].'
      )
  if labels is None:
    labels = np.full(images.shape[0], -1, np.int32)
  labels = np.asarray(labels)
  if labels.shape != (images.shape[0],):
    raise ValueError(f'labels must be [N] = [{images.shape[0]}], got shape {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers, got dtype {labels.dtype}.')
  return _concat([Dataset(images, labels.astype(np.int32))])


def _split_names(split: str, dataset: DatasetInfo) -> Sequence[str]:
  names = list(dataset.labelled_splits) if split == 'all' else split.split('+')
  for s in names:
    if s not in dataset.splits:
      raise ValueError(
        f'unknown split {s!r} for {dataset.name}; known: {", ".join(dataset.splits)}, '
        "'all', or several joined with '+'."
      )
  return names


def _concat(parts: Sequence[Dataset]) -> Dataset:
  """The splits joined; every data source returns through here, so its images meet the image contract."""
  joined = (
    parts[0]
    if len(parts) == 1
    else Dataset(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
  )
  contract.check_images(joined.images)
  return joined


def load(name: str, split: str = 'train', data_dir: Optional[str] = None, *, download: bool = True) -> Dataset:
  """Loads a data set split as :class:`Dataset` (uint8 ``[N, H, W, C]``, int32 ``[N]``).

  Args:
    name: a key of :data:`DATASETS` or the path of an ``.npz`` file.
    split: ``'train'``, ``'test'``, ``'unlabelled'``, ``'all'`` or ``'a+b'``.
    data_dir: local directory searched first; also tfds' ``data_dir``.
      Defaults to ``$UNSUPERVISED_JAX_DATA_DIR``.
    download: allow tfds to download and prepare when nothing is local.

  Raises:
    ValueError: unknown name or split, malformed files.
    DataUnavailableError: nothing local and no way to download.
  """
  if name.endswith('.npz'):
    return _load_npz_file(pathlib.Path(name), split)
  dataset = info(name)
  splits = _split_names(split, dataset)
  data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
  if name == 'digits':
    return _concat([_load_digits(s) for s in splits])
  if data_dir is not None:
    _check_data_dir(pathlib.Path(data_dir), dataset)
    local = _find_local(pathlib.Path(data_dir), dataset, splits)
    if local is not None:
      return local
  from unsupervised_jax import data_tfds  # tensorflow-datasets only where nothing is local

  return _concat([data_tfds.load_split(dataset, s, data_dir, download) for s in splits])


def _load_digits(split: str) -> Dataset:
  from sklearn import datasets as sk_datasets  # bundled with scikit-learn, no download

  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  part = slice(None, _DIGITS_TRAIN) if split == 'train' else slice(_DIGITS_TRAIN, None)
  return Dataset(images[part], labels[part])


def _check_data_dir(root: pathlib.Path, dataset: DatasetInfo):
  """A data directory that was named must exist: fail here, before tensorflow-datasets logs about it."""
  if not root.is_dir():
    raise DataUnavailableError(
      f'data directory {root} does not exist; create it (tensorflow-datasets downloads '
      f'into it) or point data_dir / ${DATA_DIR_ENV} at the one holding {dataset.name}.npz.'
    )


def _not_npz(path: pathlib.Path) -> DataUnavailableError:
  return DataUnavailableError(
    f'{path} is not a valid .npz file (numpy arrays in a zip archive); replace it, e.g. with the keras mnist.npz.'
  )


def _load_npz_file(path: pathlib.Path, split: str) -> Dataset:
  """Reads ``x_<split>`` / ``y_<split>`` from an ``.npz``; never unpickles (object arrays are refused)."""
  if not path.is_file():
    raise DataUnavailableError(f'no such file: {path}')
  if not zipfile.is_zipfile(path):  # np.load would guess a pickle and suggest allow_pickle
    raise _not_npz(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      available = sorted(k[2:] for k in npz.files if k.startswith('x_'))
      names = available if split == 'all' else split.split('+')
      parts = []
      for s in names:
        if f'x_{s}' not in npz.files:
          raise ValueError(f'{path} has no x_{s} array; it has splits {available}.')
        images = _read_member(npz, f'x_{s}', path)
        labels = _read_member(npz, f'y_{s}', path) if f'y_{s}' in npz.files else None
        parts.append(from_arrays(images, labels))
  except (zipfile.BadZipFile, EOFError, OSError):
    raise _not_npz(path) from None
  return _concat(parts)


def _read_member(npz, key: str, path: pathlib.Path) -> np.ndarray:
  """One array of an open ``.npz``; a corrupt or pickled (object) member is a :class:`DataUnavailableError`."""
  try:
    return npz[key]
  except ValueError:  # object arrays (pickles) under allow_pickle=False, or a malformed .npy header
    raise DataUnavailableError(
      f'{path}: array {key} is not a plain numeric array (pickled objects or a corrupt '
      'member); save it with np.savez from uint8/int arrays.'
    ) from None


_IDX_PREFIX = {'train': 'train', 'test': 't10k'}


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an IDX file (the original MNIST format), gzipped or not."""
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rb') as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise ValueError(f'{path} is not an unsigned-byte IDX file (bad magic number).')
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f'{path} is truncated: header says {shape}, found {data.size} bytes.')
  return data.reshape(shape)


def _find_local(root: pathlib.Path, dataset: DatasetInfo, splits: Sequence[str]) -> Optional[Dataset]:
  for directory in (root, root / dataset.name):
    npz = directory / f'{dataset.name}.npz'
    if npz.is_file():
      return _load_npz_file(npz, '+'.join(splits))
    parts = []
    for s in splits:
      prefix = _IDX_PREFIX.get(s)
      found = None
      for suffix in ('', '.gz'):
        images = directory / f'{prefix}-images-idx3-ubyte{suffix}'
        labels = directory / f'{prefix}-labels-idx1-ubyte{suffix}'
        if prefix and images.is_file() and labels.is_file():
          found = from_arrays(_read_idx(images), _read_idx(labels))
          break
      if found is None:
        break
      parts.append(found)
    else:
      return _concat(parts)
  return None


def as_float_features(images, *, flatten: bool = True) -> np.ndarray:
  """uint8 images ``[N, H, W, C]`` -> float32 in [0, 1], ``[N, H*W*C]`` when ``flatten``."""
  x = np.asarray(images, np.float32) / 255.0
  return x.reshape(len(x), -1) if flatten else x
