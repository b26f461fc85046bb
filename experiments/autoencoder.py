"""Autoencoder + GMM on its codes.

python -m experiments.autoencoder --flagfile=experiments/configs/ae_mnist.flags
"""

from experiments import common
from experiments import train_flags

main = train_flags.main_of('autoencoder')

if __name__ == '__main__':
  common.run(main)
