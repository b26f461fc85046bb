"""Stacked Capsule Autoencoder. ``python -m experiments.scae --flagfile=experiments/configs/scae_mnist.flags``."""

from experiments import common
from experiments import train_flags

main = train_flags.main_of('scae')

if __name__ == '__main__':
  common.run(main)
