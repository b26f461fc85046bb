import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_contract  # tests/ is on the path (pytest's rootdir conftest)

from unsupervised_jax import losses
from unsupervised_jax import rendering
from unsupervised_jax.methods import scae
from unsupervised_jax.methods import scae_figures
from unsupervised_jax.models import capsules
from unsupervised_jax.models import set_transformer
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
IDENTITY = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def _template(size=7, channels=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(size, size, channels)), jnp.float32)


def test_identity_pose_reproduces_the_template():
  template = _template()
  np.testing.assert_allclose(rendering.render(template, IDENTITY, 7), template, atol=1e-5)


@pytest.mark.parametrize('rows,cols', [(0, 2), (1, 0), (-2, 3)])
def test_translation_shifts_by_whole_pixels(rows, cols):
  template, size = _template(), 7
  pose = IDENTITY.at[2].set(2 * cols / (size - 1)).at[5].set(2 * rows / (size - 1))  # tx: columns, ty: rows
  expected = np.zeros_like(template)
  src = np.asarray(template)
  for r in range(size):
    for c in range(size):
      if 0 <= r - rows < size and 0 <= c - cols < size:
        expected[r, c] = src[r - rows, c - cols]
  np.testing.assert_allclose(rendering.render(template, pose, size), expected, atol=1e-5)


def test_rotation_by_90_degrees_is_rot90():
  template = _template()
  pose = rendering.geometric_transform(jnp.array([0.99, 0.99, math.pi / 2, 0.0, 0.0, 0.0]), nonlinear=False)
  np.testing.assert_allclose(pose, [0, -1, 0, 1, 0, 0], atol=1e-6)  # unit scale, theta = 90 degrees
  np.testing.assert_allclose(
    rendering.render(template, pose, 7), np.rot90(np.asarray(template), k=-1, axes=(0, 1)), atol=1e-5
  )


def test_vmapped_rendering_equals_a_loop_and_map_coordinates():
  rng = np.random.default_rng(1)
  templates = jnp.asarray(rng.uniform(size=(3, 4, 5, 5, 2)), jnp.float32)  # [B, M, t, t, C]
  poses = rendering.geometric_transform(jnp.asarray(rng.normal(size=(3, 4, 6)), jnp.float32))
  vmapped = rendering.render_batch_vmap(templates, poses, 9)
  assert vmapped.shape == (3, 4, 9, 9, 2)
  np.testing.assert_allclose(vmapped, rendering.render_batch_loop(templates, poses, 9), atol=1e-6)
  by_scipy = jax.vmap(jax.vmap(rendering.render_map_coordinates, in_axes=(0, 0, None)), in_axes=(0, 0, None))(
    templates, poses, 9
  )
  np.testing.assert_allclose(vmapped, by_scipy, atol=1e-5)
  tent = rendering.render_batch_vmap(templates, poses, 9, rendering.bilinear_sample_tent)
  np.testing.assert_allclose(vmapped, tent, atol=1e-5)
  shared = rendering.render_batch(templates[0], poses, 9)  # one set of templates for every image
  np.testing.assert_allclose(shared[1], rendering.render_batch(templates[0][None], poses[1:2], 9)[0], atol=1e-6)


def _scene(seed, batch, parts, size, canvas, whole_pixels=False):
  """Templates ``[B, M, t, t, 2]``, poses ``[B, M, 6]`` (scales from tiny to the whole canvas, rotations, shears;
  with ``whole_pixels`` every fourth pose an identity-like map whose samples fall on whole template pixels, where
  bilinear sampling has a kink), and a random cotangent ``[B, M, S, S, 2]``."""
  rng = np.random.default_rng(seed)
  templates = jnp.asarray(rng.uniform(size=(batch, parts, size, size, 2)), jnp.float32)
  raw = rng.normal(size=(batch, parts, 6))
  poses = np.array(rendering.geometric_transform(jnp.asarray(raw, jnp.float32)))
  if whole_pixels:
    scale = (size - 1) / (canvas - 1) * 3  # 3 canvas pixels per template pixel
    poses[:, ::4] = [1 / scale, 0, 0, 0, 1 / scale, 0]
  cotangent = jnp.asarray(rng.normal(size=(batch, parts, canvas, canvas, 2)), jnp.float32)
  return templates, jnp.asarray(poses, jnp.float32), cotangent


@pytest.mark.parametrize('chunk_size', [None, 1, 2, 6])
def test_render_batch_equals_the_vmapped_reference_in_values_and_gradients(chunk_size):
  """The chunked renderer with its two custom gradients against the direct vmap of the sampler, differentiated
  automatically (what render_batch was before): the same images, and gradients to float32 rounding."""
  templates, poses, cotangent = _scene(5, 6, 5, 7, 13, whole_pixels=True)
  loss = lambda render: lambda t, p: jnp.sum(render(t, p) * cotangent)
  ours = jax.jit(jax.value_and_grad(loss(lambda t, p: rendering.render_batch(t, p, 13, chunk_size)), (0, 1)))
  reference = jax.jit(jax.value_and_grad(loss(lambda t, p: rendering.render_batch_vmap(t, p, 13)), (0, 1)))
  np.testing.assert_array_equal(
    rendering.render_batch(templates, poses, 13, chunk_size), rendering.render_batch_vmap(templates, poses, 13)
  )
  (value, grads), (expected_value, expected) = ours(templates, poses), reference(templates, poses)
  assert float(value) == pytest.approx(float(expected_value), rel=1e-6)
  for got, want in zip(grads, expected):
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 0 and float(jnp.max(jnp.abs(got - want))) <= 2e-6 * scale
  # Shared templates [M, t, t, C]: the gradient sums over the images.
  shared = jax.grad(lambda t: jnp.sum(rendering.render_batch(t, poses, 13, chunk_size) * cotangent))(templates[0])
  summed = jax.grad(lambda t: jnp.sum(rendering.render_batch_vmap(t, poses, 13) * cotangent))(templates[0])
  np.testing.assert_allclose(shared, summed, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(summed))))


def test_render_batch_refuses_a_chunk_that_does_not_divide_the_batch():
  templates, poses, _ = _scene(0, 4, 2, 5, 9)
  with pytest.raises(ValueError, match='chunk_size 3 must divide the batch of 4'):
    rendering.render_batch(templates, poses, 9, chunk_size=3)
  assert rendering.default_chunk_size(128) == 8 and rendering.default_chunk_size(125) == 5


def test_gradients_reach_poses_and_templates():
  template = _template(5, 1)
  pose = jnp.array([0.73, 0.21, 0.113, -0.097, 0.81, -0.0537])  # no sample on a whole pixel (a kink)
  target = jnp.asarray(np.random.default_rng(2).uniform(size=(9, 9, 1)), jnp.float32)
  loss = lambda t, p: jnp.sum(jnp.square(rendering.render(t, p, 9) - target))
  g_template, g_pose = jax.grad(loss, argnums=(0, 1))(template, pose)
  assert np.all(np.isfinite(g_pose)) and np.abs(np.asarray(g_pose)).min() > 0
  assert np.abs(np.asarray(g_template)).sum() > 0
  # The same gradients as jax.scipy's gather-based sampler (central differences would cross the kinks of
  # bilinear sampling: a column here lies 0.001 px from a whole pixel).
  reference = lambda t, p: jnp.sum(jnp.square(rendering.render_map_coordinates(t, p, 9) - target))
  r_template, r_pose = jax.grad(reference, argnums=(0, 1))(template, pose)
  np.testing.assert_allclose(g_pose, r_pose, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(g_template, r_template, rtol=1e-4, atol=1e-5)
  eps = 1e-3  # and central differences where no sample crosses a whole pixel (rows: ty)
  numeric = (loss(template, pose.at[5].add(eps)) - loss(template, pose.at[5].add(-eps))) / (2 * eps)
  assert float(g_pose[5]) == pytest.approx(float(numeric), rel=1e-2)


def _official_conv_att(out, n_caps):
  """numpy of the official primary.py ``conv_att`` pooling (TF's row-major reshapes, no transpose)."""
  batch, positions, channels = out.shape
  n_dims = channels // n_caps - 1
  h, a = out[..., : n_dims * n_caps], out[..., n_dims * n_caps :]
  h = h.reshape(batch, positions, n_dims, n_caps)
  a = np.exp(a - a.max(1, keepdims=True))
  a = (a / a.sum(1, keepdims=True)).reshape(batch, positions, 1, n_caps)
  return (h * a).sum(1).reshape(batch, n_caps, n_dims)


def test_attention_pooling_is_the_official_reshape_by_default_and_per_part_on_request():
  rng = np.random.default_rng(6)
  n_caps, n_dims = 5, 3
  out = rng.normal(size=(2, 7, n_caps * (n_dims + 1))).astype(np.float32)
  official = capsules.attention_pool(jnp.asarray(out), n_caps)
  np.testing.assert_allclose(official, _official_conv_att(out.astype(np.float64), n_caps), rtol=1e-5, atol=1e-6)
  # Part m's d-th value: channel m D + d, pooled with map (m D + d) mod M.
  values, logits = out[..., : n_caps * n_dims], out[..., n_caps * n_dims :]
  maps = np.exp(logits - logits.max(1, keepdims=True))
  maps /= maps.sum(1, keepdims=True)
  m, d = 3, 2
  channel = m * n_dims + d
  np.testing.assert_allclose(official[:, m, d], (values[..., channel] * maps[..., channel % n_caps]).sum(1), rtol=1e-5)
  per_part = capsules.attention_pool(jnp.asarray(out), n_caps, 'per_part')
  np.testing.assert_allclose(per_part[:, m, d], (values[..., channel] * maps[..., m]).sum(1), rtol=1e-5)
  assert not np.allclose(per_part, official)
  with pytest.raises(ValueError, match='pooling must be one of'):
    capsules.attention_pool(jnp.asarray(out), n_caps, 'bogus')
  # The encoder and the method take the setting; the official reshape is the default.
  assert capsules.PartEncoder(n_caps, 0).pooling == scae.SCAEConfig().attention_pooling == 'official'
  encoder = capsules.PartEncoder(n_caps, 0, channels=4, strides=(1,))
  x = jnp.asarray(rng.uniform(size=(2, 6, 6, 1)), jnp.float32)
  variables = encoder.init(jax.random.key(0), x)
  both = [capsules.PartEncoder(n_caps, 0, 4, (1,), pooling).apply(variables, x) for pooling in ('official', 'per_part')]
  assert not np.allclose(both[0][0], both[1][0])


def test_image_mixing_weights_sum_to_one_and_follow_presence():
  rng = np.random.default_rng(3)
  alpha = jnp.asarray(rng.normal(size=(2, 3, 4, 4)), jnp.float32)
  presence = jnp.asarray([[0.2, 0.9, 0.0], [1.0, 0.5, 0.3]], jnp.float32)
  log_w = losses.scae_image_mixing_log_weights(alpha, presence, jnp.float32(0.7))
  np.testing.assert_allclose(np.exp(np.asarray(log_w)).sum(1), 1.0, rtol=1e-5)
  assert np.exp(np.asarray(log_w))[0, 2].max() < 1e-12  # an absent part takes no pixel
  expected = presence[..., None, None] * np.exp(alpha)
  expected = expected / (expected.sum(1, keepdims=True) + np.exp(0.7))
  np.testing.assert_allclose(np.exp(np.asarray(log_w))[:, :3], expected, rtol=1e-4)


def test_image_log_likelihood_matches_numpy():
  rng = np.random.default_rng(4)
  images, means = rng.uniform(size=(2, 3, 3, 2)), rng.uniform(size=(2, 4, 3, 3, 2))
  weights = rng.dirichlet(np.ones(4), size=(2, 3, 3)).transpose(0, 3, 1, 2)  # [B, M+1, H, W]
  normal = np.exp(-0.5 * (images[:, None] - means) ** 2) / np.sqrt(2 * np.pi)
  expected = np.log((weights[..., None] * normal).sum(1)).sum((1, 2, 3))
  got = losses.scae_image_log_likelihood(
    jnp.asarray(images, jnp.float32), jnp.asarray(means, jnp.float32), jnp.log(jnp.asarray(weights, jnp.float32))
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('normalize', [True, False])
def test_part_log_likelihood_matches_numpy(normalize):
  rng = np.random.default_rng(5)
  b, k, m = 2, 3, 4
  parts, presence = rng.normal(size=(b, m, 6)), rng.uniform(size=(b, m))
  votes, scales = rng.normal(size=(b, k, m, 6)), rng.uniform(0.5, 2.0, size=(b, k, m))
  a_k, a_km = rng.uniform(size=(b, k, 1)), rng.uniform(size=(b, k, m))
  dummy = 0.01  # exp(-2 log 10), the official dummy's weight and density
  density = np.prod(
    np.exp(-0.5 * ((parts[:, None] - votes) / scales[..., None]) ** 2) / (np.sqrt(2 * np.pi) * scales[..., None]), -1
  )  # [B, K, M]
  weight = a_k * a_km
  total = weight.sum(1, keepdims=True) + dummy if normalize else 1.0
  mixture = (weight * density).sum(1) / np.squeeze(total, 1) if normalize else (weight * density).sum(1)
  mixture = mixture + dummy * dummy / (np.squeeze(total, 1) if normalize else 1.0)
  expected = (np.log(mixture) * presence).sum(-1)
  posterior_expected = weight * density / ((weight * density).sum(1, keepdims=True) + dummy * dummy)
  ll, posterior = losses.scae_part_log_likelihood(
    *(jnp.asarray(v, jnp.float32) for v in (parts, presence, votes, scales, a_k * a_km)), normalize=normalize
  )
  np.testing.assert_allclose(ll, expected, rtol=1e-4)
  np.testing.assert_allclose(posterior, posterior_expected, rtol=1e-4, atol=1e-7)


def test_sparsity_terms_match_numpy():
  p = np.random.default_rng(6).uniform(size=(5, 4))
  q = p / p.sum(1, keepdims=True)
  s = p.sum(0) / p.sum()
  within, between = losses.capsule_entropy_sparsity(jnp.asarray(p, jnp.float32))
  assert float(within) == pytest.approx(np.mean(-(q * np.log(q)).sum(1)), rel=1e-4)
  assert float(between) == pytest.approx(-(s * np.log(s)).sum(), rel=1e-4)
  within, between = losses.capsule_l2_sparsity(jnp.asarray(p, jnp.float32), num_classes=2)
  assert float(within) == pytest.approx(np.sum((p.sum(1) - 4 / 2) ** 2) / 5, rel=1e-5)
  assert float(between) == pytest.approx(np.sum((p.sum(0) - 5 / 2) ** 2) / 4, rel=1e-5)


def test_rmsprop_is_tf1_rmsprop():
  rng = np.random.default_rng(7)
  w = rng.normal(size=(3,)).astype(np.float32)
  grads = [rng.normal(size=(3,)).astype(np.float32) for _ in range(3)]
  lr, batch = 0.01, 4
  eps = 1e-2 / batch**2
  ms, mom, expected = np.ones(3), np.zeros(3), w.astype(np.float64)
  for g in grads:  # tf.train.RMSPropOptimizer(lr, decay=0.9, momentum=0.9, epsilon=eps)
    ms = 0.9 * ms + 0.1 * g**2
    mom = 0.9 * mom + lr * g / np.sqrt(ms + eps)
    expected = expected - mom
  optimizer = scae.tf_rmsprop(lr, batch)
  params, state = jnp.asarray(w), optimizer.init(jnp.asarray(w))
  for g in grads:
    updates, state = optimizer.update(jnp.asarray(g), state, params)
    params = params + updates
  np.testing.assert_allclose(params, expected, rtol=1e-5)


def _set_transformer_outputs(presence_mask, presence, inputs):
  model = set_transformer.SetTransformer(8, n_output_dims=16, presence_mask=presence_mask)
  params = model.init(jax.random.key(0), inputs[0], presence)
  return [np.asarray(model.apply(params, x, presence)) for x in inputs]


def test_official_presence_mask_attends_only_to_the_most_present_part_the_log_mask_to_all():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 10)), jnp.float32)
  presence = jnp.asarray([[0.2, 0.9, 0.5, 0.6, 0.1, 0.3], [0.7, 0.2, 0.95, 0.4, 0.5, 0.6]], jnp.float32)
  others = x.at[0, [0, 2, 3, 4, 5]].set(3.0).at[1, [0, 1, 3, 4, 5]].set(-3.0)  # all but the most present part
  most = x.at[0, 1].set(3.0).at[1, 2].set(-3.0)
  out, out_others, out_most = _set_transformer_outputs('official', presence, [x, others, most])
  np.testing.assert_array_equal(out_others, out)  # the official 1e32 mask: the other parts have no effect
  assert np.abs(out_most - out).max() > 1e-3
  np.testing.assert_allclose(out.std(axis=1), 0.0, atol=1e-6)  # every inducing point pools the same part
  out, out_others, _ = _set_transformer_outputs('log', presence, [x, others, most])
  assert np.abs(out_others - out).min(axis=-1).min() > 1e-4  # the log mask: every part counts
  assert out.std(axis=1).min() > 1e-4


def test_saturated_parts_counts_presences_of_exactly_one():
  out = {
    'posterior': jnp.full((2, 3, 4), 0.1),
    'prior': jnp.full((2, 3), 0.2),
    'image_ll': jnp.zeros(2),
    'part_ll': jnp.zeros(2),
    'dynamic_l2': 0.0,
    'part_presence': jax.nn.sigmoid(jnp.asarray([[17.5, 3.0, 20.0, -1.0], [0.0, 30.0, 16.0, 2.0]])),
  }
  assert float(scae.scae_loss(scae.SCAEConfig(), out)[1]['saturated_parts']) == 1.5  # logits >= ~17


def test_log_presence_mask_equals_the_official_mask_for_binary_presences():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 7, 10)), jnp.float32)
  presence = jnp.asarray(rng.uniform(size=(3, 7)) > 0.4, jnp.float32).at[:, 0].set(1.0)
  (official,) = _set_transformer_outputs('official', presence, [x])
  (log,) = _set_transformer_outputs('log', presence, [x])
  np.testing.assert_allclose(log, official, atol=1e-5)


def test_pad_and_shift_keeps_the_image_whole():
  image = jnp.ones((8, 8, 1))
  for seed in range(5):
    out = scae.pad_and_shift(jax.random.key(seed), image, 12, 2)
    assert out.shape == (12, 12, 1) and float(out.sum()) == 64.0
  centred = scae.pad_and_shift(jax.random.key(0), image, 12, 0)
  assert float(centred[2:10, 2:10].sum()) == 64.0


TINY = dict(test_contract.TINY['scae'], learning_rate=1e-3)  # the contract test's tiny SCAE, a faster rate


def test_short_digits_run_lowers_the_loss(tmp_path):
  from unsupervised_jax import data

  images = data.load('digits', 'all').images
  train = loop.TrainConfig(num_steps=40, batch_size=32, log_every=5, checkpoint_every=40, progress=False)
  learner = scae.scae(scae.SCAEConfig(**TINY), train, contract.DataInfo.of(images))
  state = loop.train(
    learner, learner.init(jax.random.key(0), images[:1]), images, train, tmp_path, key=jax.random.key(0)
  )
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert all(math.isfinite(line['loss']) for line in lines)
  assert np.mean([l['loss'] for l in lines[-3:]]) < lines[0]['loss'] - 10, [l['loss'] for l in lines]
  embed = jax.jit(learner.embed)
  codes = embed(state, images[:16])
  assert codes.shape == (16, 4) and np.all(np.isfinite(codes))
  np.testing.assert_allclose(embed(state, images[4:20])[:12], codes[4:], atol=1e-6)  # batch-independent
  scae_figures.figures(learner.config, state, images[:16], tmp_path)
  assert (tmp_path / 'scae_templates.png').is_file() and (tmp_path / 'scae_reconstructions.png').is_file()
  # The monitor: the mixture mean's squared error beside a blank canvas's, and the templates that differ.
  monitored = {k: float(v) for k, v in jax.jit(learner.monitor)(state, images[:16]).items()}
  assert set(monitored) == {'reconstruction_mse', 'blank_canvas_mse', 'distinct_templates'}
  assert 0 < monitored['reconstruction_mse'] < monitored['blank_canvas_mse']  # 40 steps already beat a blank canvas
  assert 1 <= monitored['distinct_templates'] <= TINY['n_part_caps']


def test_distinct_templates_counts_those_apart_from_every_earlier_one():
  rng = np.random.default_rng(7)
  base = rng.uniform(size=(5, 5, 1))
  same = np.stack([base + rng.uniform(-0.01, 0.01, size=base.shape) for _ in range(4)])  # within 0.01 RMS
  assert scae.distinct_templates(same) == 1
  apart = np.stack([np.full((5, 5, 1), v) for v in (0.0, 0.2, 0.4, 0.6)])  # 0.2 apart
  assert scae.distinct_templates(apart) == 4
  assert scae.distinct_templates(np.concatenate([same, apart])) == 5  # the noisy base is far from every flat one
  assert scae.distinct_templates(apart, tolerance=0.25) == 1  # each within 0.25 of the one before it
  assert scae.distinct_templates(apart[::2], tolerance=0.25) == 2  # 0.0 and 0.4


@pytest.mark.parametrize(
  'flag,match',
  [
    ('--n_part_caps=0', 'n_part_caps must be >= 1'),
    ('--n_obj_caps=-1', 'n_obj_caps must be >= 1'),
    ('--template_size=41', 'template_size 41 exceeds canvas_size 40'),
    ('--encoder_strides=2,2,2,2,2', 'leaves nothing'),
  ],
)
def test_bad_flags_fail_in_one_line_before_anything_is_written(tmp_path, flag, match, run_entry):
  proc = run_entry('experiments.scae', flag, f'--workdir={tmp_path / "run"}')
  assert proc.returncode == 2 and match in proc.stderr, proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()


# Runs experiments.scae_ablation with the grid runner replaced by a recorder (the runner itself is tested by
# the MoCo ablation's test, the SCAE's training by the digits run above).
_ABLATION_DRIVER = """
import json, sys
from experiments import common, scae_ablation
from unsupervised_jax.runner import ablation
def record(cells, out_dir, title, reference=None, results_path=None, loaded=None):
  print(json.dumps({'cells': [dict(settings, parts=e.method_config.n_part_caps, objects=e.method_config.n_obj_caps,
                                   workdir=str(e.run.workdir), results_dir=e.run.results_dir, method=m.name)
                              for settings, e, m in cells], 'reference': reference, 'results_path': results_path}))
ablation.run = record
common.run(scae_ablation.main)
"""


def _ablation(*flags):
  return subprocess.run(
    [sys.executable, '-c', _ABLATION_DRIVER, *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
  )


def test_capsule_ablation_builds_each_cell_with_its_counts_and_the_posters_number(tmp_path):
  proc = _ablation('--flagfile=experiments/configs/scae_mnist.flags', f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert [(c['part_capsules'], c['object_capsules'], c['poster_linear_acc']) for c in out['cells']] == [
    (30, 16, 0.9847),
    (40, 32, 0.9906),
    (60, 40, 0.9674),
  ]
  for cell in out['cells']:  # each cell's method and run built with its own counts, in its own directory
    assert (cell['parts'], cell['objects']) == (cell['part_capsules'], cell['object_capsules'])
    assert cell['method'] == 'scae' and cell['results_dir'] is None
    assert cell['workdir'] == f'{tmp_path}/parts{cell["parts"]}_objects{cell["objects"]}'
  assert out['results_path'] == 'results/scae_ablation.json' and out['reference']['acc'] == 0.987
  other = json.loads(_ablation('--capsules=8:4', '--dataset=digits', f'--workdir={tmp_path}').stdout.splitlines()[-1])
  assert [(c['parts'], c['objects'], c['poster_linear_acc']) for c in other['cells']] == [(8, 4, '')]
  for flag, match in (
    ('--capsules=30x16', '--capsules must be parts:objects'),
    ('--capsules=0:16', 'n_part_caps must be >= 1'),
  ):
    bad = _ablation(flag, f'--workdir={tmp_path}')
    assert bad.returncode != 0 and match in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
