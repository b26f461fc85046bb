"""Every method of the library, registered once: its name, config, factory, figures and headline flagfile.

The entry points (``experiments/<name>.py``), the runner, the reproduction and the records all find a method
here by name, as big_vision and scenic find their models; nothing else lists the methods::

  entry = registry.get('moco')
  method = entry.factory(config, train, contract.DataInfo(num_examples, image_shape))

A learned method has a :class:`~unsupervised_jax.training.contract.Factory`; the two pixel baselines
(K-means, GMM) have none: ``unsupervised_jax.runner.pixels`` runs them with their options. :func:`register`
adds a method (docs/adding-a-method.md), :func:`unregister` takes one away.
"""

from __future__ import annotations

from typing import Any
from typing import Callable
from typing import Dict
from typing import Mapping
from typing import NamedTuple
from typing import Optional
from typing import Tuple

from unsupervised_jax.methods import autoencoder
from unsupervised_jax.methods import infogan
from unsupervised_jax.methods import mice
from unsupervised_jax.methods import moco
from unsupervised_jax.methods import scae
from unsupervised_jax.methods import scae_figures
from unsupervised_jax.runner import pixels
from unsupervised_jax.training import contract

# (config, state, images [N, H, W, C] uint8, workdir, matching) -> None: writes the method's figures into
# workdir; matching is the Hungarian {cluster: class} of the method's own clusters, or None.
FiguresFn = Callable[[Any, Any, Any, Any, Optional[Mapping[int, int]]], None]


class Entry(NamedTuple):
  """One registered method.

  Attributes:
    name: the method's name (entry point ``experiments/<name>.py``, records' ``method``).
    title: how tables name it.
    config: its config dataclass, whose fields are its flags (:mod:`unsupervised_jax.settings`).
    flagfile: its headline flagfile under ``experiments/configs/``.
    factory: a :class:`~unsupervised_jax.training.contract.Factory`; ``None`` for a pixel clustering.
    figures: optional :data:`FiguresFn`, drawn after training.
    train_defaults: defaults of the training flags for this method's entry point, where they differ from
      ``TrainConfig``'s (MiCE: batches in shuffled epochs).
  """

  name: str
  title: str
  config: type
  flagfile: str
  factory: Optional[contract.Factory] = None
  figures: Optional[FiguresFn] = None
  train_defaults: Mapping[str, Any] = {}

  @property
  def learned(self) -> bool:
    """Whether the method trains on the training core (else a pixel clustering)."""
    return self.factory is not None


_ENTRIES: Dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
  """Adds ``entry`` to the registry and returns it.

  Raises:
    ValueError: a method of that name is registered already.
  """
  if entry.name in _ENTRIES:
    raise ValueError(f'a method named {entry.name!r} is registered already.')
  _ENTRIES[entry.name] = entry
  return entry


def unregister(name: str) -> Entry:
  """Removes the method ``name`` from the registry and returns its entry (a test's method, once it is done).

  Raises:
    ValueError: no method of that name.
  """
  entry = get(name)
  del _ENTRIES[name]
  return entry


def get(name: str) -> Entry:
  """The registered method ``name``.

  Raises:
    ValueError: no method of that name (one line listing the registered ones).
  """
  if name not in _ENTRIES:
    raise ValueError(f'unknown method {name!r}; registered: {", ".join(_ENTRIES)}.')
  return _ENTRIES[name]


def names(learned: Optional[bool] = None) -> Tuple[str, ...]:
  """The registered methods' names, in registration order (only the learned ones, or only the pixel ones)."""
  return tuple(name for name, entry in _ENTRIES.items() if learned is None or entry.learned == learned)


register(Entry('kmeans', 'K-means', pixels.KMeansOptions, 'kmeans_mnist.flags'))
register(Entry('gmm', 'GMM', pixels.GMMOptions, 'gmm_mnist.flags'))
register(
  Entry(
    'autoencoder', 'autoencoder', autoencoder.AEConfig, 'ae_mnist.flags', autoencoder.autoencoder, autoencoder.figures
  )
)
register(Entry('moco', 'MoCo', moco.MoCoConfig, 'moco_mnist.flags', moco.moco))
register(Entry('infogan', 'InfoGAN', infogan.InfoGANConfig, 'infogan_mnist.flags', infogan.infogan, infogan.figures))
register(Entry('scae', 'capsules (SCAE)', scae.SCAEConfig, 'scae_mnist.flags', scae.scae, scae_figures.figures))
register(
  Entry('mice', 'MiCE', mice.MiceConfig, 'mice_mnist.flags', mice.mice, train_defaults={'sampling': 'epochs'})
)  # the official loader: shuffled epochs, drop_last
