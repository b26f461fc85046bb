"""Every method's configuration, 3 seeds each, resumable, and the table of their records.

  python -m experiments.reproduce --budget=quick    # ~20 min on a 2-core CPU -> results/quick/table.md
  python -m experiments.reproduce --budget=full     # the flagfiles as they are -> results/table.md

Runs each configuration as its entry point's own command (``--dry_run`` prints them); a configuration whose
record of the same settings and seeds exists is reused. See :mod:`unsupervised_jax.runner.reproduce`.
"""

import pathlib
import signal
import sys

from experiments import common
from unsupervised_jax.runner import reproduce

common.define(reproduce.ReproduceConfig)


def main(argv):
  del argv
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the running configuration's command too
  reproduce.run(common.build(reproduce.ReproduceConfig), pathlib.Path(__file__).resolve().parents[1])


if __name__ == '__main__':
  common.run(main)
