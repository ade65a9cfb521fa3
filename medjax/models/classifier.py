"""A compact ResNet-style image classifier (Linen, NHWC).

Built for medjax's own needs: classifying the (small) medical datasets it
trains GANs on, and providing domain features for a Frechet distance
(`medjax.metrics.features.ClassifierExtractor`). Layers:

* `stem`: 3x3 conv (stride `stem_stride`: 1, or 2 to halve the resolution
  at once, which quarters the cost of everything after it) to
  `stem_features`, BatchNorm, ReLU;
* stages i = 0 .. len(stage_features) - 1, each `blocks_per_stage[i]` basic
  residual blocks (He et al. 2016, "Deep Residual Learning for Image
  Recognition", the two-3x3-conv block of ResNet-18/34) of width
  `stage_features[i]`; the first block of every stage but the first has
  stride 2 (halves H and W); a block whose shape changes has a projection
  shortcut (1x1 conv with the block's stride, BatchNorm);
* global average pool over H, W;
* `penultimate`: dense to `feature_dim` + ReLU: the penultimate features,
  returned with `return_features=True` or by the `features` method;
* `logits`: dense to `num_classes`, float32.

Convolutions have no bias (BatchNorm follows each one) and He-normal
(fan_out) initialisation as torchvision's ResNets; BatchNorm uses momentum 0.9
(PyTorch's 0.1) and epsilon 1e-5. The last BatchNorm of each residual branch
starts with scale 0 ("zero-init residual", Goyal et al. 2017), so every block
starts as the identity, which makes small-batch training of a fresh network
steadier. All convolutions use `medjax.models.conv.conv_general_dilated`
(fast weight gradients on CPU).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import conv
from medjax.models import norm

Dtype = Any

_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(features: int, kernel: int, stride: int, dtype: Dtype,
          param_dtype: Dtype, name: str) -> nn.Conv:
  p = kernel // 2  # 'same' at stride 1; ceil(H / 2) at stride 2.
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((p, p), (p, p)), use_bias=False, dtype=dtype,
                 param_dtype=param_dtype, kernel_init=_CONV_INIT,
                 conv_general_dilated=conv.conv_general_dilated, name=name)


def _bn(train: bool, dtype: Dtype, param_dtype: Dtype, name: str,
        zero_scale: bool = False) -> nn.Module:
  return norm.batch_norm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=param_dtype,
      scale_init=(nn.initializers.zeros if zero_scale
                  else nn.initializers.ones), name=name)


class BasicBlock(nn.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.

  Attributes:
    features: output channels.
    stride: 1, or 2 to halve H and W.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    """Applies the block.

    Args:
      x: (B, H, W, C_in).
      train: BatchNorm with batch statistics (and updates them) if True.

    Returns:
      (B, ceil(H / stride), ceil(W / stride), features).
    """
    d, pd = self.dtype, self.param_dtype
    y = _conv(self.features, 3, self.stride, d, pd, 'conv0')(x)
    y = nn.relu(_bn(train, d, pd, 'bn0')(y))
    y = _conv(self.features, 3, 1, d, pd, 'conv1')(y)
    y = _bn(train, d, pd, 'bn1', zero_scale=True)(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.stride, d, pd, 'proj')(x)
      shortcut = _bn(train, d, pd, 'proj_bn')(shortcut)
    return nn.relu(y + shortcut)


class Classifier(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> class logits (B, num_classes).

  Any channel count and any H, W (global pooling); the stem (stride 2) and
  each stage after the first halve the resolution, so H and W should be at
  least stem_stride * 2 ** (len(stage_features) - 1).

  Attributes:
    num_classes: output classes (>= 2).
    stem_features: channels of the stem convolution.
    stem_stride: the stem's stride (1 or 2).
    stage_features: channels of each stage.
    blocks_per_stage: residual blocks of each stage (same length).
    feature_dim: width of the penultimate `features` vector.
    dtype: compute dtype (logits are float32); param_dtype: parameter dtype.
  """
  num_classes: int
  stem_features: int = 32
  stem_stride: int = 2
  stage_features: Sequence[int] = (32, 64, 128)
  blocks_per_stage: Sequence[int] = (2, 2, 2)
  feature_dim: int = 128
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               return_features: bool = False):
    """Classifies a batch.

    Args:
      x: (B, H, W, C) float images in [-1, 1].
      train: BatchNorm in training mode (batch statistics, `batch_stats`
        mutable) if True, else running averages.
      return_features: also return the penultimate features.

    Returns:
      float32 logits (B, num_classes); with `return_features`, the pair
      (logits, features) with float32 features (B, feature_dim) (after the
      ReLU).
    """
    if len(self.stage_features) != len(self.blocks_per_stage):
      raise ValueError(
          f'stage_features {tuple(self.stage_features)} and blocks_per_stage '
          f'{tuple(self.blocks_per_stage)} must have the same length')
    if self.num_classes < 2:
      raise ValueError(f'num_classes must be >= 2, got {self.num_classes}')
    d, pd = self.dtype, self.param_dtype
    y = x.astype(d)
    y = _conv(self.stem_features, 3, self.stem_stride, d, pd, 'stem')(y)
    y = nn.relu(_bn(train, d, pd, 'stem_bn')(y))
    for i, (width, blocks) in enumerate(zip(self.stage_features,
                                            self.blocks_per_stage)):
      for j in range(blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        y = BasicBlock(width, stride, d, pd, name=f'stage{i}_block{j}')(
            y, train)
    y = y.mean(axis=(1, 2))
    features = nn.relu(nn.Dense(self.feature_dim, dtype=d, param_dtype=pd,
                                name='penultimate')(y))
    logits = nn.Dense(self.num_classes, dtype=d, param_dtype=pd,
                      name='logits')(features)
    logits = logits.astype(jnp.float32)
    if return_features:
      return logits, features.astype(jnp.float32)
    return logits

  def features(self, x: jax.Array, train: bool = False) -> jax.Array:
    """The penultimate features (B, feature_dim), float32.

    Use as `model.apply(variables, x, method=Classifier.features)`.
    """
    return self(x, train=train, return_features=True)[1]
