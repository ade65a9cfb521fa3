"""LPIPS perceptual distance (Zhang et al. 2018), lpips v0.1, AlexNet or VGG16.

  metric = LPIPS('alex', backbone_weights='weights/alexnet',
                 lin_weights='weights/lpips_alex')
  d = metric(a, b)   # (N,) distances; lower = more similar, 0 if identical

Inputs are NHWC float images in [-1, 1] (the generators' range and the lpips
package's default; for [0, 1] images pass 2 * x - 1). Grayscale images are
repeated to three channels (R = G = B) before the network. Weights come from
two files each converted once with `python -m medjax.weights convert`: the
torchvision backbone (kind `alexnet` or `vgg16`) and the lpips linear layers
(kind `lpips_alex` or `lpips_vgg`); see docs/weights.md and docs/metrics.md.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medjax import weights
from medjax.models import lpips as lpips_net

# Weights kinds of each net: (backbone, linear layers).
KINDS = {'alex': ('alexnet', 'lpips_alex'), 'vgg': ('vgg16', 'lpips_vgg')}


def to_lpips_input(images: jax.Array) -> jax.Array:
  """(N, H, W, 1 or 3) images in [-1, 1] -> float32 RGB (gray repeated)."""
  c = images.shape[-1]
  if c not in (1, 3):
    raise ValueError(f'LPIPS needs 1 or 3 channels, got {c}')
  x = jnp.asarray(images).astype(jnp.float32)
  return jnp.repeat(x, 3, axis=-1) if c == 1 else x


@functools.partial(jax.jit, static_argnames=('model', 'per_layer'))
def _apply(model: lpips_net.LPIPSNet, params: Any, a: jax.Array,
           b: jax.Array, per_layer: bool) -> jax.Array:
  return model.apply({'params': params}, to_lpips_input(a),
                     to_lpips_input(b), per_layer=per_layer)


class LPIPS:
  """The LPIPS metric with loaded (or random) weights.

  Attributes:
    net: 'alex' or 'vgg'.
    model: the `medjax.models.lpips.LPIPSNet`.
    params: its params, `{'backbone': ..., 'lin': {'lin0': ..., ...}}`.
  """

  def __init__(self, net: str = 'alex', backbone_weights: str | None = None,
               lin_weights: str | None = None, params: Any = None,
               precision: Any = 'highest'):
    """Loads the weights.

    Args:
      net: 'alex' (the lpips package's default) or 'vgg'.
      backbone_weights: converted directory (or the .pth) of torchvision's
        `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`.
      lin_weights: converted directory (or the .pth) of lpips'
        `weights/v0.1/alex.pth` / `vgg.pth`.
      params: ready params instead of the two paths (e.g. `random_params`).
      precision: backbone convolution precision; 'highest' (default) keeps
        GPUs from using TF32, so values match across devices.

    Raises:
      FileNotFoundError: weights missing; the message names the standard file,
        its URL and the convert command.
    """
    if net not in KINDS:
      raise ValueError(f'net must be one of {tuple(KINDS)}, got {net!r}')
    self.net = net
    self.model = lpips_net.LPIPSNet(net=net, precision=precision)
    if params is None:
      backbone_kind, lin_kind = KINDS[net]
      # Check both before loading either, so one message covers a fresh setup.
      weights.require(backbone_kind, backbone_weights)
      weights.require(lin_kind, lin_weights)
      params = {'backbone': weights.load(backbone_kind, backbone_weights),
                'lin': weights.load(lin_kind, lin_weights)}
    self.params = jax.tree.map(jnp.asarray, params)

  @classmethod
  def random_weights(cls, net: str = 'alex', seed: int = 0,
                     **kwargs) -> 'LPIPS':
    """An LPIPS with random backbone and non-negative linear weights (tests)."""
    return cls(net, params=random_params(net, seed), **kwargs)

  def __call__(self, a: jax.Array, b: jax.Array,
               per_layer: bool = False) -> jax.Array:
    """LPIPS distance of each pair of images.

    Args:
      a: (N, H, W, C) float images in [-1, 1], C = 1 (repeated to RGB) or 3;
        H and W at least `medjax.models.lpips.min_size(net)` (31 for 'alex',
        16 for 'vgg').
      b: images like `a`.
      per_layer: return the five per-tap terms instead of their sum.

    Returns:
      float32 (N,) distances (>= 0 with the published weights, 0 for identical
      images), or (N, 5) per-layer terms.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape or a.ndim != 4:
      raise ValueError(f'need two NHWC batches of one shape, got {a.shape} '
                       f'and {b.shape}')
    size = lpips_net.min_size(self.net)
    if min(a.shape[1:3]) < size:
      raise ValueError(f'LPIPS-{self.net} needs images of at least '
                       f'{size}x{size}, got {a.shape[1]}x{a.shape[2]}')
    return _apply(self.model, self.params, a, b, per_layer)


def random_params(net: str = 'alex', seed: int = 0) -> Any:
  """Randomly initialised LPIPSNet params (Flax init; |lin| weights).

  Args:
    net: 'alex' or 'vgg'.
    seed: PRNG seed.

  Returns:
    `{'backbone': ..., 'lin': ...}` with the shapes of the converted weights.
  """
  model = lpips_net.LPIPSNet(net=net)
  size = lpips_net.min_size(net)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  # Jitted: eager init dispatches op by op and is several times slower.
  params = jax.jit(model.init)(jax.random.key(seed), x, x)['params']
  # Published linear weights are non-negative (so distances are >= 0).
  params['lin'] = jax.tree.map(jnp.abs, params['lin'])
  return jax.tree.map(np.asarray, params)
