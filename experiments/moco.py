"""MoCo with the poster's small ConvNet. ``python -m experiments.moco --flagfile=experiments/configs/moco_mnist.flags``."""
from experiments import common
from experiments import train_flags
from unsupervised_jax.methods import moco
from unsupervised_jax.runner import learned

common.define(moco.MoCoConfig)


def main(argv):
  del argv
  experiment = train_flags.experiment('moco', common.build(moco.MoCoConfig))
  learned.run(experiment, moco.moco(experiment.method_config, experiment.train))


if __name__ == '__main__':
  common.run(main)
