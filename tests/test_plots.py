"""The library's figures: written as PNG, without touching matplotlib's backend (notebooks keep their inline one)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import sys
import matplotlib
import numpy as np
from unsupervised_jax import plots
plots.image_grid(np.random.default_rng(0).random((3, 8, 8, 1)), sys.argv[1] + '/grid.png', ncols=2,
                 titles=['a', 'b', 'c'])
plots.scatter(np.random.default_rng(1).random((20, 2)), np.arange(20) % 3, sys.argv[1] + '/scatter.png', title='t')
plots.cluster_sizes([273, 546], [[0, 5, 15], [6, 7, 7]], sys.argv[1] + '/cluster_sizes.png', title='t')
try:
  plots.cluster_sizes([273], [[0, 5, 15], [6, 7, 7]], sys.argv[1] + '/bad.png')
except ValueError as e:
  print('refused:', e)
print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)
'''


def test_figures_are_written_and_leave_the_backend_and_pyplot_alone(tmp_path):
  env = dict(os.environ, MPLBACKEND='svg')  # a notebook's would be the inline backend
  proc = subprocess.run(
    [sys.executable, '-c', SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  refused, backend = proc.stdout.splitlines()
  assert refused == 'refused: sizes must be [len(steps), K], got (2, 3) for 1 steps.'
  assert backend.split() == ['svg', 'False'] and not (tmp_path / 'bad.png').exists()
  for name in ('grid.png', 'scatter.png', 'cluster_sizes.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
