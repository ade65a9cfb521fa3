"""Adversarial losses, on float32 logits.

The discriminators return logits; `sigmoid` + binary cross-entropy is computed
in its numerically stable fused form, which equals PyTorch's `Sigmoid` + `BCELoss`
up to rounding.
"""

import jax
import jax.numpy as jnp
import optax


def bce(logits: jax.Array, target: float) -> jax.Array:
  """Mean binary cross-entropy of `sigmoid(logits)` against a constant label."""
  return optax.sigmoid_binary_cross_entropy(
      logits, jnp.full_like(logits, target)).mean()


def nonsaturating_d_loss(real_logits: jax.Array,
                         fake_logits: jax.Array) -> jax.Array:
  """D loss of Goodfellow et al.: -log D(x) - log(1 - D(G(z)))."""
  return bce(real_logits, 1.0) + bce(fake_logits, 0.0)


def nonsaturating_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating G loss: -log D(G(z))."""
  return bce(fake_logits, 1.0)
