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
  'l2_normalize': [
    (lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (ZERO,)),
    (lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (np.full((2, 4), 1e-30, np.float32),)),
    (lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (Q * 1e20,)),  # |x|^2 overflows
    (lambda x: jnp.sum(losses.l2_normalize(x) * jnp.arange(4.0)), (Q * 1e-40,)),
  ],  # denormal
  'info_nce': [
    (lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (ZERO, ZERO, np.zeros((5, 4), np.float32))),
    (lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (_unit(Q).astype(np.float32), SAME, QUEUE)),
    (lambda q, k, n: losses.info_nce(q, k, n, 1e-3), (SAME, SAME, np.tile(SAME[:1], (5, 1)))),
  ],
  'moco_loss': [
    (lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (ZERO, ZERO, np.zeros((5, 4), np.float32))),
    (lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (ZERO, SAME, _unit(QUEUE).astype(np.float32))),
    (lambda q, k, n: losses.moco_loss(q, k, n, 1e-3), (SAME, SAME, np.tile(SAME[:1], (5, 1)))),
    (lambda q, k, n: losses.moco_loss(q, k, n, 0.07), (Q * 1e-30, Q, QUEUE)),
  ],
}

# The InfoGAN, MiCE and capsule losses at their degenerate inputs: saturated logits, zero and one-hot
# probabilities, identical and zero embeddings, temperatures of 1e-3, absent parts.
_sum = lambda out: sum(jnp.sum(o) for o in (out if isinstance(out, tuple) else (out,)))
ONE_HOT = np.eye(3, dtype=np.float32)[[0, 0]]  # [2, 3], zeros inside
BIG = np.array([-1e4, 1e4], np.float32)
UNIT3 = _unit(RNG.normal(size=(2, 3, 4))).astype(np.float32)  # [B, K, D]
CASES.update(
  {
    'safe_log': [(lambda x: jnp.sum(losses.safe_log(x)), (np.zeros(3, np.float32),))],
    'gan_discriminator_loss': [
      (losses.gan_discriminator_loss, (BIG, -BIG)),
      (losses.gan_discriminator_loss, (-BIG, BIG)),
    ],
    'gan_generator_loss': [(losses.gan_generator_loss, (BIG,)), (losses.gan_generator_loss, (-BIG,))],
    'categorical_entropy': [(lambda p: jnp.sum(losses.categorical_entropy(p)), (ONE_HOT,))],
    'infogan_mutual_information': [
      (
        lambda l, m, c: _sum(losses.infogan_mutual_information(l, jnp.array([0, 2]), m, c)),
        (
          np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], np.float32),
          np.zeros((2, 2), np.float32),
          np.zeros((2, 2), np.float32),
        ),
      )
    ],
    'mice_log_gating': [
      (lambda g, w: jnp.sum(losses.mice_log_gating(g, w, 1e-3)), (ZERO, np.zeros((3, 4), np.float32))),
      (lambda g, w: jnp.sum(losses.mice_log_gating(g, w, 1e-3)), (SAME, np.tile(SAME[:1], (3, 1)))),
    ],
    'mice_log_expert': [
      (
        lambda f, v, mu, q: jnp.sum(losses.mice_log_expert(f, v, mu, q, 1e-3)),
        (
          np.zeros((2, 3, 4), np.float32),
          np.zeros((2, 3, 4), np.float32),
          np.zeros((3, 4), np.float32),
          np.zeros((5, 3, 4), np.float32),
        ),
      ),
      (
        lambda f, v, mu, q: jnp.sum(losses.mice_log_expert(f, v, mu, q, 1e-3)),
        (UNIT3, UNIT3, UNIT3[0], np.tile(UNIT3[:1], (5, 1, 1))),
      ),
    ],
    'mice_loss': [
      (
        lambda f, g, mu: losses.mice_loss(
          f,
          UNIT3,
          g,
          mu,
          _unit(Q[:, :4])[:1].repeat(3, 0).astype(np.float32),
          np.tile(UNIT3[:1], (5, 1, 1)),
          1e-3,
          1e-3,
        )[0],
        (UNIT3, np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)),
      )
    ],  # identical, zero mu
    'mice_posterior': [
      (
        lambda a, b: jnp.sum(losses.mice_posterior(a, b) * jnp.arange(3.0)),
        (np.array([[-1e4, 0.0, 1e4]] * 2, np.float32), np.zeros((2, 3), np.float32)),
      )
    ],
    'mice_elbo': [
      (
        lambda a, b: losses.mice_elbo(a, b, jnp.asarray(ONE_HOT)),
        (np.array([[-1e4, 0.0, 1e4]] * 2, np.float32), np.array([[0.0, -1e4, 0.0]] * 2, np.float32)),
      )
    ],
    'capsule_entropy_sparsity': [
      (lambda p: _sum(losses.capsule_entropy_sparsity(p)), (np.zeros((2, 3), np.float32),)),
      (lambda p: _sum(losses.capsule_entropy_sparsity(p)), (ONE_HOT,)),
    ],
    'capsule_l2_sparsity': [(lambda p: _sum(losses.capsule_l2_sparsity(p, 10, 3.2)), (np.zeros((2, 3), np.float32),))],
    'scae_image_mixing_log_weights': [
      (
        lambda a, p, b: jnp.sum(jnp.where(jnp.isfinite(w := losses.scae_image_mixing_log_weights(a, p, b)), w, 0.0)),
        (np.zeros((1, 2, 3, 3), np.float32), np.zeros((1, 2), np.float32), np.zeros((), np.float32)),
      )
    ],
    'scae_image_log_likelihood': [
      (
        lambda x, m: jnp.sum(
          losses.scae_image_log_likelihood(
            x, m, losses.scae_image_mixing_log_weights(jnp.zeros((1, 2, 3, 3)), jnp.zeros((1, 2)), jnp.zeros(()))
          )
        ),
        (np.zeros((1, 3, 3, 1), np.float32), np.zeros((1, 3, 3, 3, 1), np.float32)),
      )
    ],
    'scae_part_log_likelihood': [
      (
        lambda x, v: _sum(
          losses.scae_part_log_likelihood(x, jnp.zeros((1, 2)), v, jnp.ones((1, 3, 2)), jnp.zeros((1, 3, 2)))
        ),
        (np.zeros((1, 2, 6), np.float32), np.zeros((1, 3, 2, 6), np.float32)),
      )
    ],
  }
)


def test_every_loss_has_degenerate_cases():
  public = {
    name
    for name, f in inspect.getmembers(losses, inspect.isfunction)
    if f.__module__ == losses.__name__ and not name.startswith('_')
  }
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
  value = losses.info_nce(
    jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(_unit(QUEUE), jnp.float32), 1e-3
  )
  assert float(value) == pytest.approx(_numpy_info_nce(q, k, _unit(QUEUE), 1e-3), rel=1e-4)
