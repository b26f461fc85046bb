"""Feature preprocessing in JAX: PCA (jittable, runs on any backend)."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class PCA(NamedTuple):
  """A fitted PCA.

  Attributes:
    mean: ``[D]`` feature means.
    components: ``[d, D]`` orthonormal principal axes, by decreasing variance;
      each axis' sign makes its largest-magnitude entry positive (deterministic).
    explained_variance: ``[d]`` variance along each axis (``N - 1`` normalised).
  """
  mean: Array
  components: Array
  explained_variance: Array


@functools.partial(jax.jit, static_argnames=('n_components',))
def fit_pca(x: Array, n_components: int) -> PCA:
  """PCA of ``x [N, D]`` from the eigendecomposition of its ``[D, D]`` covariance."""
  if not 1 <= n_components <= x.shape[1]:
    raise ValueError(f'n_components must be in [1, {x.shape[1]}], got {n_components}.')
  mean = jnp.mean(x, axis=0)
  centered = x - mean
  covariance = jnp.dot(centered.T, centered, precision=jax.lax.Precision.HIGHEST) / (x.shape[0] - 1)
  variances, vectors = jnp.linalg.eigh(covariance)  # ascending
  components = vectors[:, ::-1][:, :n_components].T
  signs = jnp.sign(components[jnp.arange(n_components), jnp.argmax(jnp.abs(components), axis=1)])
  return PCA(mean, components * signs[:, None], variances[::-1][:n_components])


@functools.partial(jax.jit, static_argnames=('whiten',))
def transform(pca: PCA, x: Array, whiten: bool = False) -> Array:
  """Projects ``x [N, D]`` on the principal axes: ``[N, d]`` (unit variance when ``whiten``)."""
  z = jnp.dot(x - pca.mean, pca.components.T, precision=jax.lax.Precision.HIGHEST)
  return z / jnp.sqrt(pca.explained_variance) if whiten else z
