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
  parser.add_argument(
    '--data_dir',
    default=None,
    help='directory holding mnist.npz; default $UNSUPERVISED_JAX_DATA_DIR, else tensorflow-datasets',
  )
  parser.add_argument('--results_dir', default=str(ROOT / 'results'))
  parser.add_argument('--batch_size', type=int, default=batch_size)
  parser.add_argument('--steps', type=int, default=steps, help='timed steps per round')


def rate(fn, batch: int, steps: int) -> float:
  """Images per second of ``steps`` calls of ``fn`` (returning arrays) on batches of ``batch``."""
  import jax

  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return batch * steps / (time.perf_counter() - start)


def step_timer(learner, images, batch: int):
  """Compiles ``learner``'s data-parallel train step on one device and runs it once; returns
  ``(timer(steps) -> images/s, compile seconds)``. The batch is drawn and augmented on device."""
  import jax

  from unsupervised_jax.training import parallel

  mesh = parallel.make_mesh(1)
  state = parallel.replicate(learner.init(jax.random.key(0), images[:1]), mesh)
  dataset = parallel.replicate(images, mesh)
  key = jax.random.key(0)
  start = time.perf_counter()
  step = parallel.data_parallel_step(learner.train_step, mesh, batch).lower(state, dataset, key).compile()
  compile_s = time.perf_counter() - start

  def run():
    nonlocal state
    state, metrics = step(state, dataset, key)
    return metrics

  run()
  return (lambda steps: rate(run, batch, steps)), compile_s
