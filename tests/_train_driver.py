"""Trains the autoencoder on digits with the core loop; used by tests in subprocesses.

python tests/_train_driver.py WORKDIR NUM_STEPS [NUM_DEVICES] [BATCH] [SAMPLING]
"""

import sys

import jax

num_devices = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if num_devices > 1:
  jax.config.update('jax_num_cpu_devices', num_devices)

from unsupervised_jax import data  # noqa: E402
from unsupervised_jax.methods import autoencoder  # noqa: E402
from unsupervised_jax.training import loop  # noqa: E402

images = data.load('digits', 'all').images
learner = autoencoder.autoencoder(autoencoder.AEConfig(hidden=(32,), latent_dim=4, noise_std=0.1), None, None)
config = loop.TrainConfig(
  num_steps=int(sys.argv[2]),
  batch_size=int(sys.argv[4]) if len(sys.argv) > 4 else 32,
  log_every=5,
  checkpoint_every=10,
  num_devices=num_devices,
  progress=False,
  sampling=sys.argv[5] if len(sys.argv) > 5 else 'replacement',
)
loop.train(learner, learner.init(jax.random.key(0), images[:1]), images, config, sys.argv[1], key=jax.random.key(0))
