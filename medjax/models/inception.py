"""FID's InceptionV3 (pytorch-fid's `fid_inception_v3()`), Flax Linen, NHWC.

The network is torchvision's `Inception3(num_classes=1008, aux_logits=False,
transform_input=False)` with pytorch-fid's patches, i.e. the port of the
TensorFlow graph `inception-2015-12-05` that FID is defined with:

  * Mixed_5b/5c/5d are `FIDInceptionA`, Mixed_6b..6e `FIDInceptionC` and
    Mixed_7b `FIDInceptionE_1`: their pool branch averages over 3x3 windows
    *without* counting the zero padding (`count_include_pad=False`, as TF);
  * Mixed_7c is `FIDInceptionE_2`: its pool branch is a 3x3 *max* pool;
  * every convolution is `BasicConv2d`: conv without bias, BatchNorm
    (eps=0.001, inference mode: running statistics) and ReLU.

The output is the 2048-d global average of Mixed_7c ("pool_3"), the features
FID, KID and precision/recall are computed on. The classifier (`fc`) is not
built.

Weights: `pt_inception-2015-12-05-6726825d.pth` from pytorch-fid's release,
converted with `convert_inception` (`python -m medjax.weights convert
--kind=inception_fid ...`).

BatchNorm statistics live in the params tree, beside the affine parameters:
`params[block]...['bn'] = {'scale', 'bias', 'mean', 'var'}` (torch's weight,
bias, running_mean, running_var). The network is only ever used in inference
mode, so a single collection keeps `apply({'params': params}, x)` and
`medjax.weights.load` uniform with the other pretrained kinds.

Input path (`preprocess`, as pytorch-fid's `InceptionV3.forward` with
`resize_input=True, normalize_input=True`): images in [0, 1] (uint8 divided
by 255) -> bilinear resize to 299x299 exactly as `F.interpolate(x, (299, 299),
mode='bilinear', align_corners=False)` (no antialiasing, also when
downscaling) -> `2x - 1`. Grayscale images are repeated to 3 channels
(R = G = B) before the network, as for VGG.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import conv

Dtype = Any

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3

# A BasicConv2d: (name, in_channels, out_channels, kernel (kh, kw), stride,
# padding (ph, pw)). Names are torchvision's attribute names.
ConvSpec = tuple[str, int, int, tuple[int, int], int, tuple[int, int]]

_STEM: tuple[ConvSpec, ...] = (
    ('Conv2d_1a_3x3', 3, 32, (3, 3), 2, (0, 0)),
    ('Conv2d_2a_3x3', 32, 32, (3, 3), 1, (0, 0)),
    ('Conv2d_2b_3x3', 32, 64, (3, 3), 1, (1, 1)),
    # max-pool 3x3 / 2
    ('Conv2d_3b_1x1', 64, 80, (1, 1), 1, (0, 0)),
    ('Conv2d_4a_3x3', 80, 192, (3, 3), 1, (0, 0)),
    # max-pool 3x3 / 2
)

# (block name, block type, in_channels, type argument), in network order.
_MIXED = (
    ('Mixed_5b', 'A', 192, 32),
    ('Mixed_5c', 'A', 256, 64),
    ('Mixed_5d', 'A', 288, 64),
    ('Mixed_6a', 'B', 288, None),
    ('Mixed_6b', 'C', 768, 128),
    ('Mixed_6c', 'C', 768, 160),
    ('Mixed_6d', 'C', 768, 160),
    ('Mixed_6e', 'C', 768, 192),
    ('Mixed_7a', 'D', 768, None),
    ('Mixed_7b', 'E1', 1280, None),
    ('Mixed_7c', 'E2', 2048, None),
)


def block_convs(kind: str, cin: int, arg: int | None) -> tuple[ConvSpec, ...]:
  """The BasicConv2d layers of one Inception block (torchvision's shapes).

  Args:
    kind: 'A', 'B', 'C', 'D', 'E1' or 'E2'.
    cin: the block's input channels.
    arg: `pool_features` (A) or `channels_7x7` (C); None otherwise.

  Returns:
    ConvSpecs keyed by torchvision's attribute names.
  """
  if kind == 'A':
    return (('branch1x1', cin, 64, (1, 1), 1, (0, 0)),
            ('branch5x5_1', cin, 48, (1, 1), 1, (0, 0)),
            ('branch5x5_2', 48, 64, (5, 5), 1, (2, 2)),
            ('branch3x3dbl_1', cin, 64, (1, 1), 1, (0, 0)),
            ('branch3x3dbl_2', 64, 96, (3, 3), 1, (1, 1)),
            ('branch3x3dbl_3', 96, 96, (3, 3), 1, (1, 1)),
            ('branch_pool', cin, arg, (1, 1), 1, (0, 0)))
  if kind == 'B':
    return (('branch3x3', cin, 384, (3, 3), 2, (0, 0)),
            ('branch3x3dbl_1', cin, 64, (1, 1), 1, (0, 0)),
            ('branch3x3dbl_2', 64, 96, (3, 3), 1, (1, 1)),
            ('branch3x3dbl_3', 96, 96, (3, 3), 2, (0, 0)))
  if kind == 'C':
    c7 = arg
    return (('branch1x1', cin, 192, (1, 1), 1, (0, 0)),
            ('branch7x7_1', cin, c7, (1, 1), 1, (0, 0)),
            ('branch7x7_2', c7, c7, (1, 7), 1, (0, 3)),
            ('branch7x7_3', c7, 192, (7, 1), 1, (3, 0)),
            ('branch7x7dbl_1', cin, c7, (1, 1), 1, (0, 0)),
            ('branch7x7dbl_2', c7, c7, (7, 1), 1, (3, 0)),
            ('branch7x7dbl_3', c7, c7, (1, 7), 1, (0, 3)),
            ('branch7x7dbl_4', c7, c7, (7, 1), 1, (3, 0)),
            ('branch7x7dbl_5', c7, 192, (1, 7), 1, (0, 3)),
            ('branch_pool', cin, 192, (1, 1), 1, (0, 0)))
  if kind == 'D':
    return (('branch3x3_1', cin, 192, (1, 1), 1, (0, 0)),
            ('branch3x3_2', 192, 320, (3, 3), 2, (0, 0)),
            ('branch7x7x3_1', cin, 192, (1, 1), 1, (0, 0)),
            ('branch7x7x3_2', 192, 192, (1, 7), 1, (0, 3)),
            ('branch7x7x3_3', 192, 192, (7, 1), 1, (3, 0)),
            ('branch7x7x3_4', 192, 192, (3, 3), 2, (0, 0)))
  if kind in ('E1', 'E2'):
    return (('branch1x1', cin, 320, (1, 1), 1, (0, 0)),
            ('branch3x3_1', cin, 384, (1, 1), 1, (0, 0)),
            ('branch3x3_2a', 384, 384, (1, 3), 1, (0, 1)),
            ('branch3x3_2b', 384, 384, (3, 1), 1, (1, 0)),
            ('branch3x3dbl_1', cin, 448, (1, 1), 1, (0, 0)),
            ('branch3x3dbl_2', 448, 384, (3, 3), 1, (1, 1)),
            ('branch3x3dbl_3a', 384, 384, (1, 3), 1, (0, 1)),
            ('branch3x3dbl_3b', 384, 384, (3, 1), 1, (1, 0)),
            ('branch_pool', cin, 192, (1, 1), 1, (0, 0)))
  raise ValueError(f'unknown Inception block type {kind!r}')


def conv_specs() -> list[tuple[str, ConvSpec]]:
  """Every BasicConv2d of the network as (torch key prefix, spec).

  The prefix is the state-dict path, e.g. 'Conv2d_1a_3x3' or
  'Mixed_5b.branch1x1'; its '.'-separated parts are also the Flax params path.
  """
  out = [(s[0], s) for s in _STEM]
  for name, kind, cin, arg in _MIXED:
    out += [(f'{name}.{s[0]}', s) for s in block_convs(kind, cin, arg)]
  return out


class BasicConv2d(nn.Module):
  """Conv (no bias) + inference BatchNorm (eps=0.001) + ReLU.

  Attributes:
    features, kernel_size, stride, padding: the convolution (padding
      symmetric, (ph, pw)).
    dtype: compute dtype; param_dtype: parameter dtype.
    fold_bn: scale the kernel by the BatchNorm's per-channel factor and add
      its shift after the convolution: conv + bias + ReLU, a pattern XLA can
      hand to cuDNN as one fused call (a per-channel scale after the
      convolution is not). Same params; equal to rounding (float32 features
      within ~1e-6 relative; see tests/test_inception.py).
  """
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  fold_bn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    padding = ((ph, ph), (pw, pw))
    strides = (self.stride, self.stride)
    mul, add = _BatchNormParams(self.param_dtype, name='bn')(self.features)
    if self.fold_bn:
      kernel = _ConvKernel(self.features, self.kernel_size, self.param_dtype,
                           name='conv')(x.shape[-1])
      kernel = (kernel.astype(jnp.float32) * mul).astype(self.dtype)
      y = conv.conv_general_dilated(
          x.astype(self.dtype), kernel, strides, padding,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      return nn.relu(y + add.astype(self.dtype))
    x = nn.Conv(
        self.features, self.kernel_size, strides=strides, padding=padding,
        use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        conv_general_dilated=conv.conv_general_dilated, name='conv')(x)
    # One multiply-add, in float32 whatever the compute dtype.
    return nn.relu(x.astype(jnp.float32) * mul + add).astype(self.dtype)


class _PointwiseParams(nn.Module):
  """A 1x1 `BasicConv2d`'s params (same names and init), for the blocks'
  merged 1x1 convolutions (`InceptionBlock`)."""
  features: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int):
    mul, add = _BatchNormParams(self.param_dtype, name='bn')(self.features)
    kernel = _ConvKernel(self.features, (1, 1), self.param_dtype,
                         name='conv')(in_features)
    return kernel, mul, add


class _ConvKernel(nn.Module):
  """nn.Conv's `kernel` param (same name, shape and init), for `fold_bn`."""
  features: int
  kernel_size: tuple[int, int]
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> jax.Array:
    return self.param('kernel', nn.initializers.lecun_normal(),
                      (*self.kernel_size, in_features, self.features),
                      self.param_dtype)


class _BatchNormParams(nn.Module):
  """Inference BatchNorm's params (running statistics held as params), as
  the per-channel float32 (mul, add) of y = x * mul + add."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, c: int) -> tuple[jax.Array, jax.Array]:
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    mean = self.param('mean', nn.initializers.zeros, (c,), self.param_dtype)
    var = self.param('var', nn.initializers.ones, (c,), self.param_dtype)
    mul = scale.astype(jnp.float32) * jax.lax.rsqrt(
        var.astype(jnp.float32) + BN_EPS)
    return mul, bias.astype(jnp.float32) - mean.astype(jnp.float32) * mul


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
  # TF's average pool: padded zeros are not counted in the mean.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


class InceptionBlock(nn.Module):
  """One Mixed_* block; `kind` selects A/B/C/D/E1/E2 as listed above.

  Attributes:
    kind: 'A', 'B', 'C', 'D', 'E1' or 'E2'.
    arg: `pool_features` (A) or `channels_7x7` (C).
    dtype: compute dtype; param_dtype: parameter dtype.
    fold_bn: see `BasicConv2d`.
  """
  kind: str
  arg: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  fold_bn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    specs = {s[0]: s for s in block_convs(self.kind, x.shape[-1], self.arg)}

    def bc(name: str, h: jax.Array) -> jax.Array:
      _, _, cout, k, s, p = specs[name]
      return BasicConv2d(cout, k, s, p, dtype=self.dtype,
                         param_dtype=self.param_dtype, fold_bn=self.fold_bn,
                         name=name)(h)

    def chain(h: jax.Array, *names: str) -> jax.Array:
      for n in names:
        h = bc(n, h)
      return h

    def heads(*names: str, pooled: str = '') -> dict[str, jax.Array]:
      """The block's 1x1 `BasicConv2d`s of x (and `pooled`, the 1x1 one of
      the 3x3 average pool of x) as one convolution, which reads x once.

      Convolution and inference BatchNorm are per-pixel affine maps, so
      they commute with the average pool (`count_include_pad=False`
      included): `pooled` pools its part of the output, over its 32-192
      channels rather than x's 192-2,048."""
      names = names + ((pooled,) if pooled else ())
      parts = [_PointwiseParams(specs[n][2], self.param_dtype, name=n)(
          x.shape[-1]) for n in names]
      kernel = jnp.concatenate([k for k, _, _ in parts], axis=-1)
      mul = jnp.concatenate([m for _, m, _ in parts])
      add = jnp.concatenate([a for _, _, a in parts])
      if self.fold_bn:
        kernel = kernel.astype(jnp.float32) * mul
      y = conv.conv_general_dilated(
          x.astype(self.dtype), kernel.astype(self.dtype), (1, 1),
          ((0, 0), (0, 0)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      if self.fold_bn:
        y = (y + add.astype(self.dtype)).astype(jnp.float32)
      else:
        y = y.astype(jnp.float32) * mul + add
      out, start = {}, 0
      for n in names:
        part = y[..., start:start + specs[n][2]]
        start += specs[n][2]
        if n == pooled:
          part = _avg_pool_3x3_same(part)
        out[n] = nn.relu(part).astype(self.dtype)
      return out

    k = self.kind
    if k == 'A':
      h = heads('branch1x1', 'branch5x5_1', 'branch3x3dbl_1',
                pooled='branch_pool')
      outs = [h['branch1x1'],
              chain(h['branch5x5_1'], 'branch5x5_2'),
              chain(h['branch3x3dbl_1'], 'branch3x3dbl_2', 'branch3x3dbl_3'),
              h['branch_pool']]
    elif k == 'B':
      outs = [bc('branch3x3', x),
              chain(x, 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'),
              _max_pool_3x3_s2(x)]
    elif k == 'C':
      h = heads('branch1x1', 'branch7x7_1', 'branch7x7dbl_1',
                pooled='branch_pool')
      outs = [h['branch1x1'],
              chain(h['branch7x7_1'], 'branch7x7_2', 'branch7x7_3'),
              chain(h['branch7x7dbl_1'], 'branch7x7dbl_2', 'branch7x7dbl_3',
                    'branch7x7dbl_4', 'branch7x7dbl_5'),
              h['branch_pool']]
    elif k == 'D':
      h = heads('branch3x3_1', 'branch7x7x3_1')
      outs = [chain(h['branch3x3_1'], 'branch3x3_2'),
              chain(h['branch7x7x3_1'], 'branch7x7x3_2', 'branch7x7x3_3',
                    'branch7x7x3_4'),
              _max_pool_3x3_s2(x)]
    elif k in ('E1', 'E2'):
      if k == 'E1':
        h = heads('branch1x1', 'branch3x3_1', 'branch3x3dbl_1',
                  pooled='branch_pool')
        pool = h['branch_pool']
      else:
        h = heads('branch1x1', 'branch3x3_1', 'branch3x3dbl_1')
        # FIDInceptionE_2: a max pool here (a quirk of the TF graph), which
        # does not commute with the convolution.
        pool = bc('branch_pool', nn.max_pool(x, (3, 3), strides=(1, 1),
                                             padding=((1, 1), (1, 1))))
      b3 = h['branch3x3_1']
      d3 = chain(h['branch3x3dbl_1'], 'branch3x3dbl_2')
      outs = [h['branch1x1'],
              bc('branch3x3_2a', b3), bc('branch3x3_2b', b3),
              bc('branch3x3dbl_3a', d3), bc('branch3x3dbl_3b', d3),
              pool]
    else:
      raise ValueError(f'unknown Inception block type {k!r}')
    # torch.cat(dim=1) in NCHW is a concat of the channel axis here.
    return jnp.concatenate([o.astype(self.dtype) for o in outs], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's InceptionV3 up to the 2048-d pool_3 features.

  Input: (B, H, W, 3) already preprocessed (see `preprocess`): values in
  [-1, 1], normally 299x299 (the network is fully convolutional; H, W >= 75).

  Attributes:
    dtype: compute dtype; param_dtype: parameter dtype.
    fold_bn: see `BasicConv2d` (off: pytorch-fid's order of operations).
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  fold_bn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'FIDInceptionV3 needs (B, H, W, 3), got {x.shape}')
    x = x.astype(self.dtype)
    for name, _, cout, k, s, p in _STEM:
      x = BasicConv2d(cout, k, s, p, dtype=self.dtype,
                      param_dtype=self.param_dtype, fold_bn=self.fold_bn,
                      name=name)(x)
      if name in ('Conv2d_2b_3x3', 'Conv2d_4a_3x3'):
        x = _max_pool_3x3_s2(x)
    for name, kind, _, arg in _MIXED:
      x = InceptionBlock(kind, arg, dtype=self.dtype,
                         param_dtype=self.param_dtype, fold_bn=self.fold_bn,
                         name=name)(x)
    # AdaptiveAvgPool2d((1, 1)), averaged in float32.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# --- Input path --------------------------------------------------------------


def bilinear_weights(in_size: int, out_size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Taps of PyTorch's bilinear `align_corners=False` resize along one axis.

  As ATen's `upsample_bilinear2d` (CPU, float32): scale = in / out,
  src = max(scale * (dst + 0.5) - 0.5, 0), i0 = floor(src), i1 = min(i0 + 1,
  in - 1), w1 = src - i0, w0 = 1 - w1. No antialiasing when downscaling.

  Args:
    in_size: input length.
    out_size: output length.

  Returns:
    (i0, i1, w1): int32 indices and float32 weights of the second tap, each of
    shape (out_size,).
  """
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5),
                   np.float32(0))
  i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  return i0, i1, w1


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`F.interpolate(x, size, mode='bilinear', align_corners=False)`, NHWC.

  Written as two gathers with fixed weights (rows, then columns, as ATen),
  not `jax.image.resize`, which antialiases when downscaling.

  Args:
    x: (B, H, W, C) float.
    size: (out_h, out_w).

  Returns:
    (B, out_h, out_w, C) float32.
  """
  x = x.astype(jnp.float32)
  for axis, out in ((1, size[0]), (2, size[1])):
    i0, i1, w1 = bilinear_weights(x.shape[axis], out)
    shape = [1] * x.ndim
    shape[axis] = out
    w1 = jnp.asarray(w1).reshape(shape)
    a = jnp.take(x, jnp.asarray(i0), axis=axis)
    b = jnp.take(x, jnp.asarray(i1), axis=axis)
    x = (1 - w1) * a + w1 * b
  return x


def preprocess(images: jax.Array) -> jax.Array:
  """Images -> the network's input, as pytorch-fid.

  uint8 images are divided by 255; float images must already be in [0, 1].
  One channel is repeated to three (grayscale policy: R = G = B). Then the
  bilinear resize to 299x299 (`resize_bilinear`) and `2x - 1`.

  Args:
    images: (B, H, W, C), C in {1, 3}, uint8 or float in [0, 1].

  Returns:
    (B, 299, 299, 3) float32 in [-1, 1].
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'FID input must be (B, H, W, 1 or 3), got '
                     f'{images.shape}')
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  return 2.0 * x - 1.0


@functools.partial(jax.jit, static_argnames=('dtype',))
def _features_batch(params, images, dtype=jnp.float32):
  model = FIDInceptionV3(dtype=dtype)
  return model.apply({'params': params}, preprocess(images))


def fid_features(params: Mapping[str, Any], images, batch_size: int = 50,
                 dtype: Dtype = jnp.float32) -> np.ndarray:
  """pool_3 features of pytorch-fid's Inception for a set of images.

  Images go through `preprocess` (resize to 299x299, [-1, 1], gray -> RGB)
  and `FIDInceptionV3`, `batch_size` at a time; the last batch is padded so
  that one compiled program serves every batch.

  Args:
    params: `convert_inception(...)` or `medjax.weights.load('inception_fid',
      path)`.
    images: (N, H, W, C) array, C in {1, 3}, uint8 or float in [0, 1]; numpy
      or jax.
    batch_size: images per device call.
    dtype: compute dtype (float32 reproduces pytorch-fid).

  Returns:
    (N, 2048) float32 numpy array.
  """
  n = len(images)
  if n == 0:
    return np.zeros((0, FEATURE_DIM), np.float32)
  bs = min(batch_size, n)
  # Once, not per call: numpy weights passed to the jitted network are copied
  # to the device on every call (87 MB in 470 arrays).
  params = jax.device_put(params)
  out, pending = [], None
  for start in range(0, n, bs):
    batch = np.asarray(images[start:start + bs])
    real = len(batch)
    if real < bs:
      pad = np.zeros((bs - real,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    feats = _features_batch(params, jax.device_put(batch), dtype=dtype)
    # The previous batch is read back only once this one is queued, so the
    # device has work while the host waits and prepares the next batch.
    if pending is not None:
      out.append(np.asarray(pending[0], np.float32)[:pending[1]])
    pending = (feats, real)
  out.append(np.asarray(pending[0], np.float32)[:pending[1]])
  return np.concatenate(out)


# --- Converter ---------------------------------------------------------------


def _nested_set(tree: dict, path: Sequence[str], value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def convert_inception(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """pytorch-fid `FIDInceptionV3` state dict -> params of `FIDInceptionV3`.

  Key mapping, for every BasicConv2d `P` (e.g. 'Conv2d_1a_3x3',
  'Mixed_5b.branch1x1'): `P.conv.weight` (O, I, kh, kw) -> `P/conv/kernel`
  transposed to (kh, kw, I, O) (no flip: both frameworks cross-correlate);
  `P.bn.weight`, `.bias`, `.running_mean`, `.running_var` -> `P/bn/scale`,
  `bias`, `mean`, `var`. `fc.*` and `*.num_batches_tracked` are ignored.

  Args:
    state_dict: name -> array, e.g. from `medjax.weights.load_torch_state_dict(
      'pt_inception-2015-12-05-6726825d.pth')`.

  Returns:
    The params collection; apply as `FIDInceptionV3().apply({'params':
    params}, x)`.

  Raises:
    KeyError: a key is missing (the message names the missing keys).
    ValueError: a shape differs from the network's.
  """
  params: dict[str, Any] = {}
  missing = []
  for prefix, (_, cin, cout, (kh, kw), _, _) in conv_specs():
    path = prefix.split('.')
    entries = (('conv.weight', ('conv', 'kernel'), (cout, cin, kh, kw)),
               ('bn.weight', ('bn', 'scale'), (cout,)),
               ('bn.bias', ('bn', 'bias'), (cout,)),
               ('bn.running_mean', ('bn', 'mean'), (cout,)),
               ('bn.running_var', ('bn', 'var'), (cout,)))
    for suffix, leaf, shape in entries:
      key = f'{prefix}.{suffix}'
      if key not in state_dict:
        missing.append(key)
        continue
      value = np.asarray(state_dict[key], np.float32)
      if value.shape != shape:
        raise ValueError(f'{key}: shape {value.shape}, FID Inception '
                         f'expects {shape}')
      if suffix == 'conv.weight':
        value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))
      _nested_set(params, path + list(leaf), value)
  if missing:
    shown = missing if len(missing) <= 10 else missing[:10] + ['...']
    raise KeyError(f'not a pytorch-fid Inception state dict: missing '
                   f'{len(missing)} keys {shown} (found keys like '
                   f'{sorted(state_dict)[:4]})')
  return params
