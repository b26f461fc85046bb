"""Settings written once: config dataclasses whose fields carry their help and checks.

Every config of the library (training, evaluation, self-labelling, each
method) is a frozen dataclass whose fields are declared with :func:`setting`.
The command-line flags of ``experiments/`` are made from these fields
(``experiments/common.py``), records store :func:`as_dict`, and
:func:`check` validates the declared choices and bounds, so a setting's name,
default, help and range are written in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Dict
from typing import Optional
from typing import Sequence

import numpy as np


def setting(
  default: Any,
  help: str,
  *,
  choices: Optional[Sequence[Any]] = None,
  minimum: Optional[float] = None,
  above: Optional[float] = None,
  flag: bool = True,
):
  """A dataclass field with its help text and checks.

  Args:
    default: the default value (a list/dict default is copied per instance).
    help: one line for ``--help`` and the docs.
    choices: allowed values.
    minimum: values must be ``>= minimum``; ``above``: values must be ``> above``.
    flag: False for settings that are not command-line flags.
  """
  metadata = {
    'help': help,
    'choices': tuple(choices) if choices else None,
    'minimum': minimum,
    'above': above,
    'flag': flag,
  }
  if isinstance(default, (list, dict, set)):
    return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def check(config, prefix: str = '') -> None:
  """Validates the declared ``choices`` / ``minimum`` / ``above`` of every field of ``config``.

  Raises:
    ValueError: one line naming the setting (as its flag, ``prefix + name``), the value and what is allowed.
  """
  for field in dataclasses.fields(config):
    value, meta, name = getattr(config, field.name), field.metadata, prefix + field.name
    if not meta or value is None:
      continue
    values = value if isinstance(value, (tuple, list)) else (value,)
    if meta['choices'] is not None and value not in meta['choices']:
      raise ValueError(f'{name} must be one of {", ".join(map(str, meta["choices"]))}; got {value!r}.')
    for v in values:
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        continue
      if meta['minimum'] is not None and v < meta['minimum']:
        raise ValueError(f'{name} must be >= {meta["minimum"]:g}, got {value}.')
      if meta['above'] is not None and not v > meta['above']:
        raise ValueError(f'{name} must be > {meta["above"]:g}, got {value}.')
      _check_fits(name, v, meta)


_INT32 = np.iinfo(np.int32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_fits(name: str, value, meta) -> None:
  """Numbers go into jitted code as float32 or int32 (steps, sizes): a value that does not fit its dtype (a
  learning rate of 1e39 is inf in float32, 1e-50 is 0) would pass the bounds and break the run later."""
  if isinstance(value, int):
    if not _INT32.min <= value <= _INT32.max:
      raise ValueError(f'{name} must fit in int32 (|x| <= {_INT32.max:,}), got {value}.')
    return
  as_float32 = np.float32(value) if np.isfinite(value) and abs(value) <= _FLOAT32_MAX else np.inf
  if not np.isfinite(as_float32):
    raise ValueError(f'{name} must be a finite float32 (|x| <= 3.4e38), got {value}.')
  bound = meta['above']
  if bound is not None and not as_float32 > bound:
    raise ValueError(f'{name} must be > {bound:g} in float32, got {value} (float32: {float(as_float32):g}).')


def as_dict(config) -> Dict[str, Any]:
  """The config's fields as plain JSON-able values (tuples as lists)."""

  def plain(value):
    if isinstance(value, (tuple, list)):
      return [plain(v) for v in value]
    if isinstance(value, dict):
      return {k: plain(v) for k, v in value.items()}
    return value

  return {field.name: plain(getattr(config, field.name)) for field in dataclasses.fields(config)}
