"""The shared adversarial update: its gradient, paired augmentation, and the
`gan.*` options on SRGAN, Pix2Pix and StarGAN."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax import losses
from medjax import trainers
from medjax.trainers import adversarial
from tests.conftest import tiny_config
from tests.test_gan_options import _CDCGAN
from tests.test_gan_options import _SNGAN
from tests.test_gan_options import _STARGAN
from tests.test_sr import _PIX2PIX, _TINY_SR


def _sgd():
  return optax.sgd(0.1)


def test_g_gradient_is_the_full_gradient_of_the_g_loss():
  """VJP through the fake plus the direct term equals autodiff of the whole
  G loss (StarGAN's reconstruction uses G twice)."""
  adv = adversarial.Adversarial(g_tx=_sgd(), d_tx=_sgd(), loss='hinge')
  x = jax.random.normal(jax.random.key(0), (4, 3))
  g0 = {'w': jax.random.normal(jax.random.key(1), (3, 3))}
  d0 = {'v': jax.random.normal(jax.random.key(2), (3,))}
  gen = lambda g, inp: jnp.tanh(inp @ g['w'])
  disc = lambda d, img: img @ d['v']
  state = adv.init_state({'params': g0}, {'params': d0})

  def g_extra(fake, aux, g_params):
    del aux
    rec = jnp.abs(gen(g_params, fake) - x).mean()
    return 3.0 * rec, {'rec': rec}

  new, out = adv.update(
      state, real=x, rng=jax.random.key(3),
      g_forward=lambda g: (gen(g, x), {}),
      d_apply=lambda d, s, img, paired: ((disc(d, img), None), s),
      g_extra=g_extra)
  # The reference: D step by hand, then the G gradient of the whole loss.
  d_grad = jax.grad(lambda d: losses.hinge_d_loss(
      disc(d, x), disc(d, gen(g0, x))))(d0)
  d1 = jax.tree.map(lambda p, g: p - 0.1 * g, d0, d_grad)
  np.testing.assert_allclose(new.d_params['v'], d1['v'], rtol=1e-6)

  def full_g_loss(g):
    fake = gen(g, x)
    return (losses.hinge_g_loss(disc(d1, fake))
            + 3.0 * jnp.abs(gen(g, fake) - x).mean())

  g_grad = jax.grad(full_g_loss)(g0)
  np.testing.assert_allclose(new.g_params['w'], g0['w'] - 0.1 * g_grad['w'],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out['g_loss'], full_g_loss(g0), rtol=1e-6)
  # Without the direct term the update would differ: the test can fail.
  fake_only = jax.grad(lambda g: losses.hinge_g_loss(disc(d1, gen(g, x))))(g0)
  assert not np.allclose(g_grad['w'], fake_only['w'], rtol=1e-3)


def test_paired_image_gets_the_same_augmentation():
  """Pix2Pix: D's input and the image paired with it move together."""
  adv = adversarial.Adversarial(g_tx=_sgd(), d_tx=_sgd(),
                                diffaugment='color,translation,cutout')
  x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 1), minval=-1,
                         maxval=1)
  state = adv.init_state({'params': {'w': jnp.ones(())}},
                         {'params': {'v': jnp.ones(())}})
  # D's logit: how far the image is from the paired one (0 when aligned).
  d_apply = lambda d, s, img, paired: (
      (d['v'] * jnp.abs(img - paired).sum((1, 2, 3)), None), s)
  _, out = adv.update(state, real=x, paired=x, rng=jax.random.key(1),
                      g_forward=lambda g: (g['w'] * x, {}), d_apply=d_apply)
  assert float(out['d_real']) == 0.5  # sigmoid(0): same transform on both.
  # The same D, with unaugmented pairing, sees a difference: can fail.
  shifted = lambda d, s, img, paired: d_apply(d, s, img, x)
  _, out = adv.update(state, real=x, paired=x, rng=jax.random.key(1),
                      g_forward=lambda g: (g['w'] * x, {}), d_apply=shifted)
  assert float(out['d_real']) > 0.5


_OPTIONS = {'gan.loss': 'hinge', 'gan.r1_gamma': 1.0, 'gan.ema_decay': 0.9,
            'gan.diffaugment': 'color,translation,cutout', 'gan.d_steps': 2}


def _images(shape, seed, labels=False):
  b = {'image': jax.random.randint(jax.random.key(seed), shape, 0,
                                   256).astype(jnp.uint8)}
  if labels:
    b['label'] = jnp.arange(shape[0], dtype=jnp.int32) % 4
  return b


@pytest.mark.parametrize('name', ['srgan', 'pix2pix', 'stargan'])
def test_gan_options_apply_to_every_adversarial_task(tmp_path, name):
  overrides = {
      'srgan': {'model.name': 'srgan', **_TINY_SR, 'sr.content_loss': 'mse'},
      'pix2pix': {**_TINY_SR, **_PIX2PIX},
      'stargan': _STARGAN}[name]
  config = tiny_config(str(tmp_path), **{**overrides, **_OPTIONS})
  task = trainers.get_task(config)
  shape = (8, 16, 16, 1) if name == 'stargan' else (8, 32, 32, 1)
  step = jax.jit(task.train_step)
  s0 = task.init(jax.random.key(0))
  s1, m1 = step(s0, _images(shape, 1, name == 'stargan'), jax.random.key(1),
                task.consts())
  s2, m2 = step(s1, _images(shape, 2, name == 'stargan'), jax.random.key(2),
                task.consts())
  values = m1.merge(m2).compute()
  assert 'r1' in values and np.isfinite(float(values['r1']))
  assert all(np.isfinite(float(v)) for v in values.values()), values
  # d_steps=2: G only on the second call; the EMA follows it.
  leaves = lambda t: jax.tree.leaves(t)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(s0.g_params),
                                                  leaves(s1.g_params)))
  assert not all(np.array_equal(a, b) for a, b in zip(leaves(s1.g_params),
                                                      leaves(s2.g_params)))
  for e, e0, p in zip(leaves(s2.g_ema), leaves(s1.g_ema),
                      leaves(s2.g_params)):
    np.testing.assert_allclose(e, 0.9 * e0 + 0.1 * p, rtol=1e-5, atol=1e-6)
  if name == 'srgan':  # Validation (and restoration) use the EMA.
    images = np.asarray(_images((4, 32, 32, 1), 3)['image'])
    broken = s2.replace(g_params=jax.tree.map(jnp.zeros_like, s2.g_params))
    assert task.evaluate(broken, images) == task.evaluate(s2, images)
    assert (task.evaluate(broken.replace(g_ema=None), images)
            != task.evaluate(s2, images))


@pytest.mark.parametrize('name', ['dcgan', 'srgan', 'pix2pix', 'sngan',
                                  'cdcgan'])
def test_one_d_call_is_the_two_passes(tmp_path, name):
  """D on [real; fake] in one call (each half its own BatchNorm statistics,
  norm.batch_groups) gives the two passes' losses, state and running
  statistics to float rounding, with DiffAugment and R1 on, and launches
  each D convolution once; spectral-norm (SNGAN) and label-conditioned
  (cDCGAN) discriminators keep two calls. Plain SGD, so an update is the
  gradient (Adam's first step moves every weight by ~lr)."""
  overrides = {
      'dcgan': {},
      'srgan': {'model.name': 'srgan', **_TINY_SR, 'sr.content_loss': 'mse'},
      'pix2pix': {**_TINY_SR, **_PIX2PIX},
      'sngan': _SNGAN, 'cdcgan': _CDCGAN}[name]
  config = tiny_config(str(tmp_path), **{
      **overrides, 'gan.r1_gamma': 1.0, 'gan.diffaugment': 'translation'})
  task = trainers.get_task(config)
  attr = 'adv' if hasattr(task, 'adv') else 'adversarial'
  default = getattr(task, attr)
  assert default.merge_d_passes
  shape = (8, 32, 32, 1) if name in ('srgan', 'pix2pix') else (8, 16, 16, 1)
  batch = _images(shape, 1, labels=name == 'cdcgan')
  results, convs = {}, {}
  for merge in (True, False):
    setattr(task, attr, dataclasses.replace(
        default, merge_d_passes=merge, g_tx=optax.sgd(0.1),
        d_tx=optax.sgd(0.1)))
    state = task.init(jax.random.key(0))
    convs[merge] = str(jax.make_jaxpr(task.train_step)(
        state, batch, jax.random.key(1), task.consts())).count(
            'conv_general_dilated')
    state, m = jax.jit(task.train_step)(state, batch, jax.random.key(1),
                                        task.consts())
    results[merge] = (state, m.compute())
  (s1, m1), (s2, m2) = results[True], results[False]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4),
               m1, m2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5), s1, s2)
  if name in ('sngan', 'cdcgan'):
    assert convs[True] == convs[False]
  else:
    assert convs[True] < convs[False]
