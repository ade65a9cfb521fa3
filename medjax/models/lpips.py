"""LPIPS networks (Zhang et al. 2018), Flax Linen, NHWC.

"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018; the `lpips` PyPI package,
version 0.1 of its linear layers.

LPIPS(a, b) = sum_l mean_{h,w} sum_c w_{l,c} (n(f_l(a)) - n(f_l(b)))^2_{h,w,c}

where f_l is the l-th tap of a backbone applied to the scaled input
(x - shift) / scale, n(f) = f / (sqrt(sum_c f^2) + 1e-10) normalises each
pixel's feature vector over channels, and w_l (C_l,) is the l-th "linear
layer" (a 1x1 convolution to one channel, no bias, non-negative in the
published weights).

Backbones (torchvision layer order, so torchvision weights load unchanged):
  * 'alex': `alexnet().features` -- conv 11x11 stride 4 pad 2 (64), max-pool
    3 stride 2, conv 5x5 pad 2 (192), max-pool, conv 3x3 pad 1 (384), conv 3x3
    (256), conv 3x3 (256); taps after each conv's ReLU (relu1 ... relu5).
  * 'vgg': `vgg16().features` -- 3x3 convs pad 1, 2x2 max-pools; taps relu1_2,
    relu2_2, relu3_3, relu4_3, relu5_3.

Weights: backbones from torchvision's `alexnet-owt-7be5be79.pth` and
`vgg16-397923af.pth` (`convert_alexnet`, `convert_vgg16`); linear layers from
the lpips package's `lpips/weights/v0.1/alex.pth` and `vgg.pth`
(`convert_lin`). See docs/weights.md and `medjax.metrics.lpips`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import conv
from medjax.models import vgg

Dtype = Any

# lpips' ScalingLayer: inputs in [-1, 1] become (x - shift) / scale, roughly
# torchvision's ImageNet normalisation expressed on the [-1, 1] scale.
SHIFT = (-.030, -.088, -.188)
SCALE = (.458, .448, .450)

NETS = ('alex', 'vgg')

# AlexNet: (name, torch `features` index, out channels, kernel, stride, pad).
_ALEX = (('conv1', 0, 64, 11, 4, 2), ('conv2', 3, 192, 5, 1, 2),
         ('conv3', 6, 384, 3, 1, 1), ('conv4', 8, 256, 3, 1, 1),
         ('conv5', 10, 256, 3, 1, 1))
# VGG16 (config "D"): (block, convolutions in block); 64 ... 512 features.
_VGG16_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
_VGG16_FEATURES = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}

# Channels of the five taps, i.e. of the five linear layers.
CHANNELS = {'alex': (64, 192, 384, 256, 256),
            'vgg': (64, 128, 256, 512, 512)}

EPS = 1e-10


def vgg16_torch_indices() -> dict[str, int]:
  """'conv1_1' ... 'conv5_3' -> index of the conv in `vgg16().features`."""
  return vgg.torch_indices(_VGG16_BLOCKS)


def alexnet_torch_indices() -> dict[str, int]:
  """'conv1' ... 'conv5' -> index of the conv in `alexnet().features`."""
  return {name: idx for name, idx, *_ in _ALEX}


def min_size(net: str) -> int:
  """Smallest H and W for which every tap of `net` has at least one pixel."""
  if net == 'vgg':
    return 16  # four 2x2 max-pools before relu5_3
  if net == 'alex':
    # conv1 (11, s4, p2) must leave >= 7 pixels for two 3x3/s2 max-pools.
    return 4 * 6 + 11 - 4
  raise ValueError(f'net must be one of {NETS}, got {net!r}')


def _conv(features: int, k: int, stride: int, pad: int, name: str,
          dtype: Dtype, param_dtype: Dtype, precision: Any) -> nn.Conv:
  return nn.Conv(features, (k, k), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), dtype=dtype,
                 param_dtype=param_dtype, precision=precision,
                 conv_general_dilated=conv.conv_general_dilated, name=name)


class AlexNetFeatures(nn.Module):
  """Scaled RGB (B, H, W, 3) -> AlexNet taps relu1 ... relu5 (a tuple).

  Attributes:
    dtype: compute dtype; param_dtype: parameter dtype.
    precision: convolution precision (None: the backend default, which may be
      TF32 on GPUs; `'highest'` for reproducible metrics).
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    x = x.astype(self.dtype)
    taps = []
    for i, (name, _, features, k, stride, pad) in enumerate(_ALEX):
      if i in (1, 2):  # max-pools before conv2 and conv3
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
      x = nn.relu(_conv(features, k, stride, pad, name, self.dtype,
                        self.param_dtype, self.precision)(x))
      taps.append(x)
    return tuple(taps)


class VGG16Features(nn.Module):
  """Scaled RGB (B, H, W, 3) -> VGG16 taps relu1_2 ... relu5_3 (a tuple).

  Attributes:
    dtype: compute dtype; param_dtype: parameter dtype.
    precision: convolution precision (see `AlexNetFeatures`).
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    x = x.astype(self.dtype)
    taps = []
    for b, n in _VGG16_BLOCKS:
      if b > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i in range(1, n + 1):
        x = nn.relu(_conv(_VGG16_FEATURES[b], 3, 1, 1, f'conv{b}_{i}',
                          self.dtype, self.param_dtype, self.precision)(x))
      taps.append(x)  # the block's last ReLU
    return tuple(taps)


def normalize_channels(f: jax.Array) -> jax.Array:
  """lpips' `normalize_tensor`: f / (||f||_2 over channels + 1e-10)."""
  f = f.astype(jnp.float32)
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


class LinLayers(nn.Module):
  """The five 1x1 "linear" layers: lin{l} has a kernel of shape (C_l,)."""
  channels: Sequence[int]

  @nn.compact
  def __call__(self, diffs: Sequence[jax.Array]) -> jax.Array:
    out = []
    for l, (c, d) in enumerate(zip(self.channels, diffs)):
      w = self.param(f'lin{l}', nn.initializers.uniform(1.0 / c), (c,),
                     jnp.float32)
      # 1x1 conv to one channel, then the spatial mean: (B,).
      out.append(jnp.mean(jnp.sum(d * w, axis=-1), axis=(1, 2)))
    return jnp.stack(out, axis=-1)


class LPIPSNet(nn.Module):
  """LPIPS distance between images in [-1, 1] (B, H, W, 3) -> (B,).

  Attributes:
    net: 'alex' or 'vgg'.
    dtype: backbone compute dtype.
    precision: backbone convolution precision.
  """
  net: str = 'alex'
  dtype: Dtype = jnp.float32
  precision: Any = None

  def setup(self):
    if self.net == 'alex':
      self.backbone = AlexNetFeatures(dtype=self.dtype,
                                      precision=self.precision)
    elif self.net == 'vgg':
      self.backbone = VGG16Features(dtype=self.dtype, precision=self.precision)
    else:
      raise ValueError(f'net must be one of {NETS}, got {self.net!r}')
    self.lin = LinLayers(CHANNELS[self.net])

  def features(self, x: jax.Array) -> tuple[jax.Array, ...]:
    """Backbone taps of images in [-1, 1], after lpips' scaling layer."""
    x = (x.astype(jnp.float32) - jnp.array(SHIFT)) / jnp.array(SCALE)
    return self.backbone(x)

  def __call__(self, a: jax.Array, b: jax.Array,
               per_layer: bool = False) -> jax.Array:
    """Distances (B,), or per-layer terms (B, 5) when `per_layer`."""
    fa, fb = self.features(a), self.features(b)
    diffs = [(normalize_channels(x) - normalize_channels(y)) ** 2
             for x, y in zip(fa, fb)]
    terms = self.lin(diffs)
    return terms if per_layer else jnp.sum(terms, axis=-1)


# --- Converters --------------------------------------------------------------


def _convert_convs(state_dict: Mapping[str, np.ndarray],
                   layers: Sequence[tuple[str, int, int, int, int]],
                   what: str) -> dict[str, Any]:
  """`features.{idx}.weight/bias` -> {name: {'kernel' HWIO, 'bias'}}."""
  params: dict[str, Any] = {}
  missing = [f'features.{idx}.{leaf}' for _, idx, *_ in layers
             for leaf in ('weight', 'bias')
             if f'features.{idx}.{leaf}' not in state_dict]
  if missing:
    raise KeyError(f'not a torchvision {what} state dict: missing {missing} '
                   f'(found keys like {sorted(state_dict)[:4]})')
  for name, idx, cout, cin, k in layers:
    w_key, b_key = f'features.{idx}.weight', f'features.{idx}.bias'
    w = np.asarray(state_dict[w_key], np.float32)
    bias = np.asarray(state_dict[b_key], np.float32)
    if w.shape != (cout, cin, k, k) or bias.shape != (cout,):
      raise ValueError(f'{w_key}: shape {w.shape} / bias {bias.shape}, {what} '
                       f'expects {(cout, cin, k, k)} / {(cout,)}')
    # PyTorch and lax both cross-correlate: transpose OIHW -> HWIO, no flip.
    params[name] = {'kernel': np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
                    'bias': bias}
  return params


def convert_alexnet(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """torchvision `alexnet` state dict -> params of `AlexNetFeatures`.

  Args:
    state_dict: name -> array, e.g. from `medjax.weights.
      load_torch_state_dict('alexnet-owt-7be5be79.pth')`; the classifier is
      ignored.

  Returns:
    `{'conv1': {'kernel', 'bias'}, ..., 'conv5': ...}`.

  Raises:
    KeyError: a convolution is missing. ValueError: a shape is not AlexNet's.
  """
  layers, cin = [], 3
  for name, idx, cout, k, _, _ in _ALEX:
    layers.append((name, idx, cout, cin, k))
    cin = cout
  return _convert_convs(state_dict, layers, 'AlexNet')


def convert_vgg16(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """torchvision `vgg16` state dict -> params of `VGG16Features`.

  Args:
    state_dict: name -> array, e.g. from `medjax.weights.
      load_torch_state_dict('vgg16-397923af.pth')`; the classifier is ignored.

  Returns:
    `{'conv1_1': {'kernel', 'bias'}, ..., 'conv5_3': ...}`.

  Raises:
    KeyError: a convolution is missing. ValueError: a shape is not VGG16's.
  """
  layers, cin = [], 3
  for name, idx in vgg16_torch_indices().items():
    cout = _VGG16_FEATURES[int(name[4])]
    layers.append((name, idx, cout, cin, 3))
    cin = cout
  return _convert_convs(state_dict, layers, 'VGG16')


def convert_lin(state_dict: Mapping[str, np.ndarray],
                net: str) -> dict[str, Any]:
  """lpips v0.1 linear layers (`alex.pth` / `vgg.pth`) -> `LinLayers` params.

  Args:
    state_dict: with `lin{l}.model.1.weight` of shape (1, C_l, 1, 1) (index 1:
      the package puts a Dropout at index 0); `lin{l}.model.0.weight` (saved
      without dropout) is accepted too.
    net: 'alex' or 'vgg' (sets the expected channel counts).

  Returns:
    `{'lin0': (C_0,), ..., 'lin4': (C_4,)}`.

  Raises:
    KeyError: a layer is missing. ValueError: a shape is not `net`'s.
  """
  if net not in CHANNELS:
    raise ValueError(f'net must be one of {NETS}, got {net!r}')
  params = {}
  for l, c in enumerate(CHANNELS[net]):
    keys = [f'lin{l}.model.1.weight', f'lin{l}.model.0.weight']
    key = next((k for k in keys if k in state_dict), None)
    if key is None:
      raise KeyError(f'not an lpips {net} linear-layer file: missing '
                     f'{keys[0]} (found keys like {sorted(state_dict)[:4]})')
    w = np.asarray(state_dict[key], np.float32)
    if w.shape != (1, c, 1, 1):
      raise ValueError(f'{key}: shape {w.shape}, lpips {net} expects '
                       f'{(1, c, 1, 1)}')
    params[f'lin{l}'] = np.ascontiguousarray(w.reshape(c))
  return params
