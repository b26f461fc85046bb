"""Affine template rendering for capsule models: place small templates on a canvas by their poses.

A pose is the 6-vector ``[a, b, tx, c, d, ty]`` of the affine map
``(x, y) -> (a x + b y + tx, c x + d y + ty)`` from template to canvas, both in
normalised coordinates where -1 and 1 are the centres of the first and last
pixel (Sonnet's ``AffineGridWarper``; ``x`` is the column, ``y`` the row). The
identity pose stretches the template over the whole canvas; a translation of
``2 k / (S - 1)`` moves it by ``k`` pixels on a canvas of ``S``.

Rendering runs the inverse map: every canvas pixel is sent back into the
template and the template is sampled there bilinearly with zeros outside
(``contrib.resampler`` of the official code). :func:`render_batch` is the one
the models use: vectorised over images and parts, in chunks of images
(``lax.map``) on CPU, where a chunk's arrays stay in cache, and with two
custom gradients that give the same values as differentiating the sampler,
cheaper: the poses' gradient from six sums per pose (the canvas coordinates
are affine in the pixel position), not through every pixel's coordinates, and
the templates' gradient as one scatter of each pixel's 2x2 neighbourhood, not
four (``benchmarks/scae_step.py``: forward and gradient 2.0x as fast as
:func:`render_batch_vmap` on a 2-core EPYC, the SCAE train step 1.46x). :func:`render_batch_vmap` is the
direct form (``vmap`` over images and parts of :func:`render`, the gradient by
automatic differentiation), kept as the reference it is tested against. The
sampler gathers the four corners of every channel at once
(:func:`bilinear_sample`); :func:`bilinear_sample_tent` computes the same as
dense tent weights, ``sum_ij T[i, j] relu(1 - |r - i|) relu(1 - |c - j|)``, with
no gather or scatter (slower on CPU, forward and gradient). At a whole-pixel
coordinate every form takes the one-sided derivative ``T[i + 1] - T[i]``.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

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
  """Samples ``image [h, w, C]`` at pixel coordinates ``rows [P]``, ``cols [P]`` (bilinear, zeros outside):
  ``[P, C]``.

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


def render_batch_vmap(templates: Array, poses: Array, canvas_size: int, sampler=bilinear_sample) -> Array:
  """Per-image templates ``[B, M, t, t, C]`` (or shared ``[M, t, t, C]``) placed by ``poses [B, M, 6]``
  -> ``[B, M, S, S, C]``, ``vmap`` over images of ``vmap`` over parts, differentiated automatically (the
  reference of :func:`render_batch`)."""
  in_axes = (0 if templates.ndim == 5 else None, 0)
  return jax.vmap(lambda t, p: render_parts(t, p, canvas_size, sampler), in_axes=in_axes)(templates, poses)


def _coefficients(poses: Array, template_size: int):
  """The canvas-to-template map of ``poses [..., 6]`` as ``(rows, cols)``, each ``[..., 3]``: the template pixel
  coordinates are ``k . (x, y, 1)`` of the normalised canvas position (what :func:`canvas_coordinates`
  computes pixel by pixel)."""
  a, b, tx, c, d, ty = jnp.moveaxis(poses, -1, 0)
  det = a * d - b * c
  scale = (template_size - 1) / 2.0
  cols = jnp.stack([d / det, -b / det, (b * ty - d * tx) / det + 1.0], -1) * scale
  rows = jnp.stack([-c / det, a / det, (c * tx - a * ty) / det + 1.0], -1) * scale
  return rows, cols


def _canvas_grid(canvas_size: int, dtype):
  """The normalised ``(x, y)`` of the canvas pixels, each ``[S * S]`` (row-major)."""
  grid = jnp.linspace(-1.0, 1.0, canvas_size, dtype=dtype)
  ys, xs = jnp.meshgrid(grid, grid, indexing='ij')
  return xs.ravel(), ys.ravel()


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _coordinates(poses: Array, template_size: int, canvas_size: int):
  """``(rows, cols)``, each ``[N, S * S]``, of ``poses [N, 6]``: :func:`canvas_coordinates` (the same floats)."""
  return jax.vmap(lambda pose: canvas_coordinates(pose, template_size, canvas_size))(poses)


def _coordinates_fwd(poses, template_size, canvas_size):
  return _coordinates(poses, template_size, canvas_size), poses


def _coordinates_bwd(template_size, canvas_size, poses, cotangents):
  """The coordinates are affine in ``(x, y)``: the poses' gradient needs only ``sum_p g_p (x_p, y_p, 1)``."""
  xs, ys = _canvas_grid(canvas_size, poses.dtype)
  sums = lambda g: jnp.stack([jnp.sum(g * xs, -1), jnp.sum(g * ys, -1), jnp.sum(g, -1)], -1)
  _, vjp = jax.vjp(lambda p: _coefficients(p, template_size), poses)
  return vjp(tuple(sums(g) for g in cotangents))


_coordinates.defvjp(_coordinates_fwd, _coordinates_bwd)


def _corners(image: Array, rows: Array, cols: Array):
  """``([v00, v01, v10, v11], frac_rows, frac_cols)``: the four neighbours' values ``[P, C]`` (zero off the image)
  and the fractional coordinates ``[P, 1]``."""
  h, w, c = image.shape
  top, left = jnp.floor(rows), jnp.floor(cols)
  frac_rows, frac_cols = (rows - top)[:, None], (cols - left)[:, None]
  top, left = top.astype(jnp.int32), left.astype(jnp.int32)
  flat = image.reshape(h * w, c)
  values = []
  for dr in (0, 1):
    for dc in (0, 1):
      r, col = top + dr, left + dc
      inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
      values.append(jnp.where(inside[:, None], flat[jnp.clip(r, 0, h - 1) * w + jnp.clip(col, 0, w - 1)], 0.0))
  return values, frac_rows, frac_cols


@jax.custom_vjp
def _sample(image: Array, rows: Array, cols: Array) -> Array:
  """:func:`bilinear_sample` with the gradient of :func:`_sample_bwd`."""
  return bilinear_sample(image, rows, cols)


def _sample_fwd(image, rows, cols):
  return bilinear_sample(image, rows, cols), (image, rows, cols)


def _sample_bwd(residuals, g):
  """The coordinates' gradient from the corner values; the image's as one scatter-add of the four bilinear
  weights times ``g`` per pixel into the 2x2 neighbourhoods of a zero-bordered image, folded back."""
  image, rows, cols = residuals
  h, w, c = image.shape
  (v00, v01, v10, v11), frac_rows, frac_cols = _corners(image, rows, cols)
  d_rows = jnp.sum(g * ((1 - frac_cols) * (v10 - v00) + frac_cols * (v11 - v01)), -1)
  d_cols = jnp.sum(g * ((1 - frac_rows) * (v01 - v00) + frac_rows * (v11 - v10)), -1)
  # Neighbourhood (i, j) holds pixels (i - 2 .. i - 1, j - 2 .. j - 1): a border of 2 takes every corner off the
  # image, so the clipped index needs no mask.
  width = w + 3
  top = jnp.clip(jnp.floor(rows), -2, h).astype(jnp.int32) + 2
  left = jnp.clip(jnp.floor(cols), -2, w).astype(jnp.int32) + 2
  weights = jnp.concatenate(
    [
      (1 - frac_rows) * (1 - frac_cols),
      (1 - frac_rows) * frac_cols,
      frac_rows * (1 - frac_cols),
      frac_rows * frac_cols,
    ],
    -1,
  )  # [P, 4]
  hoods = jnp.zeros(((h + 3) * width, 4, c), g.dtype).at[top * width + left].add(weights[:, :, None] * g[:, None, :])
  hoods = hoods.reshape(h + 3, width, 4, c)
  shift = lambda k, rows_pad, cols_pad: jnp.pad(hoods[:, :, k], (rows_pad, cols_pad, (0, 0)))
  bordered = (
    shift(0, (0, 1), (0, 1)) + shift(1, (0, 1), (1, 0)) + shift(2, (1, 0), (0, 1)) + shift(3, (1, 0), (1, 0))
  )  # [h + 4, w + 4, C]
  return bordered[2:-2, 2:-2], d_rows, d_cols


_sample.defvjp(_sample_fwd, _sample_bwd)


def default_chunk_size(batch: int) -> int:
  """Images per chunk of :func:`render_batch`: on CPU the largest divisor of ``batch`` up to 8 (a chunk's
  ``[8, M, S * S]`` arrays stay in cache: the forward 3x as fast as the whole batch at once); elsewhere the whole
  batch."""
  if jax.default_backend() != 'cpu':
    return batch
  return max(d for d in range(1, min(batch, 8) + 1) if batch % d == 0)


def render_batch(templates: Array, poses: Array, canvas_size: int, chunk_size: Optional[int] = None) -> Array:
  """Templates placed by their poses: ``[B, M, S, S, C]``.

  The same values as :func:`render_batch_vmap` (bilinear, zeros outside, the same floats), computed in chunks
  of images and with cheaper gradients (the module docstring); one vectorised function on CPU, GPU and TPU.

  Args:
    templates: per-image ``[B, M, t, t, C]`` or shared ``[M, t, t, C]``.
    poses: ``[B, M, 6]`` affine poses (:func:`geometric_transform`).
    canvas_size: ``S``.
    chunk_size: images per chunk, a divisor of ``B``; default :func:`default_chunk_size`.

  Raises:
    ValueError: ``chunk_size`` does not divide ``B``.
  """
  b, m = poses.shape[:2]
  t, c = templates.shape[-3], templates.shape[-1]
  if templates.ndim == 4:
    templates = jnp.broadcast_to(templates[None], (b,) + templates.shape)
  chunk = default_chunk_size(b) if chunk_size is None else chunk_size
  if chunk < 1 or b % chunk:
    raise ValueError(f'chunk_size {chunk_size} must divide the batch of {b} images.')

  def place(chunk_templates, chunk_poses):  # [chunk * M, t, t, C], [chunk * M, 6] -> [chunk * M, S * S, C]
    rows, cols = _coordinates(chunk_poses, t, canvas_size)
    return jax.vmap(_sample)(chunk_templates, rows, cols)

  per_chunk = (b // chunk, chunk * m)
  out = jax.lax.map(
    lambda args: place(*args), (templates.reshape(per_chunk + templates.shape[2:]), poses.reshape(per_chunk + (6,)))
  )
  return out.reshape(b, m, canvas_size, canvas_size, c)


def render_batch_loop(templates: Array, poses: Array, canvas_size: int) -> Array:
  """:func:`render_batch_vmap` with a Python loop over parts (a reference and a benchmark baseline)."""
  shared = templates.ndim == 4
  parts = [
    jax.vmap(render, in_axes=(None if shared else 0, 0, None))(
      templates[m] if shared else templates[:, m], poses[:, m], canvas_size
    )
    for m in range(poses.shape[1])
  ]
  return jnp.stack(parts, axis=1)


def render_map_coordinates(template: Array, pose: Array, canvas_size: int) -> Array:
  """:func:`render` with ``jax.scipy.ndimage.map_coordinates`` (order 1, zeros outside) as the sampler."""
  rows, cols = canvas_coordinates(pose, template.shape[0], canvas_size)
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode='constant', cval=0.0)
  out = jax.vmap(sample, in_axes=2, out_axes=1)(template)
  return out.reshape(canvas_size, canvas_size, template.shape[-1])
