"""GMM (EM) on pixels or their PCA. ``python -m experiments.gmm [--flagfile=experiments/configs/gmm_mnist.flags]``."""

from experiments import common

main = common.pixels_main('gmm')

if __name__ == '__main__':
  common.run(main)
