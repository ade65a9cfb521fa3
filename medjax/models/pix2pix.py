"""Pix2Pix U-Net generator and PatchGAN discriminator (Isola et al. 2017), NHWC.

Isola, Zhu, Zhou and Efros, *Image-to-Image Translation with Conditional
Adversarial Networks*, CVPR 2017, appendix 6.1, with the layer details of the
authors' reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix,
`networks.py`: `UnetGenerator`, `UnetSkipConnectionBlock`,
`NLayerDiscriminator`) where the paper is silent; `docs/models/pix2pix.md` maps
every layer to both. Layers are given in PyTorch terms; transposed
convolutions are input-dilated convolutions as in `medjax.models.dcgan`, and
all convolutions use `medjax.models.conv.conv_general_dilated`.

Both networks hold BatchNorm statistics in the 'batch_stats' collection: a
train step applies them with `train=True` and `mutable=['batch_stats']`; the
generator additionally needs a 'dropout' rng when `train=True`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import conv
from medjax.models import dcgan

Dtype = Any

NORMS = ('batch', 'instance')


def _norm(norm: str, train: bool, dtype: Dtype, param_dtype: Dtype,
          std: float, name: str) -> nn.Module:
  if norm == 'batch':
    return dcgan.batch_norm(train, dtype, param_dtype, std, name)
  # The reference's 'instance' option: InstanceNorm2d(affine=False).
  return nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False,
                         dtype=dtype, param_dtype=param_dtype, name=name)


def _check_norm(norm: str):
  if norm not in NORMS:
    raise ValueError(f'unknown norm {norm!r}; choose one of {", ".join(NORMS)}')


def unet_features(num_downs: int, ngf: int) -> tuple[int, ...]:
  """Encoder widths: ngf, 2ngf, 4ngf, then 8ngf for every further level."""
  return tuple(ngf * min(2 ** i, 8) for i in range(num_downs))


def unet_dropout_levels(num_downs: int) -> tuple[int, ...]:
  """Levels (0 = outermost) whose decoder layer ends in dropout.

  The reference puts dropout in its `num_downs - 5` middle 8ngf blocks: all
  8ngf levels except the innermost (bottleneck) one, i.e. levels 4 to
  `num_downs - 2` (three for 256x256, two for 128x128, none below 64x64).

  Args:
    num_downs: number of 2x downsamplings.

  Returns:
    The level indices, innermost first.
  """
  return tuple(range(num_downs - 2, 3, -1))


class UNetGenerator(nn.Module):
  """Image (B, H, W, channels_in) -> image (B, H, W, channels_out) in [-1, 1].

  `num_downs` levels; level i (0 = outermost) is, as a reference
  `UnetSkipConnectionBlock`,

    down: [LeakyReLU(0.2)] -> Conv 4x4 s2 p1 -> [norm]
    up:   ReLU -> ConvTranspose 4x4 s2 p1 -> norm -> [Dropout(0.5)]

  with the level's input concatenated (skip first) to its up output. Level 0
  has no activation or norm on the way down and ends in a biased transposed
  convolution + tanh; the innermost level has no norm on the way down (a 1x1
  map at 256x256). Inner widths are `unet_features(num_downs, ngf)`.

  Attributes:
    num_downs: 2x downsamplings; the image side must be divisible by
      2**num_downs (8 for 256x256 and 7 for 128x128 give a 1x1 bottleneck).
    ngf: width of the outermost encoder layer.
    channels_in: input image channels.
    channels_out: output image channels.
    norm: 'batch' (paper) or 'instance' (reference option; no affine).
    use_dropout: dropout in `unet_dropout_levels(num_downs)`.
    dropout_rate: paper 0.5.
    init_std: std of the N(0, std) weight init (and of the BatchNorm scale
      around 1), the reference's `init_type='normal'`.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  num_downs: int = 8
  ngf: int = 64
  channels_in: int = 1
  channels_out: int = 1
  norm: str = 'batch'
  use_dropout: bool = True
  dropout_rate: float = 0.5
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """Translates `x`.

    Args:
      x: (B, H, W, channels_in) images in [-1, 1]; H and W divisible by
        2**num_downs.
      train: batch statistics (needs `mutable=['batch_stats']`) and dropout
        (needs a 'dropout' rng); the paper also uses this mode at test time.

    Returns:
      (B, H, W, channels_out) float32 images in [-1, 1].

    Raises:
      ValueError: for a bad `num_downs`, `norm` or image size.
    """
    _check_norm(self.norm)
    n = self.num_downs
    if n < 2:
      raise ValueError(f'num_downs must be at least 2, got {n}')
    step = 2 ** n
    if x.shape[1] % step or x.shape[2] % step:
      raise ValueError(
          f'U-Net with num_downs={n} needs an image side divisible by {step}; '
          f'got {x.shape[1]}x{x.shape[2]} (256x256 -> 8, 128x128 -> 7)')
    if x.shape[-1] != self.channels_in:
      raise ValueError(f'expected {self.channels_in} input channels, got '
                       f'{x.shape[-1]}')
    feats = unet_features(n, self.ngf)
    dropout = set(unet_dropout_levels(n)) if self.use_dropout else set()
    # Norm follows every layer but the outer ones (reference: biases only
    # when the norm is InstanceNorm without affine parameters).
    use_bias = self.norm == 'instance'
    init = nn.initializers.normal(self.init_std)

    def norm(name):
      return _norm(self.norm, train, self.dtype, self.param_dtype,
                   self.init_std, name)

    h = x.astype(self.dtype)
    skips = []
    for i, f in enumerate(feats):
      skips.append(h)  # the level's input, concatenated on the way up
      if i > 0:
        h = nn.leaky_relu(h, 0.2)
      h = nn.Conv(
          f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
          use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=init, conv_general_dilated=conv.conv_general_dilated,
          name=f'down{i}')(h)
      if 0 < i < n - 1:
        h = norm(f'down_norm{i}')(h)
    for i in reversed(range(n)):
      if i < n - 1:
        h = jnp.concatenate([skips[i + 1], h], axis=-1)
      h = nn.relu(h)
      # ConvTranspose2d(4, 2, 1): input dilation 2, padding 4 - 1 - 1.
      h = nn.Conv(
          feats[i - 1] if i else self.channels_out, (4, 4),
          padding=((2, 2), (2, 2)), input_dilation=(2, 2),
          use_bias=use_bias or i == 0, dtype=self.dtype,
          param_dtype=self.param_dtype, kernel_init=init,
          conv_general_dilated=conv.conv_general_dilated, name=f'up{i}')(h)
      if i > 0:
        h = norm(f'up_norm{i}')(h)
      if i in dropout:
        h = nn.Dropout(self.dropout_rate, deterministic=not train,
                       name=f'dropout{i}')(h)
    return jnp.tanh(h.astype(jnp.float32))


def patch_layers(n_layers: int) -> tuple[tuple[int, int, int], ...]:
  """(kernel, stride, padding) of every `PatchDiscriminator` convolution."""
  return ((4, 2, 1),) * n_layers + ((4, 1, 1),) * 2


def receptive_field(n_layers: int = 3) -> int:
  """Side of the input patch one `PatchDiscriminator` logit sees.

  70 for the default n_layers=3 (the paper's 70x70 PatchGAN); 1 and 5 give
  its 16x16 and 286x286 variants.

  Args:
    n_layers: the discriminator's stride-2 layers.

  Returns:
    The receptive field side in pixels.
  """
  rf = 1
  for k, s, _ in reversed(patch_layers(n_layers)):
    rf = (rf - 1) * s + k
  return rf


def patch_output_size(size: int, n_layers: int = 3) -> int:
  """Side of the logit map for a `size` input (30 for 256 at n_layers=3)."""
  k, s, p = zip(*patch_layers(n_layers))
  return dcgan.conv_out_size(size, k, s, p, transpose=False)


class PatchDiscriminator(nn.Module):
  """Conditional PatchGAN: (source, target) -> (B, h, w, 1) logits map.

  Conv 4x4 s2 p1 (ndf) + LeakyReLU(0.2); `n_layers - 1` times Conv 4x4 s2 p1 +
  norm + LeakyReLU with widths doubling up to 8ndf; Conv 4x4 s1 p1 + norm +
  LeakyReLU; Conv 4x4 s1 p1 to one channel. Each logit sees a
  `receptive_field(n_layers)`-pixel square patch (70 by default); sigmoid
  gives P(real) per patch.

  Attributes:
    ndf: width of the first layer.
    n_layers: stride-2 convolutions (3 gives the 70x70 PatchGAN).
    norm: 'batch' (paper) or 'instance' (reference option; no affine).
    init_std, dtype, param_dtype: as in `UNetGenerator`.
  """
  ndf: int = 64
  n_layers: int = 3
  norm: str = 'batch'
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, source: jax.Array, target: jax.Array,
               train: bool = True) -> jax.Array:
    """Logits that `target` is the real translation of `source`, per patch.

    Args:
      source: (B, H, W, C_in) conditioning (generator input) images.
      target: (B, H, W, C_out) real or generated images.
      train: batch statistics (needs `mutable=['batch_stats']`).

    Returns:
      (B, h, w, 1) float32 logits, h = `patch_output_size(H, n_layers)`.

    Raises:
      ValueError: for mismatched inputs or a bad `norm`.
    """
    _check_norm(self.norm)
    if source.shape[:3] != target.shape[:3]:
      raise ValueError(f'source {source.shape} and target {target.shape} '
                       'differ in batch or spatial size')
    use_bias = self.norm == 'instance'
    init = nn.initializers.normal(self.init_std)
    # The paper's D sees the pair: input and output stacked on channels.
    x = jnp.concatenate([source.astype(self.dtype),
                         target.astype(self.dtype)], axis=-1)
    layers = patch_layers(self.n_layers)
    last = len(layers) - 1
    for i, (k, s, p) in enumerate(layers):
      f = 1 if i == last else self.ndf * min(2 ** i, 8)
      # The reference gives the first and last convolutions a bias.
      x = nn.Conv(
          f, (k, k), strides=(s, s), padding=((p, p), (p, p)),
          use_bias=use_bias or i in (0, last), dtype=self.dtype,
          param_dtype=self.param_dtype, kernel_init=init,
          conv_general_dilated=conv.conv_general_dilated, name=f'conv{i}')(x)
      if i == last:
        break
      if i > 0:
        x = _norm(self.norm, train, self.dtype, self.param_dtype,
                  self.init_std, f'norm{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    return x.astype(jnp.float32)
