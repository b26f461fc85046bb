"""Two processes (one CPU device each, gloo collectives) train as one process with two devices does.

The processes talk through a coordinator on 127.0.0.1, as two hosts would (docs/multihost.md). ~20-30 s on
2 cores.
"""

import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ROOT / 'tests' / '_multihost_driver.py'
STEPS = 5


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _driver(out, *args):
  return subprocess.Popen(
    [sys.executable, str(DRIVER), str(out), str(STEPS), *map(str, args)],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(proc, timeout=180):
  try:
    output, _ = proc.communicate(timeout=timeout)
  finally:
    proc.kill()  # a process left waiting for its peer must not outlive the test
  assert proc.returncode == 0, output[-3000:]


def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
  port = _free_port()
  hosts = [_driver(tmp_path / f'process_{i}.npz', i, port) for i in range(2)]
  try:
    for proc in hosts:
      _finish(proc)
  finally:
    for proc in hosts:
      proc.kill()
  single = _driver(tmp_path / 'single.npz', 'single')
  _finish(single)

  reference = np.load(tmp_path / 'single.npz')
  assert int(reference['process_count']) == 1 and int(reference['device_count']) == 2
  names = [k for k in reference.files if k.endswith(('kernel', 'bias')) and not k.startswith('init/')]
  assert len(names) == 8  # encoder and decoder: two Dense layers each
  moved = max(np.abs(reference[k] - reference[f'init/{k}']).max() for k in names)
  assert moved > 1e-3  # the steps did change the parameters
  for i in range(2):
    run = np.load(tmp_path / f'process_{i}.npz')
    assert int(run['process_count']) == 2 and int(run['device_count']) == 2
    for k in names:
      np.testing.assert_allclose(run[f'init/{k}'], reference[f'init/{k}'], atol=0, err_msg=k)
      np.testing.assert_allclose(run[k], reference[k], atol=1e-5, rtol=0, err_msg=f'process {i}: {k}')
