"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017), Linen, NHWC.

Ledig et al., *Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network*, CVPR 2017. Layers follow the paper's Figure 4 and the
common PyTorch SRGAN implementations (e.g. Lornatang/SRGAN-PyTorch) so that a
PyTorch reference maps onto this file one to one:

* Convolutions followed by BatchNorm have no bias (BatchNorm's shift makes it
  redundant); all others have one.
* Weights use PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (`variance_scaling(1/3, 'fan_in', 'uniform')`); biases start at 0 (PyTorch
  draws them from the same uniform, which does not matter for training).
* BatchNorm uses PyTorch's momentum 0.1 (Flax momentum 0.9) and eps 1e-5,
  gamma 1, beta 0.
* PReLU slopes start at 0.25, one slope shared by all channels by default
  (`nn.PReLU()` in PyTorch and in the common SRGAN ports); per-channel slopes
  (`nn.PReLU(num_parameters=C)`) are a field.
* Pixel shuffle uses PyTorch's `nn.PixelShuffle` channel order (see
  `pixel_shuffle`), so ported weights of the upsampling convolutions work
  unchanged.

Images are in [-1, 1] on device (the medjax convention): the generator takes
the LR image in [-1, 1] and returns the SR image in [-1, 1] via tanh. All
convolutions use `medjax.models.conv.conv_general_dilated` (fast weight
gradients on CPU).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import conv
from medjax.models import norm

Dtype = Any

# PyTorch's default Conv2d/Linear weight init: kaiming_uniform(a=sqrt(5)),
# i.e. U(-b, b) with b = 1/sqrt(fan_in), variance 1/(3 fan_in).
_TORCH_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """Depth-to-space with PyTorch `nn.PixelShuffle(r)` channel order, NHWC.

  PyTorch maps input channel `c * r * r + i * r + j` at pixel (h, w) to output
  channel `c` at pixel (h * r + i, w * r + j). (TensorFlow's `depth_to_space`
  uses `(i * r + j) * C + c` instead; the two differ unless C == 1.)

  Args:
    x: (B, H, W, C * r * r).
    r: upscale factor.

  Returns:
    (B, H * r, W * r, C).
  """
  b, h, w, crr = x.shape
  if crr % (r * r):
    raise ValueError(f'{crr} channels are not divisible by r*r = {r * r}')
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r)            # channel -> (c, i, j)
  x = x.transpose(0, 1, 4, 2, 5, 3)          # (b, h, i, w, j, c)
  return x.reshape(b, h * r, w * r, c)


class PReLU(nn.Module):
  """PReLU with learnable slope(s), PyTorch `nn.PReLU` semantics.

  Attributes:
    per_channel: one slope per channel (`nn.PReLU(num_parameters=C)`) instead
      of one shared slope (`nn.PReLU()`).
    slope_init: initial slope (PyTorch: 0.25).
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  per_channel: bool = False
  slope_init: float = 0.25
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[-1],) if self.per_channel else ()
    alpha = self.param('alpha', nn.initializers.constant(self.slope_init),
                       shape, self.param_dtype)
    x = x.astype(self.dtype)
    return jnp.where(x >= 0, x, alpha.astype(self.dtype) * x)


def _conv(features: int, kernel: int, stride: int, use_bias: bool,
          dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Conv:
  # PyTorch padding k // 2 on each side: 'same' size at stride 1, and
  # (H + 2p - k) // s + 1 at stride 2 (96 -> 48 for k=3).
  p = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((p, p), (p, p)), use_bias=use_bias, dtype=dtype,
      param_dtype=param_dtype, kernel_init=_TORCH_INIT,
      conv_general_dilated=conv.conv_general_dilated, name=name)


def _bn(train: bool, dtype: Dtype, param_dtype: Dtype, name: str
        ) -> nn.Module:
  # Torch momentum 0.1 is Flax momentum 0.9; torch eps 1e-5.
  return norm.batch_norm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
                      name=name)


class ResidualBlock(nn.Module):
  """conv3x3-BN-PReLU-conv3x3-BN plus identity skip (paper Fig. 4, B blocks).

  Attributes:
    features: channels in and out.
    prelu_per_channel: see `PReLU.per_channel`.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  features: int = 64
  prelu_per_channel: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    y = _conv(self.features, 3, 1, False, self.dtype, self.param_dtype,
              'conv0')(x)
    y = _bn(train, self.dtype, self.param_dtype, 'bn0')(y)
    y = PReLU(self.prelu_per_channel, dtype=self.dtype,
              param_dtype=self.param_dtype, name='prelu')(y)
    y = _conv(self.features, 3, 1, False, self.dtype, self.param_dtype,
              'conv1')(y)
    y = _bn(train, self.dtype, self.param_dtype, 'bn1')(y)
    return x + y


class SRResNet(nn.Module):
  """LR (B, H, W, channels) in [-1, 1] -> SR (B, sH, sW, channels) in [-1, 1].

  Layers (paper Fig. 4): `head` 9x9 conv + PReLU; `num_blocks` residual blocks;
  `trunk_conv` 3x3 conv + `trunk_bn` plus a long skip from the head output;
  log2(scale) upsampling stages `up{i}` (3x3 conv to 4*features, pixel
  shuffle x2, PReLU); `tail` 9x9 conv to `channels` + tanh.

  Attributes:
    num_blocks: residual blocks in the trunk (paper: 16).
    features: trunk width (paper: 64).
    scale: 1 (same-size restoration, e.g. deblurring: no upsampling), 2 or 4
      (any power of two works).
    channels: image channels in and out (1 grayscale, 3 RGB).
    prelu_per_channel: per-channel PReLU slopes instead of one shared slope
      per PReLU (the PyTorch default and the SRGAN ports' choice).
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  num_blocks: int = 16
  features: int = 64
  scale: int = 4
  channels: int = 1
  prelu_per_channel: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if self.scale < 1 or self.scale & (self.scale - 1):
      raise ValueError(f'scale must be a power of two >= 1, got {self.scale}')
    prelu = lambda name: PReLU(self.prelu_per_channel, dtype=self.dtype,
                               param_dtype=self.param_dtype, name=name)
    x = x.astype(self.dtype)
    head = _conv(self.features, 9, 1, True, self.dtype, self.param_dtype,
                 'head')(x)
    head = prelu('head_prelu')(head)
    y = head
    for i in range(self.num_blocks):
      y = ResidualBlock(self.features, self.prelu_per_channel, self.dtype,
                        self.param_dtype, name=f'block{i}')(y, train)
    y = _conv(self.features, 3, 1, False, self.dtype, self.param_dtype,
              'trunk_conv')(y)
    y = _bn(train, self.dtype, self.param_dtype, 'trunk_bn')(y)
    # Long skip: the trunk only has to learn the residual to the head features.
    y = y + head
    for i in range(self.scale.bit_length() - 1):
      y = _conv(self.features * 4, 3, 1, True, self.dtype, self.param_dtype,
                f'up{i}')(y)
      y = pixel_shuffle(y, 2)
      y = prelu(f'up{i}_prelu')(y)
    y = _conv(self.channels, 9, 1, True, self.dtype, self.param_dtype,
              'tail')(y)
    # tanh in float32: SR output in [-1, 1] like the HR targets.
    return jnp.tanh(y.astype(jnp.float32))


class SRGANDiscriminator(nn.Module):
  """Image (B, H, W, C) in [-1, 1] -> logits (B,); sigmoid gives P(real).

  Eight 3x3 convolutions with features * (1, 1, 2, 2, 4, 4, 8, 8) maps and
  strides 1, 2, 1, 2, ..., BatchNorm after all but the first, LeakyReLU(0.2);
  then flatten (or global average pool) -> dense 1024 -> LeakyReLU(0.2) ->
  dense 1. The map after the convolutions is H/16 x W/16 (6x6 for the paper's
  96x96 crops).

  Attributes:
    features: maps of the first convolution (paper: 64).
    pool: 'flatten' (paper: the first dense layer's input, and so the
      parameter count, depends on the input size, 6*6*512 for 96x96 crops) or
      'avg' (global average pooling, any input size with the same parameters).
      Flatten order is NHWC (H, W, C), not PyTorch's (C, H, W): it only
      matters when porting weights of `dense0`.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  features: int = 64
  pool: str = 'flatten'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = x.astype(self.dtype)
    for i, mult in enumerate((1, 1, 2, 2, 4, 4, 8, 8)):
      # The first conv has a bias and no BatchNorm; the rest have BatchNorm.
      x = _conv(self.features * mult, 3, 1 + i % 2, i == 0, self.dtype,
                self.param_dtype, f'conv{i}')(x)
      if i > 0:
        x = _bn(train, self.dtype, self.param_dtype, f'bn{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    if self.pool == 'flatten':
      x = x.reshape(x.shape[0], -1)
    elif self.pool == 'avg':
      # Mean in float32: a bfloat16 sum over a large map loses precision.
      x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    else:
      raise ValueError(f"pool must be 'flatten' or 'avg', got {self.pool!r}")
    x = nn.Dense(1024, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=_TORCH_INIT, name='dense0')(x)
    x = nn.leaky_relu(x, 0.2)
    x = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=_TORCH_INIT, name='dense1')(x)
    return x.reshape(x.shape[0]).astype(jnp.float32)
