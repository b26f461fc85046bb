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

from absl import flags

from experiments import common
from experiments import train_flags
from unsupervised_jax.runner import ablation

train_flags.define('mice')
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
  base = train_flags.experiment('mice')
  unknown = [name for name in FLAGS.ablations if name not in CELLS]
  if unknown or not FLAGS.ablations:
    raise ValueError(f'--ablations must name cells of {", ".join(CELLS)}; got {",".join(FLAGS.ablations)}.')
  shown = ('prototype_update', 'prototype_gradient', 'gating_init', 'learn_gating')
  cells = [
    (name, {'cell': name, **{k: CELLS[name].get(k, getattr(base.method_config, k)) for k in shown}}, CELLS[name])
    for name in FLAGS.ablations
  ]
  ablation.grid(base, cells, 'MiCE ablations', 'mice_ablation', reference=PAPER)


if __name__ == '__main__':
  common.run(main)
