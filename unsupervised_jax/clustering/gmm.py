"""Gaussian mixture models fitted by EM, fully inside one ``jit``.

The E-step (:func:`e_step`) and M-step (:func:`m_step`) are separate pure
functions; :func:`fit_gmm` runs them in a ``lax.while_loop`` over
:class:`EMState`. Parametrisation and numerics follow scikit-learn's
``GaussianMixture``: precisions are stored through their Cholesky factors
(``precision_cholesky``), log-densities are combined with log-sum-exp, and
``reg_covar`` is added to the covariance diagonal. The lower bound is the mean
log-likelihood per sample; EM stops when it changes by less than ``tol``.

Covariance types and the shape of ``covariances`` / ``precision_cholesky``:
  * ``'full'``:      ``[K, D, D]`` (precision Cholesky is upper triangular,
    ``precision = P P^T``),
  * ``'diag'``:      ``[K, D]``,
  * ``'spherical'``: ``[K]``.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np

from unsupervised_jax.clustering import _common
from unsupervised_jax.clustering import kmeans as kmeans_lib

Array = jax.Array
COVARIANCE_TYPES = ('full', 'diag', 'spherical')
_HIGHEST = jax.lax.Precision.HIGHEST


class GMMParams(NamedTuple):
  """Mixture parameters.

  Attributes:
    weights: ``[K]`` mixing proportions (sum to 1).
    means: ``[K, D]``.
    covariances: ``[K, D, D]`` / ``[K, D]`` / ``[K]`` by covariance type.
    precision_cholesky: same shape as ``covariances``; see the module docstring.
  """
  weights: Array
  means: Array
  covariances: Array
  precision_cholesky: Array


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


def _check_covariance_type(covariance_type):
  if covariance_type not in COVARIANCE_TYPES:
    raise ValueError(f'covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}.')


def precision_cholesky_from_covariances(covariances: Array, covariance_type: str) -> Array:
  """Cholesky factor of the precision matrices (see the module docstring for shapes).

  For ``'full'``: ``P_k = inv(L_k)^T`` with ``L_k L_k^T = Sigma_k``. A
  covariance that is not positive definite gives NaNs; increase ``reg_covar``.
  """
  if covariance_type != 'full':
    return jax.lax.rsqrt(covariances)
  chol = jnp.linalg.cholesky(covariances)
  eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), covariances.shape)
  return jnp.swapaxes(jsp.linalg.solve_triangular(chol, eye, lower=True), -1, -2)


def covariances_from_precisions(precisions: Array, covariance_type: str) -> Array:
  """Inverse of precision matrices / variances, shape by covariance type."""
  if covariance_type == 'full':
    return jnp.linalg.inv(precisions)
  return 1.0 / precisions


def make_params(weights, means, covariances, covariance_type: str) -> GMMParams:
  """Builds :class:`GMMParams` from weights ``[K]``, means ``[K, D]`` and covariances."""
  _check_covariance_type(covariance_type)
  covariances = jnp.asarray(covariances)
  return GMMParams(jnp.asarray(weights), jnp.asarray(means), covariances,
                   precision_cholesky_from_covariances(covariances, covariance_type))


def log_gaussian_density(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """``log N(x_n | mu_k, Sigma_k)`` as ``[N, K]`` for ``x [N, D]``."""
  d = x.shape[1]
  pc = params.precision_cholesky
  means = params.means
  if covariance_type == 'full':
    log_det = jnp.sum(jnp.log(jnp.diagonal(pc, axis1=-2, axis2=-1)), axis=-1)  # [K]

    def component(args):
      pc_k, mean_k = args
      # One component at a time keeps the intermediate at [N, D], not [N, K, D].
      y = jnp.dot(x, pc_k, precision=_HIGHEST) - jnp.dot(mean_k, pc_k, precision=_HIGHEST)
      return jnp.sum(y * y, axis=1)

    mahalanobis = jax.lax.map(component, (pc, means)).T
  elif covariance_type == 'diag':
    log_det = jnp.sum(jnp.log(pc), axis=-1)
    precisions = pc * pc  # [K, D]
    mahalanobis = (jnp.sum(means * means * precisions, axis=1)[None]
                   - 2.0 * jnp.dot(x, (means * precisions).T, precision=_HIGHEST)
                   + jnp.dot(x * x, precisions.T, precision=_HIGHEST))
  else:
    log_det = d * jnp.log(pc)
    precisions = pc * pc  # [K]
    mahalanobis = (jnp.sum(means * means, axis=1)[None] * precisions[None]
                   - 2.0 * jnp.dot(x, means.T, precision=_HIGHEST) * precisions[None]
                   + jnp.sum(x * x, axis=1)[:, None] * precisions[None])
  return -0.5 * (d * math.log(2 * math.pi) + mahalanobis) + log_det[None]


def e_step(x: Array, params: GMMParams, covariance_type: str) -> tuple[Array, Array]:
  """E-step.

  Returns:
    ``(mean_log_likelihood [], log_responsibilities [N, K])``.
  """
  weighted = log_gaussian_density(x, params, covariance_type) + jnp.log(params.weights)[None]
  log_norm = jax.nn.logsumexp(weighted, axis=1)
  return jnp.mean(log_norm), weighted - log_norm[:, None]


def m_step(x: Array, responsibilities: Array, covariance_type: str, reg_covar: float) -> GMMParams:
  """M-step: maximum-likelihood parameters given ``responsibilities [N, K]`` (rows sum to 1)."""
  n = x.shape[0]
  counts = jnp.sum(responsibilities, axis=0) + 10 * jnp.finfo(x.dtype).eps  # [K]
  means = jnp.dot(responsibilities.T, x, precision=_HIGHEST) / counts[:, None]
  if covariance_type == 'full':
    def component_covariance(resp_k, mean_k, count_k):
      diff = x - mean_k
      cov = jnp.dot((resp_k[:, None] * diff).T, diff, precision=_HIGHEST) / count_k
      return cov + reg_covar * jnp.eye(x.shape[1], dtype=x.dtype)
    covariances = jax.lax.map(lambda a: component_covariance(*a), (responsibilities.T, means, counts))
  else:
    second_moment = jnp.dot(responsibilities.T, x * x, precision=_HIGHEST) / counts[:, None]
    covariances = second_moment - means * means + reg_covar
    if covariance_type == 'spherical':
      covariances = jnp.mean(covariances, axis=1)
  return GMMParams(counts / n, means, covariances,
                   precision_cholesky_from_covariances(covariances, covariance_type))


def init_from_labels(x: Array, labels: Array, n_components: int, covariance_type: str,
                     reg_covar: float) -> GMMParams:
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


def fit_gmm(key: Optional[Array], x: Array, n_components: int, *, covariance_type: str = 'full',
            tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
            init_params: Optional[GMMParams] = None) -> GMMResult:
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
  """
  _validate(x, n_components, covariance_type, reg_covar, tol, max_iter)
  if not isinstance(n_init, (int, np.integer)) or n_init < 1:
    raise ValueError(f'n_init must be a positive integer, got {n_init!r}.')
  if init_params is not None:
    if n_init != 1:
      raise ValueError('explicit init_params give identical restarts: pass n_init=1.')
    if init_params.means.shape != (n_components, x.shape[1]):
      raise ValueError(f'init_params.means must be {(n_components, x.shape[1])}, got {init_params.means.shape}.')
    return _em(x, init_params, covariance_type=covariance_type, tol=tol, max_iter=max_iter,
               reg_covar=reg_covar)
  if key is None:
    raise ValueError('fit_gmm needs a PRNG key for its K-means initialisation (or init_params).')
  return _fit_gmm(key, x, n_components=n_components, covariance_type=covariance_type, tol=tol,
                  reg_covar=reg_covar, max_iter=max_iter, n_init=n_init)


@functools.partial(jax.jit, static_argnames=('n_components', 'covariance_type', 'max_iter', 'n_init'))
def _fit_gmm(key, x, *, n_components, covariance_type, tol, reg_covar, max_iter, n_init):
  def one_restart(restart_key):
    centers = kmeans_lib.kmeans_plusplus(restart_key, x, n_components)
    labels = kmeans_lib._lloyd(x, centers, max_iter=300, tol=1e-4).labels
    params = init_from_labels(x, labels, n_components, covariance_type, reg_covar)
    return _em(x, params, covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=reg_covar)

  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_init))
  results = jax.lax.map(one_restart, keys)  # sequential: K-means' bounded passes branch
  best = jnp.argmax(results.lower_bound)
  return jax.tree.map(lambda r: r[best], results)


@functools.partial(jax.jit, static_argnames=('covariance_type', 'max_iter'))
def _em(x, params, *, covariance_type, tol, max_iter, reg_covar):
  def cond(state):
    return (state.n_iter < max_iter) & ~state.converged

  def body(state: EMState) -> EMState:
    mean_log_likelihood, log_resp = e_step(x, state.params, covariance_type)
    params = m_step(x, jnp.exp(log_resp), covariance_type, reg_covar)
    previous = jnp.where(state.n_iter > 0, state.lower_bound[state.n_iter - 1], -jnp.inf)
    converged = jnp.abs(mean_log_likelihood - previous) < tol
    return EMState(params, state.lower_bound.at[state.n_iter].set(mean_log_likelihood),
                   state.n_iter + 1, converged)

  init = EMState(params, jnp.full((max_iter,), jnp.nan, x.dtype), jnp.zeros((), jnp.int32),
                 jnp.zeros((), bool))
  final = jax.lax.while_loop(cond, body, init)
  # Closing E-step so labels agree with the returned parameters.
  _, log_resp = e_step(x, final.params, covariance_type)
  return GMMResult(final.params, jnp.argmax(log_resp, axis=1).astype(jnp.int32),
                   final.lower_bound[final.n_iter - 1], final.lower_bound, final.n_iter, final.converged)


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
  weighted = log_gaussian_density(x, params, covariance_type) + jnp.log(params.weights)[None]
  return jax.nn.logsumexp(weighted, axis=1)


def score(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Mean log-likelihood ``[]`` of ``x [N, D]`` (as sklearn's ``score``)."""
  return jnp.mean(score_samples(x, params, covariance_type))
