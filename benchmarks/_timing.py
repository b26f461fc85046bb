"""What the benchmarks share: images/s of a step, and their common command-line arguments."""
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def images_per_s(run_step, batch: int, steps: int, sync) -> float:
  """Images per second of ``steps`` calls of ``run_step`` on batches of ``batch``, ``sync()`` waiting at the end."""
  start = time.perf_counter()
  for _ in range(steps):
    run_step()
  sync()
  return batch * steps / (time.perf_counter() - start)


def add_common_arguments(parser, *, batch_size: int, steps: int):
  """``--data_dir`` (default: ``$UNSUPERVISED_JAX_DATA_DIR``, else tensorflow-datasets), ``--results_dir``,
  ``--batch_size``, ``--steps`` (timed steps per round)."""
  parser.add_argument('--data_dir', default=None,
                      help='directory holding mnist.npz; default $UNSUPERVISED_JAX_DATA_DIR, else tensorflow-datasets')
  parser.add_argument('--results_dir', default=str(ROOT / 'results'))
  parser.add_argument('--batch_size', type=int, default=batch_size)
  parser.add_argument('--steps', type=int, default=steps, help='timed steps per round')
