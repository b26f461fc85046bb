"""MoCo with the poster's small ConvNet.

python -m experiments.moco --flagfile=experiments/configs/moco_mnist.flags
"""

from experiments import common
from experiments import train_flags

main = train_flags.main_of('moco')

if __name__ == '__main__':
  common.run(main)
