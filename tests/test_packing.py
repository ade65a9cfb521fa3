"""medjax.packing and the loop that carries the state packed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import packing
from medjax import train
from tests.conftest import tiny_config


def _tree():
  return {'w': jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
          'b': jnp.float32(7.5),
          'step': jnp.int32(3),
          'rng': jax.random.key(1),
          'half': [jnp.ones((2, 2), jnp.bfloat16),
                   jnp.zeros((0,), jnp.float32)],
          'n': jnp.array([1, 2], jnp.int32)}


def test_pack_is_one_flat_array_per_dtype_and_unpacks_bit_for_bit():
  tree = _tree()
  packer = packing.StatePacker(jax.eval_shape(lambda: tree))
  packed = jax.jit(packer.pack)(tree)
  assert packer.num_leaves == 7
  assert {k: v.shape for k, v in packed['flat'].items()} == {
      'float32': (7,), 'int32': (3,), 'bfloat16': (4,)}
  assert len(packed['other']) == 1  # the PRNG key, passed through
  back = jax.jit(packer.unpack)(packed)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back)):
    assert a.dtype == b.dtype and a.shape == b.shape
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pack_refuses_another_structure_shape_or_dtype():
  tree = _tree()
  packer = packing.StatePacker(tree)
  with pytest.raises(ValueError, match='structure'):
    packer.pack(dict(tree, extra=jnp.zeros(())))
  with pytest.raises(ValueError, match=r'shape \(3, 2\)'):
    packer.pack(dict(tree, w=tree['w'].T))
  with pytest.raises(ValueError, match='dtype int32'):
    packer.pack(dict(tree, b=jnp.int32(7)))


def test_loop_passes_the_packed_state_and_trains_bit_for_bit_as_unpacked(
    data_dir, tmp_path, monkeypatch):
  seen = []  # leaves of the state each step call was given

  def recording(*args, **kwargs):
    step_fn, merge = make(*args, **kwargs)

    def counted(state, *rest):
      seen.append(len(jax.tree.leaves(state)))
      return step_fn(state, *rest)
    return counted, merge
  make = train.make_train_step
  monkeypatch.setattr(train, 'make_train_step', recording)
  runs = {}
  for pack in (True, False):
    seen.clear()
    runs[pack] = train.train_and_evaluate(
        tiny_config(data_dir, num_train_steps=3, pack_state=pack),
        str(tmp_path / str(pack)))
    leaves = len(jax.tree.leaves(runs[pack]))
    # Packed: the float32 and int32 arrays; the DCGAN state has 89 leaves
    # at full size (this tiny one fewer), all of them otherwise.
    assert seen == ([2] * 3 if pack else [leaves] * 3), seen
  assert leaves > 20
  for a, b in zip(jax.tree.leaves(runs[True]), jax.tree.leaves(runs[False])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Checkpoints hold the unpacked state either way: a packed run resumes
  # an unpacked one.
  resumed = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=4, pack_state=True),
      str(tmp_path / 'False'))
  assert int(resumed.step) == 4
