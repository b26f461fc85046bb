"""Feature preprocessing in JAX: PCA (jittable, runs on any backend).

Numerics: the data are centred about a mean kept to float32 precision of the
data's spread, not of their offset (``PCA.mean + PCA.mean_residual``), and
the axes come from the singular value decomposition of the centred data
(through a QR factorisation when N >= D), never from ``X^T X``: a variance
``lambda_i`` is resolved down to ``eps * sqrt(lambda_1 lambda_i)``, and no
variance is negative. Directions the data do not span to working precision
get variance 0, and whitening maps them to 0 (scikit-learn divides by
``max(std, eps)``, which gives the same 0 on the training data).
"""

from __future__ import annotations

import functools
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class PCA(NamedTuple):
  """A fitted PCA.

  Attributes:
    mean: ``[D]`` feature means (rounded to the data's precision).
    components: ``[d, D]`` orthonormal principal axes, by decreasing variance;
      each axis' sign makes its largest-magnitude entry positive (deterministic).
    explained_variance: ``[d]`` variance along each axis (``N - 1`` normalised),
      exactly 0 along the directions the data do not span.
    mean_residual: ``[D]`` what ``mean`` misses of the exact mean (``None``: 0);
      far from the origin, ``mean`` alone is off by up to half a unit of its
      last place, which :func:`transform` would pass on to every output.
  """

  mean: Array
  components: Array
  explained_variance: Array
  mean_residual: Optional[Array] = None


def fit_pca(x: Array, n_components: int) -> PCA:
  """PCA of ``x [N, D]`` (float) onto ``n_components`` axes.

  Raises:
    ValueError: ``x`` not 2-D, fewer than 2 samples, non-floating, NaN or inf
      (when concrete), or ``n_components`` outside ``[1, min(N, D)]``.
  """
  shape = np.shape(x)
  if len(shape) != 2:
    raise ValueError(f'x must be a 2-D [N, D] array, got shape {shape}.')
  n, d = shape
  if n < 2:
    raise ValueError(f'PCA needs at least 2 samples to estimate variances, got {n}.')
  if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= min(n, d):
    raise ValueError(
      f'n_components must be in [1, min(n_samples, n_features)] = [1, {min(n, d)}], got {n_components!r}.'
    )
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f'x must be floating point, got dtype {jnp.result_type(x)}.')
  if not isinstance(x, jax.core.Tracer) and not bool(np.isfinite(np.asarray(x)).all()):
    raise ValueError('x contains NaN or inf values; clean or impute them before PCA.')
  return _fit_pca(x, int(n_components))


def _centre(x: Array, mean: Array, mean_residual: Optional[Array]) -> Array:
  """``x - (mean + mean_residual)`` without rounding the sum: the first difference is exact near the mean."""
  centred = x - mean
  return centred if mean_residual is None else centred - mean_residual


@functools.partial(jax.jit, static_argnames=('n_components',))
def _fit_pca(x: Array, n_components: int) -> PCA:
  n, d = x.shape
  mean = jnp.mean(x, axis=0)
  residual = jnp.mean(x - mean, axis=0)
  centred = _centre(x, mean, residual)
  # R of centred = QR has centred's singular values and right singular vectors.
  factor = jnp.linalg.qr(centred, mode='r') if n >= d else centred
  _, singular, vt = jnp.linalg.svd(factor, full_matrices=False)  # descending
  rank_tol = singular[0] * max(n, d) * jnp.finfo(x.dtype).eps
  singular = jnp.where(singular > rank_tol, singular, 0.0)
  components = vt[:n_components]
  signs = jnp.sign(components[jnp.arange(n_components), jnp.argmax(jnp.abs(components), axis=1)])
  return PCA(mean, components * signs[:, None], (singular[:n_components] ** 2) / (n - 1), residual)


@functools.partial(jax.jit, static_argnames=('whiten',))
def transform(pca: PCA, x: Array, whiten: bool = False) -> Array:
  """Projects ``x [N, D]`` on the principal axes: ``[N, d]`` (unit variance when ``whiten``;
  a zero-variance axis gives 0)."""
  z = jnp.dot(_centre(x, pca.mean, pca.mean_residual), pca.components.T, precision=jax.lax.Precision.HIGHEST)
  if not whiten:
    return z
  variance = pca.explained_variance
  return jnp.where(variance > 0, z / jnp.sqrt(jnp.where(variance > 0, variance, 1.0)), 0.0)
