"""Adversarial losses, gradient penalties and EMA, against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import ema
from medjax import losses

REAL = jnp.array([2.0, -0.5, 0.0])
FAKE = jnp.array([-1.0, 0.5, 3.0])


def _softplus(x):
  return np.log1p(np.exp(x))


def test_nonsaturating_matches_bce_by_hand():
  r, f = np.asarray(REAL), np.asarray(FAKE)
  # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f).
  want_d = _softplus(-r).mean() + _softplus(f).mean()
  want_g = _softplus(-f).mean()
  np.testing.assert_allclose(losses.nonsaturating_d_loss(REAL, FAKE), want_d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.nonsaturating_g_loss(FAKE), want_g,
                             rtol=1e-6)


def test_hinge_lsgan_wgan_by_hand():
  # hinge D: mean(relu(1 - [2, -.5, 0])) + mean(relu(1 + [-1, .5, 3]))
  #        = (0 + 1.5 + 1) / 3 + (0 + 1.5 + 4) / 3 = 8 / 3.
  np.testing.assert_allclose(losses.hinge_d_loss(REAL, FAKE), 8 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.hinge_g_loss(FAKE), -2.5 / 3, rtol=1e-6)
  # LSGAN D: .5 mean([1, 2.25, 1]) + .5 mean([1, .25, 9]) = (4.25 + 10.25) / 6.
  np.testing.assert_allclose(losses.lsgan_d_loss(REAL, FAKE), 14.5 / 6,
                             rtol=1e-6)
  # LSGAN G: .5 mean([4, .25, 4]).
  np.testing.assert_allclose(losses.lsgan_g_loss(FAKE), 8.25 / 6, rtol=1e-6)
  # WGAN: mean(fake) - mean(real) = 2.5/3 - 1.5/3.
  np.testing.assert_allclose(losses.wgan_d_loss(REAL, FAKE), 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.wgan_g_loss(FAKE), -2.5 / 3, rtol=1e-6)


def test_registry():
  assert losses.get_adversarial('nonsaturating') == (
      losses.nonsaturating_d_loss, losses.nonsaturating_g_loss)
  for name in ('hinge', 'lsgan', 'wgan'):
    d, g = losses.get_adversarial(name)
    assert d is getattr(losses, f'{name}_d_loss')
    assert g is getattr(losses, f'{name}_g_loss')
  with pytest.raises(ValueError, match='hinge, lsgan, wgan'):
    losses.get_adversarial('relativistic')


def test_content_losses():
  a, b = jnp.array([1.0, -2.0]), jnp.array([0.0, 1.0])
  np.testing.assert_allclose(losses.l1_loss(a, b), 2.0)
  np.testing.assert_allclose(losses.mse_loss(a, b), 5.0)


def _linear_critic(w):
  # D(x) = <w, x_i> per example: grad_x D = w everywhere.
  return lambda x: jnp.einsum('bhwc,hwc->b', x, w)


def test_wgan_gp_linear_critic_by_hand():
  w = jax.random.normal(jax.random.key(0), (4, 4, 2)) * 0.3
  real = jax.random.normal(jax.random.key(1), (5, 4, 4, 2))
  fake = jax.random.normal(jax.random.key(2), (5, 4, 4, 2))
  norm = np.linalg.norm(np.asarray(w))
  want = 10.0 * (norm - 1.0) ** 2
  gp = jax.jit(lambda w, r, f, k: losses.wgan_gp(_linear_critic(w), r, f, k))
  np.testing.assert_allclose(gp(w, real, fake, jax.random.key(3)), want,
                             rtol=1e-5)
  # d/dw [lambda (||w|| - 1)^2] = 2 lambda (||w|| - 1) w / ||w||: the penalty
  # differentiates through the inner gradient to D's parameters.
  dw = jax.grad(gp)(w, real, fake, jax.random.key(3))
  np.testing.assert_allclose(dw, 20.0 * (norm - 1.0) * w / norm, rtol=1e-4,
                             atol=1e-6)


def test_wgan_gp_quadratic_critic_by_hand():
  # D(x) = 1/2 ||x_i||^2 has grad x; with real == fake every interpolate is
  # real, so the penalty is lambda mean_i (||x_i|| - 1)^2 for any draw.
  critic = lambda x: 0.5 * jnp.square(x).sum((1, 2, 3))
  real = jax.random.normal(jax.random.key(1), (6, 3, 3, 1)) * 0.4
  norms = np.linalg.norm(np.asarray(real).reshape(6, -1), axis=1)
  got = losses.wgan_gp(critic, real, real, jax.random.key(0), weight=2.0)
  np.testing.assert_allclose(got, 2.0 * ((norms - 1.0) ** 2).mean(), rtol=1e-5)


def test_r1_by_hand():
  w = jax.random.normal(jax.random.key(0), (4, 4, 2))
  real = jax.random.normal(jax.random.key(1), (5, 4, 4, 2))
  r1 = jax.jit(lambda w, x: losses.r1_penalty(_linear_critic(w), x, 0.5))
  # Linear critic: gamma/2 ||w||^2, and d/dw = gamma w.
  np.testing.assert_allclose(r1(w, real),
                             0.25 * np.sum(np.asarray(w) ** 2), rtol=1e-5)
  dw = jax.grad(r1)(w, real)
  np.testing.assert_allclose(dw, 0.5 * w, rtol=1e-5)
  # Quadratic critic: grad = x, so gamma/2 mean_i ||x_i||^2.
  critic = lambda x: 0.5 * jnp.square(x).sum((1, 2, 3))
  want = 0.25 * np.mean(np.sum(np.asarray(real) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(losses.r1_penalty(critic, real, 0.5), want,
                             rtol=1e-5)


def test_losses_jit():
  for name in losses.ADVERSARIAL_LOSSES:
    d, g = losses.get_adversarial(name)
    np.testing.assert_allclose(jax.jit(d)(REAL, FAKE), d(REAL, FAKE),
                               rtol=1e-6)
    np.testing.assert_allclose(jax.jit(g)(FAKE), g(FAKE), rtol=1e-6)


def test_ema_closed_form():
  params = {'w': jnp.array([1.0, 2.0]), 'b': jnp.array(3.0)}
  start = {'w': jnp.zeros(2), 'b': jnp.array(-1.0)}
  decay, k = 0.9, 7
  step = jax.jit(ema.ema_update)
  avg = start
  for _ in range(k):
    avg = step(avg, params, decay)
  # d^k ema_0 + (1 - d^k) p.
  for key in params:
    np.testing.assert_allclose(
        avg[key], decay**k * start[key] + (1 - decay**k) * params[key],
        rtol=1e-6)
  # decay 0 copies, decay 1 keeps.
  assert ema.ema_update(start, params, 0.0)['b'] == 3.0
  assert ema.ema_update(start, params, 1.0)['b'] == -1.0


def test_ema_keeps_dtype_and_warmup_rule():
  out = ema.ema_update({'w': jnp.ones(2, jnp.bfloat16)},
                       {'w': jnp.zeros(2, jnp.float32)}, 0.5)
  assert out['w'].dtype == jnp.bfloat16
  np.testing.assert_allclose(ema.warmup_decay(0, 0.999), 0.1, rtol=1e-6)
  np.testing.assert_allclose(ema.warmup_decay(90, 0.999), 91 / 100, rtol=1e-6)
  np.testing.assert_allclose(ema.warmup_decay(10**6, 0.999), 0.999, rtol=1e-6)
  # Traced step under jit, as in a train step.
  np.testing.assert_allclose(
      jax.jit(ema.warmup_decay, static_argnums=1)(jnp.int32(5), 0.9), 0.4,
      rtol=1e-6)
