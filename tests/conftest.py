import atexit
import os
import pathlib
import shutil
import tempfile

# One XLA compilation cache for the session, set before JAX is imported: the entry points the tests run as
# subprocesses (and the pytest-xdist workers, which inherit the controller's environment) compile the same
# small programs again and again; from the cache a digits run of an entry point takes about half the time.
# JAX reads these variables at import; the first process to need a program compiles it.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='unsupervised_jax_tests_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
  )

# The tests' programs are small, so most of their time is XLA compiling them; its cheap CPU optimisation
# (the notebooks' test used it first) takes test_gmm.py and test_kmeans.py from 260 to 187 s on 2 cores.
# Set here so that the entry points run as subprocesses, the xdist workers and the notebooks' kernels get it.
_FAST_COMPILE = ('--xla_backend_optimization_level=0', '--xla_llvm_disable_expensive_passes=true')
_XLA_FLAGS = os.environ.get('XLA_FLAGS', '')
os.environ['XLA_FLAGS'] = ' '.join(  # a flag the user set (any value) is kept as set
  [_XLA_FLAGS, *(f for f in _FAST_COMPILE if f.split('=')[0] + '=' not in _XLA_FLAGS)]
).strip()

# scikit-learn's t-SNE and OpenBLAS spin-wait in OpenMP threads: beside the other xdist worker on 2 cores one
# t-SNE of the 1,797 digits took 31 s with 2 threads, 17 s with one.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import jax  # noqa: E402

# Two CPU devices in every test process: multi-device behaviour is tested in-process.
jax.config.update('jax_num_cpu_devices', 2)

import pytest  # noqa: E402

from unsupervised_jax import data  # noqa: E402

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


@pytest.fixture
def run_entry(capsys, monkeypatch):
  """``run_entry('experiments.moco', *flags)``: the entry point's ``main`` in this process, as its command line would
  run it (the same flag parsing and one-line errors, ``experiments.common.call``), from the clone's root; returns a
  ``CompletedProcess`` (returncode, stdout, stderr). Records name the command as ``python -m experiments.moco ...``.
  No interpreter to start: entry points are run in a subprocess only where the process itself is what is tested."""
  import importlib
  import subprocess
  import sys

  from experiments import common

  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])

  def run(module, *argv):
    entry = importlib.import_module(module)
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(sys, 'argv', [module.replace('.', '/') + '.py', *argv])
      patch.setitem(sys.modules, '__main__', entry)  # results.command(): python -m <module> ...
      capsys.readouterr()
      code = common.call(entry.main, list(argv))
      out = capsys.readouterr()
    return subprocess.CompletedProcess([module, *argv], code, out.out, out.err)

  return run
