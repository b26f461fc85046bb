"""Manifold learning on learned codes before clustering (N2D, McConville et al. 2020).

N2D clusters an autoencoder's codes after a UMAP embedding into as many
dimensions as clusters (``n_neighbors=20``, ``min_dist=0``): UMAP keeps the
local neighbourhoods that separate the classes and drops the global spread a
GMM would otherwise model. UMAP itself comes from umap-learn.
"""

from __future__ import annotations

from typing import NamedTuple
from typing import Optional

import numpy as np

MANIFOLDS = ('none', 'umap')


class ManifoldMap(NamedTuple):
  """``fit_codes [N, d]`` embedded, and ``transform(codes [M, D]) -> [M, d]`` for new points."""

  fit_codes: np.ndarray
  transform: object


def fit_umap(codes, n_components: int, *, n_neighbors: int = 20, min_dist: float = 0.0, seed: int = 0) -> ManifoldMap:
  """UMAP embedding of ``codes [N, D]`` into ``n_components`` dimensions."""
  try:
    import umap
  except ImportError as error:  # pragma: no cover - umap-learn is a dependency
    raise ValueError('the UMAP manifold step needs umap-learn: pip install umap-learn') from error
  reducer = umap.UMAP(
    n_neighbors=n_neighbors, n_components=n_components, min_dist=min_dist, metric='euclidean', random_state=seed
  )
  embedded = reducer.fit_transform(np.asarray(codes, np.float32)).astype(np.float32)
  return ManifoldMap(embedded, lambda new: reducer.transform(np.asarray(new, np.float32)).astype(np.float32))


def fit(name: str, codes, n_components: int, *, n_neighbors: int = 20, seed: int = 0) -> Optional[ManifoldMap]:
  """The named manifold step (``'none'`` -> None)."""
  if name not in MANIFOLDS:
    raise ValueError(f'manifold must be one of {MANIFOLDS}, got {name!r}.')
  if name == 'none':
    return None
  return fit_umap(codes, n_components, n_neighbors=n_neighbors, seed=seed)
