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


@pytest.mark.parametrize('flat', [True, False])
def test_kernels_out_first_are_stored_ohwi_and_come_back_hwio(flat):
  tree = dict(_tree(), k=jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32)
              .reshape(2, 3, 4, 5))
  packer = packing.StatePacker(tree, flat=flat, kernels_out_first=True)
  packed = jax.jit(packer.pack)(tree)
  if not flat:
    assert packed['k'].shape == (5, 2, 3, 4)  # HWIO -> OHWI
    np.testing.assert_array_equal(packed['k'][4, 1, 2, 3],
                                  tree['k'][1, 2, 3, 4])
    assert packed['w'].shape == (2, 3)  # other leaves as they are
  back = jax.jit(packer.unpack)(packed)
  np.testing.assert_array_equal(back['k'], tree['k'])
  np.testing.assert_array_equal(back['w'], tree['w'])


def test_config_names_the_packer_and_refuses_an_unknown_layout():
  from medjax import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  tree = _tree()
  assert packing.for_config(config, tree) is None
  config.state_kernel_layout = 'ohwi'
  packer = packing.for_config(config, tree)
  assert packer.kernels_out_first and not packer.flat
  config.state_kernel_layout = 'oihw'
  with pytest.raises(ValueError, match='state_kernel_layout'):
    config_lib.validate(config)


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
  seen = []  # the state each step call was given: its leaves' shapes

  def recording(*args, **kwargs):
    step_fn, merge = make(*args, **kwargs)

    def counted(state, *rest):
      seen.append([x.shape for x in jax.tree.leaves(state)])
      return step_fn(state, *rest)
    return counted, merge
  make = train.make_train_step
  monkeypatch.setattr(train, 'make_train_step', recording)
  runs, calls = {}, {}
  for pack, layout in ((True, 'hwio'), (False, 'hwio'), (False, 'ohwi')):
    seen.clear()
    runs[pack, layout] = train.train_and_evaluate(
        tiny_config(data_dir, num_train_steps=3, pack_state=pack,
                    state_kernel_layout=layout),
        str(tmp_path / f'{pack}_{layout}'))
    calls[pack, layout] = list(seen)
  plain = runs[False, 'hwio']
  shapes = [x.shape for x in jax.tree.leaves(plain)]
  assert len(shapes) > 20
  # Packed: the float32 and int32 arrays; the DCGAN state has 89 leaves at
  # full size (this tiny one fewer), all of them otherwise.
  assert [len(c) for c in calls[True, 'hwio']] == [2] * 3
  assert calls[False, 'hwio'] == [shapes] * 3
  # OHWI: every 4-D leaf (kernels and their Adam moments) output first.
  turned = [(s[3], *s[:3]) if len(s) == 4 else s for s in shapes]
  assert turned != shapes and calls[False, 'ohwi'] == [turned] * 3
  for run in (runs[True, 'hwio'], runs[False, 'ohwi']):
    for a, b in zip(jax.tree.leaves(run), jax.tree.leaves(plain)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Checkpoints hold the unpacked state either way: a packed run resumes
  # an unpacked one.
  resumed = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=4, pack_state=True),
      str(tmp_path / 'False_hwio'))
  assert int(resumed.step) == 4
