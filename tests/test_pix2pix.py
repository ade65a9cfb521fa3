"""Pix2Pix: U-Net shapes, skips, dropout; PatchGAN receptive field; dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import pix2pix

# Narrow 32x32 variants keep CPU tests fast.
G = pix2pix.UNetGenerator(num_downs=5, ngf=4, channels_in=1, channels_out=2)
D = pix2pix.PatchDiscriminator(ndf=4, n_layers=3)


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _images(key, shape):
  return jax.random.uniform(jax.random.key(key), shape, minval=-1, maxval=1)


def test_shapes_and_reference_parameter_counts():
  x, y = _images(0, (2, 32, 32, 1)), _images(1, (2, 32, 32, 2))
  g_vars = jax.jit(lambda k, x: G.init(k, x, train=False))(
      jax.random.key(2), x)
  out = jax.jit(lambda v, x: G.apply(v, x, train=False))(g_vars, x)
  assert out.shape == (2, 32, 32, 2) and out.dtype == jnp.float32
  assert np.abs(np.asarray(out)).max() <= 1.0
  # Skip concatenations: every inner up layer reads 2x its level's width.
  p = g_vars['params']
  assert p['up0']['kernel'].shape == (4, 4, 8, 2)
  assert p['up2']['kernel'].shape == (4, 4, 32, 8)
  assert p['up4']['kernel'].shape == (4, 4, 32, 32)  # innermost: no skip
  assert 'down_norm0' not in p and 'down_norm4' not in p
  d_vars = jax.jit(lambda k, x, y: D.init(k, x, y, train=False))(
      jax.random.key(3), x, y)
  logits = jax.jit(lambda v, x, y: D.apply(v, x, y, train=False))(
      d_vars, x, y)
  assert logits.shape == (2, 2, 2, 1) == (2,) + (
      pix2pix.patch_output_size(32),) * 2 + (1,)
  # The reference's unet_256 and basic D (input_nc=output_nc=3) report
  # 54.414 M and 2.769 M parameters.
  g = pix2pix.UNetGenerator(channels_in=3, channels_out=3)
  big = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  g_shapes = jax.eval_shape(lambda k, x: g.init(k, x, train=False),
                            jax.random.key(0), big)
  assert round(_count(g_shapes['params']) / 1e6, 3) == 54.414
  d_shapes = jax.eval_shape(
      lambda k, x: pix2pix.PatchDiscriminator().init(k, x, x, train=False),
      jax.random.key(0), big)
  assert round(_count(d_shapes['params']) / 1e6, 3) == 2.769
  out = jax.eval_shape(
      lambda v, x: pix2pix.PatchDiscriminator().apply(v, x, x, train=False),
      d_shapes, big)
  assert out.shape == (1, 30, 30, 1) and pix2pix.patch_output_size(256) == 30
  assert pix2pix.unet_dropout_levels(8) == (6, 5, 4)
  assert pix2pix.unet_dropout_levels(7) == (5, 4)


def test_receptive_field_is_70():
  assert pix2pix.receptive_field(3) == 70
  assert [pix2pix.receptive_field(n) for n in (1, 2, 4, 5)] == [
      16, 34, 142, 286]
  d = pix2pix.PatchDiscriminator(ndf=2, n_layers=3)
  size = 96  # logits map 10x10; logit j sees input rows 8j - 23 ... 8j + 46
  src, tgt = _images(0, (1, size, size, 1)), _images(1, (1, size, size, 1))
  d_vars = d.init(jax.random.key(2), src, tgt, train=False)
  apply = jax.jit(lambda s, t: d.apply(d_vars, s, t, train=False))
  # One interior logit depends on exactly a 70x70 input square.
  grad = jax.grad(lambda s: apply(s, tgt)[0, 5, 5, 0])(src)[0, :, :, 0]
  rows = np.flatnonzero(np.abs(np.asarray(grad)).sum(1))
  cols = np.flatnonzero(np.abs(np.asarray(grad)).sum(0))
  assert rows[0] == cols[0] == 8 * 5 - 23 and len(rows) == len(cols) == 70
  assert rows[-1] - rows[0] + 1 == 70
  # Perturbing one pixel changes exactly the logits whose square holds it.
  base = np.asarray(apply(src, tgt))
  moved = np.asarray(apply(src, tgt.at[0, 48, 20, 0].add(1.0)))
  changed = np.abs(moved - base)[0, :, :, 0] > 0
  j = np.arange(10)
  sees = lambda p: (8 * j - 23 <= p) & (p < 8 * j - 23 + 70)
  np.testing.assert_array_equal(changed, np.outer(sees(48), sees(20)))


def test_output_depends_on_input_and_size_is_checked():
  x = _images(0, (1, 32, 32, 1))
  g_vars = G.init(jax.random.key(1), x, train=False)
  apply = jax.jit(lambda x: G.apply(g_vars, x, train=False))
  a, b = apply(x), apply(x.at[0, 3, 3, 0].add(0.5))
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match='divisible by 32'):
    G.apply(g_vars, jnp.zeros((1, 48, 48, 1)), train=False)
  with pytest.raises(ValueError, match='unknown norm'):
    pix2pix.UNetGenerator(num_downs=5, norm='layer').init(
        jax.random.key(0), x, train=False)


def test_dropout_only_in_train_mode():
  # num_downs=6 has one dropout level (4) in the reference layout.
  x = _images(0, (2, 64, 64, 1))

  def run(use_dropout):
    g = pix2pix.UNetGenerator(num_downs=6, ngf=2, use_dropout=use_dropout)
    v = g.init(jax.random.key(1), x, train=False)
    train = jax.jit(lambda k: g.apply(v, x, train=True, rngs={'dropout': k},
                                      mutable=['batch_stats'])[0])
    evaluate = jax.jit(lambda: g.apply(v, x, train=False))
    return (train(jax.random.key(2)), train(jax.random.key(3)), evaluate(),
            evaluate())

  a, b, c, d = run(True)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)
  a, b, _, _ = run(False)
  np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_keeps_float32_params():
  g = pix2pix.UNetGenerator(num_downs=5, ngf=4, dtype=jnp.bfloat16)
  d = pix2pix.PatchDiscriminator(ndf=4, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
  for net, args in ((g, (x,)), (d, (x, x))):
    v = jax.eval_shape(lambda k, *a, n=net: n.init(k, *a, train=False),
                       jax.random.key(0), *args)
    assert {p.dtype for p in jax.tree.leaves(v)} == {jnp.dtype('float32')}
    out, inter = jax.eval_shape(
        lambda v, *a, n=net: n.apply(v, *a, train=False,
                                     capture_intermediates=True), v, *args)
    assert out.dtype == jnp.float32
    hidden = inter['intermediates']['down1' if net is g else 'conv1']
    assert hidden['__call__'][0].dtype == jnp.bfloat16
