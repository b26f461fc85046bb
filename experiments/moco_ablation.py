"""The poster's MoCo grid: queue length x key-encoder momentum, one command.

  python -m experiments.moco_ablation --flagfile=experiments/configs/moco_mnist.flags

"Queue length" is read as a number of *batches* of keys (K = L x batch size): the poster's lengths
{16, 32, 64, 128} are shorter than one batch of 256 keys if read as keys, and MoCo's own default,
65,536 keys, is 256 batches of 256. Every other flag is the MoCo entry point's. Writes
``<workdir>/ablation.{md,json}`` and one run directory per cell (cells already run are reused), and
the table to ``<results_dir>/<results_name or moco_ablation>.json``.
"""
import dataclasses
import itertools

from absl import flags

from experiments import common
from experiments import moco as moco_entry  # defines the MoCo flags
from experiments import train_flags
from unsupervised_jax.methods import moco
from unsupervised_jax.runner import ablation

flags.DEFINE_list('queue_batches', ['16', '32', '64', '128'], 'Queue lengths, in batches of keys.')
flags.DEFINE_list('momenta', ['0.9', '0.99', '0.999', '0.9999'], 'Key-encoder EMA momenta.')
FLAGS = flags.FLAGS
# The poster gives its grid's best cell; its per-cell numbers are not published with it.
POSTER = {'source': "the poster's best cell, MNIST clustering accuracy", 'acc': 0.969}


def main(argv):
  del argv
  base = train_flags.experiment('moco', common.build(moco.MoCoConfig))
  try:
    grid = list(itertools.product([int(q) for q in FLAGS.queue_batches], [float(m) for m in FLAGS.momenta]))
  except ValueError:
    raise ValueError(f'--queue_batches must be integers and --momenta numbers, got {FLAGS.queue_batches} and '
                     f'{FLAGS.momenta}.') from None
  out_dir = base.run.workdir or 'runs/moco_ablation'
  cells = []
  for length, momentum in grid:
    method_config = dataclasses.replace(base.method_config, queue_size=length * base.train.batch_size,
                                        momentum=momentum)
    experiment = ablation.cell(base, method_config, out_dir, f'queue{length}_momentum{momentum}')
    method = moco.moco(method_config, base.train)  # every cell validated before anything runs
    cells.append(({'queue_batches': length, 'queue_keys': method_config.queue_size, 'momentum': momentum},
                  experiment, method))
  ablation.run(cells, out_dir, 'MoCo queue length x momentum', reference=POSTER,
               results_path=ablation.results_path(base, 'moco_ablation'))


if __name__ == '__main__':
  del moco_entry
  common.run(main)
