"""The package's layers: the training core imports nothing above it, the methods nothing of the runner, and the
registry is the one list of methods."""

import ast
import pathlib

import pytest

from unsupervised_jax import registry
from unsupervised_jax.runner import configurations

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'unsupervised_jax'


def _imports(path):
  """The ``unsupervised_jax`` modules a file imports, at any depth of the file (functions included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('unsupervised_jax'):
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith('unsupervised_jax'))
  return found


# (folder, what it may import of the package): each layer imports only itself and the layers below it.
LAYERS = [
  ('training', ('unsupervised_jax.training.', 'unsupervised_jax.settings')),
  (
    'methods',
    (
      'unsupervised_jax.training.',
      'unsupervised_jax.settings',
      'unsupervised_jax.methods.',
      'unsupervised_jax.models.',
      'unsupervised_jax.losses',
      'unsupervised_jax.augment',
      'unsupervised_jax.rendering',
      'unsupervised_jax.plots',
      'unsupervised_jax.evaluation.neighbours',  # a leaf: the blocked top-k that kNN and self-labelling share
    ),
  ),
]


@pytest.mark.parametrize('folder,allowed', LAYERS, ids=[folder for folder, _ in LAYERS])
def test_a_layer_imports_nothing_above_it(folder, allowed):
  upward = {
    f'{path.name}: {name}'
    for path in (PACKAGE / folder).glob('*.py')
    for name in _imports(path)
    if not name.startswith(allowed)
  }
  assert not upward, f'{folder}/ imports above its layer: {sorted(upward)}'


def test_the_registry_is_the_only_list_of_methods():
  names = set(registry.names())
  assert names == {'kmeans', 'gmm', 'autoencoder', 'moco', 'infogan', 'scae', 'mice'}
  for path in PACKAGE.rglob('*.py'):
    if path.name == 'registry.py':
      continue
    for node in ast.walk(ast.parse(path.read_text())):  # no other tuple, list or set of method names
      if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        assert len(strings & names) < 3, f'{path.relative_to(PACKAGE)} lists methods: {sorted(strings & names)}'
  # Every row of the tables and the reproduction names a registered method, and every method has a row.
  assert {c.method for c in configurations.CONFIGURATIONS} == names
