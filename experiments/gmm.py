"""GMM (EM) on pixels or their PCA. ``python -m experiments.gmm [--flagfile=experiments/configs/gmm_mnist.flags]``."""
from experiments import common
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import pixels

common.define(run_config.RunConfig)
common.define(pixels.PixelConfig)
common.define(pixels.GMMOptions)


def main(argv):
  del argv
  pixels.run('gmm', common.build(run_config.RunConfig), common.build(pixels.PixelConfig),
             common.build(pixels.GMMOptions))


if __name__ == '__main__':
  common.run(main)
