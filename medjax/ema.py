"""Exponential moving average (EMA) of generator weights.

Karras et al. 2018 (ProGAN) and Yazici et al. 2019 (*The Unusual Effectiveness
of Averaging in GAN Training*): sampling from an EMA of G's parameters gives
better images than the last iterate. After each G update:

  ema <- decay * ema + (1 - decay) * params

starting from `ema = params` at initialisation. After k updates with constant
params p and decay d the EMA is d^k ema_0 + (1 - d^k) p.

Warm-up (optional, `warmup_decay`): early in training the EMA is dominated by
the random initial weights. `warmup_decay(step, decay)` returns
min(decay, (1 + step) / (10 + step)), the rule of TensorFlow's
`ExponentialMovingAverage(num_updates=step)`: the effective decay starts at 0.1
and approaches `decay`, so the EMA tracks the weights closely at first.

BatchNorm: average the parameters only, and sample from the EMA parameters
with G's current running statistics (or re-estimate them with a few forward
passes in train mode, as BigGAN's "standing statistics"); `ema_update` works on
any pytree, so running statistics can also be averaged if preferred.
"""

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def ema_update(ema_params: PyTree, params: PyTree,
               decay: float | jax.Array) -> PyTree:
  """One EMA step: decay * ema + (1 - decay) * params, leaf by leaf.

  Args:
    ema_params: the current average (same structure as `params`).
    params: the new parameters.
    decay: in [0, 1]; a Python float or a traced scalar (e.g. from
      `warmup_decay`). 0 copies `params`, 1 keeps `ema_params`.

  Returns:
    The new average, with the dtypes of `ema_params`.
  """
  def update(e, p):
    d = jnp.asarray(decay, jnp.float32)
    new = d * e.astype(jnp.float32) + (1.0 - d) * p.astype(jnp.float32)
    return new.astype(e.dtype)
  return jax.tree.map(update, ema_params, params)


def warmup_decay(step: int | jax.Array, decay: float) -> jax.Array:
  """min(decay, (1 + step) / (10 + step)), TensorFlow's num_updates rule.

  Args:
    step: the number of updates done so far (0 at the first update).
    decay: the target decay.

  Returns:
    The decay to use at this step, a float32 scalar.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))
