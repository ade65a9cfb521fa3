"""Adversarial losses and discriminator regularisers, on float32 logits.

The discriminators return raw outputs ("logits"); each loss applies whatever
link it needs itself. For the non-saturating loss `sigmoid` + binary
cross-entropy is computed in its numerically stable fused form, which equals
PyTorch's `Sigmoid` + `BCELoss` up to rounding; the hinge, least-squares and
Wasserstein losses use the raw output directly, as in their papers.

Every loss is a pure function of the logits (any shape, averaged over all
elements), so it jits and composes with `jax.grad`. `get_adversarial(name)`
returns a `(d_loss, g_loss)` pair. The gradient penalties take a closure
`d_fn: images -> logits` over the discriminator's parameters, so that
`jax.grad` with respect to those parameters differentiates through the
penalty's inner input gradient (double backpropagation). See
`docs/training_options.md` for formulas, defaults and references.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

DFn = Callable[[jax.Array], jax.Array]


def bce(logits: jax.Array, target: float) -> jax.Array:
  """Mean binary cross-entropy of `sigmoid(logits)` against a constant label."""
  return optax.sigmoid_binary_cross_entropy(
      logits, jnp.full_like(logits, target)).mean()


# Non-saturating GAN (Goodfellow et al. 2014).


def nonsaturating_d_loss(real_logits: jax.Array,
                         fake_logits: jax.Array) -> jax.Array:
  """D loss of Goodfellow et al.: -log D(x) - log(1 - D(G(z)))."""
  return bce(real_logits, 1.0) + bce(fake_logits, 0.0)


def nonsaturating_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating G loss: -log D(G(z))."""
  return bce(fake_logits, 1.0)


# Hinge loss (Lim & Ye 2017; Miyato et al. 2018).


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Hinge D loss: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))].

  Args:
    real_logits: raw D outputs on real images.
    fake_logits: raw D outputs on generated images.

  Returns:
    The scalar loss.
  """
  return (jax.nn.relu(1.0 - real_logits).mean()
          + jax.nn.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Hinge G loss: -E[D(G(z))]."""
  return -fake_logits.mean()


# Least squares (Mao et al. 2017), targets a=0 (fake), b=1 (real), c=1 (G).


def lsgan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """LSGAN D loss: 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2].

  The 0-1 coding of Mao et al. (a=0, b=1, c=1) on the raw, linear D output
  (no sigmoid).

  Args:
    real_logits: raw D outputs on real images.
    fake_logits: raw D outputs on generated images.

  Returns:
    The scalar loss.
  """
  return (0.5 * jnp.square(real_logits - 1.0).mean()
          + 0.5 * jnp.square(fake_logits).mean())


def lsgan_g_loss(fake_logits: jax.Array) -> jax.Array:
  """LSGAN G loss: 1/2 E[(D(G(z)) - 1)^2]."""
  return 0.5 * jnp.square(fake_logits - 1.0).mean()


# Wasserstein (Arjovsky et al. 2017); D is a critic, use with `wgan_gp`.


def wgan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Critic loss: E[D(G(z))] - E[D(x)] (minimised).

  Args:
    real_logits: critic outputs on real images.
    fake_logits: critic outputs on generated images.

  Returns:
    The scalar loss.
  """
  return fake_logits.mean() - real_logits.mean()


def wgan_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Wasserstein G loss: -E[D(G(z))]."""
  return -fake_logits.mean()


_ADVERSARIAL = {
    'nonsaturating': (nonsaturating_d_loss, nonsaturating_g_loss),
    'hinge': (hinge_d_loss, hinge_g_loss),
    'lsgan': (lsgan_d_loss, lsgan_g_loss),
    'wgan': (wgan_d_loss, wgan_g_loss),
}

ADVERSARIAL_LOSSES = tuple(_ADVERSARIAL)


def get_adversarial(name: str) -> tuple[
    Callable[[jax.Array, jax.Array], jax.Array],
    Callable[[jax.Array], jax.Array]]:
  """The `(d_loss(real_logits, fake_logits), g_loss(fake_logits))` pair.

  Args:
    name: one of 'nonsaturating', 'hinge', 'lsgan', 'wgan'.

  Returns:
    The D and G loss functions.

  Raises:
    ValueError: for an unknown name.
  """
  try:
    return _ADVERSARIAL[name]
  except KeyError:
    raise ValueError(f'unknown adversarial loss {name!r}; choose one of '
                     f'{", ".join(ADVERSARIAL_LOSSES)}') from None


# Gradient penalties.


def _per_example_grad_sq_norm(d_fn: DFn, x: jax.Array) -> jax.Array:
  """||grad_x D(x_i)||^2 for every example i, shape (B,).

  Differentiating sum_i D(x_i) gives every per-example gradient at once as long
  as D treats examples independently (no batch statistics in train mode).
  """
  grads = jax.grad(lambda x: d_fn(x).astype(jnp.float32).sum())(x)
  return jnp.square(grads.astype(jnp.float32)).reshape(x.shape[0], -1).sum(-1)


def wgan_gp(d_fn: DFn, real: jax.Array, fake: jax.Array, rng: jax.Array,
            weight: float = 10.0) -> jax.Array:
  """WGAN-GP gradient penalty (Gulrajani et al. 2017).

  weight * E[(||grad_x D(x_hat)||_2 - 1)^2] with x_hat = eps x + (1 - eps)
  G(z), eps ~ U(0, 1) drawn once per example. Real and fake are treated as
  constants (the penalty only regularises D).

  Args:
    d_fn: images -> (B,) critic outputs; a closure over D's parameters. D must
      treat examples independently (the paper's critic has no BatchNorm).
    real: (B, ...) real images.
    fake: (B, ...) generated images, same shape.
    rng: key for the interpolation coefficients.
    weight: lambda (10 in the paper).

  Returns:
    The scalar penalty, already multiplied by `weight`.
  """
  real = jax.lax.stop_gradient(real).astype(jnp.float32)
  fake = jax.lax.stop_gradient(fake).astype(jnp.float32)
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = eps * real + (1.0 - eps) * fake
  # The tiny constant keeps the sqrt differentiable at a zero gradient.
  norm = jnp.sqrt(_per_example_grad_sq_norm(d_fn, x_hat) + 1e-12)
  return weight * jnp.square(norm - 1.0).mean()


def r1_penalty(d_fn: DFn, real: jax.Array, gamma: float) -> jax.Array:
  """R1 regulariser (Mescheder et al. 2018): gamma/2 E[||grad_x D(x)||^2].

  On real images only. Often applied every k D steps with gamma scaled by k
  ("lazy regularisation", Karras et al. 2020); that is the caller's choice.

  Args:
    d_fn: images -> (B,) logits; a closure over D's parameters. D must treat
      examples independently (no train-mode BatchNorm).
    real: (B, ...) real images.
    gamma: the regularisation weight.

  Returns:
    The scalar penalty, already multiplied by `gamma / 2`.
  """
  real = jax.lax.stop_gradient(real).astype(jnp.float32)
  return 0.5 * gamma * _per_example_grad_sq_norm(d_fn, real).mean()


# Content losses.


def l1_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean absolute error, in float32."""
  return jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)).mean()


def mse_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared error, in float32."""
  return jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)).mean()
