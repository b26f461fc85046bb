"""The SCAE's figures: its learned templates, and inputs beside their reconstructions coloured by part (registered
with the method in :mod:`unsupervised_jax.registry`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unsupervised_jax.methods import scae


def figures(config: scae.SCAEConfig, state, images, workdir, matching=None):
  """``scae_templates.png`` (the learned templates) and ``scae_reconstructions.png`` (20 of ``images`` on their
  canvas above their reconstructions, each pixel coloured by its most likely part)."""
  del matching  # the capsules' clusters come from the evaluation's clustering of their codes
  import pathlib

  from unsupervised_jax import plots

  workdir = pathlib.Path(workdir)
  images = jnp.asarray(np.asarray(images[:20]))
  templates = scae.model_of(config, images.shape[-1]).apply({'params': state.params}, method='templates')
  plots.image_grid(
    np.asarray(templates),
    workdir / 'scae_templates.png',
    ncols=10,
    suptitle=f'SCAE: the {config.n_part_caps} learned templates',
  )
  keys = scae.image_keys(images)
  out = jax.jit(scae.forward, static_argnums=0)(config, state.params, images, keys)
  inputs = np.asarray(scae.canvas(config, scae.split_keys(keys)[0], images))
  plots.image_grid(
    np.concatenate([_gray_rgb(inputs), coloured_reconstruction(out)]),
    workdir / 'scae_reconstructions.png',
    ncols=len(images),
    suptitle='SCAE: inputs (top) and reconstructions, each pixel coloured by its most likely part',
  )


def _gray_rgb(images):
  gray = images.mean(-1, keepdims=True)
  return np.repeat(gray, 3, axis=-1)


def coloured_reconstruction(out) -> np.ndarray:
  """``[B, S, S, 3]``: each pixel the mean of its most likely mixture component (the mixture's mode of the
  official code), hued by that part (the background grey)."""
  log_weights, means = np.asarray(out['log_weights']), np.asarray(out['means'])
  winner = log_weights.argmax(1)  # [B, S, S]
  value = np.take_along_axis(means.mean(-1), winner[:, None], axis=1)[:, 0]  # [B, S, S]
  n_parts = log_weights.shape[1] - 1
  import matplotlib

  hues = matplotlib.colormaps['hsv'](np.arange(n_parts) / max(n_parts, 1))[:, :3]
  palette = np.concatenate([hues, np.ones((1, 3))])  # the background in its own grey
  return np.clip(palette[winner] * value[..., None], 0.0, 1.0)
