"""Class-conditional DCGAN: label-embedding generator, projection critic.

* Generator: the DCGAN generator (`medjax.models.dcgan.Generator`, unchanged)
  fed concat(z, e_G(y)), where e_G is a learned label embedding (the usual
  conditional-DCGAN input conditioning, after Mirza & Osindero 2014).
* Discriminator: the projection discriminator of Miyato & Koyama, *cGANs with
  Projection Discriminator*, ICLR 2018, on the DCGAN discriminator trunk:
  logits = psi(phi(x)) + <e_D(y), phi(x)>, where phi(x) is the trunk's last
  feature map (after its LeakyReLU), psi the DCGAN's final convolution (which
  reduces that map to 1x1, i.e. a linear map of flatten(phi)) and e_D a
  learned embedding with one entry per element of phi (4x4x512 = 8192 values
  per class for the 64x64 DCGAN).

With e_D = 0 the discriminator is exactly the unconditional DCGAN one (same
layer names and parameter shapes, plus 'embed'). See `docs/models/cdcgan.md`.

Labels are integer class indices in [0, num_classes). Out-of-range labels
raise `ValueError` when the labels are concrete (eager calls, `init`); inside
`jit` they cannot be checked, and their embedding is NaN, so the outputs are
NaN (loud) rather than another class's (a plain `jnp.take` would wrap -1 to
the last class).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import conv
from medjax.models import dcgan

Dtype = Any


def check_labels(labels: jax.Array, num_classes: int) -> None:
  """Raises ValueError for non-integer labels, or out-of-range concrete ones.

  Args:
    labels: (B,) class indices.
    num_classes: number of classes.
  """
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'labels must be integers, got {labels.dtype}')
  if isinstance(labels, jax.core.Tracer):
    return  # Values unknown under jit; see `_embed`.
  values = np.asarray(labels)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got values in '
                     f'[{values.min()}, {values.max()}]')


def _embed(labels: jax.Array, num_classes: int, features: int, init,
           param_dtype: Dtype, name: str) -> jax.Array:
  """Embedding lookup (float32) giving NaN, not a wrapped row, for bad labels.

  Called inside a compact `__call__`, so the `nn.Embed` belongs to the caller.
  """
  e = nn.Embed(num_classes, features, dtype=jnp.float32,
               param_dtype=param_dtype, embedding_init=init, name=name)(labels)
  valid = (labels >= 0) & (labels < num_classes)
  return jnp.where(valid[..., None], e, jnp.asarray(jnp.nan, e.dtype))


class Generator(nn.Module):
  """(latent (B, latent_dim), labels (B,)) -> image (B, H, W, channels).

  Attributes:
    num_classes: number of classes.
    embed_dim: size of the label embedding concatenated to z (a free choice,
      not from a paper; 50 is common in conditional-DCGAN ports).
    features, kernels, strides, paddings, channels, init_std, dtype,
      param_dtype: as in `dcgan.Generator` (same defaults: 64x64).
  """
  num_classes: int
  embed_dim: int = 50
  features: Sequence[int] = (512, 256, 128, 64)
  kernels: Sequence[int] = (4, 4, 4, 4, 4)
  strides: Sequence[int] = (1, 2, 2, 2, 2)
  paddings: Sequence[int] = (0, 1, 1, 1, 1)
  channels: int = 1
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array,
               train: bool = True) -> jax.Array:
    """Images in [-1, 1] of the given classes.

    Args:
      z: (B, latent_dim) latents.
      labels: (B,) integer class indices in [0, num_classes).
      train: BatchNorm in training mode.

    Returns:
      (B, H, W, channels) float32 images.
    """
    check_labels(labels, self.num_classes)
    # N(0, 1) init, the scale of z it is concatenated to (= torch nn.Embedding).
    e = _embed(labels, self.num_classes, self.embed_dim,
               nn.initializers.normal(1.0), self.param_dtype, 'embed')
    x = jnp.concatenate([z.astype(jnp.float32), e], axis=-1)
    return dcgan.Generator(
        features=self.features, kernels=self.kernels, strides=self.strides,
        paddings=self.paddings, channels=self.channels,
        init_std=self.init_std, dtype=self.dtype,
        param_dtype=self.param_dtype, name='dcgan')(x, train=train)


class Discriminator(nn.Module):
  """(image (B, H, W, C), labels (B,)) -> logits (B,), projection head.

  Attributes:
    num_classes: number of classes.
    features, kernels, strides, paddings, init_std, dtype, param_dtype: as in
      `dcgan.Discriminator` (same defaults: 64x64); the last layer must reduce
      the map to 1x1. The projection embedding is initialised N(0, init_std),
      like the head it is added to.
  """
  num_classes: int
  features: Sequence[int] = (64, 128, 256, 512)
  kernels: Sequence[int] = (4, 4, 4, 4, 4)
  strides: Sequence[int] = (2, 2, 2, 2, 1)
  paddings: Sequence[int] = (1, 1, 1, 1, 0)
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array,
               train: bool = True) -> jax.Array:
    """Logits of `x` being a real image of class `labels`.

    Args:
      x: (B, H, W, C) images in [-1, 1].
      labels: (B,) integer class indices in [0, num_classes).
      train: BatchNorm in training mode (needs `mutable=['batch_stats']`).

    Returns:
      (B,) float32 logits.
    """
    check_labels(labels, self.num_classes)
    if len(self.kernels) != len(self.features) + 1:
      raise ValueError('kernels/strides/paddings need one entry per feature '
                       'plus one for the head')
    init = nn.initializers.normal(self.init_std)
    x = x.astype(self.dtype)
    # The DCGAN trunk (same layer names as dcgan.Discriminator): phi(x).
    # dcgan.Discriminator does not expose it, hence the loop (see the report
    # on generalising dcgan.py).
    for i, (f, k, s, p) in enumerate(zip(self.features, self.kernels,
                                         self.strides, self.paddings)):
      x = nn.Conv(
          f, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False,
          dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=init,
          conv_general_dilated=conv.conv_general_dilated, name=f'conv{i}')(x)
      if i > 0:
        x = dcgan.batch_norm(train, self.dtype, self.param_dtype, self.init_std,
                      f'bn{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    phi = x
    n = len(self.features)
    k, s, p = self.kernels[n], self.strides[n], self.paddings[n]
    # psi: the DCGAN head, a linear map of flatten(phi) when it ends at 1x1.
    out = nn.Conv(
        1, (k, k), strides=(s, s), padding=((p, p), (p, p)), use_bias=False,
        dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=init,
        conv_general_dilated=conv.conv_general_dilated, name=f'conv{n}')(phi)
    if out.shape[1:3] != (1, 1):
      raise ValueError(f'discriminator ends at {out.shape[1:3]}, not 1x1: '
                       'check kernels/strides/paddings against the image size')
    phi = phi.astype(jnp.float32).reshape(phi.shape[0], -1)
    e = _embed(labels, self.num_classes, phi.shape[-1], init,
               self.param_dtype, 'embed')
    return out.reshape(out.shape[0]).astype(jnp.float32) + (e * phi).sum(-1)
