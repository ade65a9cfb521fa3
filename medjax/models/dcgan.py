"""DCGAN generator and discriminator (Radford et al. 2016), Flax Linen, NHWC.

Layers are given in PyTorch terms (kernel, stride, padding) so that a paper's
table or a PyTorch reference maps onto the config one to one. A PyTorch
`ConvTranspose2d(k, s, p)` is a convolution of the input dilated by `s` and
padded by `k - 1 - p` on each side (`nn.Conv` with `input_dilation=s`): output
size `(H - 1) * s + k - 2p`; its kernel is PyTorch's flipped in space, which
only matters when porting weights. All convolutions use
`medjax.models.conv.conv_general_dilated` (faster gradients on CPU and GPU).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import conv
from medjax.models import norm

Dtype = Any


def conv_out_size(size: int, kernels: Sequence[int], strides: Sequence[int],
                  paddings: Sequence[int], transpose: bool) -> int:
  """Spatial size after a stack of (transposed) convolutions, PyTorch rules."""
  for k, s, p in zip(kernels, strides, paddings, strict=True):
    if transpose:
      size = (size - 1) * s + k - 2 * p
    else:
      size = (size + 2 * p - k) // s + 1
  return size


def batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype, std: float,
               name: str) -> nn.Module:
  """BatchNorm as PyTorch's DCGAN sets it up (shared by the GAN families).

  gamma ~ N(1, std), beta = 0, eps 1e-5; torch momentum 0.1 is Flax's 0.9.
  """
  return norm.batch_norm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=param_dtype,
      scale_init=lambda k, s, d: 1.0 + std * jax.random.normal(k, s, d),
      name=name)


class Generator(nn.Module):
  """Latent (B, latent_dim) -> image (B, H, W, channels) in [-1, 1].

  Attributes:
    features: output features of every layer but the last.
    kernels, strides, paddings: one per transposed convolution (PyTorch terms);
      the first acts on the 1x1 latent.
    channels: image channels.
    init_std: std of the N(0, std) weight init.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  features: Sequence[int] = (512, 256, 128, 64)
  kernels: Sequence[int] = (4, 4, 4, 4, 4)
  strides: Sequence[int] = (1, 2, 2, 2, 2)
  paddings: Sequence[int] = (0, 1, 1, 1, 1)
  channels: int = 1
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    x = z.reshape(z.shape[0], 1, 1, z.shape[-1]).astype(self.dtype)
    features = tuple(self.features) + (self.channels,)
    for i, (f, k, s, p) in enumerate(zip(features, self.kernels, self.strides,
                                         self.paddings, strict=True)):
      x = nn.Conv(
          f, (k, k), padding=((k - 1 - p, k - 1 - p),) * 2,
          input_dilation=(s, s), use_bias=False, dtype=self.dtype,
          param_dtype=self.param_dtype,
          kernel_init=nn.initializers.normal(self.init_std),
          conv_general_dilated=conv.conv_general_dilated,
          name=f'deconv{i}')(x)
      if i < len(features) - 1:
        x = batch_norm(train, self.dtype, self.param_dtype, self.init_std,
                f'bn{i}')(x)
        x = nn.relu(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """Image (B, H, W, C) in [-1, 1] -> logits (B,); sigmoid gives P(real).

  Attributes:
    features: output features of every convolution but the last (which has 1).
      BatchNorm follows every hidden convolution except the first.
    kernels, strides, paddings: one per convolution (PyTorch terms); the last
      must reduce the map to 1x1.
    init_std, dtype, param_dtype: as in `Generator`.
  """
  features: Sequence[int] = (64, 128, 256, 512)
  kernels: Sequence[int] = (4, 4, 4, 4, 4)
  strides: Sequence[int] = (2, 2, 2, 2, 1)
  paddings: Sequence[int] = (1, 1, 1, 1, 0)
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.astype(self.dtype)
    features = tuple(self.features) + (1,)
    for i, (f, k, s, p) in enumerate(zip(features, self.kernels, self.strides,
                                         self.paddings, strict=True)):
      x = nn.Conv(
          f, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False,
          dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=nn.initializers.normal(self.init_std),
          conv_general_dilated=conv.conv_general_dilated,
          name=f'conv{i}')(x)
      if i < len(features) - 1:
        if i > 0:
          x = batch_norm(train, self.dtype, self.param_dtype, self.init_std,
                  f'bn{i}')(x)
        x = nn.leaky_relu(x, 0.2)
    if x.shape[1:3] != (1, 1):
      raise ValueError(f'discriminator ends at {x.shape[1:3]}, not 1x1: check '
                       'model.d_kernels/d_strides/d_paddings against the '
                       'image size')
    return x.reshape(x.shape[0]).astype(jnp.float32)
