"""Stacked Capsule Autoencoder. ``python -m experiments.scae --flagfile=experiments/configs/scae_mnist.flags``."""
from experiments import common
from experiments import train_flags
from unsupervised_jax.methods import scae
from unsupervised_jax.runner import learned

common.define(scae.SCAEConfig)


def main(argv):
  del argv
  experiment = train_flags.experiment('scae', common.build(scae.SCAEConfig))
  learned.run(experiment, scae.scae(experiment.method_config, experiment.train))


if __name__ == '__main__':
  common.run(main)
