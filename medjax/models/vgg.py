"""VGG19 feature extractor (Simonyan & Zisserman 2015), Flax Linen, NHWC.

The network is torchvision's `vgg19().features` (config "E": 3x3 convolutions
with padding 1, ReLU, 2x2 max-pools), built only up to `last_layer`, so that
pretrained torchvision weights (`vgg19-dcbb9e9d.pth`, converted with
`convert_vgg19`) reproduce torchvision's feature maps.

Input: float RGB images in [0, 1], NHWC. They are normalised inside the module
with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225),
as torchvision's weights expect. Images in [-1, 1] and grayscale images go
through `to_vgg_input` first: it maps [-1, 1] to [0, 1] and repeats a single
channel to three (a gray pixel is an RGB pixel with R = G = B).

Feature layers are named `convB_L` (block B, L-th convolution in it). SRGAN's
"VGG54" (Ledig et al. 2017) is the feature map of the 4th convolution before
the 5th max-pool: `last_layer='conv5_4'`. The SRGAN paper takes it after the
ReLU (`after_relu=True`); ESRGAN (Wang et al. 2018) argues for features before
the activation, which are denser and keep brightness information, and that is
this module's default (`after_relu=False`). Choose per experiment and record it.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import conv

Dtype = Any

# (block, convolutions in block) for VGG19.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
_FEATURES = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
  """'conv1_1' ... 'conv5_4', in network order."""
  return [f'conv{b}_{i}' for b, n in _BLOCKS for i in range(1, n + 1)]


def torch_indices(blocks=_BLOCKS) -> dict[str, int]:
  """Layer name -> index of the conv in torchvision's `vgg*().features`.

  Args:
    blocks: (block, convolutions in block) pairs; VGG19's by default.
  """
  out, idx = {}, 0
  for b, n in blocks:
    for i in range(1, n + 1):
      out[f'conv{b}_{i}'] = idx
      idx += 2  # conv, relu
    idx += 1  # max-pool
  return out


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 (VALID: an odd last row or column is dropped).

  The same values and gradient as `nn.max_pool(x, (2, 2), strides=(2, 2))`,
  ties included (the first maximum in row-major window order takes the
  gradient, as in PyTorch). XLA differentiates `nn.max_pool` into a
  select-and-scatter, which its GPU backend expands into a window reduction
  that writes four int32 index arrays, then a scatter of the gradient into
  an input-sized buffer. This pool's gradient is one elementwise pass over
  the pool's input, output and output gradient instead: SRGAN's VGG54 step
  compiles to 10-13% less GPU memory traffic (bench/NOTES.md).

  Args:
    x: (B, H, W, C).

  Returns:
    (B, H // 2, W // 2, C).
  """
  h, w = x.shape[1:3]
  return _pool_even(x[:, :h - h % 2, :w - w % 2])


def _windows(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _pool_even(x: jax.Array) -> jax.Array:
  # The maximum of four strided views: one elementwise (loop) kernel, where
  # a reduction over the two window axes would need XLA's reduction emitter.
  w = _windows(x)
  return jnp.maximum(jnp.maximum(w[:, :, 0, :, 0], w[:, :, 0, :, 1]),
                     jnp.maximum(w[:, :, 1, :, 0], w[:, :, 1, :, 1]))


def _pool_even_fwd(x):
  y = _pool_even(x)
  return y, (x, y)


def _pool_even_bwd(residuals, g):
  x, y = residuals
  hit = _windows(x) == y[:, :, None, :, None]
  # The first hit in row-major window order takes the gradient: the first
  # within each window row, in the first row that has one. (An iota-based
  # form of the same mask compiled to more GPU kernels.)
  left, right = hit[:, :, :, :, :1], hit[:, :, :, :, 1:]
  first_in_row = jnp.concatenate([left, right & ~left], axis=4)
  top = left[:, :, :1] | right[:, :, :1]
  earlier_row = jnp.concatenate([jnp.zeros_like(top), top], axis=2)
  dx = jnp.where(first_in_row & ~earlier_row, g[:, :, None, :, None],
                 jnp.zeros((), g.dtype))
  return (dx.reshape(x.shape),)


_pool_even.defvjp(_pool_even_fwd, _pool_even_bwd)


def to_vgg_input(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] (B, H, W, 1 or 3) -> RGB in [0, 1] for VGG19Features.

  Grayscale policy: the single channel is repeated to R, G and B.

  Args:
    images: (B, H, W, C) with C in {1, 3}, values in [-1, 1].

  Returns:
    (B, H, W, 3) float32 in [0, 1].
  """
  c = images.shape[-1]
  if c not in (1, 3):
    raise ValueError(f'VGG input needs 1 or 3 channels, got {c}')
  x = (images.astype(jnp.float32) + 1.0) * 0.5
  if c == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return x


class VGG19Features(nn.Module):
  """RGB images in [0, 1] (B, H, W, 3) -> VGG19 feature map at `last_layer`.

  Attributes:
    last_layer: 'conv1_1' ... 'conv5_4'; nothing after it is built. 'conv5_4'
      is SRGAN's VGG54.
    after_relu: take the feature after the layer's ReLU (SRGAN paper) or
      before it (ESRGAN; default).
    normalize: subtract the ImageNet mean and divide by its std (torchvision's
      preprocessing); turn off only for inputs already normalised.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  last_layer: str = 'conv5_4'
  after_relu: bool = False
  normalize: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    names = layer_names()
    if self.last_layer not in names:
      raise ValueError(f'last_layer must be one of {names}, '
                       f'got {self.last_layer!r}')
    if x.shape[-1] != 3:
      raise ValueError(f'VGG19Features needs RGB input (use to_vgg_input), '
                       f'got {x.shape[-1]} channels')
    x = x.astype(jnp.float32)
    if self.normalize:
      x = (x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
    x = x.astype(self.dtype)
    for b, n in _BLOCKS:
      if b > 1:
        x = max_pool_2x2(x)
      for i in range(1, n + 1):
        name = f'conv{b}_{i}'
        x = nn.Conv(
            _FEATURES[b], (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
            param_dtype=self.param_dtype,
            conv_general_dilated=conv.conv_general_dilated, name=name)(x)
        if name == self.last_layer:
          return nn.relu(x) if self.after_relu else x
        x = nn.relu(x)
    raise AssertionError('unreachable')


def convert_vgg19(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """torchvision `vgg19` state dict -> params of `VGG19Features`.

  Only `features.*` convolutions are used; the classifier is ignored. PyTorch
  convolutions are cross-correlations like `lax.conv`, so the kernel is only
  transposed (O, I, kh, kw) -> (kh, kw, I, O), not flipped.

  Args:
    state_dict: name -> array, e.g. from
      `medjax.weights.load_torch_state_dict('vgg19-dcbb9e9d.pth')`.

  Returns:
    The params collection `{'conv1_1': {'kernel', 'bias'}, ...}`; apply as
    `VGG19Features().apply({'params': params}, x)` (any `last_layer`).

  Raises:
    KeyError: a convolution's weight or bias is missing.
    ValueError: a shape differs from VGG19's.
  """
  params: dict[str, Any] = {}
  features = {f'conv{b}_{i}': _FEATURES[b]
              for b, n in _BLOCKS for i in range(1, n + 1)}
  in_features = 3
  missing = []
  for name, idx in torch_indices().items():
    w_key, b_key = f'features.{idx}.weight', f'features.{idx}.bias'
    for key in (w_key, b_key):
      if key not in state_dict:
        missing.append(key)
    if missing:
      continue
    w = np.asarray(state_dict[w_key], np.float32)
    bias = np.asarray(state_dict[b_key], np.float32)
    out_features = features[name]
    if w.shape != (out_features, in_features, 3, 3) or bias.shape != (
        out_features,):
      raise ValueError(
          f'{w_key}: shape {w.shape} / bias {bias.shape}, VGG19 expects '
          f'{(out_features, in_features, 3, 3)} / {(out_features,)}')
    params[name] = {'kernel': np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
                    'bias': bias}
    in_features = out_features
  if missing:
    raise KeyError(f'not a torchvision VGG19 state dict: missing {missing} '
                   f'(found keys like {sorted(state_dict)[:4]})')
  return params
