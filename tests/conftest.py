import os
import pathlib

import pytest

from unsupervised_jax import data

SHARED_MNIST = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist.npz'


@pytest.fixture(scope='session', autouse=True)
def shared_data_dir_env():
  """Where ``../shared/data`` exists (CI, the project machines), ``$UNSUPERVISED_JAX_DATA_DIR`` points at it
  for the session (subprocesses inherit it) unless already set; elsewhere tensorflow-datasets supplies MNIST."""
  with pytest.MonkeyPatch.context() as patch:
    if SHARED_MNIST.parent.is_dir() and not os.environ.get(data.DATA_DIR_ENV):
      patch.setenv(data.DATA_DIR_ENV, str(SHARED_MNIST.parent))
    yield os.environ.get(data.DATA_DIR_ENV)


@pytest.fixture
def shared_mnist_dir():
  """Directory of the shared real MNIST (keras mnist.npz); skips where it is absent (a user's clone)."""
  if not SHARED_MNIST.is_file():
    pytest.skip(f'real MNIST not found at {SHARED_MNIST} (only CI and the project machines have ../shared)')
  return str(SHARED_MNIST.parent)
