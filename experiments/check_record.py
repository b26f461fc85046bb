"""Re-runs a committed record's own command for some seeds and checks each score lands within the record's std.

  python -m experiments.check_record --record=results/autoencoder_mnist_poster.json --seeds=0

The command is the record's ``command`` with ``--seeds``, a scratch ``--workdir`` and ``--results_dir``
appended (so nothing committed is touched). For every metric and seed checked, the re-run must be
within ``max(std, --tolerance)`` of the record's own value for that seed, where ``std`` is the
record's spread over its seeds. Prints one line per metric; exits 1 when one is outside.
"""

import json
import pathlib
import shlex
import subprocess
import sys
import tempfile

from absl import flags

from experiments import common

flags.DEFINE_string('record', None, 'The record to check (a results/*.json of a method run).')
flags.DEFINE_list('seeds', None, "Seeds to re-run (default: the record's).")
flags.DEFINE_float('tolerance', 0.0, "Smallest allowed difference (the record's std is used when larger).")
flags.DEFINE_string('scratch', None, 'Where the re-run writes (default: a temporary directory, removed after).')
FLAGS = flags.FLAGS


def compare(record, rerun, seeds, tolerance: float):
  """``[(metric, seed, recorded, rerun, allowed, ok)]`` for every metric of ``record`` and seed in ``seeds``."""
  rows = []
  for name, metric in record['metrics'].items():
    if name not in rerun['metrics']:
      continue
    allowed = max(metric['std'], tolerance)
    for i, seed in enumerate(seeds):
      recorded = metric['per_seed'][record['seeds'].index(seed)]
      value = rerun['metrics'][name]['per_seed'][i]
      rows.append((name, seed, recorded, value, allowed, abs(value - recorded) <= allowed + 1e-12))
  return rows


def main(argv):
  del argv
  if not FLAGS.record:
    raise ValueError('give --record=results/<name>.json.')
  path = pathlib.Path(FLAGS.record)
  if not path.is_file():
    raise ValueError(f'{path} does not exist.')
  record = json.loads(path.read_text())
  if 'metrics' not in record or not record.get('command', '').startswith('python -m experiments.'):
    raise ValueError(f'{path} is not a method run with an entry-point command.')
  try:
    seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else list(record['seeds'])
  except ValueError:
    raise ValueError(f'--seeds must be integers, got {",".join(FLAGS.seeds)}.') from None
  missing = sorted(set(seeds) - set(record['seeds']))
  if missing:
    raise ValueError(f'{path} has no seeds {missing}; it has {record["seeds"]}.')
  with tempfile.TemporaryDirectory() as tmp:
    scratch = pathlib.Path(FLAGS.scratch or tmp)
    argv = shlex.split(record['command'])[1:]  # python -m experiments.<method> ...
    argv += [
      f'--seeds={",".join(map(str, seeds))}',
      f'--workdir={scratch / "run"}',
      f'--results_dir={scratch / "results"}',
      '--results_name=rerun',
      '--nofigures',
    ]
    print('re-running: python ' + ' '.join(argv), flush=True)
    proc = subprocess.run([sys.executable] + argv, cwd=pathlib.Path(__file__).resolve().parents[1])
    if proc.returncode:
      raise ValueError(f'the re-run failed (exit {proc.returncode}).')
    rerun = json.loads((scratch / 'results' / 'rerun.json').read_text())
  rows = compare(record, rerun, seeds, FLAGS.tolerance)
  for name, seed, recorded, value, allowed, ok in rows:
    print(
      f'{name:>18} seed {seed}: recorded {recorded:.4f}  re-run {value:.4f}  diff {value - recorded:+.4f}  '
      f'allowed ±{allowed:.4f}  {"ok" if ok else "OUTSIDE"}'
    )
  if not all(row[-1] for row in rows):
    print(f'{path}: some scores moved by more than the record\'s std.')
    sys.exit(1)
  print(f'{path}: every score within its std.')


if __name__ == '__main__':
  common.run(main)
