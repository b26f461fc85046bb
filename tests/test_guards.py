"""Guards that hold on bad input: a non-finite update is never kept, images are checked at every entry, the
normalisation cannot overflow, settings fit the dtype they are used in."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import augment
from unsupervised_jax import data
from unsupervised_jax import losses
from unsupervised_jax.evaluation import probes
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import autoencoder
from unsupervised_jax.methods import moco
from unsupervised_jax.methods import self_label
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import learned
from unsupervised_jax.training import checkpoints
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: jax.Array
  opt_state: jax.Array


def _blows_up_at(step):
  """A method whose loss stays finite but whose update makes ``params`` inf from step ``step`` on (0-based)."""

  def train_step(state, images, keys):
    del keys
    loss = jnp.mean(images.astype(jnp.float32)) * 0 + 1.0
    update = jnp.where(state.step >= step, jnp.inf, 1.0)
    return state.replace(params=state.params + update, opt_state=state.opt_state + 1.0), {'loss': loss}

  init = lambda key, sample: _State(jnp.zeros((), jnp.int32), jnp.zeros(3), jnp.zeros(()))
  return contract.Method('toy', init, train_step, None)


def test_a_finite_loss_whose_update_is_not_finite_is_neither_kept_nor_checkpointed(tmp_path):
  images = data.load('digits', 'all').images[:64]
  method = _blows_up_at(3)  # steps 1-3 fine (state.step 0-2), the 4th makes params inf
  config = loop.TrainConfig(num_steps=8, batch_size=8, log_every=1, checkpoint_every=2, progress=False)
  for _ in range(2):  # a resume meets the same step again, from the finite checkpoint
    with pytest.raises(
      loop.NonFiniteLossError,
      match=r'step 4 made state\.params non-finite; that update was not '
      r'kept .*latest: step 2\)',
    ):
      loop.train(method, method.init(None, None), images, config, tmp_path, key=jax.random.key(0))
    kept = checkpoints.restore_latest(checkpoints.manager(tmp_path), method.init(None, None))
    assert int(kept.step) == 2 and np.all(np.isfinite(np.asarray(kept.params)))
    np.testing.assert_array_equal(kept.params, [2.0, 2.0, 2.0])


@pytest.mark.parametrize(
  'config,match',
  [
    (moco.MoCoConfig(learning_rate=1e39), 'learning_rate must be a finite float32'),
    (moco.MoCoConfig(learning_rate=1e-50), r'learning_rate must be > 0 in float32, got 1e-50 \(float32: 0\)'),
    (moco.MoCoConfig(temperature=float('nan')), 'temperature must be > 0'),
    (loop.TrainConfig(num_steps=2**31), 'num_steps must fit in int32'),
    (loop.TrainConfig(batch_size=10**12), 'batch_size must fit in int32'),
  ],
)
def test_settings_that_do_not_fit_their_dtype_are_refused(config, match):
  with pytest.raises(ValueError, match=match):
    config.validate(loop.TrainConfig()) if isinstance(config, moco.MoCoConfig) else config.validate()


def test_float_images_are_refused_at_every_entry_before_anything_is_written(tmp_path):
  images = data.load('digits', 'all').images[:64]
  floats = images.astype(np.float32) / 255  # what a user holding [0, 1] floats passes
  with pytest.raises(ValueError, match=r'images must be uint8 .*got dtype float32 \(floats in \[0, 1\]'):
    augment.to_float(floats)
  method = autoencoder.autoencoder(autoencoder.AEConfig(hidden=(16,), latent_dim=4), None, None)
  state = method.init(jax.random.key(0), images[:1])
  with pytest.raises(ValueError, match='must be uint8'):
    jax.jit(method.embed)(state, floats)  # embed and assign go through augment.to_float
  with pytest.raises(ValueError, match="the data set must be uint8"):
    loop.train(
      method,
      state,
      floats,
      loop.TrainConfig(num_steps=2, batch_size=8, progress=False),
      tmp_path / 'run',
      key=jax.random.key(0),
    )
  assert not (tmp_path / 'run').exists()
  with pytest.raises(ValueError, match="the data set's images must be uint8"):
    loop.train(
      method,
      state,
      {'images': floats, 'labels': np.zeros(64, np.int32)},
      loop.TrainConfig(num_steps=2, batch_size=8, progress=False),
      tmp_path / 'run',
      key=jax.random.key(0),
    )
  with pytest.raises(ValueError, match='images must be uint8 in'):
    data.from_arrays(floats)
  with pytest.raises(ValueError, match=r'got shape \(64, 64\)'):
    contract.check_images(images.reshape(64, 64))


@pytest.mark.parametrize('channels', [2, 4])
def test_grey_alpha_and_rgba_images_with_the_natural_view_fail_in_one_line_before_writing(tmp_path, channels):
  rng = np.random.default_rng(channels)
  path = tmp_path / 'mine.npz'
  np.savez(
    path,
    x_train=rng.integers(0, 256, (32, 8, 8, channels), dtype=np.uint8),
    y_train=np.arange(32) % 4,
    x_test=rng.integers(0, 256, (8, 8, 8, channels), dtype=np.uint8),
    y_test=np.arange(8) % 4,
  )
  experiment = run_config.Experiment(
    'moco',
    run_config.RunConfig(dataset=str(path), seeds=(0,), workdir=str(tmp_path / 'run')),
    loop.TrainConfig(num_steps=2, batch_size=8, progress=False),
    protocol.EvalConfig(),
    self_label.SelfLabelConfig(),
    moco.MoCoConfig(queue_size=16, view='natural'),
  )
  with pytest.raises(ValueError, match=f'the natural view takes images of 1 or 3 channels, these have {channels}'):
    learned.run(experiment)
  assert not (tmp_path / 'run').exists()
  with pytest.raises(ValueError, match=f'grayscale takes grey or RGB images, got {channels} channels'):
    augment.grayscale(jnp.zeros((4, 4, channels)))
  digits_view = experiment.method_config.__class__(queue_size=16, view='digits')  # the digit views take any
  moco.moco(digits_view, experiment.train, contract.DataInfo(40, (8, 8, channels)))


def test_normalisation_does_not_overflow_and_the_knn_probe_ignores_the_scale():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 16)).astype(np.float32)
  unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
  for scale in (1e20, 1e30, 3e37):  # |x|^2 overflows float32 above ~1.8e19
    np.testing.assert_allclose(losses.l2_normalize(jnp.asarray(x * scale)), unit, rtol=1e-5, atol=1e-6)
  # Below eps = 1e-12 a row is x / eps, as F.normalize; |x|^2 underflows float32 there, the result does not.
  np.testing.assert_allclose(losses.l2_normalize(jnp.asarray(x * 1e-20)), x * 1e-8, rtol=1e-5)
  np.testing.assert_array_equal(losses.l2_normalize(jnp.zeros((2, 3))), 0.0)
  gradient = jax.grad(lambda v: jnp.sum(losses.l2_normalize(v) * jnp.arange(3.0)))(jnp.zeros(3))
  np.testing.assert_allclose(gradient, np.arange(3.0) / 1e-12, rtol=1e-6)  # 1 / eps, finite, as before
  digits = data.load('digits', 'all')
  features = digits.images.reshape(len(digits.images), -1).astype(np.float32)
  accuracy = lambda f: probes.knn_accuracy(f[:1400], digits.labels[:1400], f[1400:], digits.labels[1400:], k=10)
  assert accuracy(features * 1e20) == accuracy(features) > 0.9


def test_a_workdir_or_results_dir_that_is_a_file_is_refused_in_one_line(tmp_path, run_entry):
  (tmp_path / 'afile').write_text('mine')
  for flag in ('--workdir', '--results_dir'):
    proc = run_entry('experiments.autoencoder', f'{flag}={tmp_path / "afile"}', '--num_steps=5', '--seeds=0')
    assert (
      proc.returncode == 2
      and proc.stderr.strip() == f'error: {flag}={tmp_path / "afile"} is a file, not a folder; choose another.'
    ), proc.stderr
  assert (tmp_path / 'afile').read_text() == 'mine'


def test_a_diverged_run_and_too_many_neighbours_end_in_one_line(tmp_path, run_entry):
  common = (
    'experiments.moco',
    '--dataset=digits',
    '--num_steps=10',
    '--queue_size=256',
    '--batch_size=64',
    '--seeds=0',
  )
  proc = run_entry(*common, '--temperature=1e-30', f'--workdir={tmp_path / "hot"}', '--noprogress')
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 1 and len(lines) == 1 and 'step 1 made loss' in lines[0] and 'non-finite' in lines[0]
  proc = run_entry(*common, '--knn_k=5000', f'--workdir={tmp_path / "k"}')
  assert proc.returncode == 2 and 'knn_k=5000 exceeds the 1437 training images' in proc.stderr
  assert not (tmp_path / 'k').exists()


def test_a_damaged_checkpoint_is_named_in_one_line_and_kept(tmp_path, run_entry):
  common = (
    'experiments.autoencoder',
    '--dataset=digits',
    '--num_steps=10',
    '--checkpoint_every=5',
    '--seeds=0',
    '--nofigures',
    '--noprogress',
    f'--workdir={tmp_path / "run"}',
  )
  assert run_entry(*common, '--knn_k=10').returncode == 0
  latest = tmp_path / 'run' / 'seed_0' / 'checkpoints' / '10'
  damaged = sorted(f for f in latest.rglob('*') if f.is_file())
  for f in damaged:
    f.write_bytes(b'garbage')
  proc = run_entry(*common, '--knn_k=20')  # other evaluation settings: re-evaluated from the last checkpoint
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(f'error: the checkpoint {latest} cannot be read (')
  assert 'move that folder aside to resume from the one before it' in proc.stderr
  assert all(f.read_bytes() == b'garbage' for f in damaged)  # nothing deleted
