"""BatchNorm with fewer kernels on a GPU: the models' drop-in for nn.BatchNorm.

The GAN and SR train steps at their paper batches are launch-bound on a GPU
(bench/NOTES.md): a step costs about 5 us per kernel. Flax's nn.BatchNorm
takes its batch mean and mean of squares as two reductions, which XLA splits
into a first stage it fuses (one kernel) and two second stages it does not
(two kernels); autodiff's backward pass does the same with the sums of dy and
dy * x_hat. Here each pair is one reduction of the two stacked, so the second
stage is one kernel, in the forward and (with a custom VJP) in the backward.

Same variables (params `scale`, `bias`; batch_stats `mean`, `var`, float32),
the same statistics (float32 whatever the compute dtype; variance
E[x^2] - E[x]^2 clipped at 0, as Flax's `use_fast_variance`), the same
running-average update and the same output as nn.BatchNorm to float32
rounding, so checkpoints of either load in the other. Normalises the last
axis over all others (NHWC images, or (B, F) features).

XLA:CPU writes the stacked pair out instead of fusing it into the
reduction, which makes this BatchNorm alone 2x slower there than Flax's
(2-core EPYC, 2026-11-26: (16, 96, 96, 64) forward and backward 84-89 vs
40-44 ms). On a GPU it is untimed: the H100 program has 16-19% fewer kernels
per GAN/SR step, but XLA's CUDA graphs then capture fewer of them, so the
host issues 10-22% more launches (bench/NOTES.md). So the models build their
BatchNorm layers with `batch_norm`, which gives nn.BatchNorm itself unless
the environment variable MEDJAX_BATCHNORM (read when a model is traced) is
'fused' ('flax', the default, until a GPU session times both:
bench/train_step.py --batchnorm). Both have the same variables.

`batch_groups(n)` makes the training BatchNorms built inside it treat the
batch as n consecutive parts with their own statistics (this module, in
either computation), so that one call on [a; b] is two calls, on a then on
b: the adversarial update runs D once on [real; fake] that way.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
MODES = ('flax', 'fused')


def mode() -> str:
  """MEDJAX_BATCHNORM: 'flax' (default) or 'fused' (see the module doc)."""
  choice = os.environ.get('MEDJAX_BATCHNORM', 'flax')
  if choice not in MODES:
    raise ValueError(f'MEDJAX_BATCHNORM={choice!r}, expected one of {MODES}')
  return choice


def _stats(xf: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array,
                                                         jax.Array]:
  """(mean, var) of float32 `xf` over `axes`: one stacked reduction."""
  s = jnp.mean(jnp.stack([xf, xf * xf]), axis=tuple(a + 1 for a in axes))
  return s[0], jnp.maximum(0.0, s[1] - s[0] * s[0])


def _affine(xf, mean, var, scale, bias, epsilon):
  # nn.BatchNorm's order: (x - mean) * (rsqrt(var + eps) * scale) + bias.
  return (xf - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _train_norm(x, scale, bias, epsilon: float, dtype):
  """(y, mean, var): x normalised with its own statistics, in `dtype`."""
  return _train_norm_fwd(x, scale, bias, epsilon, dtype)[0]


def _normalize(x, scale, bias, epsilon: float, dtype, stats):
  """(y, mean, var): x normalised with `stats`(float32 x, axes), in
  `dtype`."""
  xf = x.astype(jnp.float32)
  mean, var = stats(xf, tuple(range(x.ndim - 1)))
  y = _affine(xf, mean, var, scale.astype(jnp.float32),
              bias.astype(jnp.float32), epsilon)
  return y.astype(dtype), mean, var


def _train_norm_fwd(x, scale, bias, epsilon, dtype):
  y, mean, var = _normalize(x, scale, bias, epsilon, dtype, _stats)
  return (y, mean, var), (x, mean, var, scale, bias)


def _train_norm_bwd(epsilon, dtype, res, cts):
  del dtype
  x, mean, var, scale, bias = res
  dy, d_mean, d_var = cts
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xf = x.astype(jnp.float32)
  dy = dy.astype(jnp.float32)
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = (xf - mean) * rstd
  sums = jnp.sum(jnp.stack([dy, dy * xhat]), axis=tuple(a + 1 for a in axes))
  d_bias, d_scale = sums[0], sums[1]
  # y = xhat * scale + bias with xhat = (x - mean(x)) / sqrt(var(x) + eps);
  # the mean and var outputs (the running statistics' input) add their own
  # cotangents' terms (zeros when only y is differentiated).
  dx = (scale.astype(jnp.float32) * rstd) * (
      dy - d_bias / n - xhat * (d_scale / n))
  dx = dx + d_mean / n + d_var * (2.0 / n) * (xf - mean)
  return (dx.astype(x.dtype), d_scale.astype(scale.dtype),
          d_bias.astype(bias.dtype))


_train_norm.defvjp(_train_norm_fwd, _train_norm_bwd)


def _plain_stats(xf: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array,
                                                               jax.Array]:
  """`_stats` as nn.BatchNorm takes them: two reductions."""
  mean, mean2 = xf.mean(axes), (xf * xf).mean(axes)
  return mean, jnp.maximum(0.0, mean2 - mean * mean)


def _plain_train_norm(x, scale, bias, epsilon: float, dtype):
  """`_train_norm` as nn.BatchNorm computes it (two reductions, autodiff)."""
  return _normalize(x, scale, bias, epsilon, dtype, _plain_stats)


_GROUPS = contextvars.ContextVar('medjax_batch_norm_groups', default=1)


@contextlib.contextmanager
def batch_groups(groups: int):
  """Within it, a model's training BatchNorms treat the batch as `groups`
  equal consecutive parts, each with its own statistics, the running
  averages updated part after part: one call on [a; b] is two calls, on a
  then on b (read when the model is traced).

  Args:
    groups: how many parts (the batch must divide by it).
  """
  token = _GROUPS.set(int(groups))
  try:
    yield
  finally:
    _GROUPS.reset(token)


def batch_norm(**kwargs) -> nn.Module:
  """The models' BatchNorm layer: nn.BatchNorm, or `BatchNorm` (the same
  variables) with MEDJAX_BATCHNORM=fused or inside `batch_groups`.

  Args:
    **kwargs: `BatchNorm`'s attributes (and `name`); nn.BatchNorm takes the
      same ones.
  """
  fused = mode() == 'fused'
  if not fused and _GROUPS.get() == 1:
    return nn.BatchNorm(**kwargs)
  return BatchNorm(fused=fused, **kwargs)


class BatchNorm(nn.Module):
  """nn.BatchNorm over the last axis, with fewer GPU kernels (module doc).

  Attributes:
    use_running_average: normalise with the stored statistics (inference)
      instead of the batch's (training, which updates them).
    momentum: running average decay (Flax's convention: torch's 0.1 is 0.9).
    epsilon: added to the variance.
    dtype: output dtype (default: x's and the params' promoted type).
    param_dtype: dtype of `scale` and `bias`.
    scale_init, bias_init: initialisers of `scale` and `bias`.
    fused: statistics and their backward pass one reduction each (module
      doc); False: nn.BatchNorm's computation.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  scale_init: Callable[..., jax.Array] = nn.initializers.ones
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  fused: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises `x` (..., C); returns the same shape in `dtype`."""
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var',
                           lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    if self.use_running_average:
      y = _affine(x.astype(jnp.float32), ra_mean.value, ra_var.value,
                  scale.astype(jnp.float32), bias.astype(jnp.float32),
                  self.epsilon)
      return y.astype(dtype)
    fn = _train_norm if self.fused else _plain_train_norm
    norm_fn = lambda x: fn(x, scale, bias, float(self.epsilon),
                           jnp.dtype(dtype))
    groups = _GROUPS.get()
    if groups == 1:
      y, mean, var = norm_fn(x)
      mean, var = mean[None], var[None]
    else:
      if x.shape[0] % groups:
        raise ValueError(f'batch {x.shape[0]} does not divide into {groups} '
                         'BatchNorm groups')
      y, mean, var = jax.vmap(norm_fn)(
          x.reshape((groups, -1) + x.shape[1:]))
      y = y.reshape(x.shape)
    if not self.is_initializing():
      m = self.momentum
      for g in range(groups):  # Part after part, as separate calls.
        ra_mean.value = m * ra_mean.value + (1 - m) * mean[g]
        ra_var.value = m * ra_var.value + (1 - m) * var[g]
    return y
