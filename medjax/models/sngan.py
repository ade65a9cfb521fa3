"""SNGAN "standard CNN" generator and discriminator (Miyato et al. 2018), NHWC.

Miyato, Kataoka, Koyama and Yoshida, *Spectral Normalization for Generative
Adversarial Networks*, ICLR 2018, Table 3 (the DCGAN-like "standard CNN"),
extended to 128x128 for the MedGAN study; `docs/models/sngan.md` maps every
layer to the paper. Layers are given in PyTorch terms; transposed convolutions
are input-dilated convolutions as in `medjax.models.dcgan`, and all
convolutions use `medjax.models.conv.conv_general_dilated`.

Spectral normalisation wraps every convolution and the final dense layer of
the discriminator (`SpectralNorm` below: `flax.linen.SpectralNorm`, storing
the raw weights; one power iteration per call as in the paper). Its
power-iteration vectors `u` and the last `sigma` live in the **'batch_stats'**
collection (Flax's default; the generator's BatchNorm
statistics live there too), under `sn{i}` / `sn_out`. A D train step must
apply D with `train=True` (which sets `update_stats=True`) and
`mutable=['batch_stats']`, and keep the returned collection, exactly as for a
BatchNorm discriminator; with `train=False` the stored `u` is used for one
power iteration whose result is not stored, so evaluation is deterministic.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import conv
from medjax.models import dcgan

Dtype = Any


class SpectralNorm(nn.SpectralNorm):
  """`nn.SpectralNorm` that stores the raw weight, as PyTorch and Chainer do.

  Flax's wrapper writes the *normalised* weight back into 'params' during
  `init` (its `map_variables` is mutable and maps values out unchanged), so the
  stored initial kernel is W0 / sigma_estimate rather than the N(0, 0.02)
  draw; the output is the same (normalisation is scale invariant) but Adam's
  steps, which have a fixed size per element, are then ~10x smaller relative
  to the weights than in the reference implementations. This subclass maps
  every variable back to its raw value on the way out; power iteration,
  collection ('batch_stats') and variable names are Flax's.
  """

  @nn.compact
  def __call__(self, *args, update_stats: bool, **kwargs):
    raw = {}

    def normalise(vs):
      def one(path, value):
        raw[jax.tree_util.keystr(path)] = value
        return self._spectral_normalize(path, value, update_stats=update_stats)
      return jax.tree_util.tree_map_with_path(one, vs)

    def restore(vs):
      return jax.tree_util.tree_map_with_path(
          lambda path, v: raw.get(jax.tree_util.keystr(path), v), vs)

    return nn.map_variables(
        lambda layer: layer(*args, **kwargs), trans_in_fn=normalise,
        trans_out_fn=restore, init=self.is_initializing(), mutable=True,
    )(self.layer_instance)


def generator_output_size(bottom_width: int, features: Sequence[int]) -> int:
  """Image side of `Generator`: one 2x upsampling per entry after the first."""
  return bottom_width * 2 ** (len(features) - 1)


class Generator(nn.Module):
  """Latent (B, latent_dim) -> image (B, H, W, channels) in [-1, 1].

  dense -> bottom_width^2 x features[0], BatchNorm, ReLU; then for every
  further entry of `features` a ConvTranspose 4x4, s2, p1 + BatchNorm + ReLU;
  then ConvTranspose 3x3, s1, p1 to `channels` + tanh. The image side is
  `bottom_width * 2 ** (len(features) - 1)`.

  Attributes:
    features: width of the dense output and of every upsampling layer. The
      default (with `bottom_width=4`) makes 128x128: the paper's last four
      stages (512, 256, 128, 64 feature maps at 1/8 ... 1/1 of the output
      side) preceded by two 512-map upsamplings from a 4x4 start.
    bottom_width: side of the dense layer's output map (paper: M/8, i.e. 4
      for 32x32 CIFAR-10).
    channels: image channels.
    init_std: std of the N(0, std) weight init (chainer-gan-lib's 0.02).
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  features: Sequence[int] = (512, 512, 512, 256, 128, 64)
  bottom_width: int = 4
  channels: int = 1
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    init = nn.initializers.normal(self.init_std)
    bw, f0 = self.bottom_width, self.features[0]
    # No biases before BatchNorm: its shift makes them redundant.
    x = nn.Dense(bw * bw * f0, use_bias=False, dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=init,
                 name='dense0')(z.astype(self.dtype))
    x = x.reshape(z.shape[0], bw, bw, f0)
    x = nn.relu(dcgan.batch_norm(train, self.dtype, self.param_dtype,
                          self.init_std, 'bn0')(x))
    for i, f in enumerate(self.features[1:], start=1):
      # ConvTranspose2d(4, 2, 1): input dilation 2, padding 4 - 1 - 1.
      x = nn.Conv(
          f, (4, 4), padding=((2, 2), (2, 2)), input_dilation=(2, 2),
          use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=init, conv_general_dilated=conv.conv_general_dilated,
          name=f'deconv{i}')(x)
      x = nn.relu(dcgan.batch_norm(train, self.dtype, self.param_dtype,
                            self.init_std, f'bn{i}')(x))
    # ConvTranspose2d(3, 1, 1) is a 3x3 'same' convolution (kernel flipped).
    x = nn.Conv(
        self.channels, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=init,
        conv_general_dilated=conv.conv_general_dilated, name='conv_out')(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """Image (B, H, W, C) -> logits (B,); spectrally normalised throughout.

  Every convolution is followed by LeakyReLU; the flattened last map goes to
  a dense layer with one output. Every convolution and the dense layer are
  wrapped in `nn.SpectralNorm` (biases are not normalised). No BatchNorm.

  Attributes:
    features, kernels, strides, paddings: one per convolution (PyTorch terms);
      the defaults are the paper's seven layers (3x3 s1 / 4x4 s2 pairs,
      64-64-128-128-256-256-512), leaving a (size/8)^2 x 512 map (16x16 at
      128x128; the paper's dense layer likewise takes M/8 x M/8 x 512).
    negative_slope: LeakyReLU slope (0.2 here; the paper's Table 3 uses 0.1).
    power_iterations: power iterations per call (paper: 1).
    init_std: std of the N(0, std) weight init.
    dtype: compute dtype; param_dtype: parameter (and `u`) dtype.
  """
  features: Sequence[int] = (64, 64, 128, 128, 256, 256, 512)
  kernels: Sequence[int] = (3, 4, 3, 4, 3, 4, 3)
  strides: Sequence[int] = (1, 2, 1, 2, 1, 2, 1)
  paddings: Sequence[int] = (1, 1, 1, 1, 1, 1, 1)
  negative_slope: float = 0.2
  power_iterations: int = 1
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               update_stats: bool | None = None) -> jax.Array:
    """Logits of `x`.

    Args:
      x: (B, H, W, C) images in [-1, 1].
      train: training mode; only sets the default of `update_stats`.
      update_stats: store the new power-iteration `u`/`sigma` (needs
        `mutable=['batch_stats']`); defaults to `train`.

    Returns:
      (B,) float32 logits.
    """
    update = train if update_stats is None else update_stats
    init = nn.initializers.normal(self.init_std)

    def sn(layer, name):
      return SpectralNorm(layer, n_steps=self.power_iterations,
                             param_dtype=self.param_dtype, name=name)

    x = x.astype(self.dtype)
    for i, (f, k, s, p) in enumerate(zip(self.features, self.kernels,
                                         self.strides, self.paddings,
                                         strict=True)):
      layer = nn.Conv(
          f, (k, k), strides=(s, s), padding=((p, p), (p, p)),
          dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=init,
          conv_general_dilated=conv.conv_general_dilated, name=f'conv{i}')
      x = nn.leaky_relu(sn(layer, f'sn{i}')(x, update_stats=update),
                        self.negative_slope)
    x = x.reshape(x.shape[0], -1)
    dense = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=init, name='dense_out')
    x = sn(dense, 'sn_out')(x, update_stats=update)
    return x.reshape(x.shape[0]).astype(jnp.float32)
