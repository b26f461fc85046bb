"""K-means: k-means++ seeding and Lloyd iterations, jittable end to end.

The whole fit is one ``lax.while_loop`` over a :class:`LloydState`; restarts
(``n_init``) run side by side under ``vmap`` and the lowest-inertia one is
kept. Iteration semantics follow scikit-learn's ``KMeans(algorithm='lloyd')``
(tolerance scaled by the mean feature variance; stop on unchanged labels or
when the squared centre shift drops to the tolerance; empty clusters get the
points farthest from their centres), so from the same initial centres the two
produce the same labels.

Typical use::

  result = kmeans(jax.random.key(0), x, n_clusters=10, n_init=10)
  labels = predict(x_new, result.centers)
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax.clustering import _common

Array = jax.Array


class KMeansResult(NamedTuple):
  """Output of :func:`kmeans` and :func:`lloyd`.

  Attributes:
    centers: ``[K, D]`` cluster centres.
    labels: ``[N]`` int32 index of the closest centre for each point.
    inertia: ``[]`` sum of squared distances of the points to their centre.
    n_iter: ``[]`` int32 Lloyd iterations run.
    converged: ``[]`` bool, whether the tolerance was met before ``max_iter``.
  """
  centers: Array
  labels: Array
  inertia: Array
  n_iter: Array
  converged: Array


class LloydState(NamedTuple):
  """Loop state of the Lloyd iterations.

  Attributes:
    centers: ``[K, D]`` current centres.
    labels: ``[N]`` int32 labels from the last assignment (-1 before the first).
    n_iter: ``[]`` int32 iterations done.
    done: ``[]`` bool, tolerance met.
  """
  centers: Array
  labels: Array
  n_iter: Array
  done: Array


class Assignment(NamedTuple):
  """Closest centre of each point: ``labels [N]`` int32, ``distances [N]`` squared distance."""
  labels: Array
  distances: Array


def assign(x: Array, centers: Array, x_sq_norms: Optional[Array] = None, *,
           max_block_elements: int = _common.DEFAULT_MAX_BLOCK_ELEMENTS) -> Assignment:
  """Closest centre for each row of ``x [N, D]`` among ``centers [K, D]``.

  Distances are computed in blocks of rows so that no more than
  ``max_block_elements`` distances exist at once.
  """
  if x_sq_norms is None:
    x_sq_norms = jnp.sum(x * x, axis=-1)

  def block(inputs):
    xb, nb = inputs
    d = _common.squared_distances(xb, centers, nb)
    return Assignment(jnp.argmin(d, axis=-1).astype(jnp.int32), jnp.min(d, axis=-1))

  rows = _common.block_rows_for(centers.shape[0], max_block_elements)
  if x.shape[0] <= rows:
    return block((x, x_sq_norms))
  n_blocks = math.ceil(x.shape[0] / rows)
  pad = n_blocks * rows - x.shape[0]
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(n_blocks, rows, -1)
  ns = jnp.pad(x_sq_norms, (0, pad)).reshape(n_blocks, rows)
  out = jax.lax.map(block, (xs, ns))
  return jax.tree.map(lambda o: o.reshape(-1)[:x.shape[0]], out)


def predict(x: Array, centers: Array) -> Array:
  """Index ``[N]`` of the closest of ``centers [K, D]`` for each row of ``x [N, D]``."""
  _common.check_points(x, centers.shape[0], what='number of centers')
  return _predict(x, centers)


@jax.jit
def _predict(x, centers):
  return assign(x, centers).labels


def tolerance(x: Array, tol: float) -> Array:
  """Absolute tolerance on the squared centre shift: ``tol * mean feature variance`` (as sklearn)."""
  return tol * jnp.mean(jnp.var(x, axis=0))


def kmeans_plusplus(key: Array, x: Array, n_clusters: int, n_local_trials: Optional[int] = None) -> Array:
  """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn).

  Each new centre is the best, by resulting potential, of ``n_local_trials``
  candidates sampled proportionally to the squared distance to the closest
  centre chosen so far.

  Args:
    key: PRNG key.
    x: ``[N, D]`` points.
    n_clusters: K.
    n_local_trials: candidates per centre; default ``2 + floor(log K)``.

  Returns:
    ``[K, D]`` initial centres, rows of ``x``.
  """
  n = x.shape[0]
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(n_clusters))
  x_sq_norms = jnp.sum(x * x, axis=-1)
  first_key, loop_key = jax.random.split(key)
  first = jax.random.randint(first_key, (), 0, n)
  closest = _common.squared_distances(x, x[first][None], x_sq_norms)[:, 0]
  centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(x[first])

  def add_center(c, carry):
    centers, closest = carry
    potential = jnp.sum(closest)
    u = jax.random.uniform(jax.random.fold_in(loop_key, c), (n_local_trials,)) * potential
    candidates = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), u), 0, n - 1)
    to_candidates = _common.squared_distances(x, x[candidates], x_sq_norms).T  # [trials, N]
    new_closest = jnp.minimum(closest[None], to_candidates)
    best = jnp.argmin(jnp.sum(new_closest, axis=-1))
    return centers.at[c].set(x[candidates[best]]), new_closest[best]

  centers, _ = jax.lax.fori_loop(1, n_clusters, add_center, (centers, closest))
  return centers


def random_init(key: Array, x: Array, n_clusters: int) -> Array:
  """``[K, D]`` centres drawn uniformly without replacement from the rows of ``x``."""
  return x[jax.random.choice(key, x.shape[0], (n_clusters,), replace=False)]


def _relocate_empty(x, sums, counts, assignment: Assignment):
  """Moves each empty cluster onto one of the points farthest from their centre.

  As scikit-learn: the point leaves its old cluster's sum and count and becomes
  the new cluster's only member.
  """
  k = counts.shape[0]
  empty = counts == 0
  far = jax.lax.top_k(assignment.distances, k)[1]  # the k farthest points, descending
  rank = jnp.cumsum(empty) - 1  # j-th empty cluster takes the j-th farthest point
  moved = far[jnp.where(empty, rank, 0)]  # [K]
  old = assignment.labels[moved]
  moved_x = jnp.where(empty[:, None], x[moved], 0.0)
  sums = sums - jax.ops.segment_sum(moved_x, old, k)
  counts = counts - jax.ops.segment_sum(empty.astype(counts.dtype), old, k)
  sums = jnp.where(empty[:, None], moved_x, sums)
  counts = jnp.where(empty, 1.0, counts)
  return sums, counts


def lloyd_step(x: Array, centers: Array, x_sq_norms: Array) -> tuple[Array, Assignment]:
  """One Lloyd iteration: assign points to ``centers [K, D]``, return the new centres and the assignment."""
  k = centers.shape[0]
  assignment = assign(x, centers, x_sq_norms)
  sums = jax.ops.segment_sum(x, assignment.labels, k)
  counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), assignment.labels, k)
  sums, counts = jax.lax.cond(jnp.any(counts == 0), _relocate_empty, lambda x, s, c, a: (s, c),
                              x, sums, counts, assignment)
  return sums / counts[:, None], assignment


def lloyd(x: Array, initial_centers: Array, *, max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
  """Lloyd iterations from given centres, inside one ``lax.while_loop``.

  Args:
    x: ``[N, D]`` float points.
    initial_centers: ``[K, D]`` starting centres.
    max_iter: iteration cap.
    tol: relative tolerance on the squared centre shift (see :func:`tolerance`).

  Returns:
    :class:`KMeansResult`; labels and inertia are for the returned centres.
  """
  _common.check_points(x, initial_centers.shape[0], what='number of initial centers')
  if initial_centers.ndim != 2 or initial_centers.shape[1] != x.shape[1]:
    raise ValueError(f'initial_centers must be [K, {x.shape[1]}], got {initial_centers.shape}.')
  _check_iter(max_iter, tol)
  return _lloyd(x, jnp.asarray(initial_centers, x.dtype), max_iter=max_iter, tol=tol)


@functools.partial(jax.jit, static_argnames=('max_iter',))
def _lloyd(x, initial_centers, *, max_iter, tol):
  x_sq_norms = jnp.sum(x * x, axis=-1)
  abs_tol = tolerance(x, tol)

  def cond(state: LloydState):
    return (state.n_iter < max_iter) & ~state.done

  def body(state: LloydState) -> LloydState:
    new_centers, assignment = lloyd_step(x, state.centers, x_sq_norms)
    unchanged = jnp.all(assignment.labels == state.labels)
    shift = jnp.sum((new_centers - state.centers) ** 2)
    return LloydState(new_centers, assignment.labels, state.n_iter + 1, unchanged | (shift <= abs_tol))

  init = LloydState(initial_centers, jnp.full(x.shape[0], -1, jnp.int32), jnp.zeros((), jnp.int32),
                    jnp.zeros((), bool))
  final = jax.lax.while_loop(cond, body, init)
  # Labels for the final centres (sklearn's closing E-step).
  assignment = assign(x, final.centers, x_sq_norms)
  return KMeansResult(final.centers, assignment.labels, jnp.sum(assignment.distances), final.n_iter,
                      final.done)


def _check_iter(max_iter, tol):
  if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
    raise ValueError(f'max_iter must be a positive integer, got {max_iter!r}.')
  if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
    raise ValueError(f'tol must be a finite number >= 0, got {tol!r}.')


def kmeans(key: Array, x: Array, n_clusters: int, *, n_init: int = 10,
           init: Union[str, Array] = 'k-means++', max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
  """Fits K-means with ``n_init`` restarts run in parallel (``vmap``); keeps the lowest inertia.

  Args:
    key: PRNG key; restart ``i`` seeds from ``fold_in(key, i)``.
    x: ``[N, D]`` float points.
    n_clusters: K.
    n_init: number of restarts.
    init: ``'k-means++'``, ``'random'``, or an explicit ``[K, D]`` array
      (then ``n_init`` must be 1).
    max_iter: Lloyd iteration cap per restart.
    tol: relative tolerance (see :func:`tolerance`).

  Returns:
    :class:`KMeansResult` of the best restart.

  Raises:
    ValueError: bad shapes, NaN/inf data, K > N, unknown ``init``.
  """
  _common.check_points(x, n_clusters)
  _check_iter(max_iter, tol)
  if not isinstance(n_init, (int, np.integer)) or n_init < 1:
    raise ValueError(f'n_init must be a positive integer, got {n_init!r}.')
  if not isinstance(init, str):
    init = jnp.asarray(init, x.dtype)
    if n_init != 1:
      raise ValueError('explicit initial centers give identical restarts: pass n_init=1.')
    if init.shape != (n_clusters, x.shape[1]):
      raise ValueError(f'init must have shape {(n_clusters, x.shape[1])}, got {init.shape}.')
    return _lloyd(x, init, max_iter=max_iter, tol=tol)
  if init not in ('k-means++', 'random'):
    raise ValueError(f"init must be 'k-means++', 'random' or an array of centers, got {init!r}.")
  return _kmeans(key, x, n_clusters=n_clusters, n_init=n_init, init=init, max_iter=max_iter, tol=tol)


@functools.partial(jax.jit, static_argnames=('n_clusters', 'n_init', 'init', 'max_iter'))
def _kmeans(key, x, *, n_clusters, n_init, init, max_iter, tol):
  seed = kmeans_plusplus if init == 'k-means++' else random_init

  def one_restart(restart_key):
    return _lloyd(x, seed(restart_key, x, n_clusters), max_iter=max_iter, tol=tol)

  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_init))
  results = jax.vmap(one_restart)(keys)
  best = jnp.argmin(results.inertia)
  return jax.tree.map(lambda r: r[best], results)
