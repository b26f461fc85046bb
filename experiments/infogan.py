"""InfoGAN; its categorical code is the clustering. ``python -m experiments.infogan --flagfile=experiments/configs/infogan_mnist.flags``."""
from experiments import common
from experiments import train_flags
from unsupervised_jax.methods import infogan
from unsupervised_jax.runner import learned

common.define(infogan.InfoGANConfig)


def main(argv):
  del argv
  experiment = train_flags.experiment('infogan', common.build(infogan.InfoGANConfig))
  learned.run(experiment, infogan.infogan(experiment.method_config, experiment.train))


if __name__ == '__main__':
  common.run(main)
