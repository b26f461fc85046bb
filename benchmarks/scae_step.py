"""Images/s of the jitted SCAE train step, and of the template renderer alone (vmapped vs alternatives).

  python benchmarks/scae_step.py [--batch_size=128] [--steps=5] [--rounds=3]

Step: the MNIST model of ``experiments/configs/scae_mnist.flags`` (40 parts of 11x11, 32 objects, 40x40
canvas) on the training core (the jitted data-parallel step on one device, batch drawn and padded on
device). Renderer: ``[B, 40]`` coloured templates with alpha ``[11, 11, 2]`` placed on the 40x40 canvas,
forward and gradient (w.r.t. templates and poses) of a sum, three ways: ``rendering.render_batch`` (vmap
over images and parts, a 4-corner gather: ours), a Python loop over the parts (reference),
``jax.scipy.ndimage.map_coordinates`` as the sampler and the gather-free tent-weight sampler, vmapped alike.
Where the step's time goes: forward and gradient (w.r.t. parameters) of the part encoder alone (40x40 images
-> poses, features, presences) and of the object capsule autoencoder alone (Set Transformer, object
capsules and the part likelihood on random parts), beside the renderer's; each as images/s and as the
share of one step's time it would take (the rest: colouring, the image likelihood, the optimizer).
Rounds alternate; medians are kept. Writes ``results/scae_step.json``.
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
from unsupervised_jax.training import loop


def step_timer(images, batch):
  """Compiles and warms up the SCAE step; returns ``(timer(steps) -> images/s, compile seconds)``."""
  learner = scae.scae(scae.SCAEConfig(), loop.TrainConfig(batch_size=batch))
  return _timing.step_timer(learner, images, batch)


def render_timers(batch, parts=40, size=11, canvas=40):
  """``{name: timer(steps) -> images/s}`` for the forward and gradient of each renderer."""
  rng = np.random.default_rng(0)
  templates = jnp.asarray(rng.uniform(size=(batch, parts, size, size, 2)), jnp.float32)
  poses = rendering.geometric_transform(jnp.asarray(rng.normal(size=(batch, parts, 6)), jnp.float32))
  by_scipy = jax.vmap(jax.vmap(rendering.render_map_coordinates, in_axes=(0, 0, None)), in_axes=(0, 0, None))
  tent = lambda t, p, s: rendering.render_batch(t, p, s, rendering.bilinear_sample_tent)
  renderers = {'vmap': rendering.render_batch, 'loop': rendering.render_batch_loop, 'map_coordinates': by_scipy,
               'tent': tent}
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
  set_dims = 6 + 1 + config.n_part_features + config.template_size ** 2
  set_input = jnp.asarray(rng.normal(size=(batch, parts, set_dims)), jnp.float32)
  poses = rendering.geometric_transform(jnp.asarray(rng.normal(size=(batch, parts, 6)), jnp.float32))
  presence = jnp.asarray(rng.uniform(size=(batch, parts)), jnp.float32)
  noise = jax.vmap(lambda k: capsules.presence_noise(k, parts, objects, config.presence_noise))(
      jax.random.split(jax.random.key(0), batch))

  class OCAE(nn.Module):
    @nn.compact
    def __call__(self, x):
      out = capsules.ObjectCapsules(parts, config.n_obj_params)(capsules.SetTransformer(objects)(x, presence), noise)
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
  renders = render_timers(args.batch_size)
  components = component_timers(args.batch_size)
  rounds = {name: [] for name in ['step', *renders, *components]}
  for _ in range(args.rounds):
    rounds['step'].append(step(args.steps))
    for name, timer in {**renders, **components}.items():
      rounds[name].append(timer(args.steps))
  median = {name: float(np.median(values)) for name, values in rounds.items()}
  parts = {'part_encoder': median['part_encoder'], 'renderer': median['vmap'], 'ocae': median['ocae']}
  share = {name: median['step'] / rate for name, rate in parts.items()}  # its time over the step's
  record = results.benchmark_record(
      'scae_step',
      ours={'images_per_s': median['vmap'], 'images_per_s_rounds': rounds['vmap'],
            'implementation': 'rendering.render_batch: vmap over images and parts, 4-corner gather sampler',
            'step_images_per_s': median['step'], 'step_images_per_s_rounds': rounds['step'],
            'step_compile_s': compile_s,
            'map_coordinates_images_per_s': median['map_coordinates'],
            'map_coordinates_images_per_s_rounds': rounds['map_coordinates'],
            'tent_weights_images_per_s': median['tent'], 'tent_weights_images_per_s_rounds': rounds['tent'],
            'component_images_per_s': parts, 'component_share_of_step': share},
      reference={'images_per_s': median['loop'], 'images_per_s_rounds': rounds['loop'],
                 'implementation': 'the same sampler in a Python loop over the 40 parts'},
      throughput_key='images_per_s') | {
          'setup': f'SCAE MNIST model (40 parts, 32 objects, 40x40 canvas), batch {args.batch_size}; renderer: '
                   f'forward + gradient of [B, 40, 11, 11, 2] templates onto 40x40; {args.rounds} alternating '
                   f'rounds of {args.steps} timed steps (medians), backend {jax.default_backend()}, '
                   f'cpu_count {os.cpu_count()}'}
  path = results.write_json(pathlib.Path(args.results_dir) / 'scae_step.json', record)
  print(f'scae_step: step {median["step"]:.1f} img/s (compile {compile_s:.0f} s); renderer forward+gradient: vmap '
        f'{median["vmap"]:.0f} img/s, loop {median["loop"]:.0f}, map_coordinates {median["map_coordinates"]:.0f}, '
        f'tent weights {median["tent"]:.0f}; share of the step: '
        + ', '.join(f'{name} {fraction:.0%}' for name, fraction in share.items()) + f' -> {path}')


if __name__ == '__main__':
  main()
