"""Class-conditional DCGAN: shapes, label dependence, label validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import cdcgan
from medjax.models import dcgan

# The tiny 16x16 layout of tests/conftest.py.
LAYERS = dict(kernels=(4, 4, 4), paddings=(0, 1, 1))
G = cdcgan.Generator(num_classes=3, embed_dim=5, features=(16, 8),
                     strides=(1, 2, 2), **LAYERS)
D = cdcgan.Discriminator(num_classes=3, features=(8, 16), strides=(2, 2, 1),
                         paddings=(1, 1, 0), kernels=(4, 4, 4))
Y = jnp.array([0, 1, 2, 1])


@functools.cache
def _init():
  z = jax.random.normal(jax.random.key(0), (4, 8))
  g_vars = jax.jit(lambda k, z: G.init(k, z, Y, train=False))(
      jax.random.key(1), z)
  x = _g(g_vars, z, Y)
  d_vars = jax.jit(lambda k, x: D.init(k, x, Y, train=False))(
      jax.random.key(2), x)
  return z, g_vars, x, d_vars


_g = jax.jit(lambda v, z, y: G.apply(v, z, y, train=False))
_d = jax.jit(lambda v, x, y: D.apply(v, x, y, train=False))


def test_shapes_and_parameters():
  z, g_vars, x, d_vars = _init()
  assert x.shape == (4, 16, 16, 1) and x.dtype == jnp.float32
  logits = _d(d_vars, x, Y)
  assert logits.shape == (4,) and logits.dtype == jnp.float32
  assert g_vars['params']['embed']['embedding'].shape == (3, 5)
  # The first deconvolution sees z and the label embedding.
  assert g_vars['params']['dcgan']['deconv0']['kernel'].shape == (4, 4, 13, 16)
  # One projection vector per class, the size of phi(x) (4x4x16 here).
  assert d_vars['params']['embed']['embedding'].shape == (3, 4 * 4 * 16)


def test_labels_change_outputs():
  z, g_vars, x, d_vars = _init()
  other = (Y + 1) % 3
  assert not np.allclose(_g(g_vars, z, Y), _g(g_vars, z, other))
  a, b = _d(d_vars, x, Y), _d(d_vars, x, other)
  assert np.all(np.asarray(a) != np.asarray(b))


def test_zero_projection_is_the_unconditional_dcgan():
  _, _, x, d_vars = _init()
  params = dict(d_vars['params'])
  params['embed'] = {'embedding': jnp.zeros_like(
      params['embed']['embedding'])}
  uncond = dcgan.Discriminator(features=(8, 16), strides=(2, 2, 1),
                               paddings=(1, 1, 0), kernels=(4, 4, 4))
  plain = {k: v for k, v in params.items() if k != 'embed'}
  want = jax.jit(lambda p, s, x: uncond.apply(
      {'params': p, 'batch_stats': s}, x, train=False))(
          plain, d_vars['batch_stats'], x)
  got = _d({'params': params, 'batch_stats': d_vars['batch_stats']}, x, Y)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # And the projection term is <e(y), phi(x)>: linear in the embedding.
  params['embed'] = {'embedding': d_vars['params']['embed']['embedding'] * 2}
  doubled = _d({'params': params, 'batch_stats': d_vars['batch_stats']}, x, Y)
  base = _d(d_vars, x, Y)
  np.testing.assert_allclose(doubled - want, 2 * (base - want), rtol=1e-4,
                             atol=1e-7)


def test_label_validation():
  z, g_vars, x, d_vars = _init()
  bad = jnp.array([0, 1, 3, 0])
  with pytest.raises(ValueError, match=r'labels must be in \[0, 3\)'):
    G.apply(g_vars, z, bad, train=False)
  with pytest.raises(ValueError, match=r'labels must be in \[0, 3\)'):
    D.apply(d_vars, x, jnp.array([-1, 0, 0, 0]), train=False)
  with pytest.raises(ValueError, match='integers'):
    D.apply(d_vars, x, Y.astype(jnp.float32), train=False)
  # Under jit the values are unknown: bad labels give NaN, not another class.
  out = np.asarray(_d(d_vars, x, jnp.array([0, 3, -1, 2])))
  assert np.isfinite(out[[0, 3]]).all() and np.isnan(out[[1, 2]]).all()
  assert np.isnan(np.asarray(_g(g_vars, z, bad))[2]).all()


def test_train_mode_gradients_reach_embeddings():
  z, g_vars, _, d_vars = _init()

  def loss(g_params, d_params):
    x, _ = G.apply({'params': g_params, 'batch_stats': g_vars['batch_stats']},
                   z, Y, train=True, mutable=['batch_stats'])
    logits, _ = D.apply({'params': d_params,
                         'batch_stats': d_vars['batch_stats']}, x, Y,
                        train=True, mutable=['batch_stats'])
    return logits.mean()

  g_grads, d_grads = jax.jit(jax.grad(loss, (0, 1)))(g_vars['params'],
                                                      d_vars['params'])
  assert np.abs(np.asarray(g_grads['embed']['embedding'])).sum() > 0
  assert np.abs(np.asarray(d_grads['embed']['embedding'])).sum() > 0
