"""Gaussian mixture models fitted by EM, fully inside one ``jit``.

The E-step (:func:`e_step`) and M-step (:func:`m_step`) are separate pure
functions; :func:`fit_gmm` runs them in a ``lax.while_loop`` over
:class:`EMState`. Parametrisation follows scikit-learn's
``GaussianMixture``: precisions are stored through their Cholesky factors
(``precision_cholesky``), log-densities are combined with log-sum-exp, and
``reg_covar`` is added to the covariance diagonal. The lower bound is the mean
log-likelihood per sample; EM stops when it changes by less than ``tol``.

Numerics: float32 gives scikit-learn's float64 answer whatever the data's
offset and scale. The fit runs on centred data (the offset is added back to
the means); Mahalanobis distances and variances that matter are computed from
differences ``x - mu_k``, never as ``E[x^2] - E[x]^2``:

* E-step ('diag', 'spherical'): the expanded form (two matmuls) ranks the
  components of each point, with a rigorous bound on its round-off; the top
  one is recomputed from differences, and so is every component of the
  points where another one could be within ``_LOG_TAIL`` nats of it
  (typically a few per cent of the points). Components further down have
  responsibilities below ``exp(-_LOG_TAIL)``.
* M-step: counts are plain sums (no constant added to them), variances are
  weighted sums of squared differences to the new means: each point's
  largest responsibility at matmul speed, every pair of the points that
  split their mass; only responsibilities below ``exp(-_LOG_TAIL)`` of their
  point's largest go through the expanded form (their weight keeps its
  cancellation error as small), unless a component holds little else: then
  every sum comes from differences.
* EM loop ('diag', 'spherical'): both steps in one pass over the data
  (:func:`_em_iteration_diag`): the M-step's sums are taken about the old
  means from the E-step's differences and moved to the new means exactly,
  where that provably keeps its round-off small (else recomputed).
* 'full' works on differences throughout.

Covariance types and the shape of ``covariances`` / ``precision_cholesky``:
  * ``'full'``:      ``[K, D, D]`` (precision Cholesky is upper triangular,
    ``precision = P P^T``),
  * ``'diag'``:      ``[K, D]``,
  * ``'spherical'``: ``[K]``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax.clustering import _common
from unsupervised_jax.clustering import kmeans as kmeans_lib
from unsupervised_jax.clustering._gmm_diag import _diag_m_step
from unsupervised_jax.clustering._gmm_diag import _em_iteration_diag
from unsupervised_jax.clustering._gmm_estep import _EMPTY_GUARD
from unsupervised_jax.clustering._gmm_estep import _HIGHEST
from unsupervised_jax.clustering._gmm_estep import COVARIANCE_TYPES as COVARIANCE_TYPES  # the front door
from unsupervised_jax.clustering._gmm_estep import GMMParams
from unsupervised_jax.clustering._gmm_estep import _Centred
from unsupervised_jax.clustering._gmm_estep import _centred
from unsupervised_jax.clustering._gmm_estep import _check_covariance_type
from unsupervised_jax.clustering._gmm_estep import _e_step_centred
from unsupervised_jax.clustering._gmm_estep import _shift
from unsupervised_jax.clustering._gmm_estep import _weighted_log_prob
from unsupervised_jax.clustering._gmm_estep import _weighted_sums
from unsupervised_jax.clustering._gmm_estep import covariances_from_precisions as covariances_from_precisions
from unsupervised_jax.clustering._gmm_estep import e_step
from unsupervised_jax.clustering._gmm_estep import log_gaussian_density as log_gaussian_density
from unsupervised_jax.clustering._gmm_estep import make_params as make_params
from unsupervised_jax.clustering._gmm_estep import precision_cholesky_from_covariances

Array = jax.Array


class EMState(NamedTuple):
  """EM loop state: ``params``, ``lower_bound [max_iter]`` history (NaN past ``n_iter``), ``n_iter``, ``converged``."""

  params: GMMParams
  lower_bound: Array
  n_iter: Array
  converged: Array


class GMMResult(NamedTuple):
  """Output of :func:`fit_gmm`.

  Attributes:
    params: fitted :class:`GMMParams`.
    labels: ``[N]`` int32 most probable component of each training point.
    lower_bound: ``[]`` mean log-likelihood at the last E-step.
    lower_bound_history: ``[max_iter]`` per-iteration values, NaN after ``n_iter``.
    n_iter: ``[]`` int32 EM iterations run.
    converged: ``[]`` bool.
  """

  params: GMMParams
  labels: Array
  lower_bound: Array
  lower_bound_history: Array
  n_iter: Array
  converged: Array


def _m_step_centred(data: _Centred, responsibilities: Array, covariance_type: str, reg_covar: float) -> GMMParams:
  """:func:`m_step` on centred data; the means stay centred."""
  x_c = data.x
  n, d = x_c.shape
  if covariance_type == 'full':
    counts = jnp.sum(responsibilities, axis=0)
    sums = _weighted_sums(responsibilities, x_c)
    keep = counts / (counts + _EMPTY_GUARD)
    means = keep[:, None] * (sums / jnp.where(counts > 0, counts, 1.0)[:, None])
    guarded = counts + _EMPTY_GUARD

    def component_covariance(resp_k, mean_k, count_k):
      diff = x_c - mean_k
      cov = jnp.dot((resp_k[:, None] * diff).T, diff, precision=_HIGHEST) / count_k
      return cov + reg_covar * jnp.eye(d, dtype=x_c.dtype)

    covariances = jax.lax.map(lambda a: component_covariance(*a), (responsibilities.T, means, guarded))
  else:
    counts, means, scatter = _diag_m_step(data, responsibilities, covariance_type, reg_covar)
    guarded = counts + _EMPTY_GUARD
    covariances = scatter / guarded[:, None] + reg_covar
    if covariance_type == 'spherical':
      covariances = jnp.mean(covariances, axis=1)
  return GMMParams(guarded / n, means, covariances, precision_cholesky_from_covariances(covariances, covariance_type))


def m_step(x: Array, responsibilities: Array, covariance_type: str, reg_covar: float) -> GMMParams:
  """M-step: maximum-likelihood parameters given ``responsibilities [N, K]`` (rows sum to 1).

  Means are ``sum_n r_nk x_n / sum_n r_nk`` (an empty component's is the
  data's mean), variances weighted sums of squared differences to them, on
  centred data (see the module docstring), plus ``reg_covar``.
  """
  x_c, offset = _common.centre(x)
  return _shift(_m_step_centred(_centred(x_c, covariance_type), responsibilities, covariance_type, reg_covar), -offset)


def init_from_labels(x: Array, labels: Array, n_components: int, covariance_type: str, reg_covar: float) -> GMMParams:
  """Parameters from a hard assignment ``labels [N]`` (one M-step on one-hot responsibilities)."""
  return m_step(x, jax.nn.one_hot(labels, n_components, dtype=x.dtype), covariance_type, reg_covar)


def _validate(x, n_components, covariance_type, reg_covar, tol, max_iter):
  _common.check_points(x, n_components, what='n_components')
  _check_covariance_type(covariance_type)
  if not (isinstance(reg_covar, (int, float)) and reg_covar >= 0 and math.isfinite(reg_covar)):
    raise ValueError(f'reg_covar must be a finite number >= 0, got {reg_covar!r}.')
  if not (isinstance(tol, (int, float)) and tol >= 0):
    raise ValueError(f'tol must be >= 0, got {tol!r}.')
  if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
    raise ValueError(f'max_iter must be a positive integer, got {max_iter!r}.')


def fit_gmm(
  key: Optional[Array],
  x: Array,
  n_components: int,
  *,
  covariance_type: str = 'full',
  tol: float = 1e-3,
  reg_covar: float = 1e-6,
  max_iter: int = 100,
  n_init: int = 1,
  init_params: Optional[GMMParams] = None,
) -> GMMResult:
  """Fits a Gaussian mixture by EM.

  Args:
    key: PRNG key for the K-means initialisation (restart ``i`` uses
      ``fold_in(key, i)``); unused with ``init_params``.
    x: ``[N, D]`` float points.
    n_components: K.
    covariance_type: ``'full'``, ``'diag'`` or ``'spherical'``.
    tol: stop when the mean log-likelihood changes by less than this.
    reg_covar: added to covariance diagonals (keeps them positive definite).
    max_iter: EM iteration cap.
    n_init: restarts, each initialised by one K-means++ / Lloyd fit, run one
      after another; the highest lower bound is kept.
    init_params: start from these parameters instead (then ``n_init`` must be 1).

  Returns:
    :class:`GMMResult`.

  Raises:
    ValueError: bad options or data (before compiling), or, after the fit, a
      covariance that lost positive definiteness (NaN lower bound), where
      sklearn raises too.
  """
  _validate(x, n_components, covariance_type, reg_covar, tol, max_iter)
  if not isinstance(n_init, (int, np.integer)) or n_init < 1:
    raise ValueError(f'n_init must be a positive integer, got {n_init!r}.')
  if init_params is not None:
    if n_init != 1:
      raise ValueError('explicit init_params give identical restarts: pass n_init=1.')
    if init_params.means.shape != (n_components, x.shape[1]):
      raise ValueError(f'init_params.means must be {(n_components, x.shape[1])}, got {init_params.means.shape}.')
    return _check_fitted(
      _em(x, init_params, covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=reg_covar)
    )
  if key is None:
    raise ValueError('fit_gmm needs a PRNG key for its K-means initialisation (or init_params).')
  return _check_fitted(
    _fit_gmm(
      key,
      x,
      n_components=n_components,
      covariance_type=covariance_type,
      tol=tol,
      reg_covar=reg_covar,
      max_iter=max_iter,
      n_init=n_init,
    )
  )


def _check_fitted(result: GMMResult) -> GMMResult:
  if _common.is_concrete(result.lower_bound) and not np.isfinite(float(result.lower_bound)):
    raise ValueError(
      'EM failed: a covariance is not positive definite in float32 (collapsed or singleton '
      'components); use fewer components or a larger reg_covar.'
    )
  return result


def _fit_gmm(key, x, *, n_components, covariance_type, tol, reg_covar, max_iter, n_init):
  x_c, offset, mean = _common.centre_if_far(x)
  best = _fit_gmm_on_centred(
    key,
    x_c,
    mean,
    n_components=n_components,
    covariance_type=covariance_type,
    tol=tol,
    reg_covar=reg_covar,
    max_iter=max_iter,
    n_init=n_init,
  )
  return best._replace(params=_shift(best.params, -offset))


@functools.partial(jax.jit, static_argnames=('n_components', 'covariance_type', 'max_iter', 'n_init'))
def _fit_gmm_on_centred(key, x_c, mean, *, n_components, covariance_type, tol, reg_covar, max_iter, n_init):
  x_sq_norms = jnp.sum(x_c * x_c, axis=-1)
  abs_tol = kmeans_lib._centred_tolerance(x_c, x_sq_norms, 1e-4, mean)
  data = _centred(x_c, covariance_type)

  def one_restart(restart_key):
    seeds = kmeans_lib._kmeans_plusplus_indices(restart_key, x_c, x_sq_norms, n_components, None)
    labels = kmeans_lib._lloyd_centred(x_c, x_sq_norms, abs_tol, x_c[seeds], 300).labels
    params = _m_step_centred(data, jax.nn.one_hot(labels, n_components, dtype=x_c.dtype), covariance_type, reg_covar)
    return _em_centred(data, params, covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=reg_covar)

  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_init))
  results = jax.lax.map(one_restart, keys)  # sequential: K-means' bounded passes branch
  best = jnp.argmax(results.lower_bound)
  return jax.tree.map(lambda r: r[best], results)


def _em(x, params, *, covariance_type, tol, max_iter, reg_covar):
  """EM from ``params``: the data centred by one program, the iterations run by another."""
  x_c, offset, _ = _common.centre_if_far(x)
  result = _em_on_centred(
    x_c, _shift(params, offset), covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=reg_covar
  )
  return result._replace(params=_shift(result.params, -offset))


@functools.partial(jax.jit, static_argnames=('covariance_type', 'max_iter'))
def _em_on_centred(x_c, params, *, covariance_type, tol, max_iter, reg_covar):
  return _em_centred(
    _centred(x_c, covariance_type),
    params,
    covariance_type=covariance_type,
    tol=tol,
    max_iter=max_iter,
    reg_covar=reg_covar,
  )


def _em_centred(data: _Centred, params, *, covariance_type, tol, max_iter, reg_covar) -> GMMResult:
  """EM on centred data from centred ``params``; the result's means stay centred."""

  def cond(state):
    return (state.n_iter < max_iter) & ~state.converged

  def body(state: EMState) -> EMState:
    if covariance_type == 'full':
      mean_log_likelihood, log_resp = _e_step_centred(data, state.params, covariance_type)
      params = _m_step_centred(data, jnp.exp(log_resp), covariance_type, reg_covar)
    else:
      mean_log_likelihood, params = _em_iteration_diag(data, state.params, covariance_type, reg_covar)
    previous = jnp.where(state.n_iter > 0, state.lower_bound[state.n_iter - 1], -jnp.inf)
    converged = jnp.abs(mean_log_likelihood - previous) < tol
    return EMState(params, state.lower_bound.at[state.n_iter].set(mean_log_likelihood), state.n_iter + 1, converged)

  init = EMState(params, jnp.full((max_iter,), jnp.nan, data.x.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
  final = jax.lax.while_loop(cond, body, init)
  # Closing E-step so labels agree with the returned parameters.
  _, log_resp = _e_step_centred(data, final.params, covariance_type)
  return GMMResult(
    final.params,
    jnp.argmax(log_resp, axis=1).astype(jnp.int32),
    final.lower_bound[final.n_iter - 1],
    final.lower_bound,
    final.n_iter,
    final.converged,
  )


@functools.partial(jax.jit, static_argnames=('covariance_type',))
def predict_proba(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Responsibilities ``[N, K]`` of each component for each row of ``x [N, D]``."""
  return jnp.exp(e_step(x, params, covariance_type)[1])


def predict(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Most probable component ``[N]`` for each row of ``x [N, D]``."""
  return jnp.argmax(predict_proba(x, params, covariance_type), axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('covariance_type',))
def score_samples(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Log-likelihood ``[N]`` of each row of ``x [N, D]`` under the mixture."""
  x_c, offset = _common.centre(x)
  weighted = _weighted_log_prob(_centred(x_c, covariance_type), _shift(params, offset), covariance_type)
  return jax.nn.logsumexp(weighted, axis=1)


def score(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Mean log-likelihood ``[]`` of ``x [N, D]`` (as sklearn's ``score``)."""
  return jnp.mean(score_samples(x, params, covariance_type))
