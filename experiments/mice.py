"""MiCE (Tsai, Li, Zhu, ICLR 2021). ``python -m experiments.mice --flagfile=experiments/configs/mice_mnist.flags``.

Flagfiles: ``mice_mnist`` (the poster's small ConvNet), ``mice_cifar10`` and ``mice_cifar100_20`` (ResNet-34,
CIFAR stem), ``mice_stl10`` and ``mice_imagenet_dog`` (ResNet-34, ImageNet stem). Every setting is checked
before data are read or files written.
"""
from experiments import common
from experiments import train_flags
from unsupervised_jax import data
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import mice
from unsupervised_jax.runner import learned

common.define(mice.MiceConfig)
common.FLAGS.set_default('sampling', 'epochs')  # the official loader: shuffled epochs, the last partial batch dropped


def num_training_images(run) -> int:
  """N of the images MiCE trains on (train+test under ``--protocol=all``, as the official code)."""
  splits = protocol.eval_data(data.load(run.dataset, 'train', run.data_dir), data.load(run.dataset, 'test',
                                                                                       run.data_dir), run.protocol)
  return len(splits.cluster.images)


def build():
  """The validated experiment and its method (one-line ValueError on a bad flag, before anything is written)."""
  experiment = train_flags.experiment('mice', common.build(mice.MiceConfig))
  return experiment, mice.mice(experiment.method_config, experiment.train, num_training_images(experiment.run))


def main(argv):
  del argv
  learned.run(*build())


if __name__ == '__main__':
  common.run(main)
