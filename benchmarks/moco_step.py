"""Images/s of the MoCo train step: this library vs a PyTorch implementation of the same step, one process.

  pip install torch==2.13.0   # benchmark-only dependency (CPU build)
  python benchmarks/moco_step.py [--batch_size=256] [--queue_size=4096] [--steps=20] [--rounds=3]

Same model (the poster's small ConvNet: conv3x3-32, conv3x3-64, max-pool, FC-128, FC-128; no BN), batch,
queue, temperature, Adam and EMA. Ours is the jitted step of the training core: it also draws the batch
and both augmented views on device. PyTorch gets its two views ready-made (its augmentation is not
timed), so the comparison leans towards PyTorch. Both use the same number of threads. Ours runs with
the library's default convolution (on CPU: ``models.conv``'s matrix products) and, for comparison, with
XLA's native convolution. This 2-core VM's timings drift between runs (PyTorch measured 335-382 img/s
on the same code), so ours and PyTorch are timed in alternating rounds and each side's median is kept.
It also records what bounds the step here (``bound``): the step's FLOPs by XLA's cost analysis, the rate of
a large dense product on this host, and the time of the four products the 32->64 layer needs per step.
Writes ``results/moco_step.json``.
"""

import argparse
import os
import pathlib
import time

import _timing  # noqa: I001 (benchmarks/, run as a script)
import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import results
from unsupervised_jax.methods import moco
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel


def ours(images, batch, queue_size, conv_implementation='auto'):
  """Compiles and warms up our step; returns ``(timer(steps) -> images/s, FLOPs of one step)``.

  The FLOPs are XLA's cost analysis of the compiled step: the model's arithmetic with XLA's convolution;
  the library's CPU convolution runs its products in a loop, which the analysis counts once.
  """
  config = moco.MoCoConfig(queue_size=queue_size, conv_implementation=conv_implementation)
  learner = moco.moco(config, loop.TrainConfig(batch_size=batch), contract.DataInfo.of(images))
  mesh = parallel.make_mesh(1)
  state = parallel.replicate(learner.init(jax.random.key(0), images[:1]), mesh)
  dataset = parallel.replicate(images, mesh)
  key = jax.random.key(0)
  step = parallel.data_parallel_step(learner.train_step, mesh, batch).lower(state, dataset, key).compile()
  cost = step.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost

  def run_step():
    nonlocal state
    state, _ = step(state, dataset, key)

  for _ in range(3):  # warm up
    run_step()
  jax.block_until_ready(state)
  timer = lambda steps: _timing.images_per_s(run_step, batch, steps, lambda: jax.block_until_ready(state))
  return timer, float(cost['flops'])


def _best_seconds(fn, *args, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def products(batch):
  """Compiles plain XLA matrix products; returns ``timer() -> (dense GFLOP/s, layer seconds)``.

  Dense: a 2,048^3 float32 product, the best rate XLA reaches on this host. Layer: the four products of
  the 32->64 3x3 layer that every step needs (query and key forward ``[B*784, 288] @ [288, 64]``, weight
  gradient ``[288, B*784] @ [B*784, 64]``, input gradient ``[B*784, 64] @ [64, 288]``), each timed as a
  single dot, the shape's best case, with no patches to build.
  """
  rng = np.random.default_rng(0)
  rows = batch * 28 * 28
  square = jax.device_put(rng.standard_normal((2048, 2048), np.float32))
  patches = jax.device_put(rng.standard_normal((rows, 288), np.float32))
  kernel = jax.device_put(rng.standard_normal((288, 64), np.float32))
  grads = jax.device_put(rng.standard_normal((rows, 64), np.float32))
  dense = jax.jit(lambda a: a @ a)
  forward, weight_grad, input_grad = (
    jax.jit(lambda p, w: p @ w),
    jax.jit(lambda p, g: p.T @ g),
    jax.jit(lambda g, w: g @ w.T),
  )
  jax.block_until_ready(
    (dense(square), forward(patches, kernel), weight_grad(patches, grads), input_grad(grads, kernel))
  )  # compile

  def timer(repeats=3):
    dense_gflops = 2 * 2048**3 / _best_seconds(dense, square, repeats=repeats) / 1e9
    layer_s = (
      2 * _best_seconds(forward, patches, kernel, repeats=repeats)
      + _best_seconds(weight_grad, patches, grads, repeats=repeats)
      + _best_seconds(input_grad, grads, kernel, repeats=repeats)
    )
    return dense_gflops, layer_s

  return timer


def reference(images, batch, queue_size):
  """Builds and warms up the PyTorch step; returns ``(timer(steps) -> images/s, torch version, threads)``."""
  import torch
  from torch import nn

  torch.manual_seed(0)

  def encoder():
    return nn.Sequential(
      nn.Conv2d(1, 32, 3, padding=1),
      nn.ReLU(),
      nn.Conv2d(32, 64, 3, padding=1),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Flatten(),
      nn.Linear(64 * 14 * 14, 128),
      nn.ReLU(),
      nn.Linear(128, 128),
    )

  query_encoder, key_encoder = encoder(), encoder()
  key_encoder.load_state_dict(query_encoder.state_dict())
  for p in key_encoder.parameters():
    p.requires_grad = False
  optimizer = torch.optim.Adam(query_encoder.parameters(), lr=1e-3)
  queue = nn.functional.normalize(torch.randn(queue_size, 128), dim=1)
  ptr = 0
  x = torch.from_numpy(images[:batch].astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
  views_q, views_k = x, torch.flip(x, dims=[3])

  def step():
    nonlocal queue, ptr
    with torch.no_grad():
      for pk, pq in zip(key_encoder.parameters(), query_encoder.parameters()):
        pk.mul_(0.99).add_(pq.detach(), alpha=0.01)
      k = nn.functional.normalize(key_encoder(views_k), dim=1)
    q = nn.functional.normalize(query_encoder(views_q), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.1
    loss = nn.functional.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    queue[ptr : ptr + batch] = k
    ptr = (ptr + batch) % queue_size

  for _ in range(3):
    step()
  return (
    lambda steps: _timing.images_per_s(step, batch, steps, lambda: None),
    torch.__version__,
    torch.get_num_threads(),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _timing.add_common_arguments(parser, batch_size=256, steps=20)
  parser.add_argument('--queue_size', type=int, default=4096)
  parser.add_argument(
    '--rounds', type=int, default=3, help='alternating rounds of ours, PyTorch and plain products; medians kept'
  )
  args = parser.parse_args()
  if args.rounds < 1:
    parser.error(f'--rounds must be >= 1, got {args.rounds}.')
  results.git_commit()
  images = data.load('mnist', 'train', args.data_dir).images
  xla_conv_timer, flops = ours(images, args.batch_size, args.queue_size, 'xla')
  xla_conv_rate = xla_conv_timer(args.steps)
  ours_timer, _ = ours(images, args.batch_size, args.queue_size)
  ref_timer, torch_version, threads = reference(images, args.batch_size, args.queue_size)
  products_timer = products(args.batch_size)
  ours_rounds, ref_rounds, product_rounds = [], [], []
  for _ in range(args.rounds):  # alternate, so that a slow spell of the host hits every side
    ours_rounds.append(ours_timer(args.steps))
    ref_rounds.append(ref_timer(args.steps))
    product_rounds.append(products_timer())
  ours_rate, ref_rate = float(np.median(ours_rounds)), float(np.median(ref_rounds))
  gflops = lambda rate: flops * rate / args.batch_size / 1e9
  dense_rounds = [d for d, _ in product_rounds]
  # The speedup over PyTorch if the whole step ran at the dense rate of the same round.
  ceiling_rounds = [args.batch_size * d * 1e9 / flops / r for d, r in zip(dense_rounds, ref_rounds)]
  record = results.benchmark_record(
    'moco_step',
    ours={
      'images_per_s': ours_rate,
      'images_per_s_rounds': ours_rounds,
      'implementation': 'unsupervised_jax.methods.moco step (jit, incl. on-device batch sampling and two '
      f'augmented views; convolution: {jax.default_backend()} default)',
      'images_per_s_with_xla_conv': xla_conv_rate,
      'gflop_per_s': gflops(ours_rate),
    },
    reference={
      'images_per_s': ref_rate,
      'images_per_s_rounds': ref_rounds,
      'implementation': f'PyTorch {torch_version}, {threads} threads, views given',
      'gflop_per_s': gflops(ref_rate),
    },
    throughput_key='images_per_s',
  ) | {
    'setup': f'MNIST 28x28, batch {args.batch_size}, queue {args.queue_size}, {args.rounds} alternating rounds of '
    f'{args.steps} timed steps after 3 warm-up (medians), cpu_count {os.cpu_count()}',
    # Why the speedup stops where it does: the step's arithmetic against this host's product rate.
    'bound': {
      'step_gflop': flops / 1e9,
      'dense_matmul_gflop_per_s': float(np.median(dense_rounds)),
      'dense_matmul_gflop_per_s_rounds': dense_rounds,
      'speedup_at_dense_rate': float(np.median(ceiling_rounds)),
      'speedup_at_dense_rate_rounds': ceiling_rounds,
      'layer_products_s': float(np.median([t for _, t in product_rounds])),
      'step_s_at_1.5x_reference': args.batch_size / (1.5 * ref_rate),
    },
  }
  path = results.write_json(pathlib.Path(args.results_dir) / 'moco_step.json', record)
  bound = record['bound']
  print(
    f'moco_step: ours {ours_rate:.0f} img/s (XLA conv {xla_conv_rate:.0f}), PyTorch {ref_rate:.0f} img/s, '
    f'speedup {record["speedup"]:.2f}x -> {path}\n'
    f'  {bound["step_gflop"]:.1f} GFLOP per step: ours {gflops(ours_rate):.0f} GFLOP/s, PyTorch '
    f'{gflops(ref_rate):.0f}; a 2,048^3 product runs at {bound["dense_matmul_gflop_per_s"]:.0f} GFLOP/s here '
    f'(speedup {bound["speedup_at_dense_rate"]:.2f}x if the whole step did); the 32->64 layer\'s four '
    f'products alone take {bound["layer_products_s"]:.3f} s against {bound["step_s_at_1.5x_reference"]:.3f} s '
    f'for a step at 1.5x PyTorch'
  )


if __name__ == '__main__':
  main()
