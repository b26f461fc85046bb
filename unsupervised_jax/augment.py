"""Per-example image augmentations in ``jax.random``, for use inside jitted steps.

Every function takes one PRNG key and one float image ``[H, W, C]`` in [0, 1]
and returns an image of the same shape; ``jax.vmap`` them over a batch with
one key per example. Geometric transforms share one bilinear affine warp.
"""

from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp

from unsupervised_jax.training import contract

Array = jax.Array


def to_float(images: Array) -> Array:
  """uint8 ``[..., H, W, C]`` -> float32 in [0, 1].

  Raises:
    ValueError: ``images`` are not uint8 (:func:`~unsupervised_jax.training.contract.check_images`: a float
      image would be scaled twice).
  """
  if images.dtype != jnp.uint8:
    contract.check_images(images)
  return images.astype(jnp.float32) / 255.0


def affine_warp(image: Array, matrix: Array, fill: float = 0.0) -> Array:
  """Samples ``image [H, W, C]`` at ``matrix [2, 3] @ (row, col, 1)`` for every output pixel (bilinear).

  Coordinates are relative to the image centre, in pixels.
  """
  h, w, _ = image.shape
  rows, cols = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing='ij')
  source = matrix @ jnp.stack([rows.ravel(), cols.ravel(), jnp.ones(h * w)])
  coords = [source[0] + (h - 1) / 2, source[1] + (w - 1) / 2]
  warp = lambda channel: jax.scipy.ndimage.map_coordinates(channel, coords, order=1, mode='constant', cval=fill)
  return jax.vmap(warp, in_axes=2, out_axes=1)(image).reshape(image.shape)


def random_affine(
  key: Array,
  image: Array,
  max_rotation_deg: float = 15.0,
  scale: Tuple[float, float] = (0.9, 1.1),
  max_translation: float = 0.1,
) -> Array:
  """Random rotation, isotropic scaling and translation (fraction of the size); zeros fill the border."""
  k_rot, k_scale, k_shift = jax.random.split(key, 3)
  angle = jax.random.uniform(k_rot, (), minval=-1, maxval=1) * math.radians(max_rotation_deg)
  s = jax.random.uniform(k_scale, (), minval=scale[0], maxval=scale[1])
  shift = jax.random.uniform(k_shift, (2,), minval=-1, maxval=1) * max_translation * jnp.array(image.shape[:2])
  cos, sin = jnp.cos(angle) / s, jnp.sin(angle) / s  # output -> source: inverse transform
  matrix = jnp.array([[cos, -sin, 0.0], [sin, cos, 0.0]]).at[:, 2].set(-shift)
  return affine_warp(image, matrix)


def random_resized_crop(
  key: Array,
  image: Array,
  area: Tuple[float, float] = (0.2, 1.0),
  log_ratio: Tuple[float, float] = (math.log(3 / 4), math.log(4 / 3)),
) -> Array:
  """Crop of random area fraction and aspect ratio, resized back to the image size (as torchvision's)."""
  k_area, k_ratio, k_pos = jax.random.split(key, 3)
  h, w = image.shape[:2]
  fraction = jax.random.uniform(k_area, (), minval=area[0], maxval=area[1])
  ratio = jnp.exp(jax.random.uniform(k_ratio, (), minval=log_ratio[0], maxval=log_ratio[1]))
  crop_h = jnp.clip(jnp.sqrt(fraction / ratio), 0.0, 1.0) * h
  crop_w = jnp.clip(jnp.sqrt(fraction * ratio), 0.0, 1.0) * w
  centre = (jax.random.uniform(k_pos, (2,)) - 0.5) * jnp.array([h - crop_h, w - crop_w])
  matrix = jnp.array([[crop_h / h, 0.0, 0.0], [0.0, crop_w / w, 0.0]]).at[:, 2].set(centre)
  return affine_warp(image, matrix)


def random_flip(key: Array, image: Array) -> Array:
  """Horizontal flip with probability 1/2."""
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def grayscale(image: Array) -> Array:
  """Luma (ITU-R 601) replicated over the channels of a grey or RGB ``image [H, W, C]``.

  Raises:
    ValueError: ``C`` is neither 1 nor 3 (grey + alpha, RGBA: :func:`check_view` says so before training).
  """
  if image.shape[-1] == 1:
    return image
  if image.shape[-1] != 3:
    raise ValueError(f'grayscale takes grey or RGB images, got {image.shape[-1]} channels.')
  luma = image @ jnp.array([0.299, 0.587, 0.114])
  return jnp.repeat(luma[..., None], image.shape[-1], axis=-1)


def random_grayscale(key: Array, image: Array, probability: float = 0.2) -> Array:
  return jnp.where(jax.random.bernoulli(key, probability), grayscale(image), image)


def color_jitter(
  key: Array,
  image: Array,
  brightness: float = 0.4,
  contrast: float = 0.4,
  saturation: float = 0.4,
  probability: float = 0.8,
) -> Array:
  """Random brightness, contrast and saturation factors in ``[1 - s, 1 + s]``, applied with ``probability``."""
  k_apply, k_b, k_c, k_s = jax.random.split(key, 4)
  factor = lambda k, s: jax.random.uniform(k, (), minval=1 - s, maxval=1 + s)
  out = image * factor(k_b, brightness)
  out = (out - jnp.mean(grayscale(out))) * factor(k_c, contrast) + jnp.mean(grayscale(out))
  gray = grayscale(out)
  out = gray + (out - gray) * factor(k_s, saturation)
  return jnp.where(jax.random.bernoulli(k_apply, probability), jnp.clip(out, 0.0, 1.0), image)


def gaussian_noise(key: Array, image: Array, std: float) -> Array:
  return jnp.clip(image + std * jax.random.normal(key, image.shape), 0.0, 1.0)


def digits_view(key: Array, image: Array) -> Array:
  """A view of a digit image: affine jitter, a mild resized crop, pixel noise."""
  k_affine, k_crop, k_noise = jax.random.split(key, 3)
  image = random_affine(k_affine, image, max_rotation_deg=15.0, scale=(0.85, 1.1), max_translation=0.1)
  image = random_resized_crop(k_crop, image, area=(0.6, 1.0))
  return gaussian_noise(k_noise, image, 0.05)


def strong_digits_view(key: Array, image: Array) -> Array:
  """:func:`digits_view` with wider affine ranges and crops down to 30% of the area."""
  k_affine, k_crop, k_noise = jax.random.split(key, 3)
  image = random_affine(k_affine, image, max_rotation_deg=20.0, scale=(0.8, 1.15), max_translation=0.12)
  image = random_resized_crop(k_crop, image, area=(0.3, 1.0))
  return gaussian_noise(k_noise, image, 0.05)


def natural_view(key: Array, image: Array) -> Array:
  """A view of a natural image (MoCo v2 style): crop, flip, colour jitter, grayscale."""
  k_crop, k_flip, k_color, k_gray = jax.random.split(key, 4)
  image = random_resized_crop(k_crop, image)
  image = random_flip(k_flip, image)
  image = color_jitter(k_color, image)
  return random_grayscale(k_gray, image)


# The augmentation families the methods offer (``--view``), and the channel counts each takes.
VIEWS = {'digits': digits_view, 'digits_strong': strong_digits_view, 'natural': natural_view}
VIEW_CHANNELS = {'natural': (1, 3)}  # colour jitter and grayscale read grey or RGB


def check_view(view: str, channels: int) -> None:
  """Raises a one-line ValueError when the view ``view`` cannot take images of ``channels`` channels (the natural
  view: grey or RGB, not grey + alpha or RGBA) or is unknown."""
  if view not in VIEWS:
    raise ValueError(f'view must be one of {", ".join(sorted(VIEWS))}; got {view!r}.')
  allowed = VIEW_CHANNELS.get(view)
  if allowed is not None and channels not in allowed:
    raise ValueError(
      f'the {view} view takes images of {" or ".join(map(str, allowed))} channels, these have '
      f'{channels}; drop the alpha channel or use --view=digits.'
    )
