"""A toy method with ``assign`` and ``epoch_end`` run through the learned-method runner; used by tests.

  python tests/_contract_driver.py WORKDIR NUM_DEVICES

Prints one JSON line: the record's scores and the epoch-end metrics logged in metrics.jsonl.
"""
import json
import pathlib
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's package first
num_devices = int(sys.argv[2])
if num_devices > 1:
  jax.config.update('jax_num_cpu_devices', num_devices)

import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from unsupervised_jax import registry  # noqa: E402
from unsupervised_jax.evaluation import protocol  # noqa: E402
from unsupervised_jax.methods import base  # noqa: E402
from unsupervised_jax.methods import self_label  # noqa: E402
from unsupervised_jax.runner import config as run_config  # noqa: E402
from unsupervised_jax.runner import learned  # noqa: E402
from unsupervised_jax.training import contract  # noqa: E402
from unsupervised_jax.training import loop  # noqa: E402

PERIOD = 3


@flax.struct.dataclass
class ToyState:
  step: jax.Array
  mean: jax.Array  # the data set's mean pixel, from the epoch-end pass
  calls: jax.Array  # epoch-end calls so far
  called_at: jax.Array  # [4] the steps of the calls


def toy_method(config=None, train=None, data=None) -> contract.Method:
  del config, train, data
  def init(key, sample):
    del key, sample
    return ToyState(base.zeros_step(), jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.full((4,), -1, jnp.int32))

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

  return contract.Method('toy', init, train_step, embed, assign=assign,
                         epoch_end=contract.EpochEnd(PERIOD, accumulate, finalize))


registry.register(registry.Entry('toy', 'toy', type(None), 'none.flags', toy_method))  # the extension point
experiment = run_config.Experiment(
    'toy', run_config.RunConfig(seeds=(0,), workdir=sys.argv[1], figures=False),
    loop.TrainConfig(num_steps=10, batch_size=8, log_every=5, checkpoint_every=10, num_devices=num_devices,
                     progress=False),
    protocol.EvalConfig(knn_k=5), self_label.SelfLabelConfig(), None)
record = learned.run(experiment)  # built by the registry
lines = [json.loads(l) for l in (pathlib.Path(sys.argv[1]) / 'seed_0' / 'metrics.jsonl').read_text().splitlines()]
epoch_ends = [{k: v for k, v in l.items() if k.startswith('epoch_end/') or k == 'step'} for l in lines
              if 'epoch_end/calls' in l]
print(json.dumps({'scores': {k: v['mean'] for k, v in record['metrics'].items()}, 'epoch_ends': epoch_ends,
                  'protocol': record['protocol']}))
