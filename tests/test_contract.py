"""The method contract through the runner: epoch_end at its period on 1 and 2 devices, assign scored."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ROOT / 'tests' / '_contract_driver.py'


def _run(workdir, num_devices):
  proc = subprocess.run([sys.executable, str(DRIVER), str(workdir), str(num_devices)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_epoch_end_runs_at_its_period_on_one_and_two_devices_and_assign_is_what_is_scored(tmp_path):
  one, two = _run(tmp_path / 'one', 1), _run(tmp_path / 'two', 2)
  split = data.load('digits', 'all')
  mean = float(np.mean(split.images.astype(np.float64)))
  for out in (one, two):
    # Called after steps 3, 6 and 9 of 10, exactly: three calls, each over all 1,797 images (chunked, padded, masked).
    assert [e['step'] for e in out['epoch_ends']] == [3, 6, 9]
    assert [e['epoch_end/calls'] for e in out['epoch_ends']] == [1, 2, 3]
    assert [e['epoch_end/step'] for e in out['epoch_ends']] == [3, 6, 9]  # the state's step when called
    for e in out['epoch_ends']:
      assert e['epoch_end/mean'] == pytest.approx(mean, rel=1e-6)
    # The record scores the method's own clusters (brighter than the mean or not), not a clustering of codes.
    expected = (split.images.astype(np.float32).mean(axis=(1, 2, 3)) > np.float32(out['epoch_ends'][-1]['epoch_end/mean']))
    scores = metrics.clustering_scores(split.labels, expected.astype(np.int32))
    for name in ('acc', 'nmi', 'ari'):
      assert out['scores'][name] == pytest.approx(scores[name], abs=1e-9)
    assert 'its own clusters (K=10)' in out['protocol']
  for a, b in zip(one['epoch_ends'], two['epoch_ends']):  # 2 devices: each sums half the data, then psum
    assert a == pytest.approx(b, rel=1e-6)
  assert one['scores'] == two['scores']
