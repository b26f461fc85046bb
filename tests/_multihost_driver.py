"""A few data-parallel autoencoder steps on digits over two CPU devices; used by tests/test_multihost.py.

  python tests/_multihost_driver.py OUT.npz NUM_STEPS single            # one process, two devices
  python tests/_multihost_driver.py OUT.npz NUM_STEPS PROCESS_ID PORT   # one of two processes, one device each

Drives the core as ``loop.train`` does (``make_mesh``, ``replicate``, ``data_parallel_step``) and writes the
final parameters (``encoder_layers_0/kernel``, ...), the initial ones (``init/...``), ``process_count`` and
``device_count`` to OUT.npz.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

import jax  # noqa: E402
import numpy as np  # noqa: E402

out, num_steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.config.update('jax_platforms', 'cpu')
if mode == 'single':
  jax.config.update('jax_num_cpu_devices', 2)
else:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # the default in JAX 0.10; explicit for others
  jax.distributed.initialize(
    coordinator_address=f'127.0.0.1:{sys.argv[4]}', num_processes=2, process_id=int(mode), initialization_timeout=60
  )

from flax import traverse_util  # noqa: E402

from unsupervised_jax import data  # noqa: E402
from unsupervised_jax.methods import autoencoder  # noqa: E402
from unsupervised_jax.training import parallel  # noqa: E402


def flat(params, prefix=''):
  return {prefix + k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params), sep='/').items()}


images = data.load('digits', 'all').images
learner = autoencoder.autoencoder(autoencoder.AEConfig(hidden=(32,), latent_dim=4), None, None)
mesh = parallel.make_mesh()
state = parallel.replicate(learner.init(jax.random.key(0), images[:1]), mesh)
initial = flat(state.params, 'init/')
images = parallel.replicate(images, mesh)
train_step = parallel.data_parallel_step(learner.train_step, mesh, global_batch=32)
key = jax.random.key(1)
for _ in range(num_steps):
  state, metrics = train_step(state, images, key)
assert int(jax.device_get(state.step)) == num_steps and bool(metrics['finite'])
np.savez(out, process_count=jax.process_count(), device_count=jax.device_count(), **initial, **flat(state.params))
