"""A train state's arrays packed into one flat array per dtype.

Each array a jitted call takes and returns costs the host time: about 1.3-2.5
us per donated leaf on a 2-core EPYC with jax 0.10.2 (bench/NOTES.md). A GAN's
train state has hundreds of leaves (SRGAN: 542, so ~1.7-2.3 ms per call that
does nothing), and at the paper batch sizes the GPU loop is host-bound: on an
H200 the host took 11.0 of SRGAN's 11.2 ms step to dispatch it. Packed, the
state crosses the call boundary as one array per dtype, sliced and
concatenated inside the compiled step; the values are bit-for-bit those of
the unpacked state.

Opt-in (`config.pack_state`), because the trade measured on a CPU is mixed:
SRGAN's host loop halves, the step (CPU-bound there) does not change, and the
step compiles in twice the time. Whether it pays on a GPU is measured by
`bench/train_step.py --pack_state off on` (bench/NOTES.md).

Leaves of extended dtypes (PRNG keys) cannot be concatenated and are passed
through as they are.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


class StatePacker:
  """Packs pytrees shaped like `example` into {dtype: flat array} and back.

  Args:
    example: a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g.
      `jax.eval_shape(task.init, rng)`) fixing the structure, shapes and
      dtypes of what is packed.
  """

  def __init__(self, example: PyTree):
    leaves, self._treedef = jax.tree.flatten(example)
    self._shapes = [tuple(x.shape) for x in leaves]
    self._dtypes = [x.dtype for x in leaves]
    # Per leaf: (dtype name, offset) into its group, or None: passed through.
    self._slots = []
    sizes: dict[str, int] = {}
    for shape, dtype in zip(self._shapes, self._dtypes):
      if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        self._slots.append(None)
        continue
      offset = sizes.get(dtype.name, 0)
      self._slots.append((dtype.name, offset))
      sizes[dtype.name] = offset + math.prod(shape)
    self.sizes = sizes  # dtype name -> elements in its flat array.

  @property
  def num_leaves(self) -> int:
    """Leaves of the unpacked pytree."""
    return len(self._slots)

  def _check(self, tree: PyTree) -> list:
    leaves, treedef = jax.tree.flatten(tree)
    if treedef != self._treedef:
      raise ValueError(f'cannot pack a pytree of structure {treedef}: the '
                       f'packer was built for {self._treedef}')
    for i, x in enumerate(leaves):
      if tuple(x.shape) != self._shapes[i] or x.dtype != self._dtypes[i]:
        raise ValueError(
            f'cannot pack leaf {i} of shape {tuple(x.shape)} and dtype '
            f'{x.dtype}: the packer was built for {self._shapes[i]} '
            f'{self._dtypes[i]}')
    return leaves

  def pack(self, tree: PyTree) -> dict[str, Any]:
    """The packed form of `tree` (traceable; jit it to run it on devices).

    Args:
      tree: a pytree with the example's structure, shapes and dtypes.

    Returns:
      {'flat': {dtype name: 1-D array of all that dtype's leaves, in leaf
      order}, 'other': [the extended-dtype leaves, in leaf order]}.

    Raises:
      ValueError: if the structure, a shape or a dtype differs.
    """
    leaves = self._check(tree)
    parts: dict[str, list] = {name: [] for name in self.sizes}
    other = []
    for x, slot in zip(leaves, self._slots):
      if slot is None:
        other.append(x)
      else:
        parts[slot[0]].append(jnp.ravel(x))
    return {'flat': {name: jnp.concatenate(p) if p else
                     jnp.zeros((0,), name) for name, p in parts.items()},
            'other': other}

  def wrap(self, fn):
    """`fn(state, *args) -> (state, aux)` as a function of the packed state.

    Args:
      fn: e.g. a task's `train_step`.

    Returns:
      fn(packed, *args) -> (packed, aux), traceable.
    """
    def packed_fn(packed, *args):
      state, aux = fn(self.unpack(packed), *args)
      return self.pack(state), aux
    return packed_fn

  def unpack(self, packed: dict[str, Any]) -> PyTree:
    """The pytree `pack` packed (traceable).

    Args:
      packed: `pack`'s result, or arrays of the same shapes.

    Returns:
      The pytree, of the example's structure, shapes and dtypes.
    """
    flat, other = packed['flat'], iter(packed['other'])
    leaves = []
    for shape, slot in zip(self._shapes, self._slots):
      if slot is None:
        leaves.append(next(other))
      else:
        name, offset = slot
        size = math.prod(shape)
        leaves.append(flat[name][offset:offset + size].reshape(shape))
    return jax.tree.unflatten(self._treedef, leaves)
