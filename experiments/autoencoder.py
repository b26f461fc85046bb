"""Autoencoder + GMM on its codes. ``python -m experiments.autoencoder --flagfile=experiments/configs/ae_mnist.flags``."""
from experiments import common
from experiments import train_flags
from unsupervised_jax.methods import autoencoder
from unsupervised_jax.runner import learned

common.define(autoencoder.AEConfig)


def main(argv):
  del argv
  experiment = train_flags.experiment('autoencoder', common.build(autoencoder.AEConfig))
  learned.run(experiment, autoencoder.autoencoder(experiment.method_config))


if __name__ == '__main__':
  common.run(main)
