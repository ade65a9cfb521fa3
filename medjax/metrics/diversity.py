"""MS-SSIM diversity: mean MS-SSIM over random pairs within an image set.

Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier
GANs", ICML 2017, Sec. 4.2: the mean MS-SSIM of randomly chosen pairs of
distinct images of one set measures how alike its images are. Lower = more
diverse; a generated set scoring well above the real set suggests mode
collapse. Compute it for the generated samples and for the real set
(`ms_ssim_diversity`) and compare.

MS-SSIM itself is `medjax.metrics.image.ms_ssim` (5 scales, images of at least
161x161). Smaller images use fewer scales (`num_scales_for`): the largest
count whose coarsest scale still fits the 11x11 window, with the first
`num_scales` standard weights renormalised to sum to 1 (`ms_ssim_scales`);
with 5 scales it equals `ms_ssim`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from medjax.metrics import image
# Reused so that the reduced-scale variant is the same computation.
from medjax.metrics.image import _pool2, _prepare, _resolve_range, _ssim_cs


def num_scales_for(height: int, width: int) -> int:
  """Most MS-SSIM scales (<= 5) whose coarsest scale fits the 11x11 window.

  Raises:
    ValueError: images smaller than 11x11 (not even one scale fits).
  """
  for k in range(len(image.MS_SSIM_WEIGHTS), 0, -1):
    if min(height, width) >= image.ms_ssim_min_size(k):
      return k
  raise ValueError(f'MS-SSIM needs images of at least '
                   f'{image.ms_ssim_min_size(1)}x{image.ms_ssim_min_size(1)},'
                   f' got {height}x{width}.')


def scale_weights(num_scales: int) -> np.ndarray:
  """The first `num_scales` MS-SSIM weights, renormalised to sum to 1.

  All five are returned as published (they sum to 1.0001), so that five
  scales give exactly `image.ms_ssim`.
  """
  if num_scales == len(image.MS_SSIM_WEIGHTS):
    return np.asarray(image.MS_SSIM_WEIGHTS, np.float32)
  w = np.asarray(image.MS_SSIM_WEIGHTS[:num_scales], np.float64)
  return (w / w.sum()).astype(np.float32)


@functools.partial(jax.jit, static_argnames=('data_range', 'num_scales'))
def _ms_ssim_scales(a: jax.Array, b: jax.Array, data_range: float,
                    num_scales: int) -> jax.Array:
  scale = np.float32(1.0 / data_range)
  a = a.astype(jnp.float32) * scale
  b = b.astype(jnp.float32) * scale
  values = []
  for i in range(num_scales):
    if i:
      a, b = _pool2(a), _pool2(b)
    s, cs = _ssim_cs(a, b)
    values.append(s if i == num_scales - 1 else cs)
  stack = jax.nn.relu(jnp.stack(values, axis=-1))
  weights = jnp.asarray(scale_weights(num_scales))
  return jnp.prod(stack ** weights, axis=-1).mean(axis=-1)


def ms_ssim_scales(a: jax.Array, b: jax.Array, data_range: float | None = None,
                   num_scales: int | None = None) -> jax.Array:
  """MS-SSIM with `num_scales` scales (weights renormalised), per image.

  As `medjax.metrics.image.ms_ssim` (which it equals for 5 scales), but over
  the first `num_scales` scales, the last of them with the luminance term.

  Args:
    a: (N, H, W, C) images, uint8 or float.
    b: images like `a`.
    data_range: span of the pixel values; defaults to 255 for uint8 and is
      required for floats.
    num_scales: 1 ... 5; None: the most that fit (`num_scales_for`).

  Returns:
    float32 (N,) values in [0, 1]; 1 for identical images.
  """
  a, b = _prepare(a, b)
  data_range = _resolve_range(a, data_range)
  fits = num_scales_for(a.shape[1], a.shape[2])
  if num_scales is None:
    num_scales = fits
  if not 1 <= num_scales <= fits:
    raise ValueError(f'num_scales must be in 1..{fits} for {a.shape[1]}x'
                     f'{a.shape[2]} images, got {num_scales}.')
  return _ms_ssim_scales(a, b, data_range, num_scales)


@dataclasses.dataclass(frozen=True)
class Diversity:
  """Mean pairwise MS-SSIM of one set.

  Attributes:
    mean: mean MS-SSIM over the pairs (lower = more diverse).
    std: standard deviation over the pairs.
    num_pairs: pairs drawn.
    num_scales: MS-SSIM scales used.
  """
  mean: float
  std: float
  num_pairs: int
  num_scales: int


def random_pairs(num_images: int, num_pairs: int,
                 seed: int = 0) -> np.ndarray:
  """(num_pairs, 2) indices of distinct images, drawn uniformly (seeded)."""
  if num_images < 2:
    raise ValueError(f'need at least 2 images, got {num_images}.')
  rng = np.random.default_rng(seed)
  i = rng.integers(0, num_images, num_pairs)
  # j uniform over the other images: never i itself.
  j = (i + rng.integers(1, num_images, num_pairs)) % num_images
  return np.stack([i, j], axis=-1)


def pairwise_ms_ssim(images, num_pairs: int = 1000,
                     data_range: float | None = None, seed: int = 0,
                     num_scales: int | None = None,
                     batch_size: int = 100) -> Diversity:
  """Mean MS-SSIM over random pairs of distinct images of one set.

  Args:
    images: (N, H, W, C) images, uint8 or float, N >= 2.
    num_pairs: pairs to draw (with replacement; Odena et al. used 100 per
      class, more gives a steadier mean).
    data_range: span of the pixel values (255 default for uint8; required
      for floats, e.g. 2.0 for [-1, 1]).
    seed: seed of the pair draw.
    num_scales: MS-SSIM scales; None: the most that fit.
    batch_size: pairs per device call.

  Returns:
    `Diversity` (mean, std, num_pairs, num_scales).
  """
  if np.ndim(images) != 4:
    raise ValueError(f'Expected NHWC images, got shape {np.shape(images)}.')
  n, h, w = np.shape(images)[:3]
  if num_scales is None:
    num_scales = num_scales_for(h, w)
  pairs = random_pairs(n, num_pairs, seed)
  values = []
  for start in range(0, num_pairs, batch_size):
    p = pairs[start:start + batch_size]
    values.append(np.asarray(ms_ssim_scales(
        jnp.asarray(images[p[:, 0]]), jnp.asarray(images[p[:, 1]]),
        data_range, num_scales)))
  values = np.concatenate(values)
  return Diversity(float(values.mean()), float(values.std()), num_pairs,
                   num_scales)


def ms_ssim_diversity(generated, real=None, num_pairs: int = 1000,
                      data_range: float | None = None, seed: int = 0,
                      num_scales: int | None = None,
                      batch_size: int = 100) -> dict[str, Diversity]:
  """MS-SSIM diversity of generated samples and, for reference, real images.

  Args:
    generated: (N, H, W, C) generated images.
    real: real images of the same H, W, C, or None.
    num_pairs, data_range, seed, num_scales, batch_size: as
      `pairwise_ms_ssim` (the same scales are used for both sets).

  Returns:
    {'generated': Diversity, 'real': Diversity} ('real' only when given).
    Lower mean = more diverse; generated well above real hints at mode
    collapse.
  """
  if num_scales is None:
    num_scales = num_scales_for(*np.shape(generated)[1:3])
  kwargs = dict(num_pairs=num_pairs, data_range=data_range, seed=seed,
                num_scales=num_scales, batch_size=batch_size)
  out = {'generated': pairwise_ms_ssim(generated, **kwargs)}
  if real is not None:
    out['real'] = pairwise_ms_ssim(real, **kwargs)
  return out
