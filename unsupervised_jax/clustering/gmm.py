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
  cancellation error as small).
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


# Responsibilities more than exp(-_LOG_TAIL) = 2e-9 below a point's largest
# are taken from the expanded form (E-step) and left out of the variances of
# the points that have no other sizeable one (M-step).
_LOG_TAIL = 20.0
# sklearn's guard against empty components, as in float64: nk + 10 * eps64.
_EMPTY_GUARD = 10 * float(np.finfo(np.float64).eps)
# Elements of the [rows, K, D] differences materialised at once.
_CHUNK_ELEMENTS = 1 << 20


def _diag_precision_cholesky(params: GMMParams, covariance_type: str, d: int) -> tuple[Array, Array]:
  """``(pc [K, D], log_det [K])``: per-feature precision Cholesky and ``log det`` of it ('diag', 'spherical')."""
  pc = params.precision_cholesky
  if covariance_type == 'spherical':
    return jnp.broadcast_to(pc[:, None], (pc.shape[0], d)), d * jnp.log(pc)
  return pc, jnp.sum(jnp.log(pc), axis=-1)


def _exact_mahalanobis(x: Array, means: Array, pc: Array) -> Array:
  """``[M, K]`` squared Mahalanobis distances of ``x [M, D]`` for diagonal ``pc [K, D]``, from differences."""
  return jnp.sum(jnp.square((x[:, None, :] - means[None]) * pc[None]), axis=-1)


def _full_mahalanobis(x: Array, means: Array, pc: Array) -> Array:
  """``[N, K]`` for full ``pc [K, D, D]``: ``|(x - mu_k) P_k|^2``, one component at a time."""
  def component(args):
    pc_k, mean_k = args
    y = jnp.dot(x - mean_k, pc_k, precision=_HIGHEST)  # [N, D], never [N, K, D]
    return jnp.sum(y * y, axis=1)
  return jax.lax.map(component, (pc, means)).T


def log_gaussian_density(x: Array, params: GMMParams, covariance_type: str, *,
                         max_block_elements: int = _common.DEFAULT_MAX_BLOCK_ELEMENTS) -> Array:
  """``log N(x_n | mu_k, Sigma_k)`` as ``[N, K]`` for ``x [N, D]``, every entry from differences ``x - mu_k``.

  The differences are formed in blocks of rows (at most ``max_block_elements``
  at once). :func:`e_step` is faster: it computes exactly only the entries
  that matter for the responsibilities.
  """
  d = x.shape[1]
  if covariance_type == 'full':
    log_det = jnp.sum(jnp.log(jnp.diagonal(params.precision_cholesky, axis1=-2, axis2=-1)), axis=-1)
    mahalanobis = _full_mahalanobis(x, params.means, params.precision_cholesky)
  else:
    pc, log_det = _diag_precision_cholesky(params, covariance_type, d)
    k = pc.shape[0]
    mahalanobis = _common.map_blocks(lambda xb: _exact_mahalanobis(xb, params.means, pc), x,
                                     _common.block_rows_for(k * d, max_block_elements))
  return -0.5 * (d * math.log(2 * math.pi) + mahalanobis) + log_det[None]


class _Centred(NamedTuple):
  """Centred data ``x [N, D]`` with the squares the expanded forms reuse every iteration:
  ``sq`` = ``x^2 [N, D]`` ('diag'), ``|x|^2 [N, 1]`` ('spherical'), ``None`` ('full')."""
  x: Array
  sq: Optional[Array]


def _centred(x_c: Array, covariance_type: str) -> _Centred:
  if covariance_type == 'diag':
    return _Centred(x_c, x_c * x_c)
  if covariance_type == 'spherical':
    return _Centred(x_c, jnp.sum(x_c * x_c, axis=1, keepdims=True))
  return _Centred(x_c, None)


def _weighted_log_prob(data: _Centred, params: GMMParams, covariance_type: str) -> Array:
  """``log w_k + log N(x_n | mu_k, Sigma_k)`` ``[N, K]``: exact within ``_LOG_TAIL`` of each row's largest."""
  x = data.x
  n, d = x.shape
  log_weights = jnp.log(params.weights)
  if covariance_type == 'full':
    log_det = jnp.sum(jnp.log(jnp.diagonal(params.precision_cholesky, axis1=-2, axis2=-1)), axis=-1)
    mahalanobis = _full_mahalanobis(x, params.means, params.precision_cholesky)
    return log_weights[None] + log_det[None] - 0.5 * (d * math.log(2 * math.pi) + mahalanobis)
  pc, log_det = _diag_precision_cholesky(params, covariance_type, d)
  means = params.means
  k = means.shape[0]
  const = log_weights + log_det - 0.5 * d * math.log(2 * math.pi)  # [K]
  # Screening: the expanded form and a bound on its round-off (see
  # _common.expansion_error; one more ulp per term for the products with P).
  precisions = pc * pc
  sq_precisions = precisions[:, :1] if covariance_type == 'spherical' else precisions
  quad_x = jnp.dot(data.sq, sq_precisions.T, precision=_HIGHEST)  # [N, K]
  quad_mu = jnp.sum(means * means * precisions, axis=1)  # [K]
  cross = jnp.dot(x, (means * precisions).T, precision=_HIGHEST)
  approx = jnp.maximum(quad_x - 2.0 * cross + quad_mu[None], 0.0)
  err = (d + 8) * jnp.finfo(x.dtype).eps * (quad_x + quad_mu[None])
  weighted = const[None] - 0.5 * approx
  # Each row's top component from differences.
  top = jnp.argmax(weighted, axis=1)
  is_top = jnp.arange(k)[None] == top[:, None]
  top_weighted = const[top] - 0.5 * _common.map_blocks(
      lambda rows: jnp.sum(jnp.square((rows[0] - _common.table_rows(means, rows[1]))
                                      * _common.table_rows(pc, rows[1])), axis=1),
      (x, top), _common.block_rows_for(d, _CHUNK_ELEMENTS))
  weighted = jnp.where(is_top, top_weighted[:, None], weighted)
  # Rows where another component may come within _LOG_TAIL: all from differences.
  rival = jnp.max(jnp.where(is_top, -jnp.inf, weighted + 0.5 * err), axis=1)
  flagged = rival >= top_weighted - _LOG_TAIL

  def refine(idx, valid, weighted):
    exact = const[None] - 0.5 * _exact_mahalanobis(x.at[idx].get(mode='clip'), means, pc)
    return weighted.at[idx].set(exact, mode='drop')

  return _common.fold_flagged_rows(refine, flagged, _common.block_rows_for(k * d, _CHUNK_ELEMENTS), weighted)


def _e_step_centred(data: _Centred, params: GMMParams, covariance_type: str) -> tuple[Array, Array]:
  weighted = _weighted_log_prob(data, params, covariance_type)
  log_norm = jax.nn.logsumexp(weighted, axis=1)
  return jnp.mean(log_norm), weighted - log_norm[:, None]


def _shift(params: GMMParams, offset: Array) -> GMMParams:
  return params._replace(means=params.means - offset)


def e_step(x: Array, params: GMMParams, covariance_type: str) -> tuple[Array, Array]:
  """E-step.

  Returns:
    ``(mean_log_likelihood [], log_responsibilities [N, K])``; entries more
    than ``_LOG_TAIL`` nats below a row's largest come from the expanded form.
  """
  x_c, offset = _common.centre(x)
  return _e_step_centred(_centred(x_c, covariance_type), _shift(params, offset), covariance_type)


_weighted_sums = _common.weighted_sums


def _diag_m_step(data: _Centred, responsibilities: Array, covariance_type: str) -> tuple[Array, Array, Array]:
  """``(counts [K], centred means [K, D], scatter [K, D])``: the M-step's sums for 'diag' and 'spherical'.

  ``scatter = sum_n r_nk (x_n - mu_k)^2`` from differences, where it
  matters: each point's largest responsibility through one gathered pass and
  a matmul; the points whose second responsibility exceeds ``exp(-_LOG_TAIL)``
  of their largest pair by pair; only the tails left (each below that share
  of its point's mass, so its cancellation error is as small) through the
  expanded form, in the matmuls of the means. For 'spherical' only
  ``scatter.sum(1)`` is meaningful.

  Means are ``sums / counts``, as sklearn's ``sums / (counts + 10 eps64)``
  but shrinking a (nearly) empty component's mean towards the data's mean,
  not the origin: in float32 a mean left at the origin, far from the data,
  gives an empty component a covariance without a Cholesky factor. Only
  components holding less than ~1e-8 of a point differ.
  """
  x_c = data.x
  n, d = x_c.shape
  k = responsibilities.shape[1]
  counts = jnp.sum(responsibilities, axis=0)
  top = jnp.argmax(responsibilities, axis=1)
  is_top = jnp.arange(k)[None] == top[:, None]
  r_top = jnp.max(responsibilities, axis=1)
  second = jnp.max(jnp.where(is_top, 0.0, responsibilities), axis=1)
  split = second > math.exp(-_LOG_TAIL) * r_top
  tails = jnp.where(is_top | split[:, None], 0.0, responsibilities)  # [N, K]
  sums, tail_sums = jnp.split(_weighted_sums(jnp.concatenate([responsibilities, tails], axis=1), x_c), 2)
  keep = counts / (counts + _EMPTY_GUARD)  # exactly 1 above a count of ~4e-8
  means = keep[:, None] * (sums / jnp.where(counts > 0, counts, 1.0)[:, None])
  # Largest responsibilities.
  scatter = _common.weighted_sums_over_row_blocks(
      lambda rows: jnp.square(rows[0] - _common.table_rows(means, rows[1])),
      jax.nn.one_hot(top, k, dtype=x_c.dtype) * jnp.where(split, 0.0, r_top)[:, None], (x_c, top),
      _common.block_rows_for(d, _CHUNK_ELEMENTS))

  def pairs(idx, valid, scatter):
    r = jnp.where(valid[:, None], responsibilities.at[idx].get(mode='clip'), 0.0)  # [C, K]
    diffs = x_c.at[idx].get(mode='clip')[:, None, :] - means[None]  # [C, K, D]
    return scatter + jnp.einsum('ck,ckd->kd', r, diffs * diffs, precision=_HIGHEST)

  scatter = _common.fold_flagged_rows(pairs, split, _common.block_rows_for(k * d, _CHUNK_ELEMENTS), scatter)
  # Tails: sum t (x - mu)^2 = sum t x^2 - 2 mu sum t x + mu^2 sum t, with t tiny.
  tail_mass = jnp.sum(tails, axis=0)
  tail_sq = _weighted_sums(tails, data.sq)  # [K, D] ('diag') or [K, 1] ('spherical')
  if covariance_type == 'spherical':
    tail_scatter = tail_sq - jnp.sum(means * (2.0 * tail_sums - means * tail_mass[:, None]), axis=1, keepdims=True)
    tail_scatter = jnp.broadcast_to(jnp.maximum(tail_scatter, 0.0) / d, scatter.shape)
  else:
    tail_scatter = jnp.maximum(tail_sq - means * (2.0 * tail_sums - means * tail_mass[:, None]), 0.0)
  return counts, means, scatter + tail_scatter


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
    counts, means, scatter = _diag_m_step(data, responsibilities, covariance_type)
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
    return _check_fitted(_em(x, init_params, covariance_type=covariance_type, tol=tol, max_iter=max_iter,
                             reg_covar=reg_covar))
  if key is None:
    raise ValueError('fit_gmm needs a PRNG key for its K-means initialisation (or init_params).')
  return _check_fitted(_fit_gmm(key, x, n_components=n_components, covariance_type=covariance_type, tol=tol,
                                reg_covar=reg_covar, max_iter=max_iter, n_init=n_init))


def _check_fitted(result: GMMResult) -> GMMResult:
  if _common.is_concrete(result.lower_bound) and not np.isfinite(float(result.lower_bound)):
    raise ValueError('EM failed: a covariance is not positive definite in float32 (collapsed or singleton '
                     'components); use fewer components or a larger reg_covar.')
  return result


def _fit_gmm(key, x, *, n_components, covariance_type, tol, reg_covar, max_iter, n_init):
  x_c, offset, mean = _common.centre_if_far(x)
  best = _fit_gmm_on_centred(key, x_c, mean, n_components=n_components, covariance_type=covariance_type, tol=tol,
                             reg_covar=reg_covar, max_iter=max_iter, n_init=n_init)
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
    return _em_centred(data, params, covariance_type=covariance_type, tol=tol, max_iter=max_iter,
                       reg_covar=reg_covar)

  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_init))
  results = jax.lax.map(one_restart, keys)  # sequential: K-means' bounded passes branch
  best = jnp.argmax(results.lower_bound)
  return jax.tree.map(lambda r: r[best], results)


def _em(x, params, *, covariance_type, tol, max_iter, reg_covar):
  """EM from ``params``: the data centred by one program, the iterations run by another."""
  x_c, offset, _ = _common.centre_if_far(x)
  result = _em_on_centred(x_c, _shift(params, offset), covariance_type=covariance_type, tol=tol, max_iter=max_iter,
                          reg_covar=reg_covar)
  return result._replace(params=_shift(result.params, -offset))


@functools.partial(jax.jit, static_argnames=('covariance_type', 'max_iter'))
def _em_on_centred(x_c, params, *, covariance_type, tol, max_iter, reg_covar):
  return _em_centred(_centred(x_c, covariance_type), params, covariance_type=covariance_type, tol=tol,
                     max_iter=max_iter, reg_covar=reg_covar)


def _em_centred(data: _Centred, params, *, covariance_type, tol, max_iter, reg_covar) -> GMMResult:
  """EM on centred data from centred ``params``; the result's means stay centred."""
  def cond(state):
    return (state.n_iter < max_iter) & ~state.converged

  def body(state: EMState) -> EMState:
    mean_log_likelihood, log_resp = _e_step_centred(data, state.params, covariance_type)
    params = _m_step_centred(data, jnp.exp(log_resp), covariance_type, reg_covar)
    previous = jnp.where(state.n_iter > 0, state.lower_bound[state.n_iter - 1], -jnp.inf)
    converged = jnp.abs(mean_log_likelihood - previous) < tol
    return EMState(params, state.lower_bound.at[state.n_iter].set(mean_log_likelihood),
                   state.n_iter + 1, converged)

  init = EMState(params, jnp.full((max_iter,), jnp.nan, data.x.dtype), jnp.zeros((), jnp.int32),
                 jnp.zeros((), bool))
  final = jax.lax.while_loop(cond, body, init)
  # Closing E-step so labels agree with the returned parameters.
  _, log_resp = _e_step_centred(data, final.params, covariance_type)
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
  x_c, offset = _common.centre(x)
  weighted = _weighted_log_prob(_centred(x_c, covariance_type), _shift(params, offset), covariance_type)
  return jax.nn.logsumexp(weighted, axis=1)


def score(x: Array, params: GMMParams, covariance_type: str) -> Array:
  """Mean log-likelihood ``[]`` of ``x [N, D]`` (as sklearn's ``score``)."""
  return jnp.mean(score_samples(x, params, covariance_type))
