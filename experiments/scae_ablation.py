"""The poster's capsule ablation of the SCAE: part x object capsule counts, one command.

  python -m experiments.scae_ablation --flagfile=experiments/configs/scae_mnist.flags

Cells ``--capsules`` as ``parts:objects`` (default the poster's 30:16, 40:32 and 60:40); every other flag is
the SCAE entry point's. The poster's MNIST linear-probe accuracy of each cell stands beside it in the table
(``poster_linear_acc``). Writes ``<workdir>/ablation.{md,json}`` and one run directory per cell (cells
already run are reused), and the table to ``<results_dir>/<results_name or scae_ablation>.json``. Every cell
is validated before any runs.
"""

from absl import flags

from experiments import common
from experiments import train_flags
from unsupervised_jax.runner import ablation

train_flags.define('scae')

# The poster's capsule ablation: (part, object) capsules -> MNIST linear-probe accuracy.
POSTER_LINEAR_ACC = {(30, 16): 0.9847, (40, 32): 0.9906, (60, 40): 0.9674}
flags.DEFINE_list('capsules', [f'{p}:{o}' for p, o in POSTER_LINEAR_ACC], 'Cells as parts:objects capsule counts.')
FLAGS = flags.FLAGS
PAPER = {
  'source': 'the paper (NeurIPS 2019), MNIST unsupervised ACC of 40 part and 32 object capsules; the '
  "poster's linear probe of each cell is its poster_linear_acc",
  'acc': 0.987,
}


def parse_cells(values):
  """``['30:16', ...]`` -> ``[(30, 16), ...]``; raises ValueError (one line) on anything else."""
  try:
    cells = [tuple(int(n) for n in value.split(':')) for value in values]
  except ValueError:
    cells = []
  if not cells or any(len(cell) != 2 for cell in cells):
    raise ValueError(f'--capsules must be parts:objects pairs of integers, got {",".join(values)}.')
  return cells


def main(argv):
  del argv
  base = train_flags.experiment('scae')
  cells = [
    (
      f'parts{parts}_objects{objects}',
      {
        'part_capsules': parts,
        'object_capsules': objects,
        'poster_linear_acc': POSTER_LINEAR_ACC.get((parts, objects), ''),
      },
      {'n_part_caps': parts, 'n_obj_caps': objects},
    )
    for parts, objects in parse_cells(FLAGS.capsules)
  ]
  ablation.grid(base, cells, 'SCAE part x object capsules', 'scae_ablation', reference=PAPER)


if __name__ == '__main__':
  common.run(main)
