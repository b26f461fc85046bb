"""Every loss in ``unsupervised_jax.losses``: value and finite gradients at degenerate inputs."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unsupervised_jax import losses


def _unit(v):
  v = np.asarray(v, np.float64)
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _numpy_info_nce(q, k, negatives, t):
  logits = np.concatenate([(q * k).sum(-1, keepdims=True), q @ negatives.T], axis=1) / t
  logits = logits - logits.max(1, keepdims=True)
  return float(np.mean(-logits[:, 0] + np.log(np.exp(logits).sum(1))))


# Each loss as a function of float arrays only, with its degenerate inputs.
ZERO = np.zeros((2, 4), np.float32)
RNG = np.random.default_rng(0)
Q = RNG.normal(size=(2, 4)).astype(np.float32)
SAME = np.tile(Q[:1], (2, 1))  # identical keys / queries
QUEUE = RNG.normal(size=(5, 4)).astype(np.float32)
CASES = {
    'l2_normalize': [(lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (ZERO,)),
                     (lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (np.full((2, 4), 1e-30, np.float32),))],
    'info_nce': [(lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (ZERO, ZERO, np.zeros((5, 4), np.float32))),
                 (lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (_unit(Q).astype(np.float32), SAME, QUEUE)),
                 (lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (SAME, SAME, np.tile(SAME[:1], (5, 1))))],
    'moco_loss': [(lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (ZERO, ZERO, np.zeros((5, 4), np.float32))),
                  (lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (ZERO, SAME, _unit(QUEUE).astype(np.float32))),
                  (lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (SAME, SAME, np.tile(SAME[:1], (5, 1)))),
                  (lambda q, k, n: losses.moco_loss(q, k, n, 0.07), (Q * 1e-30, Q, QUEUE))],
}


def test_every_loss_has_degenerate_cases():
  public = {name for name, f in inspect.getmembers(losses, inspect.isfunction)
            if f.__module__ == losses.__name__ and not name.startswith('_')}
  assert public == set(CASES), f'add degenerate cases for {public - set(CASES)}'


@pytest.mark.parametrize('name,case', [(name, i) for name in CASES for i in range(len(CASES[name]))])
def test_gradients_finite_where_the_value_is_finite(name, case):
  fn, args = CASES[name][case]
  value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*(jnp.asarray(a) for a in args))
  assert np.isfinite(float(value))
  for g in grads:
    assert np.isfinite(np.asarray(g)).all(), (name, case, g)


def test_moco_loss_at_a_zero_query():
  """Issue #22, case 5: the value is log 3 and the gradient finite, as x / max(||x||, eps) documents."""
  loss = lambda q: losses.moco_loss(q, jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0], [-1.0, 0.0]]), 0.07)
  q = jnp.zeros((1, 2))
  assert float(loss(q)) == pytest.approx(np.log(3.0), rel=1e-6)
  grad = np.asarray(jax.grad(loss)(q))
  assert np.isfinite(grad).all()
  # Near 0, l2_normalize(q) = q / eps: the gradient is (d loss / d normalised q) / eps, and with all
  # three logits 0 (p = 1/3 each) d loss / d normalised q = sum_j (p_j - [j = 0]) v_j / t = [-1, 1/3] / t.
  t, eps = 0.07, 1e-12
  expected = np.array([[-1.0, 1 / 3]]) / t / eps
  np.testing.assert_allclose(grad, expected, rtol=1e-5)


@pytest.mark.parametrize('scale', [1e-6, 1.0, 1e6])
def test_l2_normalize_value_and_gradient_match_the_norm_formula(scale):
  x = RNG.normal(size=(3, 5)) * scale
  np.testing.assert_allclose(losses.l2_normalize(jnp.asarray(x, jnp.float32)), _unit(x), rtol=1e-6, atol=1e-7)
  w = RNG.normal(size=(3, 5))
  grad = np.asarray(jax.grad(lambda v: jnp.sum(losses.l2_normalize(v) * w))(jnp.asarray(x, jnp.float32)))
  u = _unit(x)
  expected = (w - u * (u * w).sum(-1, keepdims=True)) / np.linalg.norm(x, axis=-1, keepdims=True)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6 / scale)


def test_info_nce_matches_numpy_at_small_temperature():
  q, k = _unit(Q), _unit(RNG.normal(size=(2, 4)))
  value = losses.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(_unit(QUEUE), jnp.float32),
                          1e-3)
  assert float(value) == pytest.approx(_numpy_info_nce(q, k, _unit(QUEUE), 1e-3), rel=1e-4)
