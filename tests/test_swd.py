"""Tests for medjax.metrics.swd against a numpy version of Karras et al.'s code.

The reference below follows `metrics/sliced_wasserstein.py` of progressive
growing of GANs (scipy 'mirror' convolutions on NCHW, float64 here), fed with
the same patch centres and directions as the JAX code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from medjax.metrics import swd

_G = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _np_pyr_down(x):
  return scipy.ndimage.convolve(x, _G[None, None], mode='mirror')[:, :, ::2,
                                                                  ::2]


def _np_pyr_up(x, shape):
  n, c, h, w = x.shape
  up = np.zeros((n, c, 2 * h, 2 * w), x.dtype)
  up[:, :, ::2, ::2] = x
  out = scipy.ndimage.convolve(up, _G[None, None] * 4.0, mode='mirror')
  return out[:, :, :shape[0], :shape[1]]


def _np_pyramid(x, num_levels):
  pyr = [x]
  for _ in range(1, num_levels):
    pyr.append(_np_pyr_down(pyr[-1]))
    pyr[-2] = pyr[-2] - _np_pyr_up(pyr[-1], pyr[-2].shape[2:])
  return pyr


def _np_descriptors(images, key, nhoods):
  """NHWC images -> per level normalised descriptors, as the reference."""
  x = images.transpose(0, 3, 1, 2).astype(np.float64)
  n = x.shape[0]
  levels = len(swd.resolutions(x.shape[2], x.shape[3]))
  out = []
  for level, lap in enumerate(_np_pyramid(x, levels)):
    centers = np.asarray(swd.patch_centers(key, jnp.arange(n), level,
                                           lap.shape[2], lap.shape[3], nhoods))
    desc = []
    for i in range(n):
      for y, xx in centers[i]:
        # NHWC descriptor order (y, x, channel), like the JAX code.
        desc.append(lap[i, :, y - 3:y + 4, xx - 3:xx + 4].transpose(1, 2, 0))
    desc = np.stack(desc)
    desc -= desc.mean(axis=(0, 1, 2), keepdims=True)
    desc /= desc.std(axis=(0, 1, 2), keepdims=True)
    out.append(desc.reshape(len(desc), -1))
  return out


def _np_swd(a, b, key, level, repeats, dirs_per_repeat):
  results = []
  for r in range(repeats):
    dirs = np.asarray(swd.random_directions(key, level, r, a.shape[1],
                                            dirs_per_repeat), np.float64)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    results.append(np.mean(np.abs(pa - pb)))
  return np.mean(results)


def _smooth(rng, n, h, w, c):
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  imgs = []
  for _ in range(n):
    f = rng.uniform(1, 6, (2, c))
    p = rng.uniform(0, 2 * np.pi, c)
    imgs.append(np.sin(2 * np.pi * (f[0] * yy[..., None] + f[1] * xx[..., None])
                       + p))
  return np.stack(imgs).astype(np.float32)


@pytest.mark.parametrize('shape', [(5, 32, 32, 3), (4, 35, 33, 1)])
def test_matches_numpy_reference(shape):
  rng = np.random.default_rng(0)
  n, h, w, c = shape
  real = _smooth(rng, n, h, w, c) + rng.normal(0, 0.1, shape).astype('f4')
  fake = rng.uniform(-1, 1, shape).astype(np.float32)
  nhoods, repeats, dirs = 16, 2, 32
  got = swd.sliced_wasserstein(real, fake, seed=3, batch_size=2,
                               nhoods=nhoods, dir_repeats=repeats,
                               dirs_per_repeat=dirs)
  base = jax.random.key(3)
  d_real = _np_descriptors(real, jax.random.fold_in(base, 0), nhoods)
  d_fake = _np_descriptors(fake, jax.random.fold_in(base, 1), nhoods)
  want = [1e3 * _np_swd(a, b, jax.random.fold_in(base, 2), level, repeats,
                        dirs)
          for level, (a, b) in enumerate(zip(d_real, d_fake))]
  assert got.resolutions == swd.resolutions(h, w) == (min(h, w),
                                                      min(h, w) // 2)
  np.testing.assert_allclose(got.per_level, want, rtol=1e-4)
  np.testing.assert_allclose(got.average, np.mean(want), rtol=1e-4)
  assert set(got.as_dict()) == {f'SWDx1e3_{r}' for r in got.resolutions} | {
      'SWDx1e3_avg'}


def test_pyramid_reconstructs():
  # Laplacian levels plus the upsampled coarser level give back the image.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)),
                  jnp.float32)
  pyr = swd.laplacian_pyramid(x, 3)
  assert [p.shape[1] for p in pyr] == [32, 16, 8]
  rec = pyr[-1]
  for level in pyr[-2::-1]:
    rec = swd._pyr_up(rec, level.shape[1:3]) + level
  np.testing.assert_allclose(rec, x, atol=1e-5)


def test_same_distribution_small_different_large():
  rng = np.random.default_rng(2)
  a = _smooth(rng, 16, 32, 32, 1)
  b = _smooth(rng, 16, 32, 32, 1)
  noise = rng.uniform(-1, 1, a.shape).astype(np.float32)
  kw = dict(seed=0, nhoods=64)  # fewer patches than 128: a faster test
  same = swd.sliced_wasserstein(a, a, **kw)
  similar = swd.sliced_wasserstein(a, b, **kw)
  different = swd.sliced_wasserstein(a, noise, **kw)
  # Identical sets differ only by the independent patch positions.
  assert same.average < 0.3 * different.average
  assert same.average < similar.average < different.average
  # Descriptors of one set against themselves: exactly 0.
  key = jax.random.key(0)
  d = swd.descriptors(a, key, nhoods=64)
  assert swd.from_descriptors(d, d, key) == [0.0, 0.0]
  # Seeded: same seed, same numbers; batching does not change them.
  again = swd.sliced_wasserstein(a, noise, batch_size=5, **kw)
  np.testing.assert_allclose(again.per_level, different.per_level, rtol=1e-5)
  # Invariant to an affine change of intensities (levels are normalised).
  scaled = swd.sliced_wasserstein(a * 127.5 + 127.5, noise, **kw)
  np.testing.assert_allclose(scaled.per_level, different.per_level, rtol=1e-3)


def test_errors():
  x = np.zeros((2, 15, 32, 1), np.float32)
  with pytest.raises(ValueError, match='at least 16x16'):
    swd.sliced_wasserstein(x, x)
  with pytest.raises(ValueError, match='Shapes differ'):
    swd.sliced_wasserstein(np.zeros((2, 16, 16, 1)), np.zeros((3, 16, 16, 1)))
  # A blank set gives finite numbers, not NaN.
  blank = np.zeros((2, 16, 16, 3), np.float32)
  assert np.isfinite(swd.sliced_wasserstein(blank, blank).average)


def test_device_and_host_sorts_agree():
  """Accelerators sort on device (`_sorted_distance`), CPUs with numpy: the
  two give the same distance, and a level's distance is the mean of its
  repeats' (the numpy reference's order of means)."""
  rng = np.random.default_rng(4)
  a = jnp.asarray(rng.normal(size=(40, 12)), jnp.float32)
  b = jnp.asarray(rng.uniform(-2, 2, size=(40, 12)), jnp.float32)
  key = jax.random.key(7)
  pa, pb = swd._project(a, b, key, 1, 3, 8)
  assert pa.shape == pb.shape == (3 * 8, 40)
  host = swd._swd_level(a, b, key, 1, 3, 8)
  np.testing.assert_allclose(float(swd._sorted_distance(pa, pb)), host,
                             rtol=1e-6)
  np.testing.assert_allclose(
      host, _np_swd(np.asarray(a, np.float64), np.asarray(b, np.float64), key,
                    1, 3, 8), rtol=1e-5)
