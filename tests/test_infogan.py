import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import augment
from unsupervised_jax import data
from unsupervised_jax import losses
from unsupervised_jax.methods import base
from unsupervised_jax.methods import infogan
from unsupervised_jax.models import infogan as models
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 32


def test_mutual_information_equals_a_hand_computation():
  logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  categories = np.array([0, 1])
  means, codes = np.array([[0.2], [-0.4]]), np.array([[0.7], [-0.4]])
  log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  categorical = (log_softmax[0, 0] + log_softmax[1, 1]) / 2 + np.log(3)  # E[log Q(c|x)] + H(c)
  continuous = np.mean([-0.5 * 0.5**2, 0.0]) - 0.5 * np.log(2 * np.pi) + np.log(2)  # N(mu, 1); H(U(-1, 1))
  total, cat, cont = losses.infogan_mutual_information(
    jnp.asarray(logits), jnp.asarray(categories), jnp.asarray(means), jnp.asarray(codes), 1.0, 0.5
  )
  assert float(cat) == pytest.approx(categorical, rel=1e-5)
  assert float(cont) == pytest.approx(continuous, rel=1e-5)
  assert float(total) == pytest.approx(categorical + 0.5 * continuous, rel=1e-5)


def test_entropy_of_the_uniform_code_is_log_k_and_gan_losses_are_the_cross_entropies():
  assert float(losses.categorical_entropy(jnp.full((10,), 0.1))) == pytest.approx(np.log(10), rel=1e-6)
  assert float(losses.categorical_entropy(jnp.array([1.0, 0.0]))) == 0.0
  real, fake = np.array([1.0, -2.0]), np.array([0.5, 3.0])
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  expected_d = -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake)))
  assert float(losses.gan_discriminator_loss(jnp.asarray(real), jnp.asarray(fake))) == pytest.approx(expected_d)
  assert float(losses.gan_generator_loss(jnp.asarray(fake))) == pytest.approx(-np.mean(np.log(sigmoid(fake))))


@pytest.mark.parametrize('implementation', ['matmul'])
@pytest.mark.parametrize('size', [8, 14])
def test_strided_and_transposed_convolutions_equal_xla(implementation, size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)
  np.testing.assert_allclose(models.strided_conv(x, kernel), models._xla_strided_conv(x, kernel), atol=1e-4)
  np.testing.assert_allclose(models.transposed_conv(x, kernel), models._xla_transposed_conv(x, kernel), atol=1e-4)
  # The transposed convolution's index rule: input pixel i adds x[i] w[k] to output 2i + k - 1.
  one = jnp.zeros((1, 3, 3, 1)).at[0, 1, 1, 0].set(1.0)
  taps = jnp.arange(16.0).reshape(4, 4, 1, 1)
  np.testing.assert_array_equal(models.transposed_conv(one, taps)[0, 1:5, 1:5, 0], taps[:, :, 0, 0])


@pytest.mark.parametrize('shape', [(28, 28, 1), (8, 8, 1), (10, 10, 3)])
def test_shapes_of_g_d_and_q(shape):
  config = infogan.InfoGANConfig()
  method = infogan.infogan(config, loop.TrainConfig(), contract.DataInfo(1, shape))

  def shapes():  # traced only (jax.eval_shape): no compilation
    state = method.init(jax.random.key(0), jnp.zeros((1,) + shape, jnp.uint8))
    latents = infogan.sample_latents(config, jax.random.split(jax.random.key(1), 3))
    images = infogan.generate(config, state, shape, *latents)
    _, discriminator = infogan.networks(config, shape)
    variables = {'params': state.discriminator, 'batch_stats': state.discriminator_stats}
    uint8 = (images * 255).astype(jnp.uint8)
    return (
      images,
      discriminator.apply(variables, images, train=False),
      method.embed(state, uint8),
      method.assign(state, uint8),
    )

  images, (d_logits, categorical, means), codes, clusters = jax.eval_shape(shapes)
  assert images.shape == (3,) + shape
  assert d_logits.shape == (3,) and categorical.shape == (3, 10) and means.shape == (3, 2)
  assert codes.shape == (3, 1024) and clusters.shape == (3,) and clusters.dtype == jnp.int32


def test_mutual_information_trains_q_and_the_shared_trunk_but_not_d_head():
  config = infogan.InfoGANConfig()
  shape = (8, 8, 1)
  generator, discriminator = models.Generator(shape), models.Discriminator()  # one device: no axis

  @jax.jit
  def gradients():  # of L_I with respect to D/Q's parameters, on 16 generated images (one compilation)
    g = generator.init(jax.random.key(0), jnp.zeros((1, config.latent_dim)), train=False)
    d = discriminator.init(jax.random.key(1), jnp.zeros((1,) + shape), train=False)
    noise, categories, continuous = infogan.sample_latents(config, jax.random.split(jax.random.key(2), 16))
    fake, _ = generator.apply(
      g, infogan.generator_input(config, noise, categories, continuous), train=True, mutable=['batch_stats']
    )

    def information(params):
      (_, logits, means), _ = discriminator.apply(
        {'params': params, 'batch_stats': d['batch_stats']}, fake, train=True, mutable=['batch_stats']
      )
      return losses.infogan_mutual_information(logits, categories, means, continuous)[0]

    return jax.grad(information)(d['params'])

  grads = gradients()
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))
  for trunk_layer in ('conv1', 'conv2', 'bn_conv2', 'fc', 'bn_fc'):
    assert norm(grads[trunk_layer]) > 0, trunk_layer
  assert norm(grads['q_fc']) > 0 and norm(grads['q_out']) > 0
  assert norm(grads['d_head']) == 0


def test_categorical_view_scores_the_category_on_an_affine_view_and_the_continuous_codes_on_the_image():
  shape, keys = (8, 8, 1), jax.random.split(jax.random.key(2), 16)
  plain, viewed = infogan.InfoGANConfig(), infogan.InfoGANConfig(categorical_view_rotation=20.0)
  generator, discriminator = infogan.networks(plain, shape)
  g = generator.init(jax.random.key(0), jnp.zeros((1, plain.latent_dim)), train=False)
  d = discriminator.init(jax.random.key(1), jnp.zeros((1,) + shape), train=False)
  in_batch = lambda f: jax.vmap(f, axis_name=base.AXIS)  # BatchNorm's pmean over a one-device 'batch' axis

  @jax.jit
  def terms():
    def by_hand():  # the view of each generated image, re-made from augment.random_affine and the example key
      noise, categories, continuous = infogan.sample_latents(plain, keys)
      fake, _ = generator.apply(
        g, infogan.generator_input(plain, noise, categories, continuous), train=True, mutable=['batch_stats']
      )
      views = jax.vmap(
        lambda k, x: augment.random_affine(
          jax.random.fold_in(k, 1), x, max_rotation_deg=20.0, scale=(0.9, 1.1), max_translation=0.1
        )
      )(keys, fake)
      (_, logits, _), _ = discriminator.apply(d, views, train=True, mutable=['batch_stats'])
      return losses.infogan_mutual_information(logits, categories, jnp.zeros_like(continuous), continuous)[1]

    def categorical_of_g(params, config):
      return infogan.information(config, dict(g, params=params), d, shape, keys)[1]

    outputs = [in_batch(lambda _: infogan.information(c, g, d, shape, keys)[:3])(jnp.zeros(1)) for c in (plain, viewed)]
    gradient = jax.grad(lambda p: in_batch(lambda _: categorical_of_g(p, viewed))(jnp.zeros(1))[0])(g['params'])
    return outputs, in_batch(lambda _: by_hand())(jnp.zeros(1))[0], gradient

  ((_, cat_plain, cont_plain), (_, cat_viewed, cont_viewed)), expected, gradient = terms()
  assert float(cat_viewed[0]) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
  assert abs(float(cat_viewed[0]) - float(cat_plain[0])) > 1e-4  # the view changes Q's categorical logits
  assert float(cont_viewed[0]) == pytest.approx(float(cont_plain[0]), rel=1e-6)  # continuous: on the image
  assert sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(gradient)) > 0  # G is trained through the warp


@pytest.fixture(scope='module')
def digits_run():
  """One compiled data-parallel step on the 8x8 digits (compiled once for the tests below)."""
  images = data.load('digits', 'all').images
  method = infogan.infogan(infogan.InfoGANConfig(), loop.TrainConfig(), contract.DataInfo.of(images))
  mesh = parallel.make_mesh(1)
  step = parallel.data_parallel_step(method.train_step, mesh, BATCH)
  state = parallel.replicate(method.init(jax.random.key(0), images[:1]), mesh)
  return method, step, state, parallel.replicate(images, mesh), images


def test_one_step_lowers_the_information_loss_on_a_fixed_batch(digits_run):
  _, step, state, dataset, _ = digits_run
  key = jax.random.key(3)
  state = jax.tree.map(jnp.copy, state)  # the step donates its state
  after, before_metrics = step(state, dataset, key)
  # The step's 'mi' is L_I of the state it starts from, on the latents of its step number: rerun step 0 from
  # the updated parameters for L_I on the same latents and real batch.
  _, after_metrics = step(after.replace(step=jnp.zeros((), jnp.int32)), dataset, key)
  assert float(after_metrics['mi']) > float(before_metrics['mi'])


def test_no_nan_over_a_short_digits_run_and_assign_gives_one_cluster_per_image(digits_run):
  method, step, state, dataset, images = digits_run
  state = jax.tree.map(jnp.copy, state)
  for _ in range(15):
    state, metrics = step(state, dataset, jax.random.key(4))
    assert bool(metrics['finite']), {k: float(v) for k, v in metrics.items()}
  assert int(state.step) == 15 and bool(parallel.tree_all_finite(state))
  clusters = np.asarray(jax.jit(method.assign)(state, images[:50]))
  assert clusters.shape == (50,) and clusters.dtype == np.int32
  assert clusters.min() >= 0 and clusters.max() < 10


@pytest.mark.parametrize(
  'flags,match',
  [
    (['--generator_learning_rate=0'], 'generator_learning_rate must be > 0'),
    (['--num_categories=0'], 'num_categories must be >= 1'),
    (['--num_continuous=-1'], 'num_continuous must be >= 1'),
    (['--categorical_view_rotation=-5'], 'categorical_view_rotation must be >= 0'),
    (['--batch_size=127', '--num_devices=2'], 'multiple of the 2 devices'),
  ],
)
def test_bad_flags_fail_in_one_line_before_anything_is_written(tmp_path, flags, match):
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.infogan',
      *flags,
      f'--workdir={tmp_path / "run"}',
      '--dataset=digits',
      '--num_steps=5',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0 and match in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert not (tmp_path / 'run').exists()


def test_category_order_follows_the_matched_digit():
  assert infogan.category_order(4, {2: 0, 0: 1, 3: 2}).tolist() == [2, 0, 3, 1]  # unmatched code 1 last
  assert infogan.category_order(3).tolist() == [0, 1, 2]


def test_figures_put_the_categories_in_matched_digit_order(digits_run, tmp_path, monkeypatch):
  from unsupervised_jax import plots

  method, _, state, _, images = digits_run
  grids = {}
  monkeypatch.setattr(
    plots, 'image_grid', lambda grid, path, **kw: grids.setdefault(pathlib.Path(path).name, (grid, kw))
  )
  matching = {code: (code + 3) % 10 for code in range(10)}  # code 7 is digit 0, code 8 digit 1, ...
  infogan.figures(method.config, state, images[:4], tmp_path, matching=matching)
  grid, kw = grids['categories.png']
  assert kw['titles'][:3] == ['7 -> 0', '8 -> 1', '9 -> 2'] and kw['titles'][10:] == [''] * 90
  noise = jax.random.uniform(jax.random.key(0), (1, method.config.noise_dim), minval=-1.0, maxval=1.0)
  expected = infogan.generate(
    method.config, state, images.shape[1:], noise, jnp.array([7]), jnp.zeros((1, method.config.num_continuous))
  )
  np.testing.assert_allclose(np.asarray(grid[0]), np.asarray(expected[0]), atol=1e-5)
  grid, kw = grids['continuous_0.png']
  assert kw['titles'][0] == '7 -> 0' and kw['titles'][9] == '8 -> 1' and kw['titles'][1] == ''
