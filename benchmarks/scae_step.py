"""Images/s of the jitted SCAE train step, and of the template renderer alone, against the direct renderer.

  python benchmarks/scae_step.py [--batch_size=128] [--steps=5] [--rounds=3]

Step: the MNIST model of ``experiments/configs/scae_mnist.flags`` (40 parts of 11x11, 32 objects, 40x40
canvas) on the training core (the jitted data-parallel step on one device, batch drawn and padded on
device), twice in alternating rounds: with ``rendering.render_batch`` (ours: chunks of images, custom
gradients) and with ``rendering.render_batch_vmap`` in its place (the renderer of the commits before it:
vmap over images and parts, automatic differentiation), everything else the same. Renderer: ``[B, 40]``
coloured templates with alpha ``[11, 11, 2]`` placed on the 40x40 canvas, forward and gradient (w.r.t.
templates and poses) of a sum, five ways: ours, the vmapped reference, a Python loop over the parts,
``jax.scipy.ndimage.map_coordinates`` as the sampler and the gather-free tent-weight sampler (the last three
vmapped alike). Where the step's time goes: forward and gradient (w.r.t. parameters) of the part encoder
alone (40x40 images -> poses, features, presences) and of the object capsule autoencoder alone (Set
Transformer, object capsules and the part likelihood on random parts), beside the renderer's; each as
images/s and as the share of one step's time it would take (the rest: colouring, the image likelihood, the
optimizer). Rounds alternate; medians are kept. Writes ``results/scae_step.json``.
"""

import argparse
import os
import pathlib

import _timing  # noqa: I001 (benchmarks/, run as a script)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax import data
from unsupervised_jax import losses
from unsupervised_jax import rendering
from unsupervised_jax import results
from unsupervised_jax.methods import scae
from unsupervised_jax.models import capsules
from unsupervised_jax.models import set_transformer
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop


def step_timer(images, batch, renderer=rendering.render_batch):
  """Compiles and warms up the SCAE step with ``renderer`` placing the templates; returns
  ``(timer(steps) -> images/s, compile seconds)``."""
  learner = scae.scae(scae.SCAEConfig(), loop.TrainConfig(batch_size=batch), contract.DataInfo.of(images))
  ours = rendering.render_batch
  rendering.render_batch = renderer  # the model calls rendering.render_batch when the step is traced (here)
  try:
    return _timing.step_timer(learner, images, batch)
  finally:
    rendering.render_batch = ours


def render_timers(batch, parts=40, size=11, canvas=40):
  """``{name: timer(steps) -> images/s}`` for the forward and gradient of each renderer."""
  rng = np.random.default_rng(0)
  templates = jnp.asarray(rng.uniform(size=(batch, parts, size, size, 2)), jnp.float32)
  poses = rendering.geometric_transform(jnp.asarray(rng.normal(size=(batch, parts, 6)), jnp.float32))
  by_scipy = jax.vmap(jax.vmap(rendering.render_map_coordinates, in_axes=(0, 0, None)), in_axes=(0, 0, None))
  tent = lambda t, p, s: rendering.render_batch_vmap(t, p, s, rendering.bilinear_sample_tent)
  renderers = {
    'ours': rendering.render_batch,
    'vmap': rendering.render_batch_vmap,
    'loop': rendering.render_batch_loop,
    'map_coordinates': by_scipy,
    'tent': tent,
  }
  timers = {}
  for name, render in renderers.items():
    fn = jax.jit(jax.value_and_grad(lambda t, p, r=render: jnp.sum(jnp.square(r(t, p, canvas))), argnums=(0, 1)))
    jax.block_until_ready(fn(templates, poses))
    timers[name] = lambda steps, fn=fn: _timing.rate(lambda: fn(templates, poses), batch, steps)
  return timers


def component_timers(batch, config=scae.SCAEConfig()):
  """``{name: timer(steps) -> images/s}`` for the forward and parameter gradient of the part encoder and
  of the object capsule autoencoder, each alone, at the sizes of ``config``."""
  rng = np.random.default_rng(0)
  parts, objects = config.n_part_caps, config.n_obj_caps
  images = jnp.asarray(rng.uniform(size=(batch, config.canvas_size, config.canvas_size, 1)), jnp.float32)
  encoder = capsules.PartEncoder(parts, config.n_part_features, config.encoder_channels, tuple(config.encoder_strides))
  set_dims = 6 + 1 + config.n_part_features + config.template_size**2
  set_input = jnp.asarray(rng.normal(size=(batch, parts, set_dims)), jnp.float32)
  poses = rendering.geometric_transform(jnp.asarray(rng.normal(size=(batch, parts, 6)), jnp.float32))
  presence = jnp.asarray(rng.uniform(size=(batch, parts)), jnp.float32)
  noise = jax.vmap(lambda k: capsules.presence_noise(k, parts, objects, config.presence_noise))(
    jax.random.split(jax.random.key(0), batch)
  )

  class OCAE(nn.Module):
    @nn.compact
    def __call__(self, x):
      out = capsules.ObjectCapsules(parts, config.n_obj_params)(
        set_transformer.SetTransformer(objects)(x, presence), noise
      )
      ll, _ = losses.scae_part_log_likelihood(poses, presence, out['votes'], out['scales'], out['vote_presence'])
      return ll

  timers = {}
  for name, module, x in (('part_encoder', encoder, images), ('ocae', OCAE(), set_input)):
    params = module.init(jax.random.key(1), x)
    loss = lambda p, module=module, x=x: sum(jnp.sum(jnp.square(y)) for y in jax.tree.leaves(module.apply(p, x)))
    fn = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(fn(params))
    timers[name] = lambda steps, fn=fn, params=params: _timing.rate(lambda: fn(params), batch, steps)
  return timers


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _timing.add_common_arguments(parser, batch_size=128, steps=5)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  if args.rounds < 1 or args.steps < 1 or args.batch_size < 1:
    parser.error('--rounds, --steps and --batch_size must be >= 1.')
  results.git_commit()
  images = data.load('mnist', 'train', args.data_dir).images
  step, compile_s = step_timer(images, args.batch_size)
  step_vmap, compile_vmap_s = step_timer(images, args.batch_size, rendering.render_batch_vmap)
  renders = render_timers(args.batch_size)
  components = component_timers(args.batch_size)
  rounds = {name: [] for name in ['step', 'step_vmap', *renders, *components]}
  for _ in range(args.rounds):
    rounds['step'].append(step(args.steps))
    rounds['step_vmap'].append(step_vmap(args.steps))
    for name, timer in {**renders, **components}.items():
      rounds[name].append(timer(args.steps))
  median = {name: float(np.median(values)) for name, values in rounds.items()}
  parts = {'part_encoder': median['part_encoder'], 'renderer': median['ours'], 'ocae': median['ocae']}
  share = {name: median['step'] / rate for name, rate in parts.items()}  # its time over the step's
  record = results.benchmark_record(
    'scae_step',
    ours={
      'images_per_s': median['step'],
      'images_per_s_rounds': rounds['step'],
      'compile_s': compile_s,
      'implementation': 'the SCAE train step with rendering.render_batch (chunks of images on CPU, the '
      "poses' gradient from six sums a pose, the templates' as one scatter of 2x2 "
      'neighbourhoods)',
      'renderer_images_per_s': median['ours'],
      'renderer_images_per_s_rounds': rounds['ours'],
      'loop_renderer_images_per_s': median['loop'],
      'map_coordinates_renderer_images_per_s': median['map_coordinates'],
      'tent_weights_renderer_images_per_s': median['tent'],
      'component_images_per_s': parts,
      'component_share_of_step': share,
    },
    reference={
      'images_per_s': median['step_vmap'],
      'images_per_s_rounds': rounds['step_vmap'],
      'compile_s': compile_vmap_s,
      'implementation': 'the same step with rendering.render_batch_vmap (the renderer before: vmap '
      'over images and parts, automatic differentiation)',
      'renderer_images_per_s': median['vmap'],
      'renderer_images_per_s_rounds': rounds['vmap'],
    },
    throughput_key='images_per_s',
  ) | {
    'setup': f'SCAE MNIST model (40 parts, 32 objects, 40x40 canvas), batch {args.batch_size}; renderer: '
    f'forward + gradient of [B, 40, 11, 11, 2] templates onto 40x40; {args.rounds} alternating '
    f'rounds of {args.steps} timed steps (medians), backend {jax.default_backend()}, '
    f'cpu_count {os.cpu_count()}'
  }
  path = results.write_json(pathlib.Path(args.results_dir) / 'scae_step.json', record)
  print(
    f'scae_step: step {median["step"]:.1f} img/s against {median["step_vmap"]:.1f} with the vmapped renderer '
    f'({median["step"] / median["step_vmap"]:.2f}x; compile {compile_s:.0f} s); renderer forward+gradient: '
    f'ours {median["ours"]:.0f} img/s, vmap {median["vmap"]:.0f}, loop {median["loop"]:.0f}, map_coordinates '
    f'{median["map_coordinates"]:.0f}, tent weights {median["tent"]:.0f}; share of the step: '
    + ', '.join(f'{name} {fraction:.0%}' for name, fraction in share.items())
    + f' -> {path}'
  )


if __name__ == '__main__':
  main()
