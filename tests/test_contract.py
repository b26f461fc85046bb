"""The method contract, for every registered method and a toy, in this process (the suite runs on two CPU
devices, tests/conftest.py): init, a few data-parallel steps on 1 and 2 devices (the same state), embed, assign,
the epoch-end update, the monitor and the registered figures; and the toy through the runner (epoch_end at its
period, assign scored)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import data
from unsupervised_jax import metrics
from unsupervised_jax import registry
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import self_label
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import learned
from unsupervised_jax.training import contract
from unsupervised_jax.training import loop
from unsupervised_jax.training import parallel

# Each registered learned method at a size that compiles in seconds (a new method adds its row here).
TINY = {
  'autoencoder': dict(hidden=(16,), latent_dim=4),
  'moco': dict(queue_size=32, feature_dim=16),
  'infogan': dict(noise_dim=8, num_continuous=1),
  'scae': dict(
    n_part_caps=6,
    n_obj_caps=4,
    n_part_features=4,
    n_obj_params=8,
    template_size=5,
    canvas_size=12,
    max_shift=2,
    encoder_channels=16,
    encoder_strides=(1, 2),
  ),
  'mice': dict(
    experts=3, embedding_dim=8, queue_size=32, view='digits', warmup_epochs=0, lr_decay_epochs=(), learning_rate=0.05
  ),
}
BATCH, STEPS = 16, 2


def test_every_registered_learned_method_has_a_tiny_configuration_here():
  assert set(TINY) == set(registry.names(learned=True))


@pytest.fixture(scope='module')
def images():
  return data.load('digits', 'all').images[:48]  # 3 epochs of 16


@pytest.mark.parametrize('name', registry.names(learned=True))
def test_every_registered_method_meets_the_contract_on_one_and_two_devices(name, images, tmp_path):
  entry = registry.get(name)
  train = loop.TrainConfig(num_steps=STEPS, batch_size=BATCH)
  method = entry.factory(entry.config(**TINY[name]), train, contract.DataInfo.of(images))
  assert isinstance(method, contract.Method) and method.name == name and method.config == entry.config(**TINY[name])
  fresh = method.init(jax.random.key(0), images[:1])
  assert int(fresh.step) == 0

  def trained(devices):
    """The state after STEPS steps on ``devices`` devices, and each step's metrics."""
    mesh = parallel.make_mesh(devices)
    step = parallel.data_parallel_step(method.train_step, mesh, BATCH, train.sampling)
    state, dataset = parallel.replicate(jax.tree.map(jnp.copy, fresh), mesh), parallel.replicate(images, mesh)
    logged = []
    for _ in range(STEPS):
      state, step_metrics = step(state, dataset, jax.random.key(1))
      jax.block_until_ready(state)  # XLA:CPU collectives: see training.loop._needs_step_sync
      assert bool(step_metrics['finite']) and all(bool(v) for v in step_metrics['finite_parts'].values())
      logged.append({k: float(v) for k, v in step_metrics.items() if k not in ('finite', 'finite_parts')})
    return jax.device_get(state), logged

  (one, one_metrics), (two, two_metrics) = trained(1), trained(2)
  assert int(one.step) == int(two.step) == STEPS
  moved = [
    float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(jax.device_get(fresh)))
  ]
  assert max(moved) > 0  # the steps changed the state
  # The same global batch split over 2 devices: the same metrics at every step (reductions over the global
  # batch) and the same codes after. (Parameters that do not reach the loss, such as a bias before a BatchNorm,
  # get gradients of rounding noise, which Adam turns into whole steps of either sign: not compared.)
  for a, b in zip(one_metrics, two_metrics):
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4) for k in a), (a, b)
  np.testing.assert_allclose(
    jax.jit(method.embed)(two, images), jax.jit(method.embed)(one, images), rtol=1e-2, atol=1e-3
  )

  codes = np.asarray(jax.jit(method.embed)(one, images))
  assert codes.ndim == 2 and len(codes) == len(images) and np.all(np.isfinite(codes))
  if method.assigns:
    clusters = np.asarray(jax.jit(method.assign)(one, images))
    assert clusters.shape == (len(images),) and clusters.dtype == np.int32 and clusters.min() >= 0
  if method.epoch_end is not None:
    updates = [parallel.data_parallel_epoch_end(method.epoch_end, parallel.make_mesh(d), 8) for d in (1, 2)]
    ends = [
      jax.device_get(
        update(
          parallel.replicate(jax.tree.map(jnp.copy, one), parallel.make_mesh(d)),
          parallel.replicate(images, parallel.make_mesh(d)),
        )
      )
      for d, update in zip((1, 2), updates)
    ]
    for a, b in zip(jax.tree.leaves(ends[0]), jax.tree.leaves(ends[1])):
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-4, atol=1e-5)
  if method.monitor is not None:
    values = jax.jit(method.monitor)(one, images[:8])
    assert values and all(np.isfinite(float(v)) for v in values.values())
  if method.fine_tunable:
    assert jax.tree.structure(method.backbone.params(one)) is not None
  if entry.figures is not None:
    entry.figures(method.config, one, images, tmp_path)
    assert list(tmp_path.glob('*.png'))


@flax.struct.dataclass
class ToyState:
  step: jax.Array
  mean: jax.Array  # the data set's mean pixel, from the epoch-end pass
  calls: jax.Array  # epoch-end calls so far
  called_at: jax.Array  # [4] the steps of the calls


PERIOD = 3


def toy_method(config=None, train=None, data_info=None) -> contract.Method:
  """A method with ``assign`` and a whole-data-set ``epoch_end``; its step learns nothing."""
  del config, train, data_info

  def init(key, sample):
    del key, sample
    return ToyState(jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.full((4,), -1, jnp.int32))

  def train_step(state, images, keys):
    del keys
    return state, {'loss': jnp.mean(images.astype(jnp.float32))}

  def accumulate(state, images, mask):
    del state
    per_image = jnp.sum(images.astype(jnp.float32), axis=(1, 2, 3))
    return {'sum': jnp.sum(jnp.where(mask, per_image, 0.0)), 'pixels': jnp.sum(mask) * images[0].size}

  def finalize(state, sums):
    mean = sums['sum'] / sums['pixels']
    called_at = state.called_at.at[jnp.minimum(state.calls, 3)].set(state.step)
    new = state.replace(mean=mean, calls=state.calls + 1, called_at=called_at)
    return new, {'mean': mean, 'calls': new.calls, 'step': state.step}

  def embed(state, images):
    del state
    return images.reshape(images.shape[0], -1).astype(jnp.float32)

  def assign(state, images):  # brighter than the data set's mean, or not
    return (jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3)) > state.mean).astype(jnp.int32)

  return contract.Method(
    'toy', init, train_step, embed, assign=assign, epoch_end=contract.EpochEnd(PERIOD, accumulate, finalize)
  )


@pytest.fixture
def toy_registered():
  """The toy registered as a method (registry.register: the extension point) for the test, then taken away."""
  registry.register(registry.Entry('toy', 'toy', type(None), 'none.flags', toy_method))
  yield 'toy'
  registry.unregister('toy')


def _run_toy(workdir, devices):
  experiment = run_config.Experiment(
    'toy',
    run_config.RunConfig(seeds=(0,), workdir=str(workdir), figures=False),
    loop.TrainConfig(num_steps=10, batch_size=8, log_every=5, checkpoint_every=10, num_devices=devices, progress=False),
    protocol.EvalConfig(knn_k=5),
    self_label.SelfLabelConfig(),
    None,
  )
  record = learned.run(experiment)  # built by the registry
  steps, _ = loop.read_metrics(workdir / 'seed_0', 'epoch_end/calls')
  logged = {name: loop.read_metrics(workdir / 'seed_0', f'epoch_end/{name}')[1] for name in ('calls', 'mean', 'step')}
  epoch_ends = [
    {'step': s, 'calls': logged['calls'][i], 'mean': logged['mean'][i], 'state_step': logged['step'][i]}
    for i, s in enumerate(steps)
  ]
  return {
    'scores': {k: v['mean'] for k, v in record['metrics'].items()},
    'epoch_ends': epoch_ends,
    'protocol': record['protocol'],
  }


def test_epoch_end_runs_at_its_period_on_one_and_two_devices_and_assign_is_what_is_scored(tmp_path, toy_registered):
  one, two = _run_toy(tmp_path / 'one', 1), _run_toy(tmp_path / 'two', 2)
  split = data.load('digits', 'all')
  mean = float(np.mean(split.images.astype(np.float64)))
  for out in (one, two):
    # Called after steps 3, 6 and 9 of 10, exactly: three calls, each over all 1,797 images (chunked, padded, masked).
    assert [e['step'] for e in out['epoch_ends']] == [3, 6, 9]
    assert [e['calls'] for e in out['epoch_ends']] == [1, 2, 3]
    assert [e['state_step'] for e in out['epoch_ends']] == [3, 6, 9]  # the state's step when called
    for e in out['epoch_ends']:
      assert e['mean'] == pytest.approx(mean, rel=1e-6)
    # The record scores the method's own clusters (brighter than the mean or not), not a clustering of codes.
    expected = split.images.astype(np.float32).mean(axis=(1, 2, 3)) > np.float32(out['epoch_ends'][-1]['mean'])
    scores = metrics.clustering_scores(split.labels, expected.astype(np.int32))
    for name in ('acc', 'nmi', 'ari'):
      assert out['scores'][name] == pytest.approx(scores[name], abs=1e-9)
    assert 'its own clusters (K=10)' in out['protocol']
  for a, b in zip(one['epoch_ends'], two['epoch_ends']):  # 2 devices: each sums half the data, then psum
    assert a == pytest.approx(b, rel=1e-6)
  assert one['scores'] == two['scores']
