"""SRResNet and SRGAN discriminator: shapes, pixel shuffle, wiring, counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import srresnet

_count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))


def _conv(k, cin, cout, bias):
  return k * k * cin * cout + (cout if bias else 0)


def _g_params(scale, channels, features=64, blocks=16, per_channel=False):
  """SRResNet parameter count from the layer list (docs/models/srresnet.md)."""
  prelu = features if per_channel else 1
  bn = 2 * features                                    # gamma, beta
  head = _conv(9, channels, features, True) + prelu
  block = 2 * _conv(3, features, features, False) + 2 * bn + prelu
  trunk_end = _conv(3, features, features, False) + bn
  up = _conv(3, features, 4 * features, True) + prelu
  tail = _conv(9, features, channels, True)
  n_up = int(np.log2(scale))
  return head + blocks * block + trunk_end + n_up * up + tail


def _d_params(channels, features=64, dense_in=None):
  """SRGAN discriminator parameter count; dense_in defaults to 6*6*8f."""
  maps = [features * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
  total = _conv(3, channels, maps[0], True)
  for cin, cout in zip(maps[:-1], maps[1:]):
    total += _conv(3, cin, cout, False) + 2 * cout
  dense_in = 6 * 6 * maps[-1] if dense_in is None else dense_in
  return total + dense_in * 1024 + 1024 + 1024 + 1


def _torch_pixel_shuffle(x_nchw, r):
  """torch.nn.PixelShuffle by its definition, element by element (NCHW)."""
  n, crr, h, w = x_nchw.shape
  c = crr // (r * r)
  out = np.zeros((n, c, h * r, w * r), x_nchw.dtype)
  for ci in range(c):
    for i in range(r):
      for j in range(r):
        out[:, ci, i::r, j::r] = x_nchw[:, ci * r * r + i * r + j]
  return out


@pytest.mark.parametrize('r,c', [(2, 3), (3, 2), (2, 64)])
def test_pixel_shuffle_matches_torch_order(r, c):
  x = np.random.default_rng(0).normal(size=(2, 4, 5, c * r * r))
  x = x.astype(np.float32)
  want = _torch_pixel_shuffle(x.transpose(0, 3, 1, 2), r).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(srresnet.pixel_shuffle(x, r)), want)


def test_pixel_shuffle_rejects_bad_channels():
  with pytest.raises(ValueError, match='divisible'):
    srresnet.pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


@pytest.mark.parametrize('scale', [1, 2, 4])
@pytest.mark.parametrize('channels', [1, 3])
def test_srresnet_shapes_and_parameter_counts(scale, channels):
  model = srresnet.SRResNet(scale=scale, channels=channels)
  x = jax.ShapeDtypeStruct((2, 24, 20, channels), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert out.shape == (2, 24 * scale, 20 * scale, channels)
  assert out.dtype == jnp.float32
  assert _count(variables['params']) == _g_params(scale, channels)
  # Running mean and variance of every BatchNorm: 2 per block + trunk_bn.
  assert _count(variables['batch_stats']) == 2 * 64 * (2 * 16 + 1)


def test_srresnet_x4_gray_parameter_count_by_hand():
  # head 9*9*1*64+64 + prelu 1 = 5,249; block 2*3*3*64*64 + 2*128 + 1 =
  # 73,985 (x16 = 1,183,760); trunk 3*3*64*64 + 128 = 36,992; up stage
  # 3*3*64*256 + 256 + 1 = 147,713 (x2 = 295,426); tail 9*9*64 + 1 = 5,185.
  assert _g_params(4, 1) == 5_249 + 1_183_760 + 36_992 + 295_426 + 5_185
  assert _g_params(4, 1) == 1_526_612
  model = srresnet.SRResNet(prelu_per_channel=True)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
  assert _count(variables['params']) == _g_params(4, 1, per_channel=True)
  assert variables['params']['head_prelu']['alpha'].shape == (64,)


def test_scale_must_be_power_of_two():
  model = srresnet.SRResNet(num_blocks=0, features=4, scale=3)
  with pytest.raises(ValueError, match='power of two'):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                   jax.ShapeDtypeStruct((1, 4, 4, 1), jnp.float32))


def _tiny(**kwargs):
  return srresnet.SRResNet(num_blocks=2, features=8, scale=2, **kwargs)


def _module_inputs(model, variables, x, names):
  """Runs `model` in eval mode; returns (output, {name: its first input})."""
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.name in names:
      seen.setdefault(context.module.name, args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    out = model.apply(variables, x, train=False)
  return out, seen


def test_residual_and_long_skip_wiring():
  model = _tiny()
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1), minval=-1, maxval=1)
  variables = model.init(jax.random.key(0), x, train=False)
  # Random BatchNorm affine params and statistics so no branch is trivially 0.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  variables = jax.tree.unflatten(tree, [
      l + 0.3 * jnp.abs(jax.random.normal(k, l.shape))
      for l, k in zip(leaves, keys)])
  names = ('block1', 'trunk_conv', 'up0')
  _, seen = _module_inputs(model, variables, x, names)
  _, inter = model.apply(variables, x, train=False,
                         capture_intermediates=True)
  inter = inter['intermediates']
  head = inter['head_prelu']['__call__'][0]
  block0 = inter['block0']['__call__'][0]
  block1 = inter['block1']['__call__'][0]
  # block1 = its input + its BN branch; up0 input = trunk_bn + head output.
  np.testing.assert_allclose(seen['block1'], block0)
  np.testing.assert_allclose(
      block1, block0 + inter['block1']['bn1']['__call__'][0], rtol=1e-6)
  np.testing.assert_allclose(seen['trunk_conv'], block1)
  np.testing.assert_allclose(
      seen['up0'], head + inter['trunk_bn']['__call__'][0], rtol=1e-6)

  # With the last conv of every block and the trunk conv zeroed (and zero
  # BatchNorm shifts), the whole trunk is the identity: up0 sees the head.
  # A mutable copy of the nested dicts (leaves shared).
  params = jax.tree.map(lambda a: a, variables['params'])
  for name in ('block0', 'block1'):
    params[name]['conv1']['kernel'] = jnp.zeros_like(
        params[name]['conv1']['kernel'])
    params[name]['bn1']['bias'] = jnp.zeros_like(params[name]['bn1']['bias'])
  params['trunk_conv']['kernel'] = jnp.zeros_like(
      params['trunk_conv']['kernel'])
  params['trunk_bn']['bias'] = jnp.zeros_like(params['trunk_bn']['bias'])
  stats = jax.tree.map(jnp.zeros_like, variables['batch_stats'])
  for name in ('block0', 'block1'):
    stats[name]['bn0']['var'] = jnp.ones_like(stats[name]['bn0']['var'])
    stats[name]['bn1']['var'] = jnp.ones_like(stats[name]['bn1']['var'])
  stats['trunk_bn']['var'] = jnp.ones_like(stats['trunk_bn']['var'])
  zeroed = {'params': params, 'batch_stats': stats}
  _, seen = _module_inputs(model, zeroed, x, ('up0',))
  _, inter = model.apply(zeroed, x, train=False, capture_intermediates=True)
  np.testing.assert_array_equal(
      seen['up0'], inter['intermediates']['head_prelu']['__call__'][0])


def test_prelu_matches_torch_definition():
  x = jnp.array([[-2.0, -0.5, 0.0, 1.5]])
  shared = srresnet.PReLU()
  v = shared.init(jax.random.key(0), x)
  assert v['params']['alpha'].shape == ()
  np.testing.assert_allclose(shared.apply(v, x), [[-0.5, -0.125, 0.0, 1.5]])
  per = srresnet.PReLU(per_channel=True)
  v = {'params': {'alpha': jnp.array([0.1, 0.2, 0.3, 0.4])}}
  np.testing.assert_allclose(per.apply(v, x), [[-0.2, -0.1, 0.0, 1.5]],
                             rtol=1e-6)


@pytest.mark.parametrize('channels', [1, 3])
def test_discriminator_flatten_96(channels):
  model = srresnet.SRGANDiscriminator()
  x = jax.ShapeDtypeStruct((3, 96, 96, channels), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (3,) and logits.dtype == jnp.float32
  # The paper's 6x6x512 map feeds dense0.
  assert variables['params']['dense0']['kernel'].shape == (6 * 6 * 512, 1024)
  assert _count(variables['params']) == _d_params(channels)


def test_discriminator_parameter_count_by_hand():
  # convs: 640 + (36,864+128) + (73,728+256) + (147,456+256) + (294,912+512)
  # + (589,824+512) + (1,179,648+1,024) + (2,359,296+1,024) = 4,686,080;
  # dense 18,432*1024 + 1024 = 18,875,392; dense 1024 + 1 = 1,025.
  assert _d_params(1) == 4_686_080 + 18_875_392 + 1_025 == 23_562_497


@pytest.mark.parametrize('size', [96, 384])
def test_discriminator_avg_pool_any_size(size):
  model = srresnet.SRGANDiscriminator(pool='avg', features=96)
  x = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2,)
  # Independent of the input size: dense0 sees 8 * 96 pooled features.
  assert _count(variables['params']) == _d_params(1, 96, dense_in=8 * 96)


def test_discriminator_flatten_depends_on_size_and_runs():
  model = srresnet.SRGANDiscriminator(features=4)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1), minval=-1)
  variables = jax.jit(
      lambda x: model.init(jax.random.key(1), x, train=False))(x)
  assert _count(variables['params']) == _d_params(1, 4, dense_in=2 * 2 * 32)
  logits, _ = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats']))(variables, x)
  assert logits.shape == (2,) and bool(jnp.all(jnp.isfinite(logits)))
  with pytest.raises(ValueError, match='pool'):
    jax.eval_shape(lambda x: srresnet.SRGANDiscriminator(
        features=4, pool='max').init(jax.random.key(1), x), x)


def test_bfloat16_compute_keeps_float32_params():
  x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
  model = srresnet.SRResNet(num_blocks=2, features=8, dtype=jnp.bfloat16)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {
      jnp.dtype('float32')}
  out, inter = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True),
      variables, x)
  assert out.dtype == jnp.float32
  assert inter['intermediates']['block0']['__call__'][0].dtype == jnp.bfloat16
  disc = srresnet.SRGANDiscriminator(features=4, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: disc.init(jax.random.key(0), x, train=False), x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {
      jnp.dtype('float32')}
  logits = jax.eval_shape(
      lambda v, x: disc.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.float32


def test_one_sgd_step_reduces_mse():
  model = _tiny()
  lr_key, hr_key = jax.random.split(jax.random.key(3))
  lr = jax.random.uniform(lr_key, (4, 8, 8, 1), minval=-1, maxval=1)
  hr = jax.random.uniform(hr_key, (4, 16, 16, 1), minval=-1, maxval=1)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False)
                      )(lr)
  stats = variables['batch_stats']

  def loss_fn(params):
    sr, new = model.apply({'params': params, 'batch_stats': stats}, lr,
                          train=True, capture_intermediates=True,
                          mutable=['batch_stats', 'intermediates'])
    return jnp.mean((sr - hr) ** 2), new

  @jax.jit
  def step(params):
    (loss0, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    return loss0, loss_fn(params)[0], new

  loss0, loss1, new = step(variables['params'])
  assert float(loss1) < float(loss0)
  # Torch momentum 0.1 (Flax 0.9): from 0 the running mean moves 10% of the
  # way to the batch mean.
  trunk = new['intermediates']['trunk_conv']['__call__'][0]
  np.testing.assert_allclose(new['batch_stats']['trunk_bn']['mean'],
                             0.1 * jnp.mean(trunk, axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-7)
