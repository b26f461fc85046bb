import gzip
import os
import pathlib
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax import data_tfds

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in array.shape)
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_digits_is_the_offline_default():
  all_digits = data.load('digits', 'all')
  assert all_digits.images.shape == (1797, 8, 8, 1) and all_digits.images.dtype == np.uint8
  assert all_digits.images.max() == 255 and all_digits.labels.dtype == np.int32
  train, test = data.load('digits', 'train'), data.load('digits', 'test')
  assert len(train.images) + len(test.images) == 1797
  np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), all_digits.labels)


def test_keras_npz_layout(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {
    'x_train': rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
    'y_train': np.arange(5),
    'x_test': rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
    'y_test': np.arange(3),
  }
  np.savez(tmp_path / 'mnist.npz', **arrays)
  train = data.load('mnist', 'train', str(tmp_path))
  np.testing.assert_array_equal(train.images[..., 0], arrays['x_train'])
  both = data.load('mnist', 'all', str(tmp_path))
  assert both.images.shape == (8, 28, 28, 1)
  np.testing.assert_array_equal(both.labels, [0, 1, 2, 3, 4, 0, 1, 2])


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_idx_files(tmp_path, suffix):
  rng = np.random.default_rng(1)
  images, labels = rng.integers(0, 256, (4, 28, 28)), rng.integers(0, 10, 4)
  sub = tmp_path / 'mnist'
  sub.mkdir()
  _write_idx(sub / f'train-images-idx3-ubyte{suffix}', images)
  _write_idx(sub / f'train-labels-idx1-ubyte{suffix}', labels)
  loaded = data.load('mnist', 'train', str(tmp_path))
  np.testing.assert_array_equal(loaded.images[..., 0], images)
  np.testing.assert_array_equal(loaded.labels, labels)


def test_truncated_idx_is_a_clear_error(tmp_path):
  _write_idx(tmp_path / 'train-images-idx3-ubyte', np.zeros((4, 2, 2)))
  raw = (tmp_path / 'train-images-idx3-ubyte').read_bytes()
  (tmp_path / 'train-images-idx3-ubyte').write_bytes(raw[:-3])
  _write_idx(tmp_path / 'train-labels-idx1-ubyte', np.zeros(4))
  with pytest.raises(ValueError, match='truncated'):
    data.load('mnist', 'train', str(tmp_path))


def test_custom_npz_path_and_arrays(tmp_path):
  images = np.random.default_rng(2).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
  np.savez(tmp_path / 'mine.npz', x_train=images, y_train=np.arange(6))
  loaded = data.load(str(tmp_path / 'mine.npz'), 'train')
  np.testing.assert_array_equal(loaded.images, images)
  unlabelled = data.from_arrays(images)
  assert (unlabelled.labels == -1).all()


@pytest.mark.parametrize(
  'images,labels,match',
  [
    (np.zeros((2, 3), np.uint8), None, r'\[N, H, W, C\]'),
    (np.zeros((0, 3, 3), np.uint8), None, 'empty'),
    (np.full((2, 3, 3), 0.5), None, 'uint8'),
    (np.zeros((2, 3, 3), np.uint8), np.zeros(3, int), 'labels must be'),
  ],
)
def test_from_arrays_rejects_bad_input(images, labels, match):
  with pytest.raises(ValueError, match=match):
    data.from_arrays(images, labels)


def test_unknown_names_are_value_errors():
  with pytest.raises(ValueError, match='unknown dataset'):
    data.load('mnsit')
  with pytest.raises(ValueError, match='unknown split'):
    data.load('digits', 'validation')


def test_offline_without_local_files_fails_fast_with_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv(data_tfds.OFFLINE_ENV, '1')
  start = time.perf_counter()
  with pytest.raises(data.DataUnavailableError) as error:
    data.load('mnist', 'train', str(tmp_path))
  assert time.perf_counter() - start < 10
  message = str(error.value)
  assert '\n' not in message and 'mnist.npz' in message and str(tmp_path) in message


class _Tripwire:
  """Unpickling it creates ``path``: proof that a file was unpickled."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, 'w'))


def test_random_bytes_npz_is_named_as_not_an_npz(tmp_path):
  (tmp_path / 'mnist.npz').write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(data.DataUnavailableError) as error:
    data.load('mnist', 'train', str(tmp_path))
  message = str(error.value)
  assert '\n' not in message and 'not a valid .npz' in message and str(tmp_path / 'mnist.npz') in message
  assert 'pickle' not in message  # numpy's own message advises allow_pickle=True on an untrusted file


@pytest.mark.parametrize('layout', ['pickle_file', 'object_array'])
def test_pickles_are_never_loaded(tmp_path, layout):
  tripwire = tmp_path / 'unpickled'
  path = tmp_path / 'mnist.npz'
  if layout == 'pickle_file':  # a bare pickle named .npz
    path.write_bytes(pickle.dumps(_Tripwire(tripwire)))
  else:  # a real .npz whose x_train is an object array (pickled inside)
    np.savez(path, x_train=np.array([_Tripwire(tripwire)], dtype=object), y_train=np.zeros(1, int))
  with pytest.raises(data.DataUnavailableError, match=str(path)) as error:
    data.load('mnist', 'train', str(tmp_path))
  assert not tripwire.exists()
  assert '\n' not in str(error.value) and 'allow_pickle' not in str(error.value)


# Prints what a user's program would print: the error's one line on stderr; stdout says whether tfds was imported.
_LOAD_SCRIPT = """
import sys
from unsupervised_jax import data
try:
  data.load('mnist', 'train', sys.argv[1])
except data.DataUnavailableError as error:
  print(error, file=sys.stderr)
print('tensorflow_datasets' in sys.modules)
"""


def _stderr_of_load(data_dir):
  env = dict(os.environ, **{data_tfds.OFFLINE_ENV: '1'})
  env.pop(data.DATA_DIR_ENV, None)
  proc = subprocess.run(
    [sys.executable, '-c', _LOAD_SCRIPT, str(data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
  )
  assert proc.returncode == 0, proc.stderr
  return proc.stderr.splitlines(), proc.stdout.strip() == 'True'


def test_nonexistent_data_dir_is_one_clean_line_before_tfds(tmp_path):
  missing = tmp_path / 'nonexistent'
  lines, imported_tfds = _stderr_of_load(missing)
  assert len(lines) == 1, lines  # no tensorflow-datasets warning before it
  assert f'data directory {missing} does not exist' in lines[0]
  assert not imported_tfds


def test_empty_data_dir_offline_is_one_line_without_tfds_warnings(tmp_path):
  lines, imported_tfds = _stderr_of_load(tmp_path)
  assert imported_tfds  # tfds was asked whether mnist is prepared there...
  assert len(lines) == 1, lines  # ...and its "Variant folder ... has no dataset_info.json" is not shown
  assert lines[0].startswith('mnist is not available offline') and str(tmp_path) in lines[0]


def test_network_probe_is_bounded_even_when_the_connect_hangs(monkeypatch):
  monkeypatch.delenv(data_tfds.OFFLINE_ENV, raising=False)

  def hung_connect(*args, **kwargs):  # a DNS look-up that hangs, then gives up
    time.sleep(3)
    raise OSError('timed out')

  monkeypatch.setattr(data_tfds.socket, 'create_connection', hung_connect)
  start = time.perf_counter()
  assert data_tfds.network_available(timeout_s=0.5) is False
  assert time.perf_counter() - start < 2


def test_tfds_path_with_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(data_tfds, 'network_available', lambda *a, **k: True)
  with tfds.testing.mock_data(num_examples=6):
    cifar = data.load('cifar100_20', 'train', str(tmp_path))
    assert cifar.images.shape == (6, 32, 32, 3) and cifar.images.dtype == np.uint8
    assert cifar.labels.min() >= 0 and cifar.labels.max() < 20  # the coarse super-classes
    stl = data.load('stl10', 'train+unlabelled', str(tmp_path))
    assert stl.images.shape == (12, 96, 96, 3)


def test_shared_mnist(shared_mnist_dir):
  mnist = data.load('mnist', 'all', shared_mnist_dir)
  assert mnist.images.shape == (70_000, 28, 28, 1)
  assert np.bincount(mnist.labels).tolist()[:2] == [6903, 7877]
  assert os.environ.get(data.DATA_DIR_ENV)  # conftest's session setting, which entry points inherit
  np.testing.assert_array_equal(data.load('mnist', 'test').labels, mnist.labels[60_000:])


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
  np.savez(tmp_path / 'mnist.npz', x_train=np.full((2, 28, 28), 7, np.uint8), y_train=np.array([3, 4]))
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  loaded = data.load('mnist', 'train')
  assert (loaded.images == 7).all() and loaded.labels.tolist() == [3, 4]


def test_flagfiles_name_no_machine_data_dir():
  flagfiles = sorted((ROOT / 'experiments' / 'configs').glob('*.flags'))
  assert len(flagfiles) >= 5
  for path in flagfiles:  # the data directory comes from --data_dir or $UNSUPERVISED_JAX_DATA_DIR
    assert not [line for line in path.read_text().splitlines() if line.startswith('--data_dir')], path
