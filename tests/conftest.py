import pathlib

import pytest

SHARED_MNIST = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist.npz'


@pytest.fixture
def shared_mnist_dir():
  """Directory of the shared real MNIST (keras mnist.npz); skips where it is absent (a user's clone)."""
  if not SHARED_MNIST.is_file():
    pytest.skip(f'real MNIST not found at {SHARED_MNIST} (only CI and the project machines have ../shared)')
  return str(SHARED_MNIST.parent)
