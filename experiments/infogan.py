"""InfoGAN; its categorical code is the clustering.

python -m experiments.infogan --flagfile=experiments/configs/infogan_mnist.flags
"""

from experiments import common
from experiments import train_flags

main = train_flags.main_of('infogan')

if __name__ == '__main__':
  common.run(main)
