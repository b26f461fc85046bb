"""Orbax checkpoints of the whole train state, with auto-resume from the workdir."""

from __future__ import annotations

import pathlib
from typing import Any
from typing import Optional

import jax
import orbax.checkpoint as ocp


def manager(workdir, *, keep: int = 3) -> ocp.CheckpointManager:
  """A manager for ``<workdir>/checkpoints`` keeping the last ``keep`` steps.

  Saves are atomic (written aside, then renamed), so a crash mid-save leaves
  the previous checkpoint as the latest.
  """
  if keep < 1:
    raise ValueError(f'keep must be >= 1 checkpoint, got {keep}.')
  directory = pathlib.Path(workdir).resolve() / 'checkpoints'
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: Any):
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(mngr: ocp.CheckpointManager, like: Any) -> Optional[Any]:
  """The latest saved state, laid out (shapes, dtypes, shardings) like ``like``; None when there is none.

  Raises:
    ValueError: the latest checkpoint cannot be read (damaged on disk, or of another model): one line naming
      it and what to do; nothing is deleted.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as error:  # orbax raises many kinds (JSON, tensorstore, tree structure)
    where = pathlib.Path(mngr.directory) / str(step)
    reason = ' '.join(str(error).split())[:200]
    raise ValueError(
      f'the checkpoint {where} cannot be read ({type(error).__name__}: {reason}); move that folder aside to resume '
      'from the one before it, or choose another --workdir.'
    ) from None
