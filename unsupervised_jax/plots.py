"""Figures saved as PNG (matplotlib, headless).

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``), never through pyplot: no
backend is chosen or switched, so a notebook's own inline figures keep working after the library writes one.
"""

from __future__ import annotations

import pathlib
from typing import Optional
from typing import Sequence

import numpy as np


def _figure(**kwargs):
  """A figure outside pyplot (``savefig`` renders with Agg): works headless and leaves the backend alone."""
  from matplotlib import figure

  return figure.Figure(**kwargs)


def _save(fig, path) -> pathlib.Path:
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def image_grid(
  images, path, *, ncols: int = 10, titles: Optional[Sequence[str]] = None, suptitle: str = ''
) -> pathlib.Path:
  """Saves ``images [N, H, W, C]`` (uint8, or floats in [0, 1]) as one grid PNG."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.clip(images, 0.0, 1.0)
  n = len(images)
  ncols = min(ncols, n)
  nrows = -(-n // ncols)
  fig = _figure(figsize=(1.2 * ncols, 1.3 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i < n:
      image = images[i]
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', interpolation='nearest')
      if titles is not None:
        ax.set_title(titles[i], fontsize=8)
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  return _save(fig, path)


def scatter(points, labels, path, *, title: str = '') -> pathlib.Path:
  """2-D points ``[N, 2]`` coloured by integer label, with a legend; saved as PNG."""
  points, labels = np.asarray(points), np.asarray(labels)
  import matplotlib

  fig = _figure(figsize=(6, 6))
  ax = fig.subplots()
  cmap = matplotlib.colormaps['tab10' if labels.max() < 10 else 'tab20']
  for value in np.unique(labels):
    mask = labels == value
    ax.scatter(points[mask, 0], points[mask, 1], s=2, color=cmap(int(value) % cmap.N), label=str(value))
  ax.legend(markerscale=5, fontsize=7, loc='best', ncol=2)
  ax.set_xticks([]), ax.set_yticks([])
  ax.set_title(title, fontsize=9)
  return _save(fig, path)


def tsne(features, labels, path, *, max_points: int = 5000, seed: int = 0, title: str = '') -> pathlib.Path:
  """2-D t-SNE (scikit-learn) of up to ``max_points`` features ``[N, D]`` coloured by ``labels [N]``, as PNG."""
  from sklearn import manifold

  rng = np.random.default_rng(seed)
  features = np.asarray(features)
  keep = rng.choice(len(features), min(max_points, len(features)), replace=False)
  points = manifold.TSNE(2, init='pca', random_state=seed).fit_transform(features[keep])
  return scatter(points, np.asarray(labels)[keep], path, title=title)


def cluster_sizes(steps, sizes, path, *, title: str = '') -> pathlib.Path:
  """Each cluster's size over training as one line, ``sizes [E, K]`` at ``steps [E]``, with the even split
  dashed (a collapsing or empty cluster shows at once); saved as PNG."""
  steps, sizes = np.asarray(steps), np.asarray(sizes, dtype=float)
  if sizes.ndim != 2 or len(steps) != len(sizes):
    raise ValueError(f'sizes must be [len(steps), K], got {sizes.shape} for {len(steps)} steps.')
  import matplotlib

  fig = _figure(figsize=(6, 3.5))
  ax = fig.subplots()
  cmap = matplotlib.colormaps['tab10' if sizes.shape[1] <= 10 else 'tab20']
  for k in range(sizes.shape[1]):
    ax.plot(steps, sizes[:, k], marker='.', color=cmap(k % cmap.N), label=str(k))
  ax.axhline(sizes[-1].sum() / sizes.shape[1], color='k', linestyle='--', linewidth=1)
  ax.set_xlabel('step'), ax.set_ylabel('images in the cluster')
  ax.legend(fontsize=7, ncol=2, loc='upper right', title='cluster', title_fontsize=7)
  ax.set_title(title, fontsize=9)
  return _save(fig, path)
