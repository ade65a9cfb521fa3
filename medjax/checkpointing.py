"""Orbax checkpoints of the train state together with the data iterator.

Each step directory holds two items: `state` (the `GANState` pytree) and
`data` (the grain iterator state, one file per process). Orbax writes into a
temporary directory and renames it when complete, so a run killed mid-save
leaves the previous checkpoint as the latest readable one.
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

PyTree = Any


class Checkpointer:
  """Keeps the last `max_to_keep` checkpoints of a run.

  Args:
    directory: where step directories are written.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree,
           iterator: grain.DatasetIterator) -> None:
    """Starts an asynchronous save; returns once device data is copied."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator)), force=True)

  def restore(self, step: int, abstract_state: PyTree,
              iterator: grain.DatasetIterator | None = None) -> PyTree:
    """Restores the state (and the iterator position, in place, if given).

    Args:
      step: the checkpoint step.
      abstract_state: `jax.ShapeDtypeStruct`s with shardings for the state.
      iterator: a fresh iterator of the same pipeline, or None to skip it.

    Returns:
      The restored state.
    """
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
  """ShapeDtypeStructs of `tree` (arrays or shapes) placed with `sharding`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
