import pathlib

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from unsupervised_jax import losses
from unsupervised_jax.methods import base
from unsupervised_jax.methods import moco
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _numpy_info_nce(q, k, negatives, t):
  logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ negatives.T], axis=1) / t
  logits = logits - logits.max(1, keepdims=True)
  return float(np.mean(-logits[:, 0] + np.log(np.exp(logits).sum(1))))


def test_info_nce_matches_numpy():
  rng = np.random.default_rng(0)
  q, k, negatives = rng.normal(size=(8, 5)), rng.normal(size=(8, 5)), rng.normal(size=(13, 5))
  assert float(losses.info_nce(q, k, negatives, 0.2)) == pytest.approx(_numpy_info_nce(q, k, negatives, 0.2), rel=1e-5)


def test_info_nce_gradients():
  rng = np.random.default_rng(1)
  q, k, negatives = (jnp.asarray(rng.normal(size=s)) for s in ((4, 3), (4, 3), (6, 3)))
  check_grads(
    lambda q, k, n: losses.info_nce(q, k, n, 0.5), (q, k, negatives), order=1, modes=['rev'], atol=1e-2, rtol=1e-2
  )


def test_moco_loss_is_the_normalised_info_nce_and_stops_key_gradients():
  rng = np.random.default_rng(2)
  q, k, queue = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  assert float(losses.moco_loss(q, k, queue, 0.1)) == pytest.approx(
    _numpy_info_nce(unit(q), unit(k), queue, 0.1), rel=1e-5
  )
  assert np.all(np.asarray(jax.grad(lambda k: losses.moco_loss(q, k, queue, 0.1))(jnp.asarray(k))) == 0)


def test_queue_wraps_around_the_end():
  queue = jnp.zeros((6, 2))
  ptr = jnp.int32(0)
  for value in (1.0, 2.0, 3.0, 4.0):
    queue, ptr = base.enqueue(queue, ptr, jnp.full((2, 2), value))
  np.testing.assert_array_equal(queue[:, 0], [4, 4, 2, 2, 3, 3])  # the 4th batch overwrote the 1st
  assert int(ptr) == 2


def test_queue_of_any_trailing_shape_wraps_and_rejects_mismatches():
  queue, ptr = jnp.zeros((4, 3, 2)), jnp.int32(0)  # [K, E, D]: a queue per expert
  for value in (1.0, 2.0, 3.0):
    queue, ptr = base.enqueue(queue, ptr, jnp.full((2, 3, 2), value))
  np.testing.assert_array_equal(queue[:, 0, 0], [3, 3, 2, 2])
  assert int(ptr) == 2
  with pytest.raises(ValueError, match='cannot go into'):
    base.enqueue(queue, ptr, jnp.zeros((2, 2, 2)))
  with pytest.raises(ValueError, match='multiple'):
    base.enqueue(queue, ptr, jnp.zeros((3, 3, 2)))


def test_ema_update_is_exact():
  teacher = {'w': jnp.array([1.0, 2.0])}
  student = {'w': jnp.array([3.0, -2.0])}
  out = base.ema(teacher, student, 0.9)
  np.testing.assert_allclose(out['w'], 0.9 * teacher['w'] + 0.1 * student['w'], rtol=1e-7)


def test_momentum_schedules():
  constant = moco.MoCoConfig(momentum=0.99)
  assert float(moco.momentum_at(constant, jnp.int32(123), 100)) == pytest.approx(0.99)
  cosine = moco.MoCoConfig(momentum=0.9, momentum_schedule='cosine')
  got = [float(moco.momentum_at(cosine, jnp.int32(s), 100)) for s in (0, 50, 100, 150)]
  np.testing.assert_allclose(got, [0.9, 0.95, 1.0, 1.0], rtol=1e-6)  # 1 - 0.1 * (cos(pi t/T) + 1) / 2


def test_enqueue_on_two_devices_equals_single_device_enqueue_of_gathered_keys():
  from jax.sharding import PartitionSpec as P

  from unsupervised_jax.training import parallel

  keys = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)
  queue, ptr = jnp.zeros((16, 3)), jnp.int32(12)

  def per_device(queue, ptr, local_keys):
    return base.enqueue(queue, ptr, jax.lax.all_gather(local_keys, parallel.AXIS, tiled=True))

  enqueue = jax.jit(
    jax.shard_map(
      per_device,
      mesh=parallel.make_mesh(2),
      in_specs=(P(), P(), P(parallel.AXIS)),
      out_specs=(P(), P()),
      check_vma=False,
    )
  )
  q2, p2 = enqueue(queue, ptr, keys)
  q1, p1 = base.enqueue(queue, ptr, keys)
  np.testing.assert_array_equal(np.asarray(q2), np.asarray(q1))
  assert int(p2) == int(p1) == 4


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'queue_size': 100}, 'multiple of the global batch'),
    ({'temperature': 0.0}, 'temperature'),
    ({'momentum': 1.0}, 'momentum'),
    ({'momentum': -0.1}, 'momentum'),
    ({'momentum_schedule': 'linear'}, 'momentum_schedule'),
  ],
)
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    moco.MoCoConfig(**kwargs).validate(loop.TrainConfig(batch_size=64))


def test_train_step_learns_on_digits(tmp_path):
  from unsupervised_jax import data

  images = data.load('digits', 'all').images
  train = loop.TrainConfig(num_steps=60, batch_size=64, log_every=10, checkpoint_every=60, progress=False)
  learner = moco.moco(moco.MoCoConfig(queue_size=256), train, contract.DataInfo.of(images))
  state = loop.train(
    learner, learner.init(jax.random.key(0), images[:1]), images, train, tmp_path, key=jax.random.key(0)
  )
  lines = [__import__('json').loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert lines[-1]['loss'] < lines[0]['loss'] - 0.3  # the contrastive loss goes down
  assert int(state.queue_ptr) == (60 * 64) % 256
