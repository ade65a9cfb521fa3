"""StarGAN: shapes, label conditioning, instance norm, losses, dtypes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import losses
from medjax.models import stargan

# Narrow 16x16 variants keep CPU tests fast.
G = stargan.Generator(conv_dim=4, c_dim=3, repeat_num=2, channels=1)
D = stargan.Discriminator(image_size=16, conv_dim=4, c_dim=3, repeat_num=3)


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@functools.cache
def _init():
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1,
                         maxval=1)
  c = jax.nn.one_hot(jnp.array([0, 2]), 3)
  g_vars = jax.jit(G.init)(jax.random.key(1), x, c)
  d_vars = jax.jit(D.init)(jax.random.key(2), x)
  return x, c, g_vars, d_vars


_g = jax.jit(G.apply)
_d = jax.jit(D.apply)


def test_shapes_and_reference_parameter_counts():
  x, c, g_vars, d_vars = _init()
  out = _g(g_vars, x, c)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert np.abs(np.asarray(out)).max() <= 1.0
  src, cls = _d(d_vars, out)
  assert src.shape == (2, 2, 2, 1) and cls.shape == (2, 3)
  assert src.dtype == cls.dtype == jnp.float32
  assert d_vars['params']['conv_cls']['kernel'].shape == (2, 2, 16, 3)
  # The reference defaults (RGB, c_dim=5, 128x128), counted by hand from its
  # model.py: G 8,430,528 and D 44,762,048 parameters.
  big = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  g = stargan.Generator(channels=3)
  g_shapes = jax.eval_shape(g.init, jax.random.key(0), big,
                            jax.ShapeDtypeStruct((1, 5), jnp.float32))
  assert _count(g_shapes) == 8_430_528
  d = stargan.Discriminator()
  d_shapes = jax.eval_shape(d.init, jax.random.key(0), big)
  assert _count(d_shapes) == 44_762_048
  src, cls = jax.eval_shape(d.apply, d_shapes, big)
  assert src.shape == (1, 2, 2, 1) and cls.shape == (1, 5)


def test_generator_depends_on_target_label():
  x, c, g_vars, _ = _init()
  a = _g(g_vars, x, c)
  b = _g(g_vars, x, c[::-1])
  assert not np.allclose(a[0], b[0])
  with pytest.raises(ValueError, match='labels must be'):
    G.apply(g_vars, x, c[:, :2])


def test_discriminator_validates_image_size():
  x = jnp.zeros((1, 24, 24, 1))
  with pytest.raises(ValueError, match='divisible by 2\\*\\*repeat_num'):
    stargan.Discriminator(image_size=24, repeat_num=4).init(
        jax.random.key(0), x)
  with pytest.raises(ValueError, match='expected 16x16'):
    D.init(jax.random.key(0), x)


def test_instance_norm_is_per_image_and_channel():
  x, c, g_vars, _ = _init()
  _, inter = G.apply(g_vars, x, c, capture_intermediates=True)
  h = np.asarray(inter['intermediates']['norm0']['__call__'][0])
  assert h.shape == (2, 16, 16, 4)
  # Scale 1 and bias 0 at init: zero mean and unit variance per (image, ch).
  np.testing.assert_allclose(h.mean((1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(h.var((1, 2)), 1.0, atol=1e-3)
  # No batch statistics: an image's output ignores the rest of the batch.
  other = x.at[1].set(5.0 * x[1] + 1.0)
  np.testing.assert_allclose(_g(g_vars, other, c)[0], _g(g_vars, x, c)[0],
                             atol=1e-6)


def test_loss_helpers_on_hand_computed_values():
  logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
  want = -(math.log(0.75) + math.log(0.25)) / 2
  np.testing.assert_allclose(
      stargan.domain_classification_loss(logits, jnp.array([1, 0])), want,
      rtol=1e-6)
  np.testing.assert_allclose(
      stargan.domain_classification_loss(
          logits, jnp.array([[0.0, 1.0], [1.0, 0.0]])), want, rtol=1e-6)
  # Multi-label: BCE summed over attributes, averaged over the batch.
  logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])
  labels = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  want = (2 * math.log(2) + (-math.log(0.75) + math.log(2))) / 2
  np.testing.assert_allclose(
      stargan.domain_classification_loss(logits, labels, multi_label=True),
      want, rtol=1e-6)
  np.testing.assert_allclose(
      stargan.reconstruction_loss(jnp.array([0.0, 1.0, -1.0, 0.5]),
                                  jnp.array([1.0, 1.0, 1.0, 0.5])), 0.75)


def test_gradient_penalty_on_the_src_map():
  # The shared WGAN-GP helper differentiates the summed PatchGAN map, as the
  # reference's gradient_penalty does with grad_outputs of ones.
  x, c, g_vars, d_vars = _init()
  fake = _g(g_vars, x, c[::-1])
  gp = jax.jit(lambda v: losses.wgan_gp(lambda y: D.apply(v, y)[0], x, fake,
                                        jax.random.key(5)))
  value = gp(d_vars)
  assert value.shape == () and np.isfinite(value) and value > 0


def test_bfloat16_compute_keeps_float32_params():
  g = stargan.Generator(conv_dim=4, c_dim=3, repeat_num=1, dtype=jnp.bfloat16)
  d = stargan.Discriminator(image_size=16, conv_dim=4, c_dim=3, repeat_num=2,
                            dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32)
  c = jax.ShapeDtypeStruct((1, 3), jnp.float32)
  for net, args, layer in ((g, (x, c), 'down_norm1'), (d, (x,), 'conv1')):
    v = jax.eval_shape(net.init, jax.random.key(0), *args)
    assert {p.dtype for p in jax.tree.leaves(v)} == {jnp.dtype('float32')}
    out, inter = jax.eval_shape(
        lambda v, *a, n=net: n.apply(v, *a, capture_intermediates=True),
        v, *args)
    assert all(o.dtype == jnp.float32 for o in jax.tree.leaves(out))
    assert inter['intermediates'][layer]['__call__'][0].dtype == jnp.bfloat16
