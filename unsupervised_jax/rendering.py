"""Affine template rendering for capsule models: place small templates on a canvas by their poses.

A pose is the 6-vector ``[a, b, tx, c, d, ty]`` of the affine map
``(x, y) -> (a x + b y + tx, c x + d y + ty)`` from template to canvas, both in
normalised coordinates where -1 and 1 are the centres of the first and last
pixel (Sonnet's ``AffineGridWarper``; ``x`` is the column, ``y`` the row). The
identity pose stretches the template over the whole canvas; a translation of
``2 k / (S - 1)`` moves it by ``k`` pixels on a canvas of ``S``.

Rendering runs the inverse map: every canvas pixel is sent back into the
template and the template is sampled there bilinearly with zeros outside
(``contrib.resampler`` of the official code), vectorised with ``jax.vmap`` over
parts and images (:func:`render_batch`). The sampler gathers the four corners
of every channel at once (:func:`bilinear_sample`); :func:`bilinear_sample_tent`
computes the same as dense tent weights, ``sum_ij T[i, j] relu(1 - |r - i|)
relu(1 - |c - j|)``, with no gather or scatter (3x slower on CPU, forward and
gradient; see ``benchmarks/scae_step.py``). At a whole-pixel coordinate both
take the one-sided derivative ``T[i + 1] - T[i]``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def geometric_transform(raw: Array, similarity: bool = False, nonlinear: bool = True) -> Array:
  """Raw pose parameters ``[..., 6]`` -> affine poses ``[..., 6]`` (the SCAE's ``math_ops.geometric_transform``).

  ``raw = (sx, sy, theta, shear, tx, ty)``; with ``nonlinear``: ``s = sigmoid(s) + 0.01``,
  ``t, shear = tanh(5 t), tanh(5 shear)``, ``theta = 2 pi theta``. The pose is
  ``[sx cos + shear sy sin, -sx sin + shear sy cos, tx, sy sin, sy cos, ty]``
  (similarity: ``[s cos, -s sin, tx, s sin, s cos, ty]`` with ``s = sx``).
  """
  sx, sy, theta, shear, tx, ty = jnp.split(raw, 6, axis=-1)
  if nonlinear:
    sx, sy = jax.nn.sigmoid(sx) + 1e-2, jax.nn.sigmoid(sy) + 1e-2
    tx, ty, shear = jnp.tanh(5.0 * tx), jnp.tanh(5.0 * ty), jnp.tanh(5.0 * shear)
    theta = theta * 2.0 * math.pi
  else:
    sx, sy = jnp.abs(sx) + 1e-2, jnp.abs(sy) + 1e-2
  c, s = jnp.cos(theta), jnp.sin(theta)
  if similarity:
    pose = [sx * c, -sx * s, tx, sx * s, sx * c, ty]
  else:
    pose = [sx * c + shear * sy * s, -sx * s + shear * sy * c, tx, sy * s, sy * c, ty]
  return jnp.concatenate(pose, axis=-1)


def to_matrix(pose: Array) -> Array:
  """``[..., 6]`` -> homogeneous ``[..., 3, 3]``."""
  top = pose.reshape(pose.shape[:-1] + (2, 3))
  last = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], pose.dtype), pose.shape[:-1] + (1, 3))
  return jnp.concatenate([top, last], axis=-2)


def from_matrix(matrix: Array) -> Array:
  """Homogeneous ``[..., 3, 3]`` -> ``[..., 6]`` (its top two rows)."""
  return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def _tent_weights(coords: Array, size: int) -> Array:
  """``relu(1 - |coords - i|)`` for ``i < size``: ``[P, size]``, written with the floor so that the gradient
  at a whole coordinate is the one-sided ``T[i + 1] - T[i]`` (as a gather-based resampler), not 0."""
  floor = jnp.floor(coords)
  frac = (coords - floor)[:, None]
  index = jnp.arange(size, dtype=coords.dtype)
  return jnp.where(index == floor[:, None], 1.0 - frac, 0.0) + jnp.where(index == floor[:, None] + 1, frac, 0.0)


def bilinear_sample(image: Array, rows: Array, cols: Array) -> Array:
  """Samples ``image [h, w, C]`` at pixel coordinates ``rows [P]``, ``cols [P]`` (bilinear, zeros outside) -> ``[P, C]``.

  ``sum_{corners} (1 - |r - i|)(1 - |c - j|) image[i, j]`` over the four whole-pixel neighbours, those off the
  image weighted 0; one gather of all channels per corner.
  """
  h, w, c = image.shape
  top, left = jnp.floor(rows), jnp.floor(cols)
  frac_rows, frac_cols = rows - top, cols - left
  top, left = top.astype(jnp.int32), left.astype(jnp.int32)
  flat = image.reshape(h * w, c)
  out = jnp.zeros((rows.shape[0], c), image.dtype)
  for dr, weight_r in ((0, 1.0 - frac_rows), (1, frac_rows)):
    for dc, weight_c in ((0, 1.0 - frac_cols), (1, frac_cols)):
      r, col = top + dr, left + dc
      inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
      index = jnp.clip(r, 0, h - 1) * w + jnp.clip(col, 0, w - 1)
      out = out + jnp.where(inside, weight_r * weight_c, 0.0)[:, None] * flat[index]
  return out


def bilinear_sample_tent(image: Array, rows: Array, cols: Array) -> Array:
  """:func:`bilinear_sample` without a gather: ``[P, C]``.

  ``sum_ij image[i, j] relu(1 - |rows - i|) relu(1 - |cols - j|)``: separable tent weights
  ``[P, h]`` and ``[P, w]`` (:func:`_tent_weights`), two products, no gather.
  """
  h, w = image.shape[:2]
  weight_rows, weight_cols = _tent_weights(rows, h), _tent_weights(cols, w)  # [P, h], [P, w]
  per_row = jnp.einsum('ph,hwc->pwc', weight_rows, image)  # [P, w, C]
  return jnp.einsum('pwc,pw->pc', per_row, weight_cols)


def canvas_coordinates(pose: Array, template_size: int, canvas_size: int):
  """Where each canvas pixel lands in the template: ``(rows, cols)``, each ``[S * S]``, template pixels.

  The inverse of ``pose [6]`` maps the canvas grid (normalised) to template
  coordinates, which are then scaled to ``[0, template_size - 1]``.
  """
  grid = jnp.linspace(-1.0, 1.0, canvas_size)
  ys, xs = jnp.meshgrid(grid, grid, indexing='ij')
  a, b, tx, c, d, ty = pose[0], pose[1], pose[2], pose[3], pose[4], pose[5]
  det = a * d - b * c
  dx, dy = xs.ravel() - tx, ys.ravel() - ty
  u = (d * dx - b * dy) / det  # template x
  v = (-c * dx + a * dy) / det  # template y
  scale = (template_size - 1) / 2.0
  return (v + 1.0) * scale, (u + 1.0) * scale


def render(template: Array, pose: Array, canvas_size: int, sampler=bilinear_sample) -> Array:
  """One template ``[t, t, C]`` placed by ``pose [6]`` on a ``canvas_size`` square -> ``[S, S, C]``."""
  rows, cols = canvas_coordinates(pose, template.shape[0], canvas_size)
  return sampler(template, rows, cols).reshape(canvas_size, canvas_size, template.shape[-1])


def render_parts(templates: Array, poses: Array, canvas_size: int, sampler=bilinear_sample) -> Array:
  """Templates ``[M, t, t, C]`` placed by ``poses [M, 6]`` -> ``[M, S, S, C]`` (``vmap`` over parts)."""
  return jax.vmap(lambda t, p: render(t, p, canvas_size, sampler))(templates, poses)


def render_batch(templates: Array, poses: Array, canvas_size: int, sampler=bilinear_sample) -> Array:
  """Per-image templates ``[B, M, t, t, C]`` (or shared ``[M, t, t, C]``) placed by ``poses [B, M, 6]``
  -> ``[B, M, S, S, C]``, ``vmap`` over images of ``vmap`` over parts."""
  in_axes = (0 if templates.ndim == 5 else None, 0)
  return jax.vmap(lambda t, p: render_parts(t, p, canvas_size, sampler), in_axes=in_axes)(templates, poses)


def render_batch_loop(templates: Array, poses: Array, canvas_size: int) -> Array:
  """:func:`render_batch` with a Python loop over parts (a reference and a benchmark baseline)."""
  shared = templates.ndim == 4
  parts = [jax.vmap(render, in_axes=(None if shared else 0, 0, None))(
      templates[m] if shared else templates[:, m], poses[:, m], canvas_size) for m in range(poses.shape[1])]
  return jnp.stack(parts, axis=1)


def render_map_coordinates(template: Array, pose: Array, canvas_size: int) -> Array:
  """:func:`render` with ``jax.scipy.ndimage.map_coordinates`` (order 1, zeros outside) as the sampler."""
  rows, cols = canvas_coordinates(pose, template.shape[0], canvas_size)
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode='constant',
                                                             cval=0.0)
  out = jax.vmap(sample, in_axes=2, out_axes=1)(template)
  return out.reshape(canvas_size, canvas_size, template.shape[-1])
