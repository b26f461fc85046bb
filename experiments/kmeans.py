"""K-means on pixels. ``python -m experiments.kmeans [--flagfile=experiments/configs/kmeans_mnist.flags]``."""
from experiments import common
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import pixels

common.define(run_config.RunConfig)
common.define(pixels.PixelConfig)
common.define(pixels.KMeansOptions)


def main(argv):
  del argv
  pixels.run('kmeans', common.build(run_config.RunConfig), common.build(pixels.PixelConfig),
             common.build(pixels.KMeansOptions))


if __name__ == '__main__':
  common.run(main)
