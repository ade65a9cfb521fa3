"""SNGAN: shapes, spectral normalisation of every D layer, serialisation."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import sngan

# A 32x32 variant (the paper's CIFAR-10 layout, narrower) keeps CPU tests fast.
G = sngan.Generator(features=(32, 16, 8, 8), bottom_width=4)
D = sngan.Discriminator(features=(8, 8, 16, 16, 16), kernels=(3, 4, 3, 4, 3),
                        strides=(1, 2, 1, 2, 1), paddings=(1, 1, 1, 1, 1))


@functools.cache
def _init():
  z = jax.random.normal(jax.random.key(0), (4, 16))
  g_vars = jax.jit(lambda k, z: G.init(k, z, train=False))(
      jax.random.key(1), z)
  x = jax.jit(lambda v, z: G.apply(v, z, train=False))(g_vars, z)
  d_vars = jax.jit(lambda k, x: D.init(k, x, train=False))(
      jax.random.key(2), x)
  return z, g_vars, x, d_vars


_d_train = jax.jit(lambda v, x: D.apply(v, x, train=True,
                                        mutable=['batch_stats']))
_d_eval = jax.jit(lambda v, x: D.apply(v, x, train=False))


def test_shapes_and_default_128():
  z, g_vars, x, d_vars = _init()
  assert sngan.generator_output_size(4, G.features) == 32
  assert x.shape == (4, 32, 32, 1) and x.dtype == jnp.float32
  assert np.abs(np.asarray(x)).max() <= 1.0
  logits = _d_eval(d_vars, x)
  assert logits.shape == (4,) and logits.dtype == jnp.float32
  # The documented defaults: 128x128, D ends in a 16x16x512 map.
  g, d = sngan.Generator(), sngan.Discriminator()
  g_vars = jax.eval_shape(
      lambda k: g.init(k, jnp.zeros((2, 128)), train=False), jax.random.key(0))
  out = jax.eval_shape(lambda v, z: g.apply(v, z, train=False), g_vars,
                       jnp.zeros((2, 128)))
  assert out.shape == (2, 128, 128, 1)
  d_vars = jax.eval_shape(lambda k, x: d.init(k, x, train=False),
                          jax.random.key(0), out)
  assert d_vars['params']['dense_out']['kernel'].shape == (16 * 16 * 512, 1)


def test_every_discriminator_layer_is_spectrally_normalised():
  _, _, x, d_vars = _init()
  stats = d_vars['batch_stats']
  layers = [k for k in d_vars['params']]
  assert sorted(stats) == sorted(
      [f'sn{i}' for i in range(5)] + ['sn_out'])
  assert len(layers) == 6
  # The stored kernels are the raw N(0, 0.02) draws, not normalised ones.
  for layer in layers:
    std = np.asarray(d_vars['params'][layer]['kernel']).std()
    assert 0.015 < std < 0.025, (layer, std)
  # Scaling every weight matrix leaves D unchanged: each one is divided by
  # its own spectral norm (biases are not normalised).
  scaled = jax.tree_util.tree_map_with_path(
      lambda p, v: v * 7.0 if p[-1].key == 'kernel' else v, d_vars['params'])
  np.testing.assert_allclose(
      _d_eval({'params': scaled, 'batch_stats': stats}, x),
      _d_eval(d_vars, x), rtol=1e-4, atol=1e-6)


def test_power_iteration_converges_and_only_updates_when_asked():
  _, _, x, d_vars = _init()
  params, stats = d_vars['params'], d_vars['batch_stats']
  # update_stats=False: the returned u vectors are the stored ones.
  _, upd = D.apply(d_vars, x, train=True, update_stats=False,
                   mutable=['batch_stats'])
  for a, b in zip(jax.tree.leaves(upd['batch_stats']), jax.tree.leaves(stats)):
    np.testing.assert_array_equal(a, b)
  _, upd = _d_train(d_vars, x)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                         upd['batch_stats'], stats)
  assert all(jax.tree.leaves(changed))
  for _ in range(30):
    _, upd = _d_train({'params': params, 'batch_stats': stats}, x)
    stats = upd['batch_stats']
  for sn_name, entries in stats.items():
    layer = sn_name.replace('sn', 'conv') if sn_name != 'sn_out' else (
        'dense_out')
    w = np.asarray(params[layer]['kernel'])
    w = w.reshape(-1, w.shape[-1])  # (kh*kw*cin, cout)
    sigma = entries[f'{layer}/kernel/sigma']
    # The layer uses w / sigma; its largest singular value is ~1.
    top = np.linalg.svd(w / sigma, compute_uv=False)[0]
    assert abs(top - 1.0) < 0.05, (layer, top)


def test_serialisation_round_trip():
  z, g_vars, x, d_vars = _init()
  _, upd = _d_train(d_vars, x)
  d_vars = {'params': d_vars['params'], 'batch_stats': upd['batch_stats']}
  for model, variables, inp in ((D, d_vars, x), (G, g_vars, z)):
    blob = flax.serialization.to_bytes(variables)
    template = jax.tree.map(jnp.zeros_like, variables)
    restored = flax.serialization.from_bytes(template, blob)
    apply = jax.jit(lambda v, i, model=model: model.apply(v, i, train=False))
    np.testing.assert_array_equal(apply(restored, inp), apply(variables, inp))


def test_generator_train_mode_updates_batch_stats_and_grads_flow():
  z, g_vars, _, d_vars = _init()

  def loss(g_params):
    x, g_upd = G.apply({'params': g_params,
                        'batch_stats': g_vars['batch_stats']}, z, train=True,
                       mutable=['batch_stats'])
    logits, _ = D.apply(d_vars, x, train=True, mutable=['batch_stats'])
    return logits.mean(), g_upd

  grads, g_upd = jax.jit(jax.grad(loss, has_aux=True))(g_vars['params'])
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(grads))
  assert not np.array_equal(g_upd['batch_stats']['bn0']['mean'],
                            g_vars['batch_stats']['bn0']['mean'])
