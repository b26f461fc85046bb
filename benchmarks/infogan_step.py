"""Images/s of the InfoGAN train step: this library vs a PyTorch implementation of the same step, one process.

  pip install torch==2.13.0   # benchmark-only dependency (CPU build)
  python benchmarks/infogan_step.py [--batch_size=128] [--steps=5] [--rounds=3]

Same networks (the official MNIST G, and D/Q on one trunk, with BatchNorm; unsupervised_jax.models.infogan),
batch, latents (62 noise, 10-way categorical, 2 continuous), losses (GAN + mutual information, weights 1 and
1) and optimizers (Adam beta1 0.5, D/Q 2e-4, G 1e-3); a step is one D/Q update, then one G update on fresh
latents. Ours is the jitted data-parallel step of the training core (one device), which also draws the
real batch and the latents on device; PyTorch draws its latents in the step and gets a fixed real batch.
Both use the same number of threads. Ours runs with the library's default convolutions (on CPU: the
matrix-product strided and transposed 4x4 convolutions) and, for comparison, with XLA's native ones. The
host's timings drift, so ours and PyTorch are timed in alternating rounds and each side's median is kept.
Writes ``results/infogan_step.json``.
"""

import argparse
import os
import pathlib

import _timing  # noqa: I001 (benchmarks/, run as a script)
import jax
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import results
from unsupervised_jax.methods import infogan
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel


def ours(images, batch, conv_implementation='auto'):
  """Compiles and warms up our step; returns ``timer(steps) -> images/s``."""
  method = infogan.infogan(
    infogan.InfoGANConfig(conv_implementation=conv_implementation),
    loop.TrainConfig(batch_size=batch),
    contract.DataInfo.of(images),
  )
  mesh = parallel.make_mesh(1)
  state = parallel.replicate(method.init(jax.random.key(0), images[:1]), mesh)
  dataset = parallel.replicate(images, mesh)
  key = jax.random.key(0)
  step = parallel.data_parallel_step(method.train_step, mesh, batch)

  def run_step():
    nonlocal state
    state, _ = step(state, dataset, key)

  for _ in range(2):  # compile, warm up
    run_step()
  jax.block_until_ready(state)
  return lambda steps: _timing.images_per_s(run_step, batch, steps, lambda: jax.block_until_ready(state))


def reference(images, batch):
  """Builds and warms up the PyTorch step; returns ``(timer(steps) -> images/s, torch version, threads)``."""
  import torch
  from torch import nn

  torch.manual_seed(0)
  noise_dim, categories, continuous = 62, 10, 2
  latent_dim = noise_dim + categories + continuous

  def init(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(module.weight, 0.0, 0.02)
      nn.init.zeros_(module.bias)

  generator = nn.Sequential(
    nn.Linear(latent_dim, 1024),
    nn.BatchNorm1d(1024),
    nn.ReLU(),
    nn.Linear(1024, 7 * 7 * 128),
    nn.BatchNorm1d(7 * 7 * 128),
    nn.ReLU(),
    nn.Unflatten(1, (128, 7, 7)),
    nn.ConvTranspose2d(128, 64, 4, 2, 1),
    nn.BatchNorm2d(64),
    nn.ReLU(),
    nn.ConvTranspose2d(64, 1, 4, 2, 1),
    nn.Sigmoid(),
  )
  trunk = nn.Sequential(
    nn.Conv2d(1, 64, 4, 2, 1),
    nn.LeakyReLU(0.01),
    nn.Conv2d(64, 128, 4, 2, 1),
    nn.BatchNorm2d(128),
    nn.LeakyReLU(0.01),
    nn.Flatten(),
    nn.Linear(7 * 7 * 128, 1024),
    nn.BatchNorm1d(1024),
    nn.LeakyReLU(0.01),
  )
  d_head = nn.Linear(1024, 1)
  q_head = nn.Sequential(
    nn.Linear(1024, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.01), nn.Linear(128, categories + continuous)
  )
  for module in (generator, trunk, d_head, q_head):
    module.apply(init)
  d_params = [*trunk.parameters(), *d_head.parameters(), *q_head.parameters()]
  d_optimizer = torch.optim.Adam(d_params, lr=2e-4, betas=(0.5, 0.999))
  g_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
  real = torch.from_numpy(images[:batch].astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
  softplus, log_softmax = nn.functional.softplus, nn.functional.log_softmax

  def latents():
    noise = torch.rand(batch, noise_dim) * 2 - 1
    category = torch.randint(0, categories, (batch,))
    codes = torch.rand(batch, continuous) * 2 - 1
    return torch.cat([noise, nn.functional.one_hot(category, categories).float(), codes], 1), category, codes

  def discriminate(x):
    h = trunk(x)
    q = q_head(h)
    return d_head(h)[:, 0], q[:, :categories], q[:, categories:]

  def information(logits, category, means, codes):
    categorical = log_softmax(logits, 1).gather(1, category[:, None]).mean() + np.log(categories)
    cont = (-0.5 * (codes - means) ** 2 - 0.5 * np.log(2 * np.pi)).sum(1).mean() + continuous * np.log(2)
    return categorical + cont

  def step():
    z, category, codes = latents()
    with torch.no_grad():
      fake = generator(z)
    real_logits, _, _ = discriminate(real)
    fake_logits, logits, means = discriminate(fake)
    d_loss = softplus(-real_logits).mean() + softplus(fake_logits).mean() - information(logits, category, means, codes)
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
    z, category, codes = latents()
    fake_logits, logits, means = discriminate(generator(z))
    g_loss = softplus(-fake_logits).mean() - information(logits, category, means, codes)
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()

  for _ in range(2):
    step()
  return (
    lambda steps: _timing.images_per_s(step, batch, steps, lambda: None),
    torch.__version__,
    torch.get_num_threads(),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _timing.add_common_arguments(parser, batch_size=128, steps=5)
  parser.add_argument('--rounds', type=int, default=3, help='alternating rounds of ours and PyTorch; medians kept')
  args = parser.parse_args()
  if args.rounds < 1 or args.steps < 1:
    parser.error(f'--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}.')
  results.git_commit()
  images = data.load('mnist', 'train', args.data_dir).images
  xla_conv_rate = ours(images, args.batch_size, 'xla')(args.steps)
  ours_timer = ours(images, args.batch_size)
  ref_timer, torch_version, threads = reference(images, args.batch_size)
  ours_rounds, ref_rounds = [], []
  for _ in range(args.rounds):  # alternate, so that a slow spell of the host hits both sides
    ours_rounds.append(ours_timer(args.steps))
    ref_rounds.append(ref_timer(args.steps))
  ours_rate, ref_rate = float(np.median(ours_rounds)), float(np.median(ref_rounds))
  record = results.benchmark_record(
    'infogan_step',
    ours={
      'images_per_s': ours_rate,
      'images_per_s_rounds': ours_rounds,
      'implementation': 'unsupervised_jax.methods.infogan step (jit, incl. on-device batch and latent '
      f'sampling; convolutions: {jax.default_backend()} default)',
      'images_per_s_with_xla_conv': xla_conv_rate,
    },
    reference={
      'images_per_s': ref_rate,
      'images_per_s_rounds': ref_rounds,
      'implementation': f'PyTorch {torch_version}, {threads} threads, real batch given',
    },
    throughput_key='images_per_s',
  ) | {
    'setup': f'MNIST 28x28, batch {args.batch_size}, one D/Q + one G update per step, {args.rounds} '
    f'alternating rounds of {args.steps} timed steps after 2 warm-up (medians), '
    f'cpu_count {os.cpu_count()}, load average at the end {os.getloadavg()[0]:.1f}'
  }
  path = results.write_json(pathlib.Path(args.results_dir) / 'infogan_step.json', record)
  print(
    f'infogan_step: ours {ours_rate:.0f} img/s (XLA conv {xla_conv_rate:.0f}), PyTorch {ref_rate:.0f} img/s, '
    f'speedup {record["speedup"]:.2f}x -> {path}'
  )


if __name__ == '__main__':
  main()
