"""StarGAN generator, discriminator and losses (Choi et al. 2018), NHWC.

Choi, Choi, Kim, Ha, Kim and Choo, *StarGAN: Unified Generative Adversarial
Networks for Multi-Domain Image-to-Image Translation*, CVPR 2018, appendix
tables 4 and 5, with the details of the authors' reference implementation
(yunjey/stargan, `model.py` and `solver.py`) where the paper is silent;
`docs/models/stargan.md` maps every layer to both. Layers are given in
PyTorch terms; transposed convolutions are input-dilated convolutions as in
`medjax.models.dcgan`, and all convolutions use
`medjax.models.conv.conv_general_dilated`.

Neither network has running statistics (instance norm always uses the
statistics of each image) or dropout: `apply` needs no rngs and no mutable
collections. Adversarial loss and gradient penalty are WGAN-GP
(`medjax.losses.wgan_d_loss`, `wgan_g_loss`, `wgan_gp` on the `src` map); the
domain classification and reconstruction losses are here.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from medjax.models import conv

Dtype = Any

# PyTorch's default Conv2d init (kaiming_uniform, a=sqrt(5)) is
# U(+-1/sqrt(fan_in)). PyTorch computes a ConvTranspose2d's fan_in from its
# output channels, which is the fan_out of the equivalent input-dilated
# convolution's HWIO kernel.
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
_TORCH_DECONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_out',
                                                      'uniform')


def _torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def _instance_norm(dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Module:
  # InstanceNorm2d(affine=True): per image and channel over H, W; scale 1,
  # bias 0. Statistics are reduced in float32 even for bfloat16 compute.
  return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
                         name=name)


class ResidualBlock(nn.Module):
  """x + IN(Conv3x3(ReLU(IN(Conv3x3(x))))), width preserved, no biases."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = x.shape[-1]
    h = x
    for i in range(2):
      if i:
        h = nn.relu(h)
      h = nn.Conv(
          f, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
          dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=_TORCH_CONV_INIT,
          conv_general_dilated=conv.conv_general_dilated, name=f'conv{i}')(h)
      h = _instance_norm(self.dtype, self.param_dtype, f'norm{i}')(h)
    return x + h


def tile_labels(c: jax.Array, height: int, width: int) -> jax.Array:
  """(B, c_dim) labels -> (B, height, width, c_dim), constant over space."""
  return jnp.broadcast_to(c[:, None, None, :],
                          (c.shape[0], height, width, c.shape[-1]))


class Generator(nn.Module):
  """(image (B, H, W, channels), target label (B, c_dim)) -> translated image.

  The label is tiled over space and concatenated to the image's channels;
  then Conv 7x7 s1 p3 (conv_dim) + IN + ReLU, two Conv 4x4 s2 p1 + IN + ReLU
  (doubling the width), `repeat_num` `ResidualBlock`s, two ConvTranspose 4x4
  s2 p1 + IN + ReLU (halving it), Conv 7x7 s1 p3 to `channels` + tanh. No
  biases (every convolution but the last is followed by IN; the reference
  omits the last one's too). H and W must be divisible by 4.

  Attributes:
    conv_dim: width of the first layer (the bottleneck has 4x).
    c_dim: label dimension (number of domains, or attributes).
    repeat_num: residual blocks (paper: 6).
    channels: image channels (paper: 3).
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  conv_dim: int = 64
  c_dim: int = 5
  repeat_num: int = 6
  channels: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array,
               train: bool = True) -> jax.Array:
    """Translates `x` to the domain(s) `c`.

    Args:
      x: (B, H, W, channels) images in [-1, 1].
      c: (B, c_dim) target labels: one-hot for single-label domains, 0/1 per
        attribute for multi-label ones.
      train: ignored (instance norm has no running statistics); accepted so
        that a trainer can call every generator alike.

    Returns:
      (B, H, W, channels) float32 images in [-1, 1].

    Raises:
      ValueError: for a label or image of the wrong shape.
    """
    del train
    if c.shape != (x.shape[0], self.c_dim):
      raise ValueError(f'labels must be (batch, c_dim) = '
                       f'{(x.shape[0], self.c_dim)}, got {c.shape}')
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f'image side must be divisible by 4, got '
                       f'{x.shape[1]}x{x.shape[2]}')
    kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
              conv_general_dilated=conv.conv_general_dilated)

    def norm(name):
      return _instance_norm(self.dtype, self.param_dtype, name)

    h = jnp.concatenate(
        [x.astype(self.dtype),
         tile_labels(c.astype(self.dtype), x.shape[1], x.shape[2])], axis=-1)
    f = self.conv_dim
    h = nn.Conv(f, (7, 7), padding=((3, 3), (3, 3)),
                kernel_init=_TORCH_CONV_INIT, name='conv0', **kw)(h)
    h = nn.relu(norm('norm0')(h))
    for i in (1, 2):
      f *= 2
      h = nn.Conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  kernel_init=_TORCH_CONV_INIT, name=f'down{i}', **kw)(h)
      h = nn.relu(norm(f'down_norm{i}')(h))
    for i in range(self.repeat_num):
      h = ResidualBlock(self.dtype, self.param_dtype, name=f'res{i}')(h)
    for i in (1, 2):
      f //= 2
      # ConvTranspose2d(4, 2, 1): input dilation 2, padding 4 - 1 - 1.
      h = nn.Conv(f, (4, 4), padding=((2, 2), (2, 2)), input_dilation=(2, 2),
                  kernel_init=_TORCH_DECONV_INIT, name=f'up{i}', **kw)(h)
      h = nn.relu(norm(f'up_norm{i}')(h))
    h = nn.Conv(self.channels, (7, 7), padding=((3, 3), (3, 3)),
                kernel_init=_TORCH_CONV_INIT, name='conv_out', **kw)(h)
    return jnp.tanh(h.astype(jnp.float32))


class Discriminator(nn.Module):
  """Image (B, S, S, C) -> (src (B, S/2^r, S/2^r, 1), cls (B, c_dim)) logits.

  `repeat_num` (r) Conv 4x4 s2 p1 + LeakyReLU(0.01), widths conv_dim,
  2 conv_dim, ... (no normalisation, as WGAN-GP requires); then two heads on
  the last map: `src`, Conv 3x3 s1 p1 to one channel (a PatchGAN critic map),
  and `cls`, Conv (S/2^r)x(S/2^r) s1 p0 to `c_dim` domain logits. The heads
  have no biases, the trunk has (reference).

  Attributes:
    image_size: S; must be divisible by 2**repeat_num.
    conv_dim: width of the first layer.
    c_dim: label dimension.
    repeat_num: stride-2 layers (paper: 6, 2x2 final map at 128x128).
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  image_size: int = 128
  conv_dim: int = 64
  c_dim: int = 5
  repeat_num: int = 6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               train: bool = True) -> tuple[jax.Array, jax.Array]:
    """Critic map and domain logits of `x`.

    Args:
      x: (B, image_size, image_size, C) images in [-1, 1].
      train: ignored (no normalisation or dropout).

    Returns:
      `(src, cls)`: float32 (B, S/2^r, S/2^r, 1) critic outputs and (B, c_dim)
      domain logits.

    Raises:
      ValueError: for an image size not divisible by 2**repeat_num or not
        equal to `image_size`.
    """
    del train
    step = 2 ** self.repeat_num
    if self.image_size % step:
      raise ValueError(f'image_size {self.image_size} must be divisible by '
                       f'2**repeat_num = {step}')
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'expected {self.image_size}x{self.image_size} images, '
                       f'got {x.shape[1]}x{x.shape[2]}')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=_TORCH_CONV_INIT,
              conv_general_dilated=conv.conv_general_dilated)
    h = x.astype(self.dtype)
    f = self.conv_dim
    for i in range(self.repeat_num):
      fan_in = 16 * h.shape[-1]
      h = nn.Conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                  bias_init=_torch_bias_init(fan_in), name=f'conv{i}', **kw)(h)
      h = nn.leaky_relu(h, 0.01)
      f *= 2
    src = nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  name='conv_src', **kw)(h)
    k = self.image_size // step
    cls = nn.Conv(self.c_dim, (k, k), padding='VALID', use_bias=False,
                  name='conv_cls', **kw)(h)
    return (src.astype(jnp.float32),
            cls.reshape(cls.shape[0], self.c_dim).astype(jnp.float32))


def domain_classification_loss(logits: jax.Array, labels: jax.Array,
                               multi_label: bool = False) -> jax.Array:
  """Domain classification loss L_cls of D's `cls` logits.

  Single-label domains (the reference's RaFD): softmax cross-entropy, mean
  over the batch. Multi-label attributes (its CelebA): sigmoid binary
  cross-entropy summed over attributes and averaged over the batch (the
  reference's `BCE_with_logits(size_average=False) / batch`).

  Args:
    logits: (B, c_dim) float logits.
    labels: single-label: (B,) integer domains or (B, c_dim) one-hot (or
      probabilities); multi-label: (B, c_dim) 0/1 targets.
    multi_label: which of the two losses.

  Returns:
    The scalar float32 loss.
  """
  logits = logits.astype(jnp.float32)
  if multi_label:
    return optax.sigmoid_binary_cross_entropy(
        logits, labels.astype(jnp.float32)).sum(-1).mean()
  if labels.ndim == logits.ndim:
    return optax.softmax_cross_entropy(
        logits, labels.astype(jnp.float32)).mean()
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, labels).mean()


def reconstruction_loss(x: jax.Array, x_rec: jax.Array) -> jax.Array:
  """Cycle reconstruction loss L_rec = E|x - G(G(x, c_trg), c_org)|_1.

  Mean absolute error over every element (the reference's
  `torch.mean(torch.abs(x - x_rec))`).

  Args:
    x: real images.
    x_rec: their reconstructions, same shape.

  Returns:
    The scalar float32 loss.
  """
  return jnp.abs(x.astype(jnp.float32) - x_rec.astype(jnp.float32)).mean()
