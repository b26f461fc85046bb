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


def _diag_log_terms(params: GMMParams, covariance_type: str, d: int) -> tuple[Array, Array]:
  """``(pc [K, D], const [K])`` for 'diag' and 'spherical': the per-feature precision Cholesky and
  ``log w_k + log det P_k - D/2 log(2 pi)``, so that ``log w_k N(x | k) = const_k - |(x - mu_k) pc_k|^2 / 2``."""
  pc, log_det = _diag_precision_cholesky(params, covariance_type, d)
  return pc, jnp.log(params.weights) + log_det - 0.5 * d * math.log(2 * math.pi)


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
  pc, const = _diag_log_terms(params, covariance_type, d)
  means = params.means
  k = means.shape[0]
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


def _scatter_from_differences(x: Array, responsibilities: Array, means: Array, covariance_type: str) -> Array:
  """``sum_n r_nk (x_n - mu_k)^2`` ``[K, D]`` ('spherical': summed over features, ``[K, 1]``) from the
  differences of every point to every mean, in blocks of rows: the exact M-step, at K times a product's cost."""
  k, d = means.shape

  def block(rows, fresh):
    xb, rb = rows
    sq_diffs = jnp.square(xb[:, None, :] - means[None])  # [B, K, D]
    if covariance_type == 'spherical':
      sq_diffs = jnp.sum(sq_diffs, axis=-1, keepdims=True)
    return (), jnp.einsum('bk,bkd->kd', jnp.where(fresh[:, None], rb, 0.0), sq_diffs, precision=_HIGHEST)

  return _common.map_and_sum_blocks(block, (x, responsibilities), _common.block_rows_for(k * d, _CHUNK_ELEMENTS))[1]


def _diag_m_step(data: _Centred, responsibilities: Array, covariance_type: str,
                 reg_covar: float) -> tuple[Array, Array, Array]:
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
  size = tail_sq + means * means * tail_mass[:, None]  # the expanded terms' size: their round-off / eps
  if covariance_type == 'spherical':
    tail_scatter = tail_sq - jnp.sum(means * (2.0 * tail_sums - means * tail_mass[:, None]), axis=1, keepdims=True)
    tail_scatter = jnp.broadcast_to(jnp.maximum(tail_scatter, 0.0) / d, scatter.shape)
    size = jnp.broadcast_to(jnp.sum(size, axis=1, keepdims=True) / d, scatter.shape)
  else:
    tail_scatter = jnp.maximum(tail_sq - means * (2.0 * tail_sums - means * tail_mass[:, None]), 0.0)
  scatter = scatter + tail_scatter
  # A component made of tails alone (its mass all below exp(-_LOG_TAIL) of its points' largest): the
  # expanded form cannot give its variance; recompute every sum from differences.
  floor = scatter + reg_covar * (counts + _EMPTY_GUARD)[:, None]

  def exact():
    exact_scatter = _scatter_from_differences(x_c, responsibilities, means, covariance_type)
    return jnp.broadcast_to(exact_scatter / d, scatter.shape) if covariance_type == 'spherical' else exact_scatter

  if covariance_type == 'spherical':  # only the sum over features is meaningful
    size, floor = jnp.sum(size, axis=1), jnp.sum(floor, axis=1)
  return counts, means, jax.lax.cond(jnp.all(2.0 * size <= floor), lambda: scatter, exact)


# Rows per block of the fused EM pass (x, x^2 and their differences stay in cache).
_FUSED_BLOCK_ROWS = 512
# At most this many (component, feature) variances are recomputed alone when their means moved far.
_EXACT_ENTRIES = 32


class _AboutOldMeans(NamedTuple):
  """What the fused EM iteration (:func:`_em_iteration_diag`) gathers about the old means.

  ``weighted [N, K]``: log weight + log density, each row's ``top [N]``
  component's from differences (every component's on ``flagged [N]`` rows
  once :func:`_add_flagged_rows` has run), the others from the expanded form;
  ``scatter [K, D]`` ('spherical': ``[K, 1]``) and ``first [K, D]``:
  ``sum w (x - mu_old)^2`` and ``sum w (x - mu_old)``, the weights ``w``
  being those counted so far (after :func:`_top_pass`: 1 for each row's top
  component, 0 elsewhere); ``expanded`` (shaped as ``scatter``): the sizes
  of the terms that went into ``scatter`` through the expanded form, which
  bound its round-off in units of eps.
  """
  weighted: Array
  top: Array
  flagged: Array
  scatter: Array
  first: Array
  expanded: Array


def _top_pass(data: _Centred, params: GMMParams, covariance_type: str) -> _AboutOldMeans:
  """The E-step's expanded products, then one blocked pass over the rows for their top component's
  distance from differences ``x - mu_top`` and, from those same differences, the sums about the old means
  with weight 1 (every point's responsibility for its top component, up to the corrections that
  :func:`_add_flagged_rows` and :func:`_add_tails` make)."""
  x, sq = data.x, data.sq
  n, d = x.shape
  means = params.means
  k = means.shape[0]
  pc, const = _diag_log_terms(params, covariance_type, d)
  precisions = pc * pc
  sq_precisions = precisions[:, :1] if covariance_type == 'spherical' else precisions
  quad_mu = jnp.sum(means * means * precisions, axis=1)  # [K]
  # Over all rows at once: XLA:CPU runs a large product on every core, a block's on one.
  quad_x = jnp.dot(sq, sq_precisions.T, precision=_HIGHEST)  # [N, K]
  approx = jnp.maximum(quad_x - 2.0 * jnp.dot(x, (means * precisions).T, precision=_HIGHEST) + quad_mu, 0.0)
  weighted = const - 0.5 * approx
  top = jnp.argmax(weighted, axis=1)

  def block(rows, fresh):
    xb, top_b = rows
    diffs = xb - jnp.take(means, top_b, axis=0)
    distance = jnp.sum(jnp.square(diffs * jnp.take(pc, top_b, axis=0)), axis=1)
    ones = jnp.where((jnp.arange(k) == top_b[:, None]) & fresh[:, None], 1.0, 0.0).astype(x.dtype)  # [B, K]
    sq_diffs = jnp.square(diffs)
    if covariance_type == 'spherical':
      sq_diffs = jnp.sum(sq_diffs, axis=1, keepdims=True)
    return distance, (_common.weighted_sums(ones, sq_diffs), _common.weighted_sums(ones, diffs))

  distance, (scatter, first) = _common.map_and_sum_blocks(block, (x, top), min(_FUSED_BLOCK_ROWS, n))
  is_top = jnp.arange(k) == top[:, None]
  top_weighted = const[top] - 0.5 * distance
  # Rows where another component may come within _LOG_TAIL (see _weighted_log_prob).
  err = (d + 8) * jnp.finfo(x.dtype).eps * (quad_x + quad_mu)
  flagged = jnp.max(jnp.where(is_top, -jnp.inf, weighted + 0.5 * err), axis=1) >= top_weighted - _LOG_TAIL
  return _AboutOldMeans(jnp.where(is_top, top_weighted[:, None], weighted), top, flagged, scatter, first,
                        jnp.zeros_like(scatter))


def _add_flagged_rows(data: _Centred, params: GMMParams, covariance_type: str, sums: _AboutOldMeans) -> _AboutOldMeans:
  """The flagged rows: every component's log density from differences, and in the sums their
  responsibilities in place of the weight 1 on their top component, from differences too."""
  x = data.x
  d = x.shape[1]
  means = params.means
  k = means.shape[0]
  pc, const = _diag_log_terms(params, covariance_type, d)

  def rows(idx, valid, carry):
    weighted, scatter, first = carry
    diffs = x.at[idx].get(mode='clip')[:, None, :] - means[None]  # [C, K, D]
    exact = const - 0.5 * jnp.sum(jnp.square(diffs * pc[None]), axis=-1)
    resp = jnp.exp(exact - jax.nn.logsumexp(exact, axis=1, keepdims=True))
    change = jnp.where(valid[:, None], resp - (jnp.arange(k) == sums.top.at[idx].get(mode='clip')[:, None]), 0.0)
    sq_diffs = jnp.square(diffs)
    if covariance_type == 'spherical':
      sq_diffs = jnp.sum(sq_diffs, axis=-1, keepdims=True)
    return (weighted.at[idx].set(exact, mode='drop'),
            scatter + jnp.einsum('ck,ckd->kd', change, sq_diffs, precision=_HIGHEST),
            first + jnp.einsum('ck,ckd->kd', change, diffs, precision=_HIGHEST))

  weighted, scatter, first = _common.fold_flagged_rows(
      rows, sums.flagged, _common.block_rows_for(k * d, _CHUNK_ELEMENTS), (sums.weighted, sums.scatter, sums.first))
  return sums._replace(weighted=weighted, scatter=scatter, first=first)


def _add_tails(data: _Centred, means: Array, covariance_type: str, responsibilities: Array,
               sums: _AboutOldMeans) -> _AboutOldMeans:
  """The unflagged rows' responsibilities where they differ from weight 1 on the top component: the tails
  (each below ``exp(-_LOG_TAIL)`` of the top; most are 0 in float32) and the top's ``r - 1`` (their
  negated sum, if it is not lost to round-off). Through the expanded form, over the rows that have any;
  the sizes of its terms go to ``expanded``, so that a component made of tails alone, whose variance
  the expanded form cannot give, is recomputed from differences (:func:`_em_iteration_diag`)."""
  x = data.x
  k = means.shape[0]
  change = jnp.where(sums.flagged[:, None], 0.0, responsibilities - (jnp.arange(k) == sums.top[:, None]))

  def rows(idx, valid, carry):
    scatter, first, expanded = carry
    weights = jnp.where(valid[:, None], change.at[idx].get(mode='clip'), 0.0)  # [C, K]
    xb = x.at[idx].get(mode='clip')
    sqb = xb * xb if covariance_type == 'diag' else jnp.sum(xb * xb, axis=1, keepdims=True)
    mass = jnp.sum(weights, axis=0)[:, None]
    sum_x = _common.weighted_sums(weights, xb)
    sum_sq, size = jnp.split(_common.weighted_sums(jnp.concatenate([weights, jnp.abs(weights)], axis=1), sqb), 2)
    size_mu = means * means * jnp.sum(jnp.abs(weights), axis=0)[:, None]
    cross = means * (2.0 * sum_x - means * mass)
    if covariance_type == 'spherical':
      cross, size_mu = jnp.sum(cross, axis=1, keepdims=True), jnp.sum(size_mu, axis=1, keepdims=True)
    return (scatter + sum_sq - cross, first + sum_x - means * mass, expanded + 2.0 * (size + size_mu))

  scatter, first, expanded = _common.fold_flagged_rows(
      rows, jnp.any(change != 0.0, axis=1), _common.block_rows_for(x.shape[1], _CHUNK_ELEMENTS),
      (sums.scatter, sums.first, sums.expanded))
  return sums._replace(scatter=scatter, first=first, expanded=expanded)


def _em_iteration_diag(data: _Centred, params: GMMParams, covariance_type: str,
                       reg_covar: float) -> tuple[Array, GMMParams]:
  """One EM iteration for 'diag' and 'spherical' with one pass over the data:
  ``(mean_log_likelihood [], new params)``, what :func:`_e_step_centred` then
  :func:`_m_step_centred` give (to float32 round-off) at about half the cost.

  * :func:`_top_pass`: the E-step's expanded products, then per block of
    rows the top component's distance from differences ``x - mu_old`` and,
    from those same differences, the M-step's sums about the old means,
    ``F = sum r (x - mu_old)`` and ``S = sum r (x - mu_old)^2``, with
    ``r = 1`` on each row's top component.
  * :func:`_add_flagged_rows`: the E-step's flagged rows (another component
    may come within ``_LOG_TAIL``) get every component from differences, and
    their responsibilities in the sums. :func:`_add_tails`: the other rows'
    non-zero tails (below ``exp(-_LOG_TAIL)`` of their top) through the
    expanded form, the sizes of its terms kept.
  * Then, exactly, ``delta = mu_new - mu_old = F / N_k`` and
    ``sum r (x - mu_new)^2 = S - 2 delta F + delta^2 N_k``. Its round-off is
    at most a few times that of the sum from differences about the new means
    while the correction terms (and the tails' expanded terms) stay below the
    result plus ``reg_covar N_k``, which the covariance adds anyway: unless a
    mean moved by more than ~0.6 of its standard deviation (the first
    iterations) or a component holds tails alone. Up to ``_EXACT_ENTRIES``
    such (component, feature) entries are recomputed from differences about
    the new means, all points; more, every component.
  """
  x = data.x
  n, d = x.shape
  means = params.means
  k = means.shape[0]
  sums = _add_flagged_rows(data, params, covariance_type, _top_pass(data, params, covariance_type))
  log_norm = jax.nn.logsumexp(sums.weighted, axis=1)
  responsibilities = jnp.exp(sums.weighted - log_norm[:, None])
  sums = _add_tails(data, means, covariance_type, responsibilities, sums)
  counts = jnp.sum(responsibilities, axis=0)
  guarded = counts + _EMPTY_GUARD
  keep = counts / guarded  # exactly 1 above a count of ~4e-8 (see _diag_m_step)
  delta = (keep / jnp.where(counts > 0, counts, 1.0))[:, None] * sums.first - (1.0 - keep)[:, None] * means
  shift = 2.0 * delta * sums.first
  moved = delta * delta * counts[:, None]
  if covariance_type == 'spherical':
    shift, moved = jnp.sum(shift, axis=1, keepdims=True), jnp.sum(moved, axis=1, keepdims=True)
  new_means, scatter = means + delta, sums.scatter - shift + moved
  floor = jnp.maximum(scatter, 0.0) + reg_covar * guarded[:, None] * (d if covariance_type == 'spherical' else 1)
  moved_far = jnp.abs(shift) + moved + sums.expanded > floor  # [K, D] ('diag') or [K, 1]
  n_far = jnp.sum(moved_far)

  def exact_entries():
    """The few (component, feature) entries whose mean moved far: their sums from differences, all points."""
    flat = jnp.nonzero(moved_far.ravel(), size=_EXACT_ENTRIES, fill_value=moved_far.size)[0]
    comp, feature = flat // d, flat % d
    centres = new_means.at[comp, feature].get(mode='clip')

    def block(rows, fresh):  # the columns taken from blocks of rows in cache, not strided over all of x
      xb, rb = rows
      weights = jnp.where(fresh[:, None], jnp.take(rb, comp, axis=1, mode='clip'), 0.0)  # [B, E]
      sq_diffs = jnp.square(jnp.take(xb, feature, axis=1, mode='clip') - centres)
      return (), _common.weighted_sums(jnp.ones((xb.shape[0], 1), x.dtype), weights * sq_diffs)[0]

    entries = _common.map_and_sum_blocks(block, (x, responsibilities), min(_FUSED_BLOCK_ROWS, n))[1]
    return new_means, scatter.at[comp, feature].set(entries, mode='drop')

  def exact():
    """Every component's sums about its new mean from differences, all points (the first iterations)."""
    return new_means, _scatter_from_differences(x, responsibilities, new_means, covariance_type)

  if covariance_type == 'spherical':
    branch = jnp.where(n_far == 0, 0, 2)
  else:
    branch = jnp.where(n_far == 0, 0, jnp.where(n_far <= _EXACT_ENTRIES, 1, 2))
  new_means, scatter = jax.lax.switch(branch, [lambda: (new_means, scatter), exact_entries, exact])
  if covariance_type == 'spherical':
    covariances = jnp.maximum(scatter[:, 0], 0.0) / (guarded * d) + reg_covar
  else:
    covariances = jnp.maximum(scatter, 0.0) / guarded[:, None] + reg_covar
  new_params = GMMParams(guarded / n, new_means, covariances,
                         precision_cholesky_from_covariances(covariances, covariance_type))
  return jnp.mean(log_norm), new_params


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
    if covariance_type == 'full':
      mean_log_likelihood, log_resp = _e_step_centred(data, state.params, covariance_type)
      params = _m_step_centred(data, jnp.exp(log_resp), covariance_type, reg_covar)
    else:
      mean_log_likelihood, params = _em_iteration_diag(data, state.params, covariance_type, reg_covar)
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
