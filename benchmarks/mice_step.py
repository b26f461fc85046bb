"""Images/s of the jitted MiCE train step, and of its expert likelihood alone (ours vs the direct form).

  python benchmarks/mice_step.py [--backbone=convnet|resnet34_cifar] [--batch_size=256] [--queue_size=16384]
                                 [--steps=5] [--rounds=3]

Step: ``methods.mice`` on the training core (the jitted data-parallel step on one device: batch drawn on
device, three augmented views, student and teacher forward, gating and experts, E-step, SGD, EMA and the
queue), with the settings of ``experiments/configs/mice_mnist.flags`` (K = 10, D = 128) on MNIST for the
ConvNet, or the CIFAR ResNet-34 of ``mice_cifar10.flags`` on random 32x32x3 images (no CIFAR copy here;
the step's cost does not depend on the pixels). Expert likelihood: ``losses.mice_log_expert`` (one
contraction of ``f + mu`` with the queue, batched over experts, ``logaddexp``) against the direct form of
the official ``MiCE_ELBO.forward`` (separate ``v.f`` and ``v.mu`` products, concatenated into
``[B, K, nu + 1]`` logits and a log-softmax), forward and gradient w.r.t. ``f`` and ``mu``. Rounds
alternate; medians are kept. Epoch end: one update of the default (from the sums the steps kept) and of
``--prototype_pass`` (a pass over the training images), each timed once after a warm-up, and the images/s of a
whole epoch with each. Writes ``results/mice_step.json`` (``results/mice_step_<backbone>.json`` for
a backbone other than the ConvNet).
"""

import argparse
import os
import pathlib

import _timing  # noqa: I001 (benchmarks/, run as a script)
import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import losses
from unsupervised_jax import results
from unsupervised_jax.methods import mice
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop


def step_timer(images, batch, queue_size, backbone, view):
  """Compiles and warms up the MiCE step; returns ``(timer(steps) -> images/s, compile seconds)``."""
  config = mice.MiceConfig(backbone=backbone, view=view, queue_size=queue_size)
  learner = mice.mice(config, loop.TrainConfig(batch_size=batch), contract.DataInfo.of(images))
  return _timing.step_timer(learner, images, batch)


def epoch_end_seconds(images, batch, queue_size, backbone, view, prototype_pass):
  """Seconds of one epoch-end update over ``images`` (compiled and warmed up first): the official one from the sums
  the steps kept (``prototype_pass=False``, the default), or the pass over every image (``--prototype_pass``)."""
  import time

  import jax

  from unsupervised_jax.training import parallel

  config = mice.MiceConfig(backbone=backbone, view=view, queue_size=queue_size, prototype_pass=prototype_pass)
  learner = mice.mice(config, loop.TrainConfig(batch_size=batch), contract.DataInfo.of(images))
  mesh = parallel.make_mesh(1)
  update = parallel.data_parallel_epoch_end(learner.epoch_end, mesh, batch)
  dataset = parallel.replicate(images, mesh)
  fresh = lambda: parallel.replicate(learner.init(jax.random.key(0), images[:1]), mesh)
  jax.block_until_ready(update(fresh(), dataset))
  state = fresh()
  start = time.perf_counter()
  jax.block_until_ready(update(state, dataset))
  return time.perf_counter() - start


def direct_log_expert(student, teacher, prototypes, queue, tau):
  """The official ``MiCE_ELBO.forward`` written directly: ``[B, K]`` log expert likelihoods."""
  positive = jnp.sum(teacher * (student + prototypes[None]), axis=-1, keepdims=True)  # [B, K, 1]
  negative = jnp.einsum('bkd,jkd->bkj', student, queue) + jnp.einsum('kd,jkd->kj', prototypes, queue)[None]
  return jax.nn.log_softmax(jnp.concatenate([positive, negative], axis=-1) / tau, axis=-1)[..., 0]


def expert_timers(batch, queue_size, experts=10, dim=128, tau=1.0):
  """``{'ours' | 'direct': timer(steps) -> images/s}``: forward and gradient (w.r.t. f and mu) of the sum
  of the ``[B, K]`` log expert likelihoods, on random unit embeddings."""
  keys = jax.random.split(jax.random.key(0), 4)
  unit = lambda key, shape: losses.l2_normalize(jax.random.normal(key, shape))
  student, teacher = unit(keys[0], (batch, experts, dim)), unit(keys[1], (batch, experts, dim))
  prototypes, queue = unit(keys[2], (experts, dim)), unit(keys[3], (queue_size, experts, dim))
  timers = {}
  for name, fn in (('ours', losses.mice_log_expert), ('direct', direct_log_expert)):
    grad = jax.jit(jax.value_and_grad(lambda f, mu, fn=fn: jnp.sum(fn(f, teacher, mu, queue, tau)), argnums=(0, 1)))
    jax.block_until_ready(grad(student, prototypes))
    timers[name] = lambda steps, grad=grad: _timing.rate(lambda: grad(student, prototypes), batch, steps)
  return timers


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _timing.add_common_arguments(parser, batch_size=256, steps=5)
  parser.add_argument('--queue_size', type=int, default=16384)
  parser.add_argument('--backbone', default='convnet', choices=('convnet', 'resnet34_cifar'))
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  if args.rounds < 1 or args.steps < 1 or args.batch_size < 1:
    parser.error('--rounds, --steps and --batch_size must be >= 1.')
  if args.queue_size % args.batch_size:
    parser.error(f'--queue_size {args.queue_size} must be a multiple of --batch_size {args.batch_size}.')
  results.git_commit()
  if args.backbone == 'convnet':
    images, view, what = data.load('mnist', 'train', args.data_dir).images, 'digits', 'MNIST 28x28, ConvNet'
  else:
    images = np.random.default_rng(0).integers(0, 256, (2 * args.batch_size, 32, 32, 3), dtype=np.uint8)
    view, what = 'natural', 'random 32x32x3 images, CIFAR ResNet-34'
  step, compile_s = step_timer(images, args.batch_size, args.queue_size, args.backbone, view)
  experts = expert_timers(args.batch_size, args.queue_size)
  rounds = {name: [] for name in ['step', *experts]}
  for _ in range(args.rounds):  # alternate, so that a slow spell of the host hits every side
    rounds['step'].append(step(args.steps))
    for name, timer in experts.items():
      rounds[name].append(timer(args.steps))
  median = {name: float(np.median(values)) for name, values in rounds.items()}
  epoch_end_s = {
    'from_training_batches': epoch_end_seconds(
      images, args.batch_size, args.queue_size, args.backbone, view, prototype_pass=False
    ),
    'pass_over_images': epoch_end_seconds(
      images, args.batch_size, args.queue_size, args.backbone, view, prototype_pass=True
    ),
  }
  record = results.benchmark_record(
    'mice_step',
    ours={
      'images_per_s': median['ours'],
      'images_per_s_rounds': rounds['ours'],
      'implementation': 'losses.mice_log_expert: one contraction of f + mu with the queue, batched over '
      'experts, logaddexp (forward + gradient)',
      'step_images_per_s': median['step'],
      'step_images_per_s_rounds': rounds['step'],
      'step_compile_s': compile_s,
      'expert_share_of_step': median['step'] / median['ours'],
      'epoch_end_s': epoch_end_s,
      'epoch_images_per_s': len(images) / (len(images) / median['step'] + epoch_end_s['from_training_batches']),
      'epoch_images_per_s_with_pass': len(images) / (len(images) / median['step'] + epoch_end_s['pass_over_images']),
    },
    reference={
      'images_per_s': median['direct'],
      'images_per_s_rounds': rounds['direct'],
      'implementation': 'the official MiCE_ELBO.forward written directly: v.f and v.mu products, '
      'concatenated [B, K, nu + 1] logits, log-softmax (forward + gradient)',
    },
    throughput_key='images_per_s',
  ) | {
    'setup': f'{what}; K 10, D 128, batch {args.batch_size}, queue {args.queue_size}, 3 views; '
    f'{args.rounds} alternating rounds of {args.steps} timed steps (medians), backend '
    f'{jax.default_backend()}, cpu_count {os.cpu_count()}'
  }
  name = 'mice_step' if args.backbone == 'convnet' else f'mice_step_{args.backbone}'
  path = results.write_json(pathlib.Path(args.results_dir) / f'{name}.json', record)
  print(
    f'mice_step ({what}): step {median["step"]:.1f} img/s (compile {compile_s:.0f} s); expert likelihood '
    f'forward+gradient: ours {median["ours"]:.0f} img/s, direct {median["direct"]:.0f} '
    f'({record["speedup"]:.2f}x), {record["ours"]["expert_share_of_step"]:.0%} of a step; epoch end '
    f'{epoch_end_s["from_training_batches"]:.3f} s (the pass over the images: {epoch_end_s["pass_over_images"]:.0f} s) '
    f'-> {path}'
  )


if __name__ == '__main__':
  main()
