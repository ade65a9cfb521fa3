"""Full-reference image-quality metrics: PSNR, SSIM, MS-SSIM and MS-GMSD.

All metrics take batches of NHWC images, uint8 or float, and return one value
per image, shape (N,). They are pure JAX, so they run on device and can be
jitted (`data_range` and `crop_border` are static: they set shapes and
constants). Float inputs need an explicit `data_range` (the span of values a
pixel may take, e.g. 1.0 for [0, 1] images or 2.0 for [-1, 1]): guessing it from
the data, as some libraries do, makes scores depend on the image content.

References each metric equals, and the measured differences, are in
docs/metrics.md.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

# SSIM constants (Wang et al. 2004): K1, K2, and the 11-tap Gaussian window
# with sigma 1.5 that skimage uses for gaussian_weights=True
# (radius = int(3.5 * 1.5 + 0.5) = 5).
_K1 = 0.01
_K2 = 0.03
_WIN = 11
_SIGMA = 1.5

# MS-SSIM scale weights (Wang, Simoncelli & Bovik 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# MS-GMSD scale weights (Zhang et al. 2017), finest scale first, the GMSD
# stability constant on the 0-255 scale (Xue et al. 2014) and the masking
# coefficient of Zhang et al.'s similarity map.
MS_GMSD_WEIGHTS = (0.096, 0.596, 0.289, 0.019)
GMSD_C = 170.0
MS_GMSD_ALPHA = 0.5

# ITU-R BT.601 luma, used by the GMSD reference code for RGB inputs.
_LUMA = (0.299, 0.587, 0.114)

_HIGHEST = jax.lax.Precision.HIGHEST


def _resolve_range(images: jax.Array, data_range: float | None) -> float:
  """The data range: 255 by default for uint8, required for floats."""
  if data_range is None:
    if images.dtype == jnp.uint8:
      return 255.0
    raise ValueError(
        f'data_range is required for {images.dtype} images (e.g. 1.0 for '
        '[0, 1], 2.0 for [-1, 1], 255.0 for floats on the 0-255 scale).')
  if data_range <= 0:
    raise ValueError(f'data_range must be positive, got {data_range}.')
  return float(data_range)


def _prepare(a: jax.Array, b: jax.Array, crop_border: int = 0
             ) -> tuple[jax.Array, jax.Array]:
  """Checks shapes and crops `crop_border` pixels from each side."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f'Shapes differ: {a.shape} vs {b.shape}.')
  if a.ndim != 4:
    raise ValueError(f'Expected NHWC images, got shape {a.shape}.')
  if crop_border < 0:
    raise ValueError(f'crop_border must be >= 0, got {crop_border}.')
  if crop_border:
    if min(a.shape[1:3]) <= 2 * crop_border:
      raise ValueError(
          f'crop_border={crop_border} leaves nothing of {a.shape[1:3]} images.')
    c = crop_border
    a, b = a[:, c:-c, c:-c], b[:, c:-c, c:-c]
  return a, b


@functools.partial(jax.jit, static_argnames=('data_range', 'crop_border'))
def _psnr(a: jax.Array, b: jax.Array, data_range: float,
          crop_border: int) -> jax.Array:
  a, b = _prepare(a, b, crop_border)
  if a.dtype == jnp.uint8 and b.dtype == jnp.uint8:
    # Integer differences are exact, and their squares (<= 255^2) are exact in
    # float32, so the only rounding is in the sum.
    diff = (a.astype(jnp.int32) - b.astype(jnp.int32)).astype(jnp.float32)
  else:
    diff = a.astype(jnp.float32) - b.astype(jnp.float32)
  sq = diff * diff
  # Sum one axis at a time: short float32 partial sums keep the relative error
  # of the mean near 1e-7 even for megapixel images (1e-4 dB needs ~2e-5).
  total = sq.sum(axis=3).sum(axis=2).sum(axis=1)
  mse = total / np.float32(np.prod(a.shape[1:]))
  # mse == 0 gives +inf, as skimage does (it divides by zero too).
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def psnr(a: jax.Array, b: jax.Array, data_range: float | None = None,
         crop_border: int = 0) -> jax.Array:
  """Peak signal-to-noise ratio per image, in dB.

  Equals `skimage.metrics.peak_signal_noise_ratio(x, y, data_range=...)`
  applied to each image (MSE over all pixels and channels).

  Args:
    a: (N, H, W, C) images, uint8 or float.
    b: images like `a`.
    data_range: span of the pixel values; defaults to 255 for uint8 and is
      required for float inputs.
    crop_border: pixels cut from each side before computing, as in
      super-resolution papers.

  Returns:
    float32 (N,) PSNRs; +inf for identical images.
  """
  return _psnr(a, b, _resolve_range(jnp.asarray(a), data_range), crop_border)


@functools.partial(jax.jit, static_argnames=('data_range', 'crop_border'))
def _ssim(a: jax.Array, b: jax.Array, data_range: float,
          crop_border: int) -> jax.Array:
  a, b = _prepare(a, b, crop_border)
  # Scale to [0, 1] first so the constants are the same as for max_val=1.
  scale = np.float32(1.0 / data_range)
  a = a.astype(jnp.float32) * scale
  b = b.astype(jnp.float32) * scale
  # dm-pix filters with 'valid' convolutions. skimage filters with reflect
  # padding but then drops (11 - 1) // 2 = 5 pixels per border, exactly the
  # pixels whose window reached the padding, so the two means coincide.
  return dm_pix.ssim(a, b, max_val=1.0, filter_size=_WIN, filter_sigma=_SIGMA,
                     k1=_K1, k2=_K2, precision=_HIGHEST)


def ssim(a: jax.Array, b: jax.Array, data_range: float | None = None,
         crop_border: int = 0) -> jax.Array:
  """Structural similarity (Wang et al. 2004) per image.

  Equals `skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=..., channel_axis=-1)`:
  11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, mean over the pixels at
  least 5 from the border, then mean over channels.

  Args:
    a: (N, H, W, C) images, uint8 or float; H and W at least 11 after cropping.
    b: images like `a`.
    data_range: span of the pixel values; defaults to 255 for uint8 and is
      required for float inputs.
    crop_border: pixels cut from each side before computing.

  Returns:
    float32 (N,) SSIMs in [-1, 1]; 1 for identical images.
  """
  a = jnp.asarray(a)
  data_range = _resolve_range(a, data_range)
  h, w = a.shape[1] - 2 * crop_border, a.shape[2] - 2 * crop_border
  if min(h, w) < _WIN:
    raise ValueError(
        f'SSIM needs images of at least {_WIN}x{_WIN} (after crop_border), '
        f'got {h}x{w}.')
  return _ssim(a, b, data_range, crop_border)


def _gaussian_window() -> np.ndarray:
  """The normalised 1-D Gaussian taps of SSIM's window."""
  x = np.arange(_WIN, dtype=np.float64) - _WIN // 2
  g = np.exp(-0.5 * (x / _SIGMA) ** 2)
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable 'valid' filter of (N, H, W, C) images, each channel alone."""
  c = x.shape[-1]
  k = len(taps)
  dn = ('NHWC', 'HWIO', 'NHWC')
  ky = jnp.tile(jnp.asarray(taps).reshape(k, 1, 1, 1), (1, 1, 1, c))
  kx = jnp.tile(jnp.asarray(taps).reshape(1, k, 1, 1), (1, 1, 1, c))
  x = jax.lax.conv_general_dilated(x, ky, (1, 1), 'VALID',
                                   dimension_numbers=dn,
                                   feature_group_count=c, precision=_HIGHEST)
  return jax.lax.conv_general_dilated(x, kx, (1, 1), 'VALID',
                                      dimension_numbers=dn,
                                      feature_group_count=c,
                                      precision=_HIGHEST)


def _ssim_cs(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean SSIM and contrast-structure of [0, 1] images.

  Returns:
    (N, C) SSIMs and (N, C) contrast-structure terms.
  """
  taps = _gaussian_window()
  c1, c2 = _K1 ** 2, _K2 ** 2
  mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
  var_a = _filter_valid(a * a, taps) - mu_a * mu_a
  var_b = _filter_valid(b * b, taps) - mu_b * mu_b
  cov = _filter_valid(a * b, taps) - mu_a * mu_b
  cs_map = (2 * cov + c2) / (var_a + var_b + c2)
  lum_map = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
  return (lum_map * cs_map).mean(axis=(1, 2)), cs_map.mean(axis=(1, 2))


def _pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling; odd sizes are first padded by mirroring the edge.

  Mirroring (not zeros) keeps the border mean unbiased; it is what
  tf.image.ssim_multiscale does ('SYMMETRIC' padding of odd dimensions).
  """
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='symmetric')
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim_min_size(num_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
  """Smallest H and W for which the coarsest scale still fits the window."""
  return (_WIN - 1) * 2 ** (num_scales - 1) + 1


@functools.partial(jax.jit, static_argnames=('data_range',))
def _ms_ssim(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
  scale = np.float32(1.0 / data_range)
  a = a.astype(jnp.float32) * scale
  b = b.astype(jnp.float32) * scale
  values = []
  for i in range(len(MS_SSIM_WEIGHTS)):
    if i:
      a, b = _pool2(a), _pool2(b)
    s, cs = _ssim_cs(a, b)
    # Contrast-structure at the finer scales, full SSIM (luminance included)
    # at the coarsest.
    values.append(s if i == len(MS_SSIM_WEIGHTS) - 1 else cs)
  # (N, C, scales). ReLU as tf.image.ssim_multiscale and pytorch-msssim do: a
  # negative term raised to a fractional power would be NaN.
  stack = jax.nn.relu(jnp.stack(values, axis=-1))
  weights = jnp.asarray(MS_SSIM_WEIGHTS, jnp.float32)
  return jnp.prod(stack ** weights, axis=-1).mean(axis=-1)


def ms_ssim(a: jax.Array, b: jax.Array,
            data_range: float | None = None) -> jax.Array:
  """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) per image.

  Follows tf.image.ssim_multiscale (and pytorch-msssim): 5 scales with weights
  `MS_SSIM_WEIGHTS`, 11x11 Gaussian window (sigma 1.5) with 'valid' filtering,
  2x2 average pooling between scales, contrast-structure at the first four
  scales and luminance * contrast-structure at the last, each clamped at 0,
  product of the weighted powers, then mean over channels.

  Args:
    a: (N, H, W, C) images, uint8 or float; H and W at least 161.
    b: images like `a`.
    data_range: span of the pixel values; defaults to 255 for uint8 and is
      required for float inputs.

  Returns:
    float32 (N,) MS-SSIMs in [0, 1]; 1 for identical images.
  """
  a, b = _prepare(a, b)
  data_range = _resolve_range(a, data_range)
  min_size = ms_ssim_min_size()
  if min(a.shape[1:3]) < min_size:
    raise ValueError(f'MS-SSIM needs images of at least {min_size}x{min_size}, '
                     f'got {a.shape[1]}x{a.shape[2]}.')
  return _ms_ssim(a, b, data_range)


def _luma(x: jax.Array) -> jax.Array:
  """(N, H, W, 1) luma of grayscale or RGB images."""
  c = x.shape[-1]
  if c == 1:
    return x
  if c == 3:
    return (x * jnp.asarray(_LUMA, x.dtype)).sum(axis=-1, keepdims=True)
  raise ValueError(f'Expected 1 or 3 channels, got {c}.')


def _pool2_zero(x: jax.Array) -> jax.Array:
  """2x2 average pooling as GMSD's MATLAB code: odd sizes get a zero row/col.

  The reference filters with conv2(..., 'same') and keeps every second pixel,
  which averages the last odd row with zeros.
  """
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _gmsd(a: jax.Array, b: jax.Array, c: float, alpha: float) -> jax.Array:
  """GMSD of (N, H, W, 1) luma images on the 0-255 scale, shape (N,)."""
  # Prewitt operators divided by 3, zero padding ('same' conv2 in MATLAB).
  px = np.array([[1, 0, -1]] * 3, np.float32) / 3
  kernels = jnp.asarray(np.stack([px, px.T], axis=-1)[:, :, None, :])
  dn = ('NHWC', 'HWIO', 'NHWC')

  def magnitude(x):
    g = jax.lax.conv_general_dilated(x, kernels, (1, 1), 'SAME',
                                     dimension_numbers=dn, precision=_HIGHEST)
    return jnp.sqrt((g * g).sum(axis=-1))

  ma, mb = magnitude(a), magnitude(b)
  prod = ma * mb
  gms = ((2 - alpha) * prod + c) / (ma * ma + mb * mb - alpha * prod + c)
  # Population standard deviation of the similarity map.
  return jnp.std(gms, axis=(1, 2))


def ms_gmsd_min_size(num_scales: int = len(MS_GMSD_WEIGHTS)) -> int:
  """Smallest H and W accepted by `ms_gmsd` (as piq: 2**scales + 1)."""
  return 2 ** num_scales + 1


@functools.partial(jax.jit, static_argnames=('data_range',))
def _ms_gmsd(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
  # The constants are defined on the 0-255 scale, so rescale to it.
  scale = np.float32(255.0 / data_range)
  a = _luma(a.astype(jnp.float32) * scale)
  b = _luma(b.astype(jnp.float32) * scale)
  sq = []
  for i in range(len(MS_GMSD_WEIGHTS)):
    if i:
      a, b = _pool2_zero(a), _pool2_zero(b)
    sq.append(_gmsd(a, b, GMSD_C, MS_GMSD_ALPHA) ** 2)
  weights = jnp.asarray(MS_GMSD_WEIGHTS, jnp.float32)
  return jnp.sqrt((jnp.stack(sq, axis=-1) * weights).sum(axis=-1))


def ms_gmsd(a: jax.Array, b: jax.Array,
            data_range: float | None = None) -> jax.Array:
  """Multi-scale gradient magnitude similarity deviation per image.

  MS-GMSD (Zhang et al. 2017) on luma: GMSD (Xue et al. 2014) with Prewitt
  gradients and c = 170 (0-255 scale) at 4 scales, the first at full
  resolution and each next after 2x2 average pooling, combined as
  sqrt(sum_i w_i * GMSD_i^2) with `MS_GMSD_WEIGHTS`. The similarity map uses
  Zhang et al.'s masking alpha = 0.5. Lower is better; 0 for identical images.

  Args:
    a: (N, H, W, C) images with C = 1 or 3 (RGB, reduced to BT.601 luma),
      uint8 or float; H and W at least 17.
    b: images like `a`.
    data_range: span of the pixel values; defaults to 255 for uint8 and is
      required for float inputs.

  Returns:
    float32 (N,) MS-GMSD values, >= 0.
  """
  a, b = _prepare(a, b)
  data_range = _resolve_range(a, data_range)
  min_size = ms_gmsd_min_size()
  if min(a.shape[1:3]) < min_size:
    raise ValueError(f'MS-GMSD needs images of at least {min_size}x{min_size}, '
                     f'got {a.shape[1]}x{a.shape[2]}.')
  return _ms_gmsd(a, b, data_range)
