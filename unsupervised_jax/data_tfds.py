"""Data from tensorflow-datasets (``tfds.data_source``, no TensorFlow needed), and the network check before a
download: :func:`unsupervised_jax.data.load`'s source where nothing is local."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import socket
import threading

import numpy as np

from unsupervised_jax import data

OFFLINE_ENV = 'UNSUPERVISED_JAX_OFFLINE'
# Where tfds downloads from; only probed (one TCP connect) before a download.
_DOWNLOAD_PROBE = ('storage.googleapis.com', 443)
_PROBE_TIMEOUT_S = 5.0

# The 15 ImageNet dog classes used by the clustering literature (DAC, PICA,
# MiCE: "ImageNet-Dog"), as WordNet ids, in label order.
IMAGENET_DOG_WNIDS = (
  'n02085936',
  'n02086646',
  'n02088238',
  'n02091467',
  'n02097130',
  'n02099601',
  'n02101388',
  'n02101556',
  'n02102177',
  'n02105056',
  'n02105412',
  'n02105855',
  'n02107142',
  'n02110958',
  'n02112137',
)


def network_available(address=_DOWNLOAD_PROBE, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
  """One TCP connect to the download host, bounded by ``timeout_s`` including DNS."""
  if os.environ.get(OFFLINE_ENV, '') not in ('', '0'):
    return False
  ok = []

  def probe():
    try:
      socket.create_connection(address, timeout=timeout_s).close()
      ok.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=probe, daemon=True)  # DNS look-ups ignore socket timeouts
  thread.start()
  thread.join(timeout_s)
  return bool(ok)


def _unavailable_message(dataset: data.DatasetInfo, data_dir) -> str:
  where = data_dir or f'${data.DATA_DIR_ENV}'
  if dataset.name == 'mnist':
    hint = f'put the keras mnist.npz (x_train, y_train, x_test, y_test) in {where}'
  elif dataset.name == 'imagenet_dog':
    hint = dataset.notes
  else:
    hint = (
      f'put {dataset.name}.npz with x_<split>/y_<split> uint8 arrays in {where}, '
      f'or a prepared tfds "{dataset.tfds_name}" under --data_dir'
    )
  return f'{dataset.name} is not available offline: {hint} (or go online for tensorflow-datasets).'


class _DropUnpreparedWarnings(logging.Filter):
  """Drops tfds' "Variant folder ... has no dataset_info.json": it only means "not prepared yet"."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Variant folder')


@contextlib.contextmanager
def _quiet_tfds_probe():
  """While tfds looks for a prepared data set: its warnings about unprepared folders are not shown."""
  quiet = _DropUnpreparedWarnings()
  logger = logging.getLogger('absl')
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def load_split(dataset: data.DatasetInfo, split: str, data_dir, download: bool) -> data.Dataset:
  import tensorflow_datasets as tfds  # heavy import, only when needed

  tfds_split = 'validation' if (dataset.name == 'imagenet_dog' and split == 'test') else split
  with _quiet_tfds_probe():
    builder = tfds.builder(dataset.tfds_name, data_dir=data_dir)
    prepared = builder.is_prepared()
  if not prepared:
    if dataset.name == 'imagenet_dog':
      root = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
      manual = pathlib.Path(root).expanduser() / 'downloads' / 'manual'
      if not manual.is_dir():
        raise data.DataUnavailableError(_unavailable_message(dataset, data_dir))
    elif not (download and network_available()):
      raise data.DataUnavailableError(_unavailable_message(dataset, data_dir))
  source = tfds.data_source(dataset.tfds_name, split=tfds_split, data_dir=data_dir, download=download)
  if dataset.name == 'imagenet_dog':
    return _imagenet_dog(source, builder)
  images, labels = [], []
  for i in range(len(source)):
    example = source[i]
    images.append(example['image'])
    labels.append(example.get(dataset.label_key, -1))
  return data.from_arrays(np.stack(images), np.asarray(labels, np.int64))


def _imagenet_dog(source, builder) -> data.Dataset:
  from PIL import Image  # pillow comes with matplotlib

  names = builder.info.features['label'].names
  keep = {names.index(w): i for i, w in enumerate(IMAGENET_DOG_WNIDS)}
  images, labels = [], []
  for i in range(len(source)):
    example = source[i]
    if int(example['label']) in keep:
      image = Image.fromarray(example['image']).convert('RGB').resize((96, 96), Image.BICUBIC)
      images.append(np.asarray(image))
      labels.append(keep[int(example['label'])])
  return data.from_arrays(np.stack(images), np.asarray(labels))
