"""K-means on pixels. ``python -m experiments.kmeans [--flagfile=experiments/configs/kmeans_mnist.flags]``."""

from experiments import common

main = common.pixels_main('kmeans')

if __name__ == '__main__':
  common.run(main)
