"""MiCE against the official implementation's numbers (TsungWeiTsai/MiCE at ddcce45, ``ELBO.py`` run in PyTorch
float64 on fixed inputs; ``../shared/fixtures/mice_official/README.md``): the loss, the gating and expert
log-likelihoods, the posterior, the gradients, the queue after enqueue, the epoch's prototype sums and the
analytic update. float64 within 1e-10; float32 within its rounding. The fixture stays outside the repository:
the tests skip where it is absent.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import losses
from unsupervised_jax.methods import base
from unsupervised_jax.methods import mice_prototypes

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'fixtures' / 'mice_official'
CASES = ('mice_official_tau1_init_queue', 'mice_official_tau0.2_unit_queue')


@pytest.fixture(params=CASES)
def official(request):
  path = FIXTURES / f'{request.param}.npz'
  if not path.is_file():
    pytest.skip(f'the official MiCE outputs are not at {path} (only CI and the project machines have ../shared)')
  with np.load(path) as arrays:
    return {name: arrays[name] for name in arrays.files}


def _ours(case, dtype):
  """Our loss, its terms and gradients, the enqueue, the epoch sums and the update on the case's inputs."""
  inputs = {name: jnp.asarray(case[name], dtype) for name in ('f', 'v', 'g', 'mu_raw', 'gating_prototypes', 'queue')}
  tau, kappa = float(case['tau']), float(case['kappa'])

  def loss(f, g, mu_raw):
    return losses.mice_loss(f, inputs['v'], g, mu_raw, inputs['gating_prototypes'], inputs['queue'], tau, kappa)

  (neg_elbo, (log_gating, log_expert, posterior)), grads = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
  )(inputs['f'], inputs['g'], inputs['mu_raw'])
  queue, pointer = base.enqueue(inputs['queue'], jnp.zeros((), jnp.int32), inputs['v'])
  sums = mice_prototypes.epoch_sums(posterior, log_gating, inputs['v'], 'hard')
  return {
    'neg_elbo': neg_elbo,
    'log_gating': log_gating,
    'log_expert_positive': log_expert,
    'posterior': posterior,
    'grad_f': grads[0],
    'grad_g': grads[1],
    'grad_mu_raw': grads[2],
    'queue_after_enqueue': queue,
    'pointer': pointer,
    'centre_sums': sums['centres'],
    'sizes': sums['sizes'],
    'mu_after_update': mice_prototypes.update(sums['centres'], inputs['mu_raw']),
  }


# name -> float32 tolerance, relative to the official array's largest magnitude: float32's epsilon is 1.2e-7
# and the sums run over up to 257 queue entries, 32 images and 128 dimensions (measured: at most 2.1e-6, for
# grad_g of the tau = 1 case; the loss 7e-9, the posterior 7e-7).
FLOAT32 = {
  'neg_elbo': 1e-6,
  'log_gating': 1e-6,
  'log_expert_positive': 1e-6,
  'posterior': 1e-5,
  'grad_f': 1e-5,
  'grad_g': 1e-5,
  'grad_mu_raw': 1e-5,
  'centre_sums': 1e-6,
}


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
def test_loss_terms_gradients_and_epoch_sums_equal_the_official_code(official, dtype):
  with jax.enable_x64(dtype == 'float64'):
    ours = jax.tree.map(np.asarray, _ours(official, getattr(jnp, dtype)))
  assert ours['neg_elbo'].dtype == np.dtype(dtype)
  for name, tolerance in FLOAT32.items():
    expected = official[name]
    atol = 1e-10 if dtype == 'float64' else tolerance * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(ours[name], expected, rtol=0, atol=atol, err_msg=f'{name} ({dtype})')
  # The official enqueue writes v at the pointer (0): bit for bit, in the queue's own dtype.
  np.testing.assert_array_equal(ours['queue_after_enqueue'].astype(np.float32), official['queue_after_enqueue'])
  assert int(ours['pointer']) == official['f'].shape[0]


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
def test_analytic_update_equals_the_official_code_but_an_empty_expert_keeps_its_prototype(official, dtype):
  """The official ``update_cluster`` normalises the epoch's sums; where an expert has no image its sum is zero and
  it writes the zero vector, which we replace by the expert's previous prototype (docs/mice.md)."""
  with jax.enable_x64(dtype == 'float64'):
    ours = jax.tree.map(np.asarray, _ours(official, getattr(jnp, dtype)))
  atol = 1e-10 if dtype == 'float64' else 1e-6
  empty = np.all(official['centre_sums'] == 0, axis=1)
  np.testing.assert_array_equal(ours['sizes'] == 0, empty)
  np.testing.assert_allclose(ours['mu_after_update'][~empty], official['mu_after_update'][~empty], rtol=0, atol=atol)
  np.testing.assert_array_equal(official['mu_after_update'][empty], 0.0)
  np.testing.assert_array_equal(ours['mu_after_update'][empty], official['mu_raw'][empty].astype(dtype))


def test_the_fixture_holds_the_empty_expert_case():
  """The tau = 1 case (the official initial queue) leaves one expert empty; the other has none."""
  counts = {}
  for case in CASES:
    path = FIXTURES / f'{case}.npz'
    if not path.is_file():
      pytest.skip(f'the official MiCE outputs are not at {path}')
    with np.load(path) as arrays:
      counts[case] = int(np.sum(np.all(arrays['centre_sums'] == 0, axis=1)))
  assert counts == {'mice_official_tau1_init_queue': 1, 'mice_official_tau0.2_unit_queue': 0}
