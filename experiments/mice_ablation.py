"""MiCE's ablations in one command, beside the full method:

  python -m experiments.mice_ablation --flagfile=experiments/configs/mice_mnist.flags

(a) ``no_analytic_mu``: no once-per-epoch analytic update of mu (``--prototype_update=none``);
(b) ``no_mu_gradient``: mu updated only analytically, no SGD on it (``--noprototype_gradient``);
(c) ``uniform_omega``: gating prototypes random (uniform in a cube, normalised) instead of the simplex;
(d) ``learned_omega``: gating prototypes learned by gradient (from the simplex).

Every other flag is the MiCE entry point's; ``--ablations`` picks cells. Writes
``<workdir>/ablation.{md,json}`` and one run directory per cell (cells already run are reused), and the
table to ``<results_dir>/<results_name or mice_ablation>.json``. Every cell is validated before any runs.
"""
import dataclasses

from absl import flags

from experiments import common
from experiments import mice as mice_entry  # defines the MiCE flags; its training-set size
from experiments import train_flags
from unsupervised_jax.methods import mice
from unsupervised_jax.runner import ablation

CELLS = {
    'full': {},
    'no_analytic_mu': {'prototype_update': 'none'},
    'no_mu_gradient': {'prototype_gradient': False},
    'uniform_omega': {'gating_init': 'uniform'},
    'learned_omega': {'learn_gating': True},
}
flags.DEFINE_list('ablations', list(CELLS), f'Cells to run, of: {", ".join(CELLS)}.')
FLAGS = flags.FLAGS
PAPER = {'source': 'MiCE (ICLR 2021), CIFAR-10 ACC of the full method', 'acc': 0.834}


def main(argv):
  del argv
  base = train_flags.experiment('mice', common.build(mice.MiceConfig))
  unknown = [name for name in FLAGS.ablations if name not in CELLS]
  if unknown or not FLAGS.ablations:
    raise ValueError(f'--ablations must name cells of {", ".join(CELLS)}; got {",".join(FLAGS.ablations)}.')
  num_examples = mice_entry.num_training_images(base.run)
  out_dir = base.run.workdir or 'runs/mice_ablation'
  cells = []
  for name in FLAGS.ablations:
    method_config = dataclasses.replace(base.method_config, **CELLS[name])
    experiment = ablation.cell(base, method_config, out_dir, name)
    method = mice.mice(method_config, base.train, num_examples)  # every cell validated before anything runs
    cells.append(({'cell': name, **{k: getattr(method_config, k) for k in
                                    ('prototype_update', 'prototype_gradient', 'gating_init', 'learn_gating')}},
                  experiment, method))
  ablation.run(cells, out_dir, 'MiCE ablations', reference=PAPER,
               results_path=ablation.results_path(base, 'mice_ablation'))


if __name__ == '__main__':
  common.run(main)
