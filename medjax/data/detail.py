"""The detail filter: drop near-empty slices by their pixel-difference score.

The score of an image is the sum of absolute differences between horizontally
and vertically adjacent pixels, computed after a Gaussian filter that removes
noise (so speckle on an empty background does not count as detail):

  score = sum |g[y, x+1] - g[y, x]| + sum |g[y+1, x] - g[y, x]|,  g = G_sigma * image

in grey levels of the 0-255 scale, summed over channels. A slice with a small
object on a large black background has few edges and a low score. The sum
grows with image size, so thresholds hold for one resolution; `keep_top` does
not depend on it.
"""

from __future__ import annotations

import dataclasses
import functools

from absl import logging
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

_CHUNK = 256


@functools.partial(jax.jit, static_argnames=('sigma', 'kernel_size'))
def detail_score(images: jax.Array, sigma: float = 1.0,
                 kernel_size: int = 5) -> jax.Array:
  """Pixel-difference scores of a batch.

  Args:
    images: (N, H, W, C), uint8 or float on the 0-255 scale.
    sigma: std of the Gaussian denoising filter, in pixels (dm-pix's
      `gaussian_blur`, zero padding).
    kernel_size: its size (rounded up to odd).

  Returns:
    float32 (N,) scores.
  """
  x = images.astype(jnp.float32)
  if sigma > 0:
    x = dm_pix.gaussian_blur(x, sigma, kernel_size)
  dx = jnp.abs(jnp.diff(x, axis=2)).sum(axis=(1, 2, 3))
  dy = jnp.abs(jnp.diff(x, axis=1)).sum(axis=(1, 2, 3))
  return dx + dy


def scores(images: np.ndarray, sigma: float = 1.0,
           kernel_size: int = 5) -> np.ndarray:
  """`detail_score` of a host array, in chunks to bound device memory."""
  return np.concatenate([
      np.asarray(detail_score(jnp.asarray(images[i:i + _CHUNK]), sigma,
                              kernel_size))
      for i in range(0, len(images), _CHUNK)]) if len(images) else np.zeros(0)


@dataclasses.dataclass(frozen=True)
class FilterReport:
  """How many images a split had and kept, and the score cut-off."""
  split: str
  total: int
  kept: int
  cutoff: float

  def __str__(self) -> str:
    return (f'detail filter on {self.split}: kept {self.kept} of {self.total} '
            f'images (score >= {self.cutoff:.1f})')


def select(image_scores: np.ndarray, min_score: float | None = None,
           keep_top: int | None = None) -> np.ndarray:
  """Indices of the images to keep, in their original order.

  Args:
    image_scores: (N,) detail scores.
    min_score: keep images scoring at least this.
    keep_top: keep the N highest-scoring images (ties broken by index).
      With both, an image must pass both.

  Returns:
    Sorted int64 indices.
  """
  keep = np.ones(len(image_scores), bool)
  if min_score is not None:
    keep &= image_scores >= min_score
  if keep_top is not None:
    if keep_top < 0:
      raise ValueError(f'keep_top must be >= 0, got {keep_top}')
    order = np.argsort(-image_scores, kind='stable')[:keep_top]
    top = np.zeros_like(keep)
    top[order] = True
    keep &= top
  return np.flatnonzero(keep)


def filter_images(images: np.ndarray, split: str, *,
                  min_score: float | None = None, keep_top: int | None = None,
                  sigma: float = 1.0) -> tuple[np.ndarray, FilterReport]:
  """Applies the filter to a split held in memory and logs what it kept.

  Args:
    images: (N, H, W, C) uint8.
    split: the split's name, for the report.
    min_score, keep_top: as in `select`.
    sigma: as in `detail_score`.

  Returns:
    (indices kept, report).
  """
  s = scores(images, sigma)
  idx = select(s, min_score, keep_top)
  report = FilterReport(split=split, total=len(images), kept=len(idx),
                        cutoff=float(s[idx].min()) if len(idx) else
                        float('inf'))
  logging.info('%s', report)
  return idx, report
