"""The poster's MoCo grid: queue length x key-encoder momentum, one command.

  python -m experiments.moco_ablation --flagfile=experiments/configs/moco_mnist.flags

"Queue length" is read as a number of *batches* of keys (K = L x batch size): the poster's lengths
{16, 32, 64, 128} are shorter than one batch of 256 keys if read as keys, and MoCo's own default,
65,536 keys, is 256 batches of 256. Every other flag is the MoCo entry point's. Writes
``<workdir>/ablation.{md,json}`` and one run directory per cell (cells already run are reused), and
the table to ``<results_dir>/<results_name or moco_ablation>.json``.
"""

import itertools

from absl import flags

from experiments import common
from experiments import train_flags
from unsupervised_jax.runner import ablation

train_flags.define('moco')
flags.DEFINE_list('queue_batches', ['16', '32', '64', '128'], 'Queue lengths, in batches of keys.')
flags.DEFINE_list('momenta', ['0.9', '0.99', '0.999', '0.9999'], 'Key-encoder EMA momenta.')
FLAGS = flags.FLAGS
POSTER = {'source': "the poster's best cell, MNIST clustering accuracy", 'acc': 0.969}


def main(argv):
  del argv
  base = train_flags.experiment('moco')
  try:
    grid = list(itertools.product([int(q) for q in FLAGS.queue_batches], [float(m) for m in FLAGS.momenta]))
  except ValueError:
    raise ValueError(
      f'--queue_batches must be integers and --momenta numbers, got {FLAGS.queue_batches} and {FLAGS.momenta}.'
    ) from None
  keys = lambda length: length * base.train.batch_size
  cells = [
    (
      f'queue{length}_momentum{momentum}',
      {'queue_batches': length, 'queue_keys': keys(length), 'momentum': momentum},
      {'queue_size': keys(length), 'momentum': momentum},
    )
    for length, momentum in grid
  ]
  ablation.grid(base, cells, 'MoCo queue length x momentum', 'moco_ablation', reference=POSTER)


if __name__ == '__main__':
  common.run(main)
