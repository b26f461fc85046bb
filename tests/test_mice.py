"""MiCE: the E-step, the ELBO and the analytic prototype update against numpy, the gating simplex, the
per-expert queue, learning on a toy mixture, what each ablation cell takes away, the epoch-end pass on 1 and
2 devices, bad flags, ResNet-34.

The non-MNIST flagfiles run end to end (ResNet-34, tfds mock data) only with ``MICE_RESNET_SMOKE=1`` or an
accelerator: each compiles a ResNet-34 training step, minutes on a shared 2-core CPU.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import losses
from unsupervised_jax.methods import mice
from unsupervised_jax.models import mice as models_mice
from unsupervised_jax.models import resnet
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAU, KAPPA = 0.7, 0.5


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _numpy_terms(f, v, g, mu, omega, queue, tau, kappa):
  """log pi [B, K], log phi [B, K] and q [B, K], written out expert by expert."""
  b, k, _ = f.shape
  log_pi = _log_softmax(g @ omega.T / kappa)
  log_phi = np.zeros((b, k))
  for n in range(b):
    for e in range(k):
      anchor = f[n, e] + mu[e]
      logits = np.array([v[n, e] @ anchor] + [queue[j, e] @ anchor for j in range(len(queue))]) / tau
      log_phi[n, e] = _log_softmax(logits)[0]
  joint = np.exp(log_pi) * np.exp(log_phi)
  return log_pi, log_phi, joint / joint.sum(1, keepdims=True)


def _tiny(seed=0, b=3, k=4, d=5, nu=6):
  rng = np.random.default_rng(seed)
  return (
    _unit(rng.normal(size=(b, k, d))),
    _unit(rng.normal(size=(b, k, d))),
    _unit(rng.normal(size=(b, d))),
    _unit(rng.normal(size=(k, d))),
    _unit(rng.normal(size=(k, d))),
    rng.normal(size=(nu, k, d)) * 0.5,
  )


def test_posterior_sums_to_one_and_matches_numpy():
  f, v, g, mu, omega, queue = _tiny()
  log_pi, log_phi, q = _numpy_terms(f, v, g, mu, omega, queue, TAU, KAPPA)
  got_pi, got_phi, got_q = jax.jit(
    lambda f, v, g, mu, omega, queue: (lambda lp, lf: (lp, lf, losses.mice_posterior(lp, lf)))(
      losses.mice_log_gating(g, omega, KAPPA), losses.mice_log_expert(f, v, mu, queue, TAU)
    )
  )(f, v, g, mu, omega, queue)
  got_q = np.asarray(got_q)
  np.testing.assert_allclose(got_pi, log_pi, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_phi, log_phi, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_q, q, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got_q.sum(1), 1.0, rtol=1e-6)


def test_elbo_matches_numpy_and_its_gradient_with_q_fixed_is_the_full_gradient():
  f, v, g, mu, omega, queue = _tiny(1)
  log_pi, log_phi, q = _numpy_terms(f, v, g, mu, omega, queue, TAU, KAPPA)
  expected = np.mean(np.sum(q * (log_phi + log_pi - np.log(q)), 1))  # E_q[log phi] - KL(q || pi)
  assert expected == pytest.approx(np.mean(np.log(np.sum(np.exp(log_pi + log_phi), 1))), rel=1e-6)
  got = losses.mice_elbo(jnp.asarray(log_pi), jnp.asarray(log_phi), jnp.asarray(q))
  assert float(got) == pytest.approx(expected, rel=1e-5)

  def elbo(f, g, fixed):
    lp, lf = losses.mice_log_gating(g, omega, KAPPA), losses.mice_log_expert(f, v, mu, queue, TAU)
    posterior = losses.mice_posterior(lp, lf)
    return losses.mice_elbo(lp, lf, jax.lax.stop_gradient(posterior) if fixed else posterior)

  grads = jax.jit(jax.grad(elbo, argnums=(0, 1)), static_argnums=2)
  fixed, full = grads(jnp.asarray(f), jnp.asarray(g), True), grads(jnp.asarray(f), jnp.asarray(g), False)
  for a, b in zip(fixed, full):  # the official loss differentiates through q; at the exact posterior it is equal
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _official_learning_rates(config, epochs):
  """The official ``util.adjust_learning_rate`` called before each epoch on one optimiser (it keeps the last rate
  it set when it sets none), as in ``train_MiCE.py``."""
  rates, lr = [], config.learning_rate
  for epoch in range(epochs):
    steps = np.sum(epoch > np.asarray(config.lr_decay_epochs))
    if epoch <= config.warmup_epochs:
      w = config.warmup_epochs
      lr = config.learning_rate * (1.0 if epoch >= w else epoch / w)
    elif steps > 0:
      lr = config.learning_rate * config.lr_decay_rate**steps
    rates.append(lr)
  return rates


@pytest.mark.parametrize('warmup,decays', [(10, (48, 64, 80)), (3, (14, 19, 24)), (2.5, (6,)), (0, (1, 3)), (4, (2,))])
def test_learning_rate_per_epoch_is_the_official_schedule(warmup, decays):
  config = mice.MiceConfig(learning_rate=1.0, warmup_epochs=warmup, lr_decay_epochs=decays, lr_decay_rate=0.1)
  schedule = jax.jit(mice.learning_rate_schedule(config, steps_per_epoch=7))
  ours = [float(schedule(jnp.int32(step))) for step in range(0, 100 * 7)]
  expected = np.repeat(_official_learning_rates(config, 100), 7)
  np.testing.assert_allclose(ours, expected, rtol=1e-6)
  assert ours[0] == (0.0 if warmup else 1.0)  # epoch 0 trains with lr 0 under a warm-up


@pytest.mark.parametrize('k,d', [(2, 1), (10, 128), (15, 128), (20, 19)])
def test_gating_prototypes_are_an_equiangular_simplex(k, d):
  omega = models_mice.simplex_prototypes(k, d)
  assert omega.shape == (k, d)
  gram = omega.astype(np.float64) @ omega.T.astype(np.float64)
  np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-5)
  np.testing.assert_allclose(gram[~np.eye(k, dtype=bool)], -1.0 / (k - 1), atol=1e-5)
  with pytest.raises(ValueError, match='D >= K - 1'):
    models_mice.simplex_prototypes(k + 2, k)


def _toy_mixture(n_per=48, seed=0):
  """Three 8x8 patterns (a bar, a square, a diagonal) with pixel noise; labels [N]."""
  rng = np.random.default_rng(seed)
  patterns = np.zeros((3, 8, 8))
  patterns[0, :, 3:5] = 1
  patterns[1, 2:6, 2:6] = 1
  patterns[2][np.eye(8, dtype=bool)] = 1
  labels = np.repeat(np.arange(3), n_per)
  images = np.clip(patterns[labels] * 200 + rng.normal(0, 20, (len(labels), 8, 8)), 0, 255)
  return images.astype(np.uint8)[..., None], labels


def _toy_method(batch_size=16, queue_size=32, n=144, **kwargs):
  config = mice.MiceConfig(
    **dict(
      dict(
        experts=3,
        embedding_dim=8,
        queue_size=queue_size,
        view='digits',
        learning_rate=0.05,
        warmup_epochs=0,
        lr_decay_epochs=(),
      ),
      **kwargs,
    )
  )
  train = loop.TrainConfig(num_steps=27, batch_size=batch_size, log_every=1, checkpoint_every=27, progress=False)
  return mice.mice(config, train, contract.DataInfo(n, (8, 8, 1))), train


@pytest.fixture(scope='module')
def toy_step():
  """A toy MiCE (K=3, D=8, batch 16, nu=32) and its train step, compiled once for the tests that use it."""
  method, _ = _toy_method(tau=0.2, kappa=0.2, learning_rate=0.05)
  return method, parallel.data_parallel_step(method.train_step, parallel.make_mesh(1), 16)


def test_elbo_rises_over_m_steps_on_a_toy_mixture(toy_step):
  """The train step on one fixed batch of views (step reset to 0), with the teacher and the queue (teacher
  embeddings of other images) put back before every step: each step is an M-step on one objective, whose
  ELBO (reported by the step, before its update) rises."""
  images, labels = _toy_mixture()
  method, step = toy_step
  state = method.init(jax.random.key(0), images[:1])
  others = jnp.asarray(images[1::3][:32], jnp.float32) / 255.0  # 32 images of all three components
  net = models_mice.MiceNet(3, 8, 'convnet')
  queue, _ = net.apply({'params': state.teacher_params}, others)
  teacher = state.teacher_params
  batch, keys = images[::9][:16], jax.random.split(jax.random.key(5), 16)
  assert len(set(labels[::9][:16].tolist())) == 3
  elbo = []
  for _ in range(8):
    state = state.replace(
      step=jnp.zeros((), jnp.int32),
      queue=jnp.copy(queue),
      queue_ptr=jnp.zeros((), jnp.int32),
      teacher_params=jax.tree.map(jnp.copy, teacher),
    )  # copies: the step donates its state
    state, metrics = step(state, batch, keys[0])  # step 0 every time: the same draw from batch, the same views
    elbo.append(float(metrics['elbo']))
  assert np.all(np.isfinite(elbo)) and elbo[-1] > elbo[0] + 0.1 and np.mean(np.diff(elbo) > 0) >= 0.7, elbo


def test_per_expert_queue_wraps_in_the_train_step(toy_step):
  images, _ = _toy_mixture()
  method, step = toy_step
  images = images[::9][:16]  # the ELBO test's data set: the compiled step is reused
  state = method.init(jax.random.key(0), images[:1])
  initial = np.asarray(state.queue)
  assert initial.shape == (32, 3, 8)  # [nu, K, D]
  snapshots = []
  for _ in range(3):
    state, _ = step(state, images, jax.random.key(2))
    snapshots.append((np.asarray(state.queue), int(state.queue_ptr)))
  (q1, p1), (q2, p2), (q3, p3) = snapshots
  assert (p1, p2, p3) == (16, 0, 16)
  np.testing.assert_array_equal(q1[16:], initial[16:])  # untouched until the second batch
  np.testing.assert_allclose(np.linalg.norm(q1[:16], axis=-1), 1.0, rtol=1e-5)  # teacher embeddings, per expert
  np.testing.assert_array_equal(q3[16:], q2[16:])  # the third batch overwrote the first, at the front
  assert not np.allclose(q3[:16], q2[:16])


def _numpy_update(method_config, state, images, hard):
  """mu from the networks' outputs with numpy for the posterior, the weights and the normalisation."""
  net = models_mice.MiceNet(method_config.experts, method_config.embedding_dim, method_config.backbone)
  x = jnp.asarray(images, jnp.float32) / 255.0
  f, g = (np.asarray(a, np.float64) for a in net.apply({'params': state.params['net']}, x))
  v, _ = (np.asarray(a, np.float64) for a in net.apply({'params': state.teacher_params}, x))
  mu, omega = _unit(np.asarray(state.params['mu'], np.float64)), _unit(np.asarray(state.params['omega'], np.float64))
  queue = np.asarray(state.queue, np.float64)
  log_pi = _log_softmax(g @ omega.T / method_config.kappa)
  logits = np.concatenate(
    [np.sum(v * (f + mu), -1)[..., None], np.einsum('nkd,jkd->nkj', f, queue) + np.einsum('kd,jkd->kj', mu, queue)], -1
  )
  log_phi = _log_softmax(logits / method_config.tau)[..., 0]
  q = np.exp(log_pi + log_phi)
  q /= q.sum(1, keepdims=True)
  weights = np.eye(q.shape[1])[q.argmax(1)] if hard else q
  sums = np.einsum('nk,nkd->kd', weights, v)
  norm = np.linalg.norm(sums, axis=1, keepdims=True)
  empty = norm[:, 0] == 0  # an empty cluster (hard) keeps its mu
  new = np.where(empty[:, None], np.asarray(state.params['mu']), sums / np.where(empty[:, None], 1.0, norm))
  return new, np.bincount(q.argmax(1), minlength=q.shape[1]), empty


@pytest.mark.parametrize('update', ['hard', 'soft'])
def test_analytic_prototype_update_of_the_pass_matches_numpy_and_has_unit_norm(update):
  """--prototype_pass: the update from a pass over the un-augmented images after the epoch."""
  images, _ = _toy_mixture(n_per=15)
  method, _ = _toy_method(prototype_update=update, tau=0.5, kappa=0.5, prototype_pass=True)
  state = method.init(jax.random.key(3), images[:1])
  state = state.replace(params=dict(state.params, mu=state.params['mu'] * 3.0))  # raw mu need not be unit
  expected_mu, expected_sizes, empty = _numpy_update(method.config, state, images, update == 'hard')
  update_fn = parallel.data_parallel_epoch_end(method.epoch_end, parallel.make_mesh(1), chunk_size=16)  # 45 = 16+16+13
  new, metrics = update_fn(state, images)
  np.testing.assert_allclose(new.params['mu'], expected_mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(new.params['mu'], axis=1)[~empty], 1.0, rtol=1e-5)
  assert (~empty).sum() >= 1 and (update == 'hard' or not empty.any())
  np.testing.assert_array_equal(np.asarray(metrics['cluster_sizes']), expected_sizes)


# The ablation cells' settings (experiments/mice_ablation.py), each against what it must take away or keep:
# (omega on the simplex, a train step moves mu, moves omega, the epoch-end pass moves mu); None: not checked
# (each check compiles a step or a pass, seconds here; the full method is checked for all).
ABLATIONS = [
  ('full', {}, (True, True, False, True)),
  ('no_analytic_mu', {'prototype_update': 'none'}, (True, None, None, False)),
  ('no_mu_gradient', {'prototype_gradient': False}, (True, False, False, None)),
  ('uniform_omega', {'gating_init': 'uniform'}, (False, None, None, None)),
  ('learned_omega', {'learn_gating': True}, (True, True, True, None)),
]


@pytest.mark.parametrize('cell,settings,expected', ABLATIONS, ids=[cell for cell, *_ in ABLATIONS])
def test_each_ablation_takes_away_its_part_and_only_that(cell, settings, expected):
  simplex, step_moves_mu, step_moves_omega, end_moves_mu = expected
  images, _ = _toy_mixture(n_per=16)
  method, _ = _toy_method(
    tau=0.2, kappa=0.2, **settings
  )  # toy_step's settings: full's step may come from the XLA cache
  state = method.init(jax.random.key(0), images[:1])
  omega = np.asarray(state.params['omega'])
  np.testing.assert_allclose(np.linalg.norm(omega, axis=1), 1.0, rtol=1e-5)
  assert np.allclose(omega @ omega.T, np.where(np.eye(3, dtype=bool), 1.0, -0.5), atol=1e-5) == simplex
  if step_moves_mu is None and end_moves_mu is None:
    return
  step = parallel.data_parallel_step(method.train_step, parallel.make_mesh(1), 16)
  stepped, _ = step(jax.tree.map(jnp.copy, state), images[:16], jax.random.key(1))
  if step_moves_mu is not None:
    assert (not np.allclose(stepped.params['mu'], state.params['mu'], atol=1e-7)) == step_moves_mu
    assert (not np.allclose(stepped.params['omega'], omega, atol=1e-7)) == step_moves_omega
  if end_moves_mu is not None:  # the epoch's end, from the sums the step kept
    update = parallel.data_parallel_epoch_end(method.epoch_end, parallel.make_mesh(1), chunk_size=16)
    mu = np.asarray(stepped.params['mu'])
    updated, _ = update(stepped, images)
    assert (not np.allclose(updated.params['mu'], mu, atol=1e-7)) == end_moves_mu


def test_the_ablation_command_runs_the_cells_tested_above():
  tree = ast.parse((ROOT / 'experiments' / 'mice_ablation.py').read_text())
  [cells] = [
    ast.literal_eval(node.value)
    for node in tree.body
    if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'CELLS'
  ]
  assert cells == {cell: settings for cell, settings, _ in ABLATIONS}


def test_ablation_command_on_digits_tabulates_its_cells_and_refuses_unknown_ones(tmp_path):
  args = [
    sys.executable,
    '-m',
    'experiments.mice_ablation',
    '--flagfile=experiments/configs/mice_mnist.flags',
    '--dataset=digits',
    '--batch_size=64',
    '--queue_size=128',
    '--num_steps=4',
    '--warmup_epochs=0',
    '--lr_decay_epochs=',
    '--seeds=0',
    '--knn_k=20',
    '--nofigures',
    '--noprogress',
    f'--workdir={tmp_path / "grid"}',
    f'--results_dir={tmp_path / "results"}',
  ]
  proc = subprocess.run(args + ['--ablations=full,bogus'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and 'got full,bogus' in proc.stderr and not (tmp_path / 'grid').exists(), proc.stderr
  # One cell: the grid's runner (several cells, reuse) is tested with the MoCo grid; this is MiCE's wiring.
  proc = subprocess.run(args + ['--ablations=learned_omega'], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads((tmp_path / 'results' / 'mice_ablation.json').read_text())
  assert table == json.loads((tmp_path / 'grid' / 'ablation.json').read_text())
  assert [(c['settings']['cell'], c['settings']['learn_gating']) for c in table['cells']] == [('learned_omega', True)]
  assert all(0 <= c['record']['metrics']['acc']['mean'] <= 1 for c in table['cells'])
  assert (tmp_path / 'grid' / 'learned_omega' / 'seed_0' / 'eval.json').is_file()


@pytest.mark.parametrize('prototype_pass', [False, True])
def test_epoch_end_update_on_two_devices_equals_one_device(prototype_pass):
  """The update from the epoch's training batches (sampled by epochs: 18 steps of 16) and from the pass after the
  epoch, on 1 and 2 devices (in this process: the suite runs on two CPU devices)."""
  from unsupervised_jax import data

  images = data.load('digits', 'all').images[:301]  # odd: the second device's share is padded
  config = mice.MiceConfig(
    experts=3,
    embedding_dim=8,
    queue_size=32,
    view='digits',
    warmup_epochs=0,
    lr_decay_epochs=(),
    learning_rate=0.05,
    prototype_pass=prototype_pass,
  )
  method = mice.mice(config, loop.TrainConfig(batch_size=16), contract.DataInfo.of(images))
  state = method.init(jax.random.key(0), images[:1])
  results = []
  for devices in (1, 2):
    mesh = parallel.make_mesh(devices)
    new = parallel.replicate(jax.tree.map(np.array, state), mesh)
    if not prototype_pass:
      step = parallel.data_parallel_step(method.train_step, mesh, 16, sampling='epochs')
      for _ in range(method.epoch_end.period):
        new, _ = step(new, images, jax.random.key(1))
        jax.block_until_ready(new)
      assert int(new.epoch_sums['count']) == 18 * 16
    new, epoch_metrics = parallel.data_parallel_epoch_end(method.epoch_end, mesh, chunk_size=8)(new, images)
    assert all(float(np.abs(x).sum()) == 0 for x in jax.tree.leaves(new.epoch_sums))  # restart at zero
    results.append((np.asarray(new.params['mu']), {k: np.asarray(v) for k, v in epoch_metrics.items()}))
  (mu1, m1), (mu2, m2) = results
  np.testing.assert_allclose(mu2, mu1, rtol=1e-4, atol=1e-5)
  for k in m1:
    np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5)
  seen = 301 if prototype_pass else 18 * 16
  assert m1['cluster_sizes'].sum() == m1['gating_cluster_sizes'].sum() == seen
  empty = m1['cluster_sizes'] == 0
  assert int(m1['empty_clusters']) == empty.sum() < 3
  np.testing.assert_allclose(np.linalg.norm(mu1, axis=1)[~empty], 1.0, rtol=1e-5)
  assert 0 <= m1['gating_agreement'] <= 1 and m1['largest_cluster_fraction'] >= 1 / 3


BAD_FLAGS = [
  ('--experts=1', 'experts must be >= 2'),
  ('--tau=0', 'tau must be > 0'),
  ('--kappa=-1', 'kappa must be > 0'),
  ('--queue_size=1000', 'multiple of the global batch'),
]


def test_bad_flags_fail_in_one_line_before_any_file_is_written(tmp_path, run_entry):
  for i, (flag, message) in enumerate(BAD_FLAGS):
    workdir = tmp_path / f'run{i}'
    proc = run_entry(
      'experiments.mice',
      '--flagfile=experiments/configs/mice_mnist.flags',
      f'--workdir={workdir}',
      f'--results_dir={tmp_path / "results"}',
      flag,
    )
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (flag, proc.stderr[-2000:])
    assert not workdir.exists()
  assert not (tmp_path / 'results').exists()


def test_entry_point_on_digits_scores_the_posterior_and_draws_the_cluster_sizes_over_training(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.mice',
      '--flagfile=experiments/configs/mice_mnist.flags',
      '--dataset=digits',
      '--batch_size=128',
      '--queue_size=256',
      '--num_steps=28',
      '--warmup_epochs=1',
      '--lr_decay_epochs=',
      '--seeds=0',
      '--knn_k=20',
      '--log_every=14',
      '--checkpoint_every=28',
      '--noprogress',
      f'--workdir={workdir}',
      f'--results_dir={tmp_path / "results"}',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((tmp_path / 'results' / 'mice_digits.json').read_text())
  assert {'acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'} <= set(record['metrics'])
  assert 'its own clusters (K=10) of train+test' in record['protocol'], record['protocol']
  steps, sizes = loop.read_metrics(workdir / 'seed_0', 'epoch_end/cluster_sizes')
  # The official epoch: 14 steps of 128 of the 1,797 digits (the last 5 left out), each image once.
  assert steps == [14, 28] and all(sum(s) == 14 * 128 for s in sizes)
  assert json.loads((workdir / 'config.json').read_text())['sampling'] == 'epochs'  # MiCE's default
  _, empty = loop.read_metrics(workdir / 'seed_0', 'epoch_end/empty_clusters')
  assert empty == [sum(size == 0 for size in s) for s in sizes]
  _, rates = loop.read_metrics(workdir / 'seed_0', 'learning_rate')
  assert rates == [0.0, 1.0]  # the official schedule: 0 through epoch 0 (steps 1-14), then lr (warm-up 1 epoch)
  for figure in ('tsne.png', 'cluster_sizes.png'):
    assert (workdir / figure).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('stem,size', [('cifar', 32), ('imagenet', 96)])
def test_resnet34_shapes_and_size(stem, size):
  model = resnet.resnet34(stem)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((2, size, size, 3)))
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((2, size, size, 3)))
  assert out.shape == (2, 512)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  # torchvision's resnet34 has 21,797,672 parameters with its 512x1000 classifier; the CIFAR stem's 3x3
  # convolution has 1,728 weights instead of 9,408.
  assert count == 21_797_672 - 513_000 - (9_408 - 1_728 if stem == 'cifar' else 0)


SMOKE = os.environ.get('MICE_RESNET_SMOKE') == '1' or jax.default_backend() != 'cpu'

MOCK_DRIVER = r'''
import os, sys
sys.path.insert(0, '.')
import tensorflow_datasets as tfds
from unsupervised_jax import data_tfds
data_tfds.network_available = lambda *a, **k: True  # tfds' mock needs no network; the loader would refuse offline
from experiments import common
from experiments import mice as entry
flagfile, workdir, data_dir = sys.argv[1:4]
sys.argv = ['mice', f'--flagfile={flagfile}', f'--workdir={workdir}', f'--data_dir={data_dir}', '--num_steps=3',
            '--batch_size=8', '--queue_size=16', '--seeds=0', '--nofigures', '--noprogress', '--log_every=1',
            '--checkpoint_every=3', '--results_dir=', '--knn_k=3', *sys.argv[4:]]
with tfds.testing.mock_data(num_examples=8):
    common.run(entry.main)
'''


@pytest.mark.parametrize('backbone', ['convnet', 'flagfile'])
@pytest.mark.parametrize('name', ['cifar10', 'cifar100_20', 'stl10'])
def test_non_mnist_flagfiles_run_end_to_end_on_mock_data(tmp_path, name, backbone):
  """Every flagfile as written (ResNet-34) with MICE_RESNET_SMOKE=1 or an accelerator; always with the small
  ConvNet in its place, so CI runs each flagfile's data set, protocol, views and epoch-end pass in seconds."""
  if backbone == 'flagfile' and not SMOKE:
    pytest.skip('ResNet-34 end to end: set MICE_RESNET_SMOKE=1 (minutes on a 2-core CPU)')
  workdir = tmp_path / 'run'
  (tmp_path / 'tfds').mkdir()  # the loader refuses a data directory that does not exist
  override = ['--backbone=convnet'] if backbone == 'convnet' else []
  proc = subprocess.run(
    [
      sys.executable,
      '-c',
      MOCK_DRIVER,
      f'experiments/configs/mice_{name}.flags',
      str(workdir),
      str(tmp_path / 'tfds'),
      *override,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((workdir / 'metrics.json').read_text())
  assert {'acc', 'nmi', 'ari', 'knn_acc', 'linear_acc'} <= set(record['metrics'])
  lines = [json.loads(l) for l in (workdir / 'seed_0' / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines if 'epoch_end/cluster_sizes' in l] == [2]  # 16 mock images, batch 8
  assert all(np.isfinite(l['loss']) for l in lines if 'loss' in l)


def test_imagenet_dog_flagfile_validates_and_its_resnet_step_runs_on_random_images():
  """No ImageNet copy and tfds' mock of imagenet2012 draws 1,000 classes at random sizes: the flagfile is
  parsed and validated, and (with MICE_RESNET_SMOKE=1) its step runs on random 96x96 images."""
  from experiments import common
  from experiments import train_flags

  train_flags.define('mice')
  common.FLAGS.unparse_flags()
  common.FLAGS(['mice', f'--flagfile={ROOT / "experiments/configs/mice_imagenet_dog.flags"}'])
  experiment = train_flags.experiment('mice')  # parsed and validated as the entry point does
  config = experiment.method_config
  assert (config.experts, config.backbone, config.view) == (15, 'resnet34', 'natural')
  assert (experiment.train.batch_size, experiment.train.num_epochs, experiment.train.sampling) == (256, 3000, 'epochs')
  common.FLAGS.unparse_flags()
  if not SMOKE:
    return
  images = np.random.default_rng(0).integers(0, 256, (16, 96, 96, 3), dtype=np.uint8)
  method = mice.mice(
    mice.MiceConfig(experts=15, backbone='resnet34', queue_size=16),
    loop.TrainConfig(batch_size=8),
    contract.DataInfo.of(images),
  )
  step = parallel.data_parallel_step(method.train_step, parallel.make_mesh(1), 8)
  state, metrics = step(method.init(jax.random.key(0), images[:1]), images, jax.random.key(1))
  assert bool(metrics['finite']) and int(state.queue_ptr) == 8
