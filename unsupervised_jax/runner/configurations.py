"""The rows of the results tables and of the reproduction: each registered method's configurations.

One :class:`Configuration` a row: the README's results table (:func:`unsupervised_jax.runner.tables.summary_table`)
shows each one's headline record (its ``full`` budget's) with the reference it is compared with, and
``python -m experiments.reproduce`` (:mod:`unsupervised_jax.runner.reproduce`) runs each one's flagfile under a
budget. Every row names a method of the registry (:mod:`unsupervised_jax.registry`), the one list of methods.
"""

from __future__ import annotations

from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Tuple

from unsupervised_jax import registry

BUDGETS = ('quick', 'full', 'tiny')


class Configuration(NamedTuple):
  """One row of the results tables and the reproduction: a registered method's flagfile, what each budget adds
  to it, and what the README shows beside its headline record (the ``full`` budget's)."""

  name: str  # --methods name
  method: str  # its registered method (python -m experiments.<method>); --methods=<method> selects all its rows
  label: str  # its row in the tables
  flagfile: str  # under experiments/configs/
  workdir: str  # its folder under the reproduction's workdir
  budgets: Mapping[str, Tuple[str, Tuple[str, ...]]]  # budget -> (record name, flags added to the flagfile)
  reference: Optional[Tuple[float, str]] = None  # published MNIST clustering accuracy (fraction), its source
  protocol: Optional[str] = None  # our protocol in a few words (every record: MNIST's 70,000 images)
  # (record, protocol in words) the README shows while the headline record does not exist (a shorter run); a row
  # without one must have its headline record.
  interim: Optional[Tuple[str, str]] = None


_DIGITS = ('--dataset=digits',)
# The test's runs of the learned methods (budget 'tiny'): a pipeline check, not a result.
_TINY_TRAIN = ('--num_steps=20', '--log_every=10', '--checkpoint_every=20', '--nofigures')
# SCAE's canvas for 8x8 images: the first 3x3 convolution at stride 1 so that the encoder keeps a 6x6 map.
_SMALL_CANVAS = ('--canvas_size=16', '--template_size=5', '--max_shift=2', '--encoder_strides=1,2')

CONFIGURATIONS = (
  Configuration(
    'kmeans',
    'kmeans',
    'K-means',
    'kmeans_mnist.flags',
    'kmeans',
    {
      'full': ('kmeans_mnist', ()),
      'quick': ('kmeans_mnist_quick', ()),  # the flagfile as it is: ~40 s for 3 seeds
      'tiny': ('kmeans_digits_tiny', _DIGITS),
    },
    (0.752, 'poster'),
    'raw pixels; k-means++, 10 restarts',
  ),
  Configuration(
    'gmm',
    'gmm',
    'GMM',
    'gmm_mnist.flags',
    'gmm',
    {
      'full': ('gmm_mnist', ()),
      'quick': ('gmm_mnist_quick', ()),
      'tiny': ('gmm_digits_tiny', _DIGITS + ('--pca_dim=20',)),
    },
    (0.808, 'poster'),
    'PCA-50 pixels; full covariances',
  ),
  Configuration(
    'ae_poster',
    'autoencoder',
    'AE + GMM',
    'ae_mnist_poster.flags',
    'ae_poster',
    {
      'full': ('autoencoder_mnist_poster', ()),
      'quick': ('ae_poster_mnist_quick', ('--num_steps=1000', '--checkpoint_every=500')),
      'tiny': ('ae_poster_digits_tiny', _DIGITS + _TINY_TRAIN),
    },
    (0.912, 'poster'),
    "the poster's MLP 784-128-12; GMM (10 restarts) on the codes",
  ),
  Configuration(
    'ae_n2d',
    'autoencoder',
    'AE + UMAP + GMM (N2D)',
    'ae_mnist.flags',
    'ae_n2d',
    {
      'full': ('autoencoder_mnist', ()),
      'quick': ('ae_n2d_digits_quick', _DIGITS + ('--num_steps=1000', '--checkpoint_every=500')),
      'tiny': ('ae_n2d_digits_tiny', _DIGITS + _TINY_TRAIN),
    },
    (0.979, 'N2D paper'),
    "DEC's MLP 784-500-500-2000-10; UMAP to 10-d; GMM",
  ),
  Configuration(
    'moco',
    'moco',
    'MoCo',
    'moco_mnist.flags',
    'moco',
    {
      'full': ('moco_mnist', ()),
      'quick': ('moco_digits_quick', _DIGITS + ('--num_steps=500', '--checkpoint_every=250')),
      'tiny': ('moco_digits_tiny', _DIGITS + _TINY_TRAIN + ('--queue_size=256',)),
    },
    (0.969, 'poster'),
    "the poster's ConvNet, 5,000 steps; UMAP; K-means",
  ),
  Configuration(
    'moco_selflabel',
    'moco',
    'MoCo + self-labelling',
    'moco_selflabel_mnist.flags',
    'moco',
    {
      'full': ('moco_selflabel_mnist', ()),
      'quick': (
        'moco_selflabel_digits_quick',
        _DIGITS + ('--num_steps=500', '--checkpoint_every=250', '--self_label_steps=300'),
      ),
      'tiny': ('moco_selflabel_digits_tiny', _DIGITS + _TINY_TRAIN + ('--queue_size=256', '--self_label_steps=10')),
    },
    (0.969, "poster's MoCo"),
    'MoCo as above; 3,000 steps on the 70% most confident',
  ),
  Configuration(
    'infogan',
    'infogan',
    'InfoGAN',
    'infogan_mnist.flags',
    'infogan',
    {
      'full': ('infogan_mnist', ()),
      'quick': ('infogan_digits_quick', _DIGITS + ('--num_steps=300', '--checkpoint_every=150')),
      'tiny': ('infogan_digits_tiny', _DIGITS + _TINY_TRAIN),
    },
    (0.920, 'poster'),
    "5,000 steps; argmax of Q's category (scored on an affine view in training)",
  ),
  Configuration(
    'scae',
    'scae',
    'capsules (SCAE)',
    'scae_mnist.flags',
    'scae',
    {
      'full': ('scae_mnist', ()),
      # The model of the flagfiles (40 parts, 32 objects) on a 16x16 canvas for the 8x8 digits, with the CPU
      # flagfile's batch and learning rate.
      'quick': (
        'scae_digits_quick',
        _DIGITS
        + _SMALL_CANVAS
        + ('--batch_size=32', '--learning_rate=1e-4', '--num_steps=150', '--checkpoint_every=75', '--log_every=50'),
      ),
      'tiny': ('scae_digits_tiny', _DIGITS + _SMALL_CANVAS + _TINY_TRAIN),
    },
    (0.985, 'poster'),
    interim=(
      'scae_mnist_cpu_20000steps',
      'interim: CPU flagfile, 20,000 of the official 300k steps; K-means on the prior presences, train -> test',
    ),
  ),
  Configuration(
    'mice',
    'mice',
    'MiCE',
    'mice_mnist.flags',
    'mice',
    {
      'full': ('mice_mnist', ()),
      # A queue of 1,024 keys per expert (the flagfile's 16,384 is 9x the digits, and its products with the
      # 10 experts' embeddings made each step ~1.8 s here).
      'quick': ('mice_digits_quick', _DIGITS + ('--num_steps=150', '--checkpoint_every=75', '--queue_size=1024')),
      'tiny': ('mice_digits_tiny', _DIGITS + _TINY_TRAIN + ('--queue_size=256',)),
    },
    interim=(
      'mice_mnist_cpu_30epochs',
      'interim: CPU flagfile, 30 of 100 epochs, the official epoch; argmax of the posterior',
    ),
  ),
)
NAMES = tuple(c.name for c in CONFIGURATIONS)
for _configuration in CONFIGURATIONS:
  registry.get(_configuration.method)  # every row's method is registered (ValueError otherwise)
