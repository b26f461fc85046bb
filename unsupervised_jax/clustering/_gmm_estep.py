"""The Gaussian mixture's parametrisation and its E-step (the densities), for :mod:`unsupervised_jax.clustering.gmm`
(which documents the numerics)."""

from __future__ import annotations

import math
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np

from unsupervised_jax.clustering import _common

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
  return GMMParams(
    jnp.asarray(weights),
    jnp.asarray(means),
    covariances,
    precision_cholesky_from_covariances(covariances, covariance_type),
  )


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


def log_gaussian_density(
  x: Array, params: GMMParams, covariance_type: str, *, max_block_elements: int = _common.DEFAULT_MAX_BLOCK_ELEMENTS
) -> Array:
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
    mahalanobis = _common.map_blocks(
      lambda xb: _exact_mahalanobis(xb, params.means, pc), x, _common.block_rows_for(k * d, max_block_elements)
    )
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
    lambda rows: jnp.sum(
      jnp.square((rows[0] - _common.table_rows(means, rows[1])) * _common.table_rows(pc, rows[1])), axis=1
    ),
    (x, top),
    _common.block_rows_for(d, _CHUNK_ELEMENTS),
  )
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
