"""A wheel of the checkout holds the whole library and no top-level ``experiments``.

Builds the wheel from a copy of the checkout (offline, no build isolation), installs it with ``--no-deps``
into a fresh venv outside the checkout that sees the project venv's packages (jax, flax, ...) but not its
editable install, and imports every module from there. ~15-30 s on 2 cores.
"""

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(
  '.git', '.venv', 'runs', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache', 'results', '*.npz'
)

# Run in the venv from a directory outside the checkout: every module of the package, with the file it came from.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import unsupervised_jax
names = ['unsupervised_jax'] + [m.name for m in pkgutil.walk_packages(unsupervised_jax.__path__, 'unsupervised_jax.')]
files = {name: importlib.import_module(name).__file__ for name in names}
try:
  import experiments
  files['experiments'] = getattr(experiments, '__file__', None) or str(list(experiments.__path__))
except ImportError:
  pass
print(json.dumps(files))
"""


def _checkout_modules():
  """Dotted names of every module file of the checkout's ``unsupervised_jax``."""
  names = set()
  for path in (ROOT / 'unsupervised_jax').rglob('*.py'):
    parts = path.relative_to(ROOT).with_suffix('').parts
    names.add('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))
  return names


def _can_build_wheels() -> bool:
  """setuptools >= 70.1 builds wheels itself; older ones need the ``wheel`` package (both: the dev extras)."""
  try:
    import setuptools.command.bdist_wheel  # noqa: F401

    return True
  except ImportError:
    try:
      import wheel.bdist_wheel  # noqa: F401

      return True
    except ImportError:
      return False


def _build_wheel(tmp_path):
  source = tmp_path / 'source'
  shutil.copytree(ROOT, source, ignore=_SKIP)  # the build writes build/ and *.egg-info: not into the checkout
  wheels = tmp_path / 'wheels'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'wheel',
      '--no-deps',
      '--no-build-isolation',
      '--no-index',
      '--quiet',
      '--wheel-dir',
      str(wheels),
      str(source),
    ],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr
  (wheel,) = wheels.glob('unsupervised_jax-*.whl')
  return wheel


def _venv_with(wheel, tmp_path):
  """A fresh venv holding ``wheel``, with the project venv's site-packages on its path but none of its .pth hooks.

  (``venv --system-site-packages`` run from a venv would add the base interpreter's packages, not this venv's.)
  """
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=60)
  python = venv / 'bin' / 'python'
  (own_site,) = venv.glob('lib/python*/site-packages')
  # A plain path line: the project venv's packages are importable, its editable finder (a .pth hook) never runs.
  (own_site / 'project_venv.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
  proc = subprocess.run(
    [sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '--no-index', '--quiet', str(wheel)],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  return python, own_site


def test_wheel_holds_the_library_not_experiments_and_imports_outside_the_checkout(tmp_path):
  if not _can_build_wheels():
    pytest.skip("no offline wheel builder: setuptools < 70.1 without 'wheel'; pip install -e '.[dev]' brings one")
  wheel = _build_wheel(tmp_path)
  members = zipfile.ZipFile(wheel).namelist()
  top_level = {name.split('/')[0] for name in members if not name.split('/')[0].endswith('.dist-info')}
  assert top_level == {'unsupervised_jax'}, top_level  # no generic "experiments" in site-packages
  packaged = {name[:-3].replace('/', '.').removesuffix('.__init__') for name in members if name.endswith('.py')}
  assert packaged == _checkout_modules(), _checkout_modules() ^ packaged  # training/ included

  python, own_site = _venv_with(wheel, tmp_path)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  proc = subprocess.run(
    [str(python), '-c', _IMPORT_ALL], cwd=elsewhere, capture_output=True, text=True, timeout=180, env=env
  )
  assert proc.returncode == 0, proc.stderr
  files = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 'experiments' not in files, files['experiments']
  assert set(files) == _checkout_modules()
  for name, file in files.items():
    assert pathlib.Path(file).resolve().is_relative_to(own_site.resolve()), (name, file)
