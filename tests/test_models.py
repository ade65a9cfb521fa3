"""DCGAN shapes and dtypes, and the CPU convolution weight gradient."""

import collections
import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

import medjax
from medjax import config_lib
from medjax import trainers
from medjax.models import conv
from medjax.models import dcgan
from medjax.trainers import gan
from tests.conftest import REPO


def _config(name):
  return config_lib.load_config_file(f'{REPO}/configs/{name}.py')


@pytest.mark.parametrize('name,size', [('dcgan_brain', 64),
                                       ('dcgan256_brain', 256)])
def test_generator_and_discriminator_shapes(name, size):
  task = gan.GANTask(_config(name))
  state = jax.eval_shape(task.init, jax.random.key(0))
  z = jax.ShapeDtypeStruct((3, 100), jnp.float32)
  out = jax.eval_shape(task.generate, state.g_params, state.g_stats, z)
  assert out.shape == (3, size, size, 1) and out.dtype == jnp.float32
  logits = jax.eval_shape(
      lambda p, s, x: task.discriminator.apply(
          {'params': p, 'batch_stats': s}, x, train=False),
      state.d_params, state.d_stats,
      jax.ShapeDtypeStruct((3, size, size, 1), jnp.float32))
  assert logits.shape == (3,)
  # The PyTorch reference DCGAN (nc=1, nz=100) has these parameter counts,
  # BatchNorm affine parameters included.
  if size == 64:
    count = lambda t: sum(x.size for x in jax.tree.leaves(t))
    assert count(state.g_params) == 3_574_656
    assert count(state.d_params) == 2_763_520


def test_layer_arithmetic_matches_pytorch():
  assert dcgan.conv_out_size(1, (4, 4, 4, 4, 4), (1, 2, 2, 2, 2),
                             (0, 1, 1, 1, 1), transpose=True) == 64
  assert dcgan.conv_out_size(1, (4, 4, 4, 4, 10), (1, 2, 2, 2, 8),
                             (0, 1, 1, 1, 1), transpose=True) == 256
  assert dcgan.conv_out_size(256, (10, 4, 4, 4, 4), (8, 2, 2, 2, 1),
                             (1, 1, 1, 1, 0), transpose=False) == 1


def test_mismatched_layers_give_clear_error():
  config = _config('dcgan_brain')
  config.dataset.image_size = 128
  with pytest.raises(ValueError, match='64x64 images but dataset.image_size'):
    gan.GANTask(config)


def test_bfloat16_compute_keeps_float32_params():
  config = _config('dcgan_brain')
  config.model.dtype = 'bfloat16'
  task = gan.GANTask(config)
  state = jax.eval_shape(task.init, jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(state.g_params)} == {jnp.dtype('float32')}
  hidden = jax.eval_shape(
      lambda p, s, z: task.generator.apply(
          {'params': p, 'batch_stats': s}, z, train=False,
          capture_intermediates=True)[1]['intermediates']['deconv0'],
      state.g_params, state.g_stats,
      jax.ShapeDtypeStruct((2, 100), jnp.float32))
  assert hidden['__call__'][0].dtype == jnp.bfloat16


def test_transposed_conv_equals_pytorch_definition():
  # PyTorch ConvTranspose2d(k=4, s=2, p=1): scatter each input pixel times the
  # kernel into the output at (s*h - p + i, s*w - p + j).
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  w_torch = rng.normal(size=(4, 4, 2, 5)).astype(np.float32)  # (kh,kw,I,O)
  k, s, p = 4, 2, 1
  h_out = (3 - 1) * s + k - 2 * p
  want = np.zeros((1, h_out + 2 * k, h_out + 2 * k, 5), np.float32)
  for h in range(3):
    for w in range(3):
      for i in range(k):
        for j in range(k):
          want[0, k + s * h - p + i, k + s * w - p + j] += x[0, h, w] @ w_torch[i, j]
  want = want[:, k:k + h_out, k:k + h_out]
  # Flax's kernel is PyTorch's flipped in space.
  got = conv.conv_general_dilated(
      jnp.asarray(x), jnp.asarray(w_torch[::-1, ::-1]), (1, 1),
      ((k - 1 - p, k - 1 - p),) * 2, lhs_dilation=(s, s),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('h,k,s,pad,d', [
    (9, 3, 1, (1, 1), 1), (10, 4, 2, (1, 1), 1), (11, 3, 2, (0, 2), 1),
    (4, 4, 1, (2, 2), 2), (6, 10, 1, (8, 8), 8), (1, 4, 1, (3, 3), 1),
    (7, 5, 1, (1, 3), 3)])
@pytest.mark.parametrize('cin,cout', [(3, 5), (5, 2)])  # Widening, narrowing.
def test_fast_weight_gradient_equals_xla(h, k, s, pad, d, cin, cout,
                                        monkeypatch):
  monkeypatch.setattr(conv, 'TAPS_MIN_AREA', 0)  # Small maps take it too.
  x = jax.random.normal(jax.random.key(0), (2, h, h + 1, cin))
  w = jax.random.normal(jax.random.key(1), (k, k, cin, cout))
  dn = ('NHWC', 'HWIO', 'NHWC')

  def loss(fn):
    return lambda x, w: (fn(x, w, (s, s), (pad, pad), lhs_dilation=(d, d),
                            dimension_numbers=dn) ** 2).sum()

  want = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.grad(loss(conv.conv_general_dilated), (0, 1))(x, w)
  for a, b in zip(want, got):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
  # The k*k-matmul formula itself, also where the layer keeps XLA's (strided).
  y, vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      x, w, (s, s), (pad, pad), lhs_dilation=(d, d), dimension_numbers=dn), w)
  (want_dw,) = vjp(y)
  np.testing.assert_allclose(
      conv.weight_grad(x, y, w.shape, (s, s), (pad, pad), (d, d)), want_dw,
      rtol=1e-5, atol=1e-5 * np.abs(want_dw).max())


def test_gpu_weight_gradient_multiplies_in_bfloat16_sums_in_float32(
    monkeypatch):
  """Under the GPU rules the k*k-matmul weight gradient of bfloat16 tensors
  feeds them to the dots as they are, with float32 accumulation (bf16 x
  bf16 products are exact in float32: the same sums as casting first, at
  half the bytes of the taps), while the CPU rule casts first (XLA:CPU has
  no bf16 x bf16 -> f32 dot)."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 8), jnp.bfloat16)
  dy = jax.random.normal(jax.random.key(1), (2, 10, 12, 3), jnp.bfloat16)
  args = (x, dy, (4, 4, 8, 3), (1, 1), ((2, 2), (2, 2)), (2, 2))
  got = {}
  for rule in ('cpu', 'eigen') + conv.GPU_RULES:
    monkeypatch.setattr(conv, 'forms_rule', lambda rule=rule: rule)
    # A new function each time: jax caches traces per function.
    jaxpr = jax.make_jaxpr(lambda x, dy: conv.weight_grad(x, dy, *args[2:]))(
        *args[:2])
    dots = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
    assert len(dots) == 16 and all(
        e.params['preferred_element_type'] == jnp.float32 for e in dots)
    operand_types = {v.aval.dtype for e in dots for v in e.invars}
    assert operand_types == {jnp.dtype(jnp.float32 if rule in ('cpu', 'eigen')
                                       else jnp.bfloat16)}
    got[rule] = conv.weight_grad(*args)
    assert got[rule].dtype == jnp.float32
  np.testing.assert_allclose(got['gpu'], got['cpu'], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got['eigen'], got['cpu'])
  for rule in conv.GPU_RULES:
    np.testing.assert_array_equal(got[rule], got['gpu'])


@pytest.mark.parametrize('h,k,s,pad,transposed', [
    (8, 4, 2, (1, 1), False), (9, 4, 2, (2, 1), False), (8, 6, 3, (1, 2), False),
    (4, 4, 2, (2, 2), True), (5, 6, 3, (3, 4), True), (3, 4, 2, (3, 3), True)])
def test_strided_and_transposed_rewrites_equal_xla(h, k, s, pad, transposed):
  """Space-to-depth (strided) and phase (transposed) forms: same values."""
  x = jax.random.normal(jax.random.key(0), (2, h, h + 2, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))
  dn = ('NHWC', 'HWIO', 'NHWC')
  strides, dil = ((1, 1), (s, s)) if transposed else ((s, s), (1, 1))
  want = lax.conv_general_dilated(x, w, strides, (pad, pad), lhs_dilation=dil,
                                  dimension_numbers=dn)
  got = (conv._transposed_as_phases(x, w, dil, (pad, pad), None) if transposed
         else conv._strided_as_stride1(x, w, strides, (pad, pad), None))
  assert got is not None  # These shapes take the rewrite.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('h,k,s,d,cin,cout,cpu,gpu', [
    (48, 3, 1, 1, 8, 8, True, False),   # Large map: k*k-matmul dW on CPU.
    (48, 3, 1, 1, 8, 16, True, False),
    (47, 3, 1, 1, 8, 8, False, False),  # 47x47 output: XLA's is as fast.
    (48, 3, 1, 1, 8, 4, False, False),  # Thin output: XLA's is faster.
    (4, 4, 1, 2, 8, 4, True, True),     # Transposed, any size.
    (8, 4, 2, 1, 8, 8, True, True),     # Strided, k % s == 0: s2d dx.
    (8, 3, 2, 1, 8, 8, False, False)])  # Strided, k % s != 0: no gain.
def test_forms_only_where_they_win(h, k, s, d, cin, cout, cpu, gpu,
                                   monkeypatch):
  x = jnp.zeros((2, h, h, cin))
  w = jnp.zeros((k, k, cin, cout))
  pad = ((k - 1, k - 1),) * 2 if d > 1 else ((k // 2, (k - 1) // 2),) * 2
  # 'cudnn', 'cudnn_dw': as 'gpu' (transposed ones through their adjoints);
  # 'eigen' (XLA:CPU's Eigen convolutions) too.
  for rule, want in (('cpu', cpu), ('eigen', gpu), ('gpu', gpu), ('cudnn', gpu),
                     ('cudnn_dw', gpu), (None, False)):
    monkeypatch.setattr(conv, 'forms_rule', lambda rule=rule: rule)

    def loss(x, w):  # A new function per rule: jax caches traces.
      return jnp.sum(conv.conv_general_dilated(
          x, w, (s, s), pad, lhs_dilation=(d, d),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    assert ('custom_vjp_call' in str(jax.make_jaxpr(loss)(x, w))) == want


@pytest.mark.parametrize('h,k,s,pad,cout', [
    (4, 4, 2, ((2, 2), (2, 2)), 3),   # DCGAN's ConvTranspose2d(4, 2, 1).
    (5, 3, 2, ((1, 2), (0, 2)), 1),   # Uneven padding, one output channel.
    (3, 4, 3, ((3, 1), (1, 0)), 2),   # Stride 3.
    (2, 4, 2, ((3, 3), (3, 3)), 2),   # P = k - 1: PyTorch padding 0.
    (3, 4, 2, ((4, 4), (4, 4)), 2)])  # P > k - 1: no adjoint.
def test_transposed_convolution_as_the_adjoint_of_a_strided_one(
    h, k, s, pad, cout, monkeypatch):
  """A transposed convolution is the input gradient of a strided one:
  under 'cudnn' its forward is one convolution with the kernel reversed
  (which XLA's GPU compiler makes cuDNN's backward-data call of the strided
  one) and its weight gradient the strided one's (cuDNN's backward-filter
  call), not k*k tap products as under 'gpu'; 'cudnn_dw' takes that dW and
  the GPU rule's forward. Same values and gradients as lax; without an
  adjoint, both are 'gpu'."""
  x = jax.random.normal(jax.random.key(0), (2, h, h + 1, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, cout))
  adjoint = conv._adjoint_padding(w.shape, (1, 1), pad, (s, s))
  assert (adjoint is None) == (pad[0][0] > k - 1)

  def apply(fn):
    return lambda x, w: fn(x, w, (1, 1), pad, lhs_dilation=(s, s),
                           dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                           precision=lax.Precision.HIGHEST)

  want = apply(lax.conv_general_dilated)(x, w)
  g = jax.random.normal(jax.random.key(2), want.shape)
  want_grads = jax.grad(lambda x, w: jnp.sum(
      apply(lax.conv_general_dilated)(x, w) * g), (0, 1))(x, w)
  for rule in ('gpu', 'cudnn', 'cudnn_dw'):
    monkeypatch.setattr(conv, 'forms_rule', lambda rule=rule: rule)

    def loss(x, w):  # A new function per rule: jax caches traces.
      return jnp.sum(apply(conv.conv_general_dilated)(x, w) * g)
    np.testing.assert_allclose(apply(conv.conv_general_dilated)(x, w), want,
                               rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.grad(loss, (0, 1))(x, w), want_grads):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    grad = str(jax.make_jaxpr(jax.grad(loss, 1))(x, w))
    taps = rule == 'gpu' or adjoint is None  # These maps outweigh w.
    assert grad.count('dot_general[') == (k * k if taps else 0)
    forward = str(jax.make_jaxpr(apply(conv.conv_general_dilated))(x, w))
    assert (' rev[' in forward) == (adjoint is not None and rule == 'cudnn')
    if ' rev[' in forward:
      assert forward.count('conv_general_dilated[') == 1


@pytest.mark.parametrize('b,h,cin,cout,adjoint', [
    (128, 4, 512, 256, True),    # DCGAN's deconv1 at batch 128.
    (1, 2, 1024, 512, False),    # Pix2Pix's inner decoder at batch 1.
    (1, 64, 256, 64, True)])     # Its outer one.
def test_cudnn_rule_keeps_the_taps_where_the_kernel_outweighs_the_maps(
    b, h, cin, cout, adjoint, monkeypatch):
  """Under 'cudnn' a transposed convolution's dW is the adjoint's backward-
  filter call (one convolution) only where the maps outweigh the kernel;
  on small maps with many channels it stays k*k tap products."""
  monkeypatch.setattr(conv, 'forms_rule', lambda: 'cudnn')
  x = jax.ShapeDtypeStruct((b, h, h, cin), jnp.float32)
  w = jax.ShapeDtypeStruct((4, 4, cin, cout), jnp.float32)
  assert conv._maps_outweigh_kernel(x.shape, w.shape) == adjoint

  def loss(x, w):
    return jnp.sum(conv.conv_general_dilated(
        x, w, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  grad = str(jax.make_jaxpr(jax.grad(loss, 1))(x, w))
  assert grad.count('dot_general[') == (0 if adjoint else 16)


def _train_step_jaxpr(name, rule, monkeypatch):
  """The jaxpr of a config's train step at batch 2 under a forms rule."""
  monkeypatch.setattr(conv, 'forms_rule', lambda: rule)
  config = _config(name)
  if config.model.name in config_lib.SR_MODELS:
    config.dataset.image_size = config.sr.hr_crop
    config.sr.vgg_weights = 'random_vgg'
  task = trainers.get_task(config)
  state = jax.eval_shape(task.init, jax.random.key(0))
  consts = jax.eval_shape(task.consts)
  size = config.dataset.image_size
  batch = {'image': jax.ShapeDtypeStruct((2, size, size, 1), jnp.uint8)}
  return str(jax.make_jaxpr(task.train_step)(
      state, batch, jax.random.key(0), consts))


def _convolutions(jaxpr: str) -> collections.Counter:
  """Each convolution equation of a jaxpr's text, variable names dropped."""
  return collections.Counter(
      re.sub(r'\b[a-z]+:', ':', eq) for eq in re.findall(
          r'[a-z]+:\S+ = conv_general_dilated\[[^\]]*\]', jaxpr))


def test_gpu_rule_is_the_rule_each_step_was_timed_with(monkeypatch):
  """On GPU the forms apply where they were measured to win (bench/NOTES.md,
  H200, 2026-11-26): DCGAN's step is the one timed with
  MEDJAX_CONV_FORMS=on (float32 1.7x faster) but for the CPU-only padding
  of D's last, unpadded 4x4 convolution; SRGAN's is the plain lax one that
  was timed fastest (all forms on: 14-37% slower)."""
  cpu, gpu, off = (_convolutions(_train_step_jaxpr('dcgan_brain', r,
                                                   monkeypatch))
                   for r in ('cpu', 'gpu', None))
  assert gpu != off
  only_cpu, only_gpu = cpu - gpu, gpu - cpu
  # D's last convolution: 2 applications (real and fake in one call, fake
  # in the G step: gan.one_d_call), their 2 dx and 1 dW.
  assert sum(only_cpu.values()) == sum(only_gpu.values()) == 5
  assert all('padding=((0, 1), (0, 0))' in eq or 'padding=((3, 2), (3, 3))'
             in eq for eq in only_cpu)
  off, gpu = (_train_step_jaxpr('srgan_brain', r, monkeypatch)
              for r in (None, 'gpu'))
  assert gpu == off


@pytest.mark.parametrize('name', ['dcgan_brain', 'srgan_brain'])
def test_eigen_rule_takes_the_gpu_rules_forms(name, monkeypatch):
  """Under XLA:CPU's Eigen convolutions (medjax.CPU_CONVOLUTIONS 'eigen')
  only the transposed and strided forms win (bench/NOTES.md, 2026-12-07):
  the float32 train steps are the GPU rule's programs."""
  eigen, gpu = (_train_step_jaxpr(name, r, monkeypatch)
                for r in ('eigen', 'gpu'))
  assert eigen == gpu


@pytest.mark.parametrize('h,k,s,padding', [
    (9, 3, 1, ((0, 0), (0, 0))), (10, 3, 2, 'VALID'), (7, 1, 1, 'SAME'),
    (8, 1, 2, ((0, 0), (0, 0))), (11, 3, 2, 'SAME')])
def test_unpadded_convolution_form_equals_xla(h, k, s, padding, monkeypatch):
  """Without padding, the CPU path pads the bottom by a stride and drops the
  extra row (XLA:CPU's unpadded convolutions are slow): same values and
  gradients."""
  monkeypatch.setenv('MEDJAX_CONV_FORMS', 'on')
  x = jax.random.normal(jax.random.key(0), (2, h, h + 1, 4))
  w = jax.random.normal(jax.random.key(1), (k, k, 4, 6))
  dn = ('NHWC', 'HWIO', 'NHWC')

  def loss(fn):
    return lambda x, w: (fn(x, w, (s, s), padding, dimension_numbers=dn)
                         ** 2).sum()
  want = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.grad(loss(conv.conv_general_dilated), (0, 1))(x, w)
  for a, b in zip(want, got):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
  jaxpr = str(jax.make_jaxpr(
      lambda x: conv.conv_general_dilated(x, w, (s, s), padding,
                                          dimension_numbers=dn))(x))
  unpadded = padding == 'VALID' or padding == ((0, 0), (0, 0)) or k == 1
  assert (f'padding=((0, {s}), (0, 0))' in jaxpr) == unpadded


def test_conv_forms_switch(monkeypatch):
  """MEDJAX_CONV_FORMS turns the forms on/off at trace time, same values."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  w = jax.random.normal(jax.random.key(1), (4, 4, 3, 8))
  args = ((1, 1), ((2, 2), (2, 2)), (2, 2))
  dn = ('NHWC', 'HWIO', 'NHWC')

  results = {}
  for choice in ('on', 'off'):
    monkeypatch.setenv('MEDJAX_CONV_FORMS', choice)
    assert conv.forms_rule() == ('cpu' if choice == 'on' else None)

    def loss(x, w):  # A new function: jax caches traces per function.
      return jnp.sum(conv.conv_general_dilated(
          x, w, args[0], args[1], lhs_dilation=args[2],
          dimension_numbers=dn) ** 2)
    jaxpr = str(jax.make_jaxpr(loss)(x, w))
    assert ('custom_vjp_call' in jaxpr) == (choice == 'on')
    results[choice] = jax.grad(loss, (0, 1))(x, w)
  for a, b in zip(results['on'], results['off']):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
  for choice in ('eigen', 'gemm', 'cudnn', 'cudnn_dw'):
    monkeypatch.setenv('MEDJAX_CONV_FORMS', choice)
    assert conv.forms_rule() == choice
  monkeypatch.setenv('MEDJAX_CONV_FORMS', 'auto')
  # The tests run on the CPU: the rule of the library XLA:CPU convolves with.
  for library, rule in (('eigen', 'eigen'), ('ynn', 'cpu')):
    monkeypatch.setattr(medjax, 'CPU_CONVOLUTIONS', library)
    assert conv.forms_rule() == rule
  monkeypatch.setenv('MEDJAX_CONV_FORMS', 'fast')
  with pytest.raises(ValueError, match='MEDJAX_CONV_FORMS'):
    conv.forms_rule()


@pytest.mark.parametrize('h,k,s,pad,d,cin,cout', [
    (9, 3, 1, ((1, 1), (1, 1)), 1, 3, 5), (10, 4, 2, ((1, 1), (1, 1)), 1, 3, 5),
    (11, 3, 2, ((0, 2), (0, 2)), 1, 4, 2), (4, 4, 1, ((2, 2), (2, 2)), 2, 8, 4),
    (5, 6, 1, ((3, 4), (3, 4)), 3, 3, 4), (7, 1, 1, 'SAME', 1, 4, 6),
    (8, 9, 1, 'SAME', 1, 4, 3), (4, 4, 1, 'VALID', 1, 6, 1),
    (4, 4, 1, ((2, 2), (2, 2)), 2, 5, 1)])
def test_gemm_form_equals_xla(h, k, s, pad, d, cin, cout, monkeypatch):
  """MEDJAX_CONV_FORMS=gemm: strided, transposed, 1x1, 9x9 and unpadded
  convolutions as products of their patches, with no convolution left; same
  values, gradients and second-order gradients (R1) as XLA's."""
  monkeypatch.setenv('MEDJAX_CONV_FORMS', 'gemm')
  x = jax.random.normal(jax.random.key(0), (2, h, h + 1, cin))
  w = jax.random.normal(jax.random.key(1), (k, k, cin, cout))
  dn = ('NHWC', 'HWIO', 'NHWC')

  def loss(fn):
    return lambda x, w: (fn(x, w, (s, s), pad, lhs_dilation=(d, d),
                            dimension_numbers=dn) ** 2).sum()

  def r1(fn):  # The squared input gradient, differentiated again.
    return lambda x, w: (jax.grad(loss(fn))(x, w) ** 2).sum()

  for f in (loss, r1):  # Jitted: op by op, the 9x9 R1 case took 16 s.
    want = jax.jit(jax.value_and_grad(f(lax.conv_general_dilated), (0, 1)))(
        x, w)
    got = jax.jit(jax.value_and_grad(f(conv.conv_general_dilated), (0, 1)))(
        x, w)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
  assert 'conv_general_dilated' not in str(
      jax.make_jaxpr(jax.grad(loss(conv.conv_general_dilated), (0, 1)))(x, w))
  # bfloat16 in, bfloat16 out, as Flax calls it under a bf16 dtype.
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  got = conv.conv_general_dilated(xb, wb, (s, s), pad, lhs_dilation=(d, d),
                                  dimension_numbers=dn)
  want = lax.conv_general_dilated(xb, wb, (s, s), pad, lhs_dilation=(d, d),
                                  dimension_numbers=dn)
  assert got.dtype == want.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2,
                             atol=2e-2 * np.abs(np.float32(want)).max())


def test_gemm_form_only_below_its_bound(monkeypatch):
  """Patches over MEDJAX_CONV_GEMM_MB stay cuDNN convolutions (the 'gpu'
  rule); the bound counts batch, output pixels, taps, channels and bytes."""
  monkeypatch.setenv('MEDJAX_CONV_FORMS', 'gemm')
  x = jnp.zeros((2, 8, 8, 4), jnp.bfloat16)
  w = jnp.zeros((3, 3, 4, 4), jnp.bfloat16)
  patches_mb = 2 * 8 * 8 * 9 * 4 * 2 / 2**20  # SAME: 8x8 outputs.

  def convolutions(bound_mb):
    monkeypatch.setenv('MEDJAX_CONV_GEMM_MB', str(bound_mb))
    return str(jax.make_jaxpr(lambda x: conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))(
            x)).count('conv_general_dilated')
  assert convolutions(patches_mb) == 0
  assert convolutions(patches_mb * 0.99) == 1
  monkeypatch.delenv('MEDJAX_CONV_GEMM_MB')
  assert conv.gemm_max_bytes() == conv.GEMM_MAX_BYTES


def test_gemm_rule_reaches_every_convolution_of_a_step(monkeypatch):
  """With the bound out of the way, DCGAN's and SRGAN's train steps (D, G,
  VGG19 content loss) have no convolution left: each goes through
  `conv.conv_general_dilated` in a form the 'gemm' rule takes."""
  monkeypatch.setenv('MEDJAX_CONV_GEMM_MB', '10000')
  for name in ('dcgan_brain', 'srgan_brain'):
    assert 'conv_general_dilated' not in _train_step_jaxpr(
        name, 'gemm', monkeypatch)


def test_validate_accepts_tiny_test_config(tmp_path):
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config_lib.validate(tiny_config(str(tmp_path)))
