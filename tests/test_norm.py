"""medjax.models.norm.BatchNorm: nn.BatchNorm's variables and numbers, with
one reduction for the statistics and one for their backward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import config_lib
from medjax import trainers
from medjax.models import norm
from tests.conftest import REPO

_KW = dict(momentum=0.9, epsilon=1e-5,
           scale_init=lambda k, s, d: 1 + 0.1 * jax.random.normal(k, s, d))


def _pair(dtype):
  return (nn.BatchNorm(use_running_average=False, dtype=dtype, **_KW),
          norm.BatchNorm(dtype=dtype, **_KW))


def _loss(module, variables, x, w):
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  return jnp.sum(y.astype(jnp.float32) * w), (y, updates)


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-5),
                                       (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize('shape', [(8, 5, 5, 16), (32, 24)])
def test_matches_flax_batchnorm(dtype, tol, shape):
  ours, flax_bn = _pair(dtype)[1], _pair(dtype)[0]
  x = (jax.random.normal(jax.random.key(1), shape) * 3 + 1).astype(dtype)
  w = jax.random.normal(jax.random.key(2), shape)
  v_ours = ours.init(jax.random.key(0), x)
  v_flax = flax_bn.init(jax.random.key(0), x)
  # The same variables: names, shapes, dtypes and initial values.
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_flax)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b) or
               (a.dtype == b.dtype) or pytest.fail('dtype'), v_ours, v_flax)
  grad = jax.value_and_grad(_loss, argnums=(1, 2), has_aux=True)
  (_, (y_o, up_o)), (gv_o, gx_o) = jax.jit(grad, static_argnums=0)(
      ours, v_ours, x, w)
  (_, (y_f, up_f)), (gv_f, gx_f) = jax.jit(grad, static_argnums=0)(
      flax_bn, v_flax, x, w)
  assert y_o.dtype == y_f.dtype == dtype and gx_o.dtype == dtype

  def close(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
  close(y_o, y_f)
  jax.tree.map(close, up_o, up_f)  # The running statistics' update.
  close(gx_o, gx_f)
  jax.tree.map(close, gv_o['params'], gv_f['params'])
  # Inference with the updated statistics.
  infer = lambda m, v: m.clone(use_running_average=True).apply(
      {**v, **up_o}, x)
  close(infer(ours, v_ours), infer(flax_bn, v_flax))


def test_gradient_through_the_statistics():
  """The mean and var outputs carry their own gradient terms (numerical
  check of the custom VJP on a loss of y, mean and var)."""
  x = jax.random.normal(jax.random.key(3), (6, 3, 4)) * 2 + 0.5
  scale, bias = jnp.array([1.5, 0.5, 2.0, 1.0]), jnp.array([0.1, 0, -1, 2])
  w = jax.random.normal(jax.random.key(4), x.shape)

  def loss(x, scale, bias, custom):
    if custom:
      y, mean, var = norm._train_norm(x, scale, bias, 1e-5, jnp.float32)
    else:
      mean = x.mean((0, 1))
      var = jnp.maximum(0.0, (x * x).mean((0, 1)) - mean * mean)
      y = (x - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias
    return jnp.sum(y * w) + jnp.sum(mean * 3.0) + jnp.sum(var * bias)
  got = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias, True)
  want = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias, False)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def _reductions(module, variables, x, w):
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda v, x: _loss(module, v, x, w)[0], argnums=(0, 1)))(variables, x)
  return str(jaxpr).count('reduce_sum')


def test_one_reduction_each_way():
  """What the module is for: the statistics and their backward pass are one
  reduction each (Flax: mean, mean of squares; then sums of dy and
  dy * x_hat, each its own), which a GPU runs as fewer kernels."""
  x = jax.random.normal(jax.random.key(1), (4, 3, 3, 8))
  w = jax.random.normal(jax.random.key(2), x.shape)
  flax_bn, ours = _pair(jnp.float32)
  v = ours.init(jax.random.key(0), x)
  # One more in both: the test loss's own sum.
  assert _reductions(ours, v, x, w) == 1 + 2
  assert _reductions(flax_bn, v, x, w) >= 1 + 4


def test_batch_norm_picks_by_environment(monkeypatch):
  """MEDJAX_BATCHNORM, read when a model is traced: nn.BatchNorm unless
  'fused' (untimed on GPUs yet); the same variables either way."""
  monkeypatch.delenv('MEDJAX_BATCHNORM', raising=False)
  layer = norm.batch_norm(use_running_average=False, momentum=0.9, name='bn')
  assert type(layer) is nn.BatchNorm and layer.momentum == 0.9
  monkeypatch.setenv('MEDJAX_BATCHNORM', 'fused')
  assert type(norm.batch_norm(momentum=0.9)) is norm.BatchNorm
  monkeypatch.setenv('MEDJAX_BATCHNORM', 'fast')
  with pytest.raises(ValueError, match='MEDJAX_BATCHNORM'):
    norm.batch_norm()


def test_second_order_gradients_match_flax():
  """A gradient penalty on a BatchNorm discriminator differentiates the
  backward pass (the custom VJP's is plain jnp, so it can be)."""
  x = jax.random.normal(jax.random.key(5), (6, 4, 4, 8)) * 2 + 1
  w = jax.random.normal(jax.random.key(6), x.shape)
  flax_bn, ours = _pair(jnp.float32)
  v = ours.init(jax.random.key(0), x)

  def penalty(module, v):
    gx = jax.grad(lambda x: _loss(module, v, x, w)[0])(x)
    return jnp.sum(gx * gx)
  got = jax.jit(jax.grad(penalty, argnums=1), static_argnums=0)(ours, v)
  want = jax.jit(jax.grad(penalty, argnums=1), static_argnums=0)(flax_bn, v)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=2e-4, atol=1e-5), got['params'], want['params'])


@pytest.mark.parametrize('name,overrides', [
    ('dcgan_brain', {}),
    ('srgan_brain', {'model.sr.num_blocks': 2, 'model.sr.features': 8,
                     'sr.hr_crop': 24, 'sr.content_loss': 'mse'}),
])
def test_train_steps_match_flax(name, overrides, monkeypatch):
  """Whole train steps (D and G updates, running statistics) with the fused
  BatchNorm and with nn.BatchNorm: the same losses over two steps, the same
  state after the first."""
  config = config_lib.load_config_file(f'{REPO}/configs/{name}.py')
  for key, value in overrides.items():
    parent, leaf = key.rsplit('.', 1)
    node = config
    for part in parent.split('.'):
      node = node[part]
    node[leaf] = value
  if config.model.name in config_lib.SR_MODELS:
    config.dataset.image_size = config.sr.hr_crop
  size = config.dataset.image_size
  images = np.random.default_rng(0).integers(0, 256, (4, size, size, 1),
                                             np.uint8)
  states, metrics = {}, {}
  for mode in ('fused', 'flax'):
    monkeypatch.setenv('MEDJAX_BATCHNORM', mode)
    task = trainers.get_task(config)
    state = jax.jit(task.init)(jax.random.key(0))
    step = jax.jit(task.train_step)
    metrics[mode] = []
    for i in range(2):
      state, m = step(state, {'image': images}, jax.random.key(i),
                      task.consts())
      metrics[mode].append(m.compute())
      if i == 0:
        states[mode] = state
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3),
               metrics['fused'], metrics['flax'])
  # Adam's first update moves a weight by about its learning rate (1e-4 -
  # 2e-4 here) whatever the gradient's size, so float32 rounding in tiny
  # gradients shows at that scale (the running statistics come from the
  # batch before the update: equal to rounding).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-4),
               states['fused'], states['flax'])


@pytest.mark.parametrize('mode', ['flax', 'fused'])
def test_batch_groups_are_separate_calls(mode, monkeypatch):
  """Inside `batch_groups(2)`, one call on [a; b] is a call on a, then one
  on b: outputs, gradients and the running statistics (to rounding)."""
  monkeypatch.setenv('MEDJAX_BATCHNORM', mode)
  a = jax.random.normal(jax.random.key(1), (4, 3, 3, 8)) * 2 + 1
  b = jax.random.normal(jax.random.key(2), (4, 3, 3, 8)) * 0.5 - 1
  w = jax.random.normal(jax.random.key(3), (8, 3, 3, 8))
  layer = norm.batch_norm(use_running_average=False, momentum=0.9, name='bn')
  v = layer.init(jax.random.key(0), a)

  def apart(params):
    y1, u1 = layer.apply({**v, 'params': params}, a, mutable=['batch_stats'])
    y2, u2 = layer.apply({**v, **u1, 'params': params}, b,
                         mutable=['batch_stats'])
    return jnp.sum(jnp.concatenate([y1, y2]) * w), u2

  def together(params):
    with norm.batch_groups(2):
      module = norm.batch_norm(use_running_average=False, momentum=0.9,
                               name='bn')
      y, u = module.apply({**v, 'params': params},
                          jnp.concatenate([a, b]), mutable=['batch_stats'])
    return jnp.sum(y * w), u
  (l1, u1), g1 = jax.value_and_grad(apart, has_aux=True)(v['params'])
  (l2, u2), g2 = jax.value_and_grad(together, has_aux=True)(v['params'])
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  for x, y in zip(jax.tree.leaves((u2, g2)), jax.tree.leaves((u1, g1))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  with norm.batch_groups(3), pytest.raises(ValueError, match='divide'):
    norm.batch_norm(momentum=0.9).init(jax.random.key(0), a)
