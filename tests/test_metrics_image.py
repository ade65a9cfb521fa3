"""Tests of medjax.metrics.image against skimage and numpy references."""

import jax
import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage import metrics as skm

from medjax.metrics import image

_TOL = 1e-4


def _pair(shape, kind, dtype, seed=0):
  """A reference image and a noisy copy; `kind` is 'random' or 'smooth'."""
  rng = np.random.default_rng(seed)
  n, h, w, c = shape
  if kind == 'random':
    x = rng.uniform(0, 255, shape)
  else:
    yy, xx = np.mgrid[:h, :w]
    base = 127 + 100 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    x = base[None, :, :, None] + np.arange(c) * 10 + rng.normal(0, 2, shape)
  y = x + rng.normal(0, 12, shape)
  x, y = np.clip(x, 0, 255), np.clip(y, 0, 255)
  if dtype == np.uint8:
    return np.round(x).astype(np.uint8), np.round(y).astype(np.uint8), 255.0
  # Floats on [0, 1].
  return (x / 255).astype(np.float32), (y / 255).astype(np.float32), 1.0


def _crop(x, c):
  return x[:, c:-c, c:-c] if c else x


_CASES = [((2, 37, 45, 1), kind, dtype, crop)
          for kind in ('random', 'smooth')
          for dtype in (np.uint8, np.float32)
          for crop in (0, 4)] + [((2, 41, 29, 3), kind, dtype, crop)
                                 for kind in ('random', 'smooth')
                                 for dtype in (np.uint8, np.float32)
                                 for crop in (0, 3)]


@pytest.mark.parametrize('shape,kind,dtype,crop', _CASES)
def test_psnr_ssim_match_skimage(shape, kind, dtype, crop):
  x, y, dr = _pair(shape, kind, dtype)
  kwargs = {} if dtype == np.uint8 else {'data_range': dr}
  got_psnr = np.asarray(image.psnr(x, y, crop_border=crop, **kwargs))
  got_ssim = np.asarray(image.ssim(x, y, crop_border=crop, **kwargs))
  xc, yc = _crop(x, crop), _crop(y, crop)
  for i in range(len(x)):
    want_psnr = skm.peak_signal_noise_ratio(xc[i], yc[i], data_range=dr)
    want_ssim = skm.structural_similarity(
        xc[i], yc[i], gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=dr, channel_axis=-1)
    assert abs(got_psnr[i] - want_psnr) < _TOL
    assert abs(got_ssim[i] - want_ssim) < _TOL


def test_identical_images():
  x, _, _ = _pair((2, 33, 33, 3), 'smooth', np.uint8)
  assert np.all(np.isinf(np.asarray(image.psnr(x, x))))
  np.testing.assert_allclose(image.ssim(x, x), 1.0, atol=1e-6)


def test_float_needs_data_range():
  x, y, _ = _pair((1, 16, 16, 1), 'random', np.float32)
  for fn in (image.psnr, image.ssim, image.ms_ssim, image.ms_gmsd):
    with pytest.raises(ValueError, match='data_range'):
      fn(x, y)


def test_jit():
  x, y, dr = _pair((2, 24, 24, 1), 'random', np.float32)
  for fn in (image.psnr, image.ssim):
    jitted = jax.jit(fn, static_argnames=('data_range', 'crop_border'))
    np.testing.assert_allclose(jitted(x, y, data_range=dr, crop_border=2),
                               fn(x, y, dr, 2), rtol=1e-6)


def test_too_small_inputs_error():
  x, y, _ = _pair((1, 20, 20, 1), 'random', np.uint8)
  with pytest.raises(ValueError, match='at least 11x11'):
    image.ssim(x[:, :10], y[:, :10])
  with pytest.raises(ValueError, match='nothing'):
    image.psnr(x, y, crop_border=10)
  with pytest.raises(ValueError, match='161x161'):
    image.ms_ssim(x, y)
  with pytest.raises(ValueError, match='17x17'):
    image.ms_gmsd(x[:, :16], y[:, :16])


# --- numpy references, written from the papers' formulas -------------------


def _np_ssim_cs(a, b):
  """Per-channel (ssim, cs) of float64 [0, 1] HWC images, 'valid' windows."""
  x = np.arange(11) - 5
  g = np.exp(-0.5 * (x / 1.5) ** 2)
  g /= g.sum()

  def filt(z):
    z = ndi.correlate1d(z, g, axis=0, mode='constant')[5:-5]
    return ndi.correlate1d(z, g, axis=1, mode='constant')[:, 5:-5]

  out_s, out_cs = [], []
  for ch in range(a.shape[-1]):
    p, q = a[..., ch], b[..., ch]
    mp, mq = filt(p), filt(q)
    vp, vq = filt(p * p) - mp ** 2, filt(q * q) - mq ** 2
    cpq = filt(p * q) - mp * mq
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    cs = (2 * cpq + c2) / (vp + vq + c2)
    lum = (2 * mp * mq + c1) / (mp ** 2 + mq ** 2 + c1)
    out_s.append((lum * cs).mean())
    out_cs.append(cs.mean())
  return np.array(out_s), np.array(out_cs)


def _np_ms_ssim(a, b):
  """MS-SSIM of one HWC float64 [0, 1] pair (tf.image.ssim_multiscale)."""
  w = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
  vals = []
  for i in range(5):
    if i:
      pad = ((0, a.shape[0] % 2), (0, a.shape[1] % 2), (0, 0))
      a, b = np.pad(a, pad, mode='symmetric'), np.pad(b, pad, mode='symmetric')
      h, wd, c = a.shape
      a = a.reshape(h // 2, 2, wd // 2, 2, c).mean(axis=(1, 3))
      b = b.reshape(h // 2, 2, wd // 2, 2, c).mean(axis=(1, 3))
    s, cs = _np_ssim_cs(a, b)
    vals.append(s if i == 4 else cs)
  vals = np.maximum(np.stack(vals, -1), 0)
  return np.prod(vals ** w, axis=-1).mean()


def _np_ms_gmsd(a, b):
  """MS-GMSD of one HWC float64 0-255 pair (Xue 2014, Zhang 2017)."""
  if a.shape[-1] == 3:
    a = a @ np.array([0.299, 0.587, 0.114])
    b = b @ np.array([0.299, 0.587, 0.114])
  else:
    a, b = a[..., 0], b[..., 0]
  dx = np.array([[1, 0, -1]] * 3) / 3.0

  def grad(z):
    # Correlation with zero padding (conv2 'same' with the flipped kernel is
    # the same up to the gradient's sign, which the magnitude drops).
    gx = ndi.correlate(z, dx, mode='constant')
    gy = ndi.correlate(z, dx.T, mode='constant')
    return np.sqrt(gx ** 2 + gy ** 2)

  w = [0.096, 0.596, 0.289, 0.019]
  total = 0.0
  for i in range(4):
    if i:
      pad = ((0, a.shape[0] % 2), (0, a.shape[1] % 2))
      a, b = np.pad(a, pad), np.pad(b, pad)
      h, wd = a.shape
      a = a.reshape(h // 2, 2, wd // 2, 2).mean(axis=(1, 3))
      b = b.reshape(h // 2, 2, wd // 2, 2).mean(axis=(1, 3))
    ga, gb = grad(a), grad(b)
    gms = (1.5 * ga * gb + 170) / (ga ** 2 + gb ** 2 - 0.5 * ga * gb + 170)
    total += w[i] * gms.std() ** 2
  return np.sqrt(total)


@pytest.mark.parametrize('c,dtype', [(1, np.uint8), (3, np.float32)])
def test_ms_ssim_matches_numpy(c, dtype):
  x, y, dr = _pair((2, 165, 171, c), 'smooth', dtype)
  got = np.asarray(image.ms_ssim(x, y, data_range=dr))
  for i in range(2):
    want = _np_ms_ssim(x[i].astype(np.float64) / dr,
                       y[i].astype(np.float64) / dr)
    assert abs(got[i] - want) < _TOL
  np.testing.assert_allclose(image.ms_ssim(x, x, data_range=dr), 1.0,
                             atol=1e-5)


@pytest.mark.parametrize('c,dtype', [(1, np.float32), (3, np.uint8)])
def test_ms_gmsd_matches_numpy(c, dtype):
  x, y, dr = _pair((2, 45, 38, c), 'smooth', dtype)
  got = np.asarray(image.ms_gmsd(x, y, data_range=dr))
  for i in range(2):
    want = _np_ms_gmsd(x[i].astype(np.float64) * 255 / dr,
                       y[i].astype(np.float64) * 255 / dr)
    assert abs(got[i] - want) < _TOL
  np.testing.assert_allclose(image.ms_gmsd(x, x, data_range=dr), 0.0,
                             atol=1e-6)


def _distortions(x):
  """Increasingly blurred and increasingly noisy copies of x (float 0-255)."""
  rng = np.random.default_rng(1)
  blurred = [ndi.gaussian_filter(x, (0, s, s, 0)) for s in (0.5, 1, 2, 4)]
  noisy = [np.clip(x + rng.normal(0, s, x.shape), 0, 255)
           for s in (2, 8, 24, 64)]
  return blurred, noisy


def test_monotone_under_distortion():
  x, _, _ = _pair((1, 161, 161, 1), 'smooth', np.uint8)
  x = x.astype(np.float32)
  for series in _distortions(x):
    series = np.concatenate(series).astype(np.float32)
    ref = np.repeat(x, len(series), axis=0)
    ms = np.asarray(image.ms_ssim(ref, series, data_range=255.0))
    gm = np.asarray(image.ms_gmsd(ref, series, data_range=255.0))
    assert np.all(np.diff(ms) < 0), ms
    assert np.all(np.diff(gm) > 0), gm
