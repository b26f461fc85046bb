"""MiCE (Tsai, Li, Zhu, ICLR 2021). ``python -m experiments.mice --flagfile=experiments/configs/mice_mnist.flags``.

Flagfiles: ``mice_mnist`` (the poster's small ConvNet), ``mice_cifar10`` and ``mice_cifar100_20`` (ResNet-34,
CIFAR stem), ``mice_stl10`` and ``mice_imagenet_dog`` (ResNet-34, ImageNet stem). Every setting is checked
before data are read or files written.
"""

from experiments import common
from experiments import train_flags

main = train_flags.main_of('mice')

if __name__ == '__main__':
  common.run(main)
