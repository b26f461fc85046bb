"""The fused EM iteration of the diagonal and spherical Gaussian mixtures (the M-step's sums about the old
means, moved to the new ones), for :mod:`unsupervised_jax.clustering.gmm` (which documents the numerics)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from unsupervised_jax.clustering import _common
from unsupervised_jax.clustering._gmm_estep import _CHUNK_ELEMENTS
from unsupervised_jax.clustering._gmm_estep import _EMPTY_GUARD
from unsupervised_jax.clustering._gmm_estep import _HIGHEST
from unsupervised_jax.clustering._gmm_estep import _LOG_TAIL
from unsupervised_jax.clustering._gmm_estep import GMMParams
from unsupervised_jax.clustering._gmm_estep import _Centred
from unsupervised_jax.clustering._gmm_estep import _diag_log_terms
from unsupervised_jax.clustering._gmm_estep import _scatter_from_differences
from unsupervised_jax.clustering._gmm_estep import _weighted_sums
from unsupervised_jax.clustering._gmm_estep import precision_cholesky_from_covariances

Array = jax.Array


def _diag_m_step(
  data: _Centred, responsibilities: Array, covariance_type: str, reg_covar: float
) -> tuple[Array, Array, Array]:
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
    jax.nn.one_hot(top, k, dtype=x_c.dtype) * jnp.where(split, 0.0, r_top)[:, None],
    (x_c, top),
    _common.block_rows_for(d, _CHUNK_ELEMENTS),
  )

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
  return _AboutOldMeans(
    jnp.where(is_top, top_weighted[:, None], weighted), top, flagged, scatter, first, jnp.zeros_like(scatter)
  )


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
    return (
      weighted.at[idx].set(exact, mode='drop'),
      scatter + jnp.einsum('ck,ckd->kd', change, sq_diffs, precision=_HIGHEST),
      first + jnp.einsum('ck,ckd->kd', change, diffs, precision=_HIGHEST),
    )

  weighted, scatter, first = _common.fold_flagged_rows(
    rows, sums.flagged, _common.block_rows_for(k * d, _CHUNK_ELEMENTS), (sums.weighted, sums.scatter, sums.first)
  )
  return sums._replace(weighted=weighted, scatter=scatter, first=first)


def _add_tails(
  data: _Centred, means: Array, covariance_type: str, responsibilities: Array, sums: _AboutOldMeans
) -> _AboutOldMeans:
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
    rows,
    jnp.any(change != 0.0, axis=1),
    _common.block_rows_for(x.shape[1], _CHUNK_ELEMENTS),
    (sums.scatter, sums.first, sums.expanded),
  )
  return sums._replace(scatter=scatter, first=first, expanded=expanded)


def _em_iteration_diag(
  data: _Centred, params: GMMParams, covariance_type: str, reg_covar: float
) -> tuple[Array, GMMParams]:
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
  new_params = GMMParams(
    guarded / n, new_means, covariances, precision_cholesky_from_covariances(covariances, covariance_type)
  )
  return jnp.mean(log_norm), new_params
