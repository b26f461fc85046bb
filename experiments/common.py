"""What every entry point shares: flags made from the library's config dataclasses, and one-line errors.

A setting is written once, as a field of a config dataclass
(:func:`unsupervised_jax.settings.setting`); :func:`define` makes its flag
(same name, default and help) and :func:`build` makes the config back from the
parsed flags. Values are checked by the config's ``validate`` (one line, before
anything is written), not by absl, so every bad flag reads the same way.
"""

import dataclasses
import sys
import typing

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_bool(
  'multihost', False, 'Call jax.distributed.initialize() first (TPU pods, multi-node GPU; see docs/multihost.md).'
)
flags.DEFINE_string(
  'coordinator_address',
  None,
  "With --multihost on plain hosts: process 0's host:port (a launcher "
  'such as SLURM, Open MPI or a TPU pod sets it otherwise).',
)
flags.DEFINE_integer('num_processes', None, 'With --multihost on plain hosts: the number of processes.')
flags.DEFINE_integer('process_id', None, "With --multihost on plain hosts: this process's id, 0 .. num_processes-1.")


def _kind(cls, field):
  hint = typing.get_type_hints(cls)[field.name]
  origin = typing.get_origin(hint)
  if origin is typing.Union:  # Optional[x]
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
  if origin in (tuple, list, typing.Sequence):
    return 'list', typing.get_args(hint)[0]
  return hint.__name__, None


_DEFINED = set()


def define(cls, prefix: str = ''):
  """Defines a flag ``prefix + name`` for every flag field of the dataclass ``cls`` (once per process)."""
  if (cls, prefix) in _DEFINED:
    return
  _DEFINED.add((cls, prefix))
  for field in dataclasses.fields(cls):
    if not field.metadata or not field.metadata.get('flag', True):
      continue
    name, help_text = prefix + field.name, field.metadata['help']
    if name in FLAGS:  # a setting shared by two configs (n_clusters: the pixel and the learned runners)
      continue
    if field.metadata.get('choices'):
      help_text += f' One of: {", ".join(map(str, field.metadata["choices"]))}.'
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    kind, _ = _kind(cls, field)
    if kind == 'bool':
      flags.DEFINE_bool(name, default, help_text)
    elif kind == 'list':
      flags.DEFINE_list(name, None if default is None else [str(v) for v in default], help_text)
    else:  # parsed and checked by build() and the config's validate()
      flags.DEFINE_string(name, None if default is None else str(default), help_text)


def build(cls, prefix: str = '', **values):
  """The dataclass ``cls`` from the parsed flags (``values`` override or fill non-flag fields); a flag not given
  takes the field's own default, whichever config defined the flag first in this process.

  Raises:
    ValueError: a flag's value is not of its type (one line naming the flag).
  """
  for field in dataclasses.fields(cls):
    if field.name in values or not field.metadata or not field.metadata.get('flag', True):
      continue
    name = prefix + field.name
    if not FLAGS[name].present:  # not given: the config's own default (a flag two configs share has one default)
      values[field.name] = field.default if field.default is not dataclasses.MISSING else field.default_factory()
      continue
    raw = FLAGS[name].value
    kind, item = _kind(cls, field)
    try:
      if raw is None or kind == 'bool':
        value = raw
      elif kind == 'list':
        value = tuple(item(v) for v in raw)
      elif kind == 'int':
        value = int(raw)
      elif kind == 'float':
        value = float(raw)
      else:
        value = raw
    except ValueError:
      expected = {'int': 'an integer', 'float': 'a number'}.get(kind, f'a list of {getattr(item, "__name__", item)}')
      raise ValueError(
        f'--{name} must be {expected}, got {",".join(raw) if isinstance(raw, list) else raw!r}.'
      ) from None
    values[field.name] = value
  return cls(**values)


def _guarded(main, argv):
  """``main(argv)`` with the library's ``ValueError`` (bad config or data) as one line on stderr (exit 2), and a
  diverged training (``NonFiniteLossError``) too (exit 1)."""
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax and XLA chatter would bury the progress bar
  try:
    if FLAGS.multihost:
      import jax

      given = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
      if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError('give all of --coordinator_address, --num_processes and --process_id, or none.')
      jax.distributed.initialize(*given)
    return main(argv)
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  except RuntimeError as error:
    from unsupervised_jax.training import loop

    if not isinstance(error, loop.NonFiniteLossError):
      raise
    print(f'error: {error}', file=sys.stderr)  # training diverged: what, where, and what to change
    sys.exit(1)


def _parse(argv):
  """absl's own parser writes two lines (and a flagfile's error may span several): one line, exit 2."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    print(f'error: {" ".join(str(error).split())} (--helpshort lists the flags).', file=sys.stderr)
    sys.exit(2)


def run(main):
  """``app.run(main)``, turning an unknown flag and the library's ``ValueError`` (bad config or data) into one clear
  line on stderr (exit 2)."""
  from absl import app

  app.run(lambda argv: _guarded(main, argv), flags_parser=_parse)


def call(main, argv) -> int:
  """Runs an entry point's ``main`` in this process as its command line ``argv`` (without the program) would run:
  the same parsing, the same one-line errors; returns the exit status. For tests: no interpreter to start."""
  FLAGS.unparse_flags()
  try:
    _guarded(main, _parse(['python', *argv]))
  except SystemExit as exit:
    return exit.code or 0
  except Exception:  # what the interpreter does with an uncaught exception: the traceback, exit status 1
    import traceback

    traceback.print_exc()
    return 1
  return 0


def pixels_main(method: str):
  """``main(argv)`` of a registered pixel clustering's entry point (``kmeans``, ``gmm``), its flags defined here."""
  from unsupervised_jax import registry
  from unsupervised_jax.runner import config as run_config
  from unsupervised_jax.runner import pixels

  options = registry.get(method).config
  define(run_config.RunConfig)
  define(pixels.PixelConfig)
  define(options)

  def main(argv):
    del argv
    pixels.run(method, build(run_config.RunConfig), build(pixels.PixelConfig), build(options))

  return main
