"""The Colab notebooks (colab/*.ipynb) run from top to bottom in a real kernel, and are committed clean.

Each notebook runs in its reduced mode (``UNSUPERVISED_JAX_NOTEBOOK_SMOKE=1``: a few steps on the bundled
8x8 digits) in a Jupyter kernel driven by nbclient, from a temporary working directory that receives
everything it writes, and must show its figures inline.
"""

import os
import pathlib
import re
import resource
import subprocess
import time

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / 'colab'
NOTEBOOKS = sorted(p.name for p in COLAB.glob('*.ipynb'))
# A cell that hangs fails. A whole notebook takes well under a minute of CPU, but a kernel starved by a busy
# host (at nice 19 beside the other test worker, load 6-8 on 2 cores) took minutes of wall time for one compilation.
CELL_TIMEOUT_S = 600
# Per notebook: the least number of images shown inline, and the files it writes under its working directory.
EXPECTED = {
  '01_classical_clustering.ipynb': (
    5,
    ['runs/colab_classical_digits/kmeans_centres.png', 'runs/colab_classical_digits/pca.png'],
  ),
  '02_moco_and_mice.ipynb': (
    3,
    [
      'runs/colab_moco_mice_digits/moco_tsne.png',
      'runs/colab_moco_mice_digits/moco/metrics.jsonl',
      'runs/colab_moco_mice_digits/mice/metrics.jsonl',
    ],
  ),
  '03_infogan.ipynb': (
    4,
    [
      'runs/colab_infogan_digits/categories.png',
      'runs/colab_infogan_digits/continuous_0.png',
      'runs/colab_infogan_digits/continuous_1.png',
    ],
  ),
  '04_capsules.ipynb': (
    2,
    ['runs/colab_scae_digits/scae_templates.png', 'runs/colab_scae_digits/scae_reconstructions.png'],
  ),
}
# A repository's address, and a Colab badge's (colab.research.google.com/github/OWNER/NAME/blob/...).
GITHUB = re.compile(r'(?:github\.com|google\.com/github)/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/\'")\s\\]|$)')


def test_every_notebook_is_checked():
  assert NOTEBOOKS == sorted(EXPECTED)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_in_reduced_mode_and_shows_its_figures(name, tmp_path):
  notebook = nbformat.read(COLAB / name, as_version=4)
  env = dict(
    os.environ,
    UNSUPERVISED_JAX_NOTEBOOK_SMOKE='1',
    # this checkout's package, whatever else is installed
    # conftest's XLA_FLAGS (cheap compilation) and OMP_NUM_THREADS=1 (the t-SNE beside the other worker)
    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])),
  )
  env.pop('MPLBACKEND', None)  # the kernel's own (inline) backend, as in Jupyter and Colab
  client = nbclient.NotebookClient(
    notebook,
    timeout=CELL_TIMEOUT_S,
    startup_timeout=CELL_TIMEOUT_S,
    kernel_name='python3',
    resources={'metadata': {'path': str(tmp_path)}},
  )
  start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
  client.execute(env=env)  # raises CellExecutionError, with the cell's traceback, on any error
  used = resource.getrusage(resource.RUSAGE_CHILDREN)
  print(
    f'{name}: {time.perf_counter() - start:.1f} s wall, kernel CPU '
    f'{used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.1f} s'
  )
  outputs = [output for cell in notebook.cells if cell.cell_type == 'code' for output in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  images, files = EXPECTED[name]
  shown = sum('image/png' in output.get('data', {}) for output in outputs)
  assert shown >= images, f'{name} showed {shown} images, expected at least {images}'
  missing = [f for f in files if not (tmp_path / f).is_file()]
  assert not missing, f'{name} did not write {missing} under its working directory'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_committed_notebook_is_clean(name):
  path = COLAB / name
  notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
  nbformat.validate(notebook)
  assert notebook.nbformat == 4
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert all(not cell.outputs and cell.execution_count is None for cell in code), f'{name}: clear its outputs'
  tagged = [cell for cell in notebook.cells if 'parameters' in cell.metadata.get('tags', [])]
  assert len(tagged) == 1 and tagged[0].cell_type == 'code', f'{name}: exactly one cell tagged parameters'
  assert "os.environ.get('UNSUPERVISED_JAX_NOTEBOOK_SMOKE') == '1'" in tagged[0].source
  first, last = notebook.cells[0], notebook.cells[-1]
  assert first.cell_type == 'markdown' and first.source.startswith('# ')
  assert re.search(
    rf'\(https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/colab/{name}\)', first.source
  ), f'{name}: its first cell needs the Open in Colab badge of its own path'
  assert "'google.colab' in sys.modules" in code[0].source and "'install.sh'" in code[0].source, (
    f'{name}: its first code cell installs the package in Colab'
  )
  commands = re.findall(r'python -m experiments\.(\w+) --flagfile=(\S+)', last.source)
  assert last.cell_type == 'markdown' and commands, f'{name}: end with the command of the full configuration'
  for module, flagfile in commands:
    assert (ROOT / 'experiments' / f'{module}.py').is_file() and (ROOT / flagfile).is_file(), (module, flagfile)


def test_notebooks_readmes_and_badges_name_one_repository_and_every_notebook():
  texts = {
    path: path.read_text() for path in [ROOT / 'README.md', COLAB / 'README.md', *(COLAB / name for name in NOTEBOOKS)]
  }
  repositories = {path.name: set(GITHUB.findall(text)) for path, text in texts.items()}
  assert len(set().union(*repositories.values())) == 1, repositories  # colab/README.md: how to change it
  for readme in (ROOT / 'README.md', COLAB / 'README.md'):
    assert all(name in texts[readme] for name in NOTEBOOKS), f'{readme.name} should link every notebook'


def test_colab_install_script_parses():
  assert subprocess.run(['bash', '-n', str(COLAB / 'install.sh')]).returncode == 0
