"""How the training loop carries the train state across the step call.

Two opt-in transforms, applied when the state enters and leaves the
compiled step (`StatePacker.wrap`), and undone only at steps that sample,
validate or save; checkpoints hold the task's own state, and the values are
bit-for-bit the same (tests/test_packing.py).

* Packed (`config.pack_state`): one flat array per dtype instead of the
  state's leaves. Each array a jitted call takes and returns costs the host
  ~1.3-2.5 us (2-core EPYC, jax 0.10.2), a GAN's state has hundreds of
  leaves (SRGAN: 542), and at the paper batch sizes the GPU loop is
  host-bound (SRGAN b16 on an H200: the host took 11.0 of the 11.2 ms step).
  On a CPU the host loop halves but the step and its compile get slower;
  on a GPU the step then concatenates and copies the state (bench/NOTES.md).
* Kernels output channel first (`config.state_kernel_layout='ohwi'`): every
  4-D leaf (convolution kernels, HWIO in flax, and their optimizer moments)
  stored OHWI, the filter layout cuDNN takes with NHWC images, so that XLA
  transposes no kernel to cuDNN's layout and no weight gradient back.

Whether either pays on a GPU is measured by `bench/train_step.py
--pack_state off on --config.state_kernel_layout=...`; the kernels each
removes, by `bench/gpu_hlo.py`. Leaves of extended dtypes (PRNG keys) pass
through as they are.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _out_first(x):
  """HWIO -> OHWI (a 4-D leaf: a conv kernel or its optimizer moment)."""
  return jnp.transpose(x, (3, 0, 1, 2))


def _out_last(x):
  """OHWI -> HWIO."""
  return jnp.transpose(x, (1, 2, 3, 0))


class StatePacker:
  """Converts pytrees shaped like `example` to the form the loop carries
  (one flat array per dtype, and/or 4-D leaves output channel first) and
  back.

  Args:
    example: a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g.
      `jax.eval_shape(task.init, rng)`) fixing the structure, shapes and
      dtypes of what is packed.
    flat: concatenate the leaves into one flat array per dtype; if False,
      the packed form is the pytree itself (with `kernels_out_first`).
    kernels_out_first: store every 4-D leaf (convolution kernels, HWIO in
      flax, and their optimizer moments) output channel first (OHWI), the
      filter layout cuDNN takes with NHWC images. The step then converts
      them to HWIO for the model and back; XLA cancels those transposes
      against its own to cuDNN's layout, and the update of a kernel becomes
      elementwise and in place: 154 fewer kernels per SRGAN b16 step in the
      H100 program (bench/gpu_hlo.py), no transposes and no output copies
      of weight gradients.
  """

  def __init__(self, example: PyTree, flat: bool = True,
               kernels_out_first: bool = False):
    leaves, self._treedef = jax.tree.flatten(example)
    self.flat, self.kernels_out_first = flat, kernels_out_first
    self._shapes = [tuple(x.shape) for x in leaves]
    self._dtypes = [x.dtype for x in leaves]
    # Per leaf: (dtype name, offset) into its group, or None: passed through.
    self._slots = []
    self._turned = []  # Per leaf: stored output channel first.
    sizes: dict[str, int] = {}
    for shape, dtype in zip(self._shapes, self._dtypes):
      extended = jax.dtypes.issubdtype(dtype, jax.dtypes.extended)
      self._turned.append(kernels_out_first and not extended
                          and len(shape) == 4)
      if extended:
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
      order}, 'other': [the extended-dtype leaves, in leaf order]}; without
      `flat`, the pytree (4-D leaves OHWI with `kernels_out_first`).

    Raises:
      ValueError: if the structure, a shape or a dtype differs.
    """
    leaves = [_out_first(x) if turned else x
              for x, turned in zip(self._check(tree), self._turned)]
    if not self.flat:
      return jax.tree.unflatten(self._treedef, leaves)
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
    if not self.flat:
      leaves = jax.tree.leaves(packed)
    else:
      flat, other = packed['flat'], iter(packed['other'])
      leaves = []
      for shape, slot, turned in zip(self._shapes, self._slots,
                                     self._turned):
        if slot is None:
          leaves.append(next(other))
        else:
          name, offset = slot
          size = math.prod(shape)
          stored = (shape[3], *shape[:3]) if turned else shape
          leaves.append(flat[name][offset:offset + size].reshape(stored))
    leaves = [_out_last(x) if turned else x
              for x, turned in zip(leaves, self._turned)]
    return jax.tree.unflatten(self._treedef, leaves)


def for_config(config, example: PyTree) -> StatePacker | None:
  """The packer `config.pack_state` and `config.state_kernel_layout` ask
  for (None: the loop carries the task's state as it is).

  Args:
    config: an experiment config.
    example: the state (or its `jax.eval_shape`).
  """
  out_first = config.state_kernel_layout == 'ohwi'
  if not (config.pack_state or out_first):
    return None
  return StatePacker(example, flat=config.pack_state,
                     kernels_out_first=out_first)
