"""The training core: data-parallel step, resume, non-finite guard, single compilation."""

import json
import os
import pathlib
import subprocess
import sys

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax.methods import autoencoder
from unsupervised_jax.training import checkpoints
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ROOT / 'tests' / '_train_driver.py'


def _learner():
  return autoencoder.autoencoder(autoencoder.AEConfig(hidden=(32,), latent_dim=4, noise_std=0.1), None, None)


def _final_params(workdir, images):
  learner = _learner()
  like = learner.init(jax.random.key(0), images[:1])
  return checkpoints.restore_latest(checkpoints.manager(workdir), like)


@pytest.mark.parametrize('sampling', parallel.SAMPLINGS)
def test_two_devices_equal_one_device_on_the_same_global_batch(sampling):
  """In this process: the suite runs on two CPU devices (tests/conftest.py)."""
  images = data.load('digits', 'all').images
  learner = _learner()
  start = learner.init(jax.random.key(1), images[:1])
  finals = []
  for devices in (1, 2):
    mesh = parallel.make_mesh(devices)
    state = parallel.replicate(jax.tree.map(jnp.copy, start), mesh)
    step = parallel.data_parallel_step(learner.train_step, mesh, 64, sampling=sampling)
    dataset = parallel.replicate(images, mesh)
    for _ in range(3):
      state, _ = step(state, dataset, jax.random.key(0))
      jax.block_until_ready(state)  # XLA:CPU collectives: see training.loop._needs_step_sync
    finals.append(jax.device_get(state))
  leaves = lambda tree: jax.tree.leaves(tree)
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(finals[0].params), leaves(finals[1].params)))
  moved = max(
    float(np.max(np.abs(a - b))) for a, b in zip(leaves(finals[0].params), leaves(jax.device_get(start.params)))
  )
  assert moved > 1e-3 and diff < 1e-5 and int(finals[1].step) == 3  # the steps changed the parameters, alike


def test_kill_9_and_resume_is_bitwise_equal_to_one_run(tmp_path):
  """Killed mid-epoch (sampling by epochs: 28 steps of 64 an epoch of the 1,797 digits) and resumed."""
  images = data.load('digits', 'all').images
  straight, crashed = tmp_path / 'straight', tmp_path / 'crashed'
  run = lambda workdir, steps, env=None: subprocess.run(
    [sys.executable, str(DRIVER), str(workdir), str(steps), '1', '64', 'epochs'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )
  assert run(straight, 40).returncode == 0
  env = dict(os.environ, **{loop.CRASH_ENV: '25'})  # SIGKILL after step 25; last checkpoint: 20
  killed = run(crashed, 40, env)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert checkpoints.manager(crashed).latest_step() == 20
  killed_s = loop.trained_seconds(crashed)
  assert killed_s > 0 and loop.read_metrics(crashed, 'train_s')[0] == [5, 10, 15, 20, 25]
  assert run(crashed, 40).returncode == 0  # resumes from step 20
  # The training time goes on from the killed process's (to its last log, step 25), not from 0.
  steps, seconds = loop.read_metrics(crashed, 'train_s')
  assert steps == [5, 10, 15, 20, 25, 30, 35, 40] and seconds[steps.index(25)] > killed_s
  assert loop.trained_seconds(crashed) == seconds[-1] == max(seconds)
  a, b = _final_params(straight, images), _final_params(crashed, images)
  assert int(a.step) == int(b.step) == 40
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@flax.struct.dataclass
class _ToyState:
  step: jax.Array
  params: jax.Array


def _toy_method(nan_from_step):
  def train_step(state, images, keys):
    del keys
    loss = jnp.mean(images.astype(jnp.float32)) * 0 + jnp.where(state.step >= nan_from_step, jnp.nan, 1.0)
    return state.replace(params=state.params + loss), {'loss': loss}

  return contract.Method('toy', None, train_step, None)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  images = np.zeros((16, 2, 2, 1), np.uint8)
  config = loop.TrainConfig(num_steps=10, batch_size=4, log_every=1, checkpoint_every=2, progress=False)
  state = _ToyState(jnp.zeros((), jnp.int32), jnp.zeros(()))
  with pytest.raises(
    loop.NonFiniteLossError,
    match=r'step 6 made loss, state.params non-finite; that update was not '
    r'kept .*\(latest: step 4\) hold only finite states',
  ):
    loop.train(_toy_method(nan_from_step=5), state, images, config, tmp_path, key=jax.random.key(0))
  mngr = checkpoints.manager(tmp_path)
  assert mngr.latest_step() == 4
  restored = checkpoints.restore_latest(mngr, state)
  assert float(restored.params) == 4.0  # four good steps, nothing after


def test_step_compiles_once(tmp_path):
  images = data.load('digits', 'train').images
  learner = _learner()
  traced = chex.assert_max_traces(learner.train_step, n=1)
  method = learner._replace(train_step=traced)
  config = loop.TrainConfig(num_steps=6, batch_size=16, log_every=2, checkpoint_every=3, progress=False)
  state = loop.train(
    method, learner.init(jax.random.key(0), images[:1]), images, config, tmp_path, key=jax.random.key(0)
  )
  assert int(state.step) == 6


def _tensorboard_scalars(workdir, tag):
  """``[(step, value)]`` of ``tag`` in the TensorBoard event files of ``workdir`` (TFRecord framing read by hand)."""
  import struct

  from tensorboardX.proto import event_pb2

  out = []
  for path in sorted(pathlib.Path(workdir).glob('events.out.tfevents.*')):
    raw = path.read_bytes()
    offset = 0
    while offset < len(raw):
      (length,) = struct.unpack('<Q', raw[offset : offset + 8])
      event = event_pb2.Event.FromString(raw[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      out += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
  return out


def test_metrics_jsonl_and_resume_noop(tmp_path):
  images = data.load('digits', 'train').images
  learner = _learner()
  config = loop.TrainConfig(num_steps=4, batch_size=16, log_every=2, checkpoint_every=2, progress=False)
  loop.train(learner, learner.init(jax.random.key(0), images[:1]), images, config, tmp_path, key=jax.random.key(0))
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 2 and '"loss"' in lines[0] and '"images_per_s"' in lines[0]
  losses = _tensorboard_scalars(tmp_path, 'loss')  # the TensorBoard events hold the same curve
  assert [step for step, _ in losses] == [2, 4]
  assert [value for _, value in losses] == pytest.approx([json.loads(l)['loss'] for l in lines])
  state = loop.train(
    learner, learner.init(jax.random.key(0), images[:1]), images, config, tmp_path, key=jax.random.key(0)
  )
  assert int(state.step) == 4  # already done: restored, no new step
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 2


def test_read_metrics_gives_one_value_per_step_the_last_logged(tmp_path):
  writer = loop.MetricsWriter(tmp_path)
  for step, sizes in [(2, [1, 3]), (4, [2, 2]), (2, [0, 4])]:  # step 2 logged again after a resume
    writer.write(step, {'epoch_end/cluster_sizes': np.asarray(sizes), 'loss': step / 10})
  writer.close()
  assert loop.read_metrics(tmp_path, 'epoch_end/cluster_sizes') == ([2, 4], [[0, 4], [2, 2]])
  assert loop.read_metrics(tmp_path, 'absent') == ([], [])
  assert loop.read_metrics(tmp_path / 'no_run', 'loss') == ([], [])


def test_read_evaluations_gives_the_accuracy_against_steps(tmp_path):
  writer = loop.MetricsWriter(tmp_path)
  writer.write(2, {'loss': 0.5})
  writer.write(2, {'eval/knn_acc': 0.25, 'eval/cluster_acc_test': 0.5})
  writer.write(4, {'eval/knn_acc': 0.5, 'eval/cluster_acc_test': 0.75})
  writer.write(2, {'eval/knn_acc': 0.375, 'eval/cluster_acc_test': 0.5})  # step 2 evaluated again after a resume
  writer.close()
  assert loop.read_evaluations(tmp_path) == {'step': [2, 4], 'cluster_acc_test': [0.5, 0.75], 'knn_acc': [0.375, 0.5]}
  assert loop.read_evaluations(tmp_path / 'no_run') == {}


@pytest.mark.parametrize(
  'kwargs,match',
  [({'num_steps': 0}, 'num_steps'), ({'batch_size': 0}, 'batch_size'), ({'checkpoint_every': 0}, 'checkpoint_every')],
)
def test_bad_loop_config(tmp_path, kwargs, match):
  config = loop.TrainConfig(**{'num_steps': 2, 'batch_size': 2, **kwargs})
  with pytest.raises(ValueError, match=match):
    loop.train(
      _toy_method(99),
      _ToyState(jnp.zeros((), jnp.int32), jnp.zeros(())),
      np.zeros((4, 1, 1, 1), np.uint8),
      config,
      tmp_path / 'run',
      key=jax.random.key(0),
    )
  assert not (tmp_path / 'run').exists()


def test_batch_not_divisible_by_devices_is_a_clear_error():
  mesh = parallel.make_mesh(1)
  with pytest.raises(ValueError, match='multiple'):
    parallel.check_batch_size(0, mesh)
  with pytest.raises(ValueError, match='batch size 7 must be a positive multiple of the 2 devices'):
    parallel.check_batch_size(7, parallel.make_mesh(2))


def test_sample_batch_is_independent_of_device_split():
  images = jnp.arange(100, dtype=jnp.uint8).reshape(100, 1, 1, 1)
  mesh = parallel.make_mesh(1)
  fn = jax.jit(
    jax.shard_map(
      lambda im, k: parallel.sample_batch(im, k, jnp.int32(3), 8)[0],
      mesh=mesh,
      in_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec()),
      out_specs=jax.sharding.PartitionSpec(parallel.AXIS),
      check_vma=False,
    )
  )
  a = np.asarray(fn(images, jax.random.key(0))).ravel()
  b = np.asarray(fn(images, jax.random.key(0))).ravel()
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) > 4  # actually random indices


def _epoch_batches(n, batch, steps, key=0):
  """The global batches of ``steps`` steps drawn by epochs from ``arange(n)`` on one device, ``[steps, batch]``."""
  ids = jnp.arange(n, dtype=jnp.int32)
  spec = jax.sharding.PartitionSpec()
  draw = jax.jit(
    jax.shard_map(
      lambda d, k, s: parallel.sample_batch(d, k, s, batch, 'epochs')[0],
      mesh=parallel.make_mesh(1),
      in_specs=(spec, spec, spec),
      out_specs=spec,
      check_vma=False,
    )
  )
  return np.stack([np.asarray(draw(ids, jax.random.key(key), jnp.int32(s))) for s in range(steps)])


def test_sampling_by_epochs_takes_each_example_once_an_epoch_in_a_new_order_each_epoch():
  batches = _epoch_batches(100, 8, 25)  # 12 steps an epoch, 4 examples left out of each
  first, second = batches[:12].ravel(), batches[12:24].ravel()
  assert len(set(first.tolist())) == len(set(second.tolist())) == 96  # without replacement
  assert not np.array_equal(np.sort(first), np.arange(96))  # shuffled, not the first 96 in order
  assert not np.array_equal(first, second) and set(first.tolist()) != set(second.tolist())  # a new permutation
  np.testing.assert_array_equal(_epoch_batches(100, 8, 25), batches)  # a function of (key, step): resumable
  assert not np.array_equal(_epoch_batches(100, 8, 12, key=1), batches[:12])
  with pytest.raises(ValueError, match='no whole batch of 8'):
    parallel.steps_per_epoch(7, 8)
  with pytest.raises(ValueError, match='sampling must be one of'):
    parallel.data_parallel_step(lambda *a: a, parallel.make_mesh(1), 8, sampling='bogus')


def test_sample_batch_indexes_every_array_of_a_pytree_data_set_alike():
  images = jnp.arange(100, dtype=jnp.uint8).reshape(100, 1, 1, 1)
  dataset = {'images': images, 'labels': jnp.arange(100, dtype=jnp.int32) * 3}
  mesh = parallel.make_mesh(1)
  spec = jax.sharding.PartitionSpec()
  fn = jax.jit(
    jax.shard_map(
      lambda d, k: parallel.sample_batch(d, k, jnp.int32(3), 8)[0],
      mesh=mesh,
      in_specs=(spec, spec),
      out_specs=spec,
      check_vma=False,
    )
  )
  batch = fn(dataset, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(batch['labels']), np.asarray(batch['images']).ravel().astype(np.int32) * 3)
  np.testing.assert_array_equal(np.asarray(fn(images, jax.random.key(0))), np.asarray(batch['images']))
  with pytest.raises(ValueError, match='same number of examples'):
    parallel.num_examples({'images': images, 'labels': jnp.zeros(99)})


def test_data_parallel_map_equals_fn_and_pads_small_inputs_only_to_what_the_devices_need():
  blocks, seen = [], {}  # the block shapes fn is traced with

  def fn(scale, batch):
    blocks.append(batch.shape)
    return batch.reshape(batch.shape[0], -1).sum(axis=1) * scale

  for devices in (1, 2):
    for n in (1, 7, 8, 9, 23):
      parallel.data_parallel_map.cache_clear()  # traced afresh for each N
      apply = parallel.data_parallel_map(fn, parallel.make_mesh(devices), batch_size=4)
      x = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
      blocks.clear()
      np.testing.assert_allclose(np.asarray(apply(np.float32(2.0), x)), x.reshape(n, -1).sum(axis=1) * 2.0)
      [shape] = set(blocks)
      per_device_blocks = -(-n // (4 * devices))
      # the fewest blocks of at most 4, all of one size: under one padded input per block and device
      assert shape[0] <= 4 and shape[0] * per_device_blocks * devices - n < per_device_blocks * devices, (n, shape)
      seen[devices, n] = shape[0]
  parallel.data_parallel_map.cache_clear()
  assert seen[1, 1] == 1 and seen[2, 1] == 1  # one image is not padded to the batch size
  assert seen[1, 9] == 3 and seen[2, 9] == 3  # 9 = 3 blocks of 3; 2 devices x 2 blocks x 3 (3 padded)
  assert seen[1, 8] == 4 and seen[2, 23] == 4


def test_data_parallel_map_is_compiled_once_for_repeated_evaluations():
  traces = []

  def fn(scale, batch):
    traces.append(batch.shape)
    return batch * scale

  mesh, x = parallel.make_mesh(1), np.ones((10, 3), np.float32)
  for _ in range(3):  # as protocol.progress does at every eval_every
    np.testing.assert_allclose(np.asarray(parallel.data_parallel_map(fn, mesh, 4)(np.float32(2), x)), 2 * x)
  assert len(traces) == 1


def test_data_parallel_map_refuses_a_batch_size_below_one():
  with pytest.raises(ValueError, match='batch_size must be >= 1'):
    parallel.data_parallel_map(lambda p, b: b, parallel.make_mesh(1), batch_size=0)
