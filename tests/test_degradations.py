"""medjax.data.degradations against OpenCV (cv2), which is the reference.

Random uint8 images of odd, non-square sizes, grey and RGB. Exact equality
is asserted wherever docs/degradations.md claims it; elsewhere at most 1 grey
level on at most `NEAR_TIE_FRACTION` of the pixels.
"""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from medjax.data import degradations

# The documented bound where bit-exactness is not claimed (fractional
# INTER_AREA downscales and non-integer INTER_CUBIC ratios): 1 grey level on
# at most 0.5% of the pixels (measured worst: 0.4%, a 6x14 output).
NEAR_TIE_FRACTION = 0.005

INTER = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR,
         'bicubic': cv2.INTER_CUBIC, 'area': cv2.INTER_AREA}
SHAPES = [(37, 53, 1), (61, 45, 3)]   # (H, W, C): odd, non-square.


def _images(shape, batch=2, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch,) + shape,
                                              np.uint8)


def _per_image(fn, images):
  """Applies a cv2 function to each HWC image, keeping the channel axis."""
  out = [fn(np.ascontiguousarray(im[..., 0] if im.shape[-1] == 1 else im))
         for im in images]
  return np.stack([o[..., None] if o.ndim == 2 else o for o in out])


def _assert_exact(out, ref):
  out = np.asarray(out)
  assert out.dtype == ref.dtype and out.shape == ref.shape
  diff = out.astype(np.int32) - ref
  assert not diff.any(), (
      f'{np.count_nonzero(diff)} of {diff.size} pixels differ, max '
      f'{np.abs(diff).max()}')


def _assert_near(out, ref, fraction=NEAR_TIE_FRACTION):
  out = np.asarray(out)
  assert out.dtype == ref.dtype and out.shape == ref.shape
  diff = np.abs(out.astype(np.int32) - ref)
  assert diff.max() <= 1
  assert np.mean(diff > 0) <= fraction, np.mean(diff > 0)


@pytest.mark.parametrize('shape', SHAPES)
def test_box_blur_matches_cv2(shape):
  images = _images(shape)
  # 16/17: the two sides of OpenCV's 16-bit fixed-point divide; 22: its
  # float division, scalar in the last (W*C) % 8 columns.
  for k in (1, 2, 3, 4, 5, 7, 16, 17, 22):
    ref = _per_image(lambda im: cv2.blur(im, (k, k)), images)
    _assert_exact(degradations.box_blur(jnp.asarray(images), k), ref)


@pytest.mark.parametrize('shape', SHAPES)
def test_gaussian_blur_matches_cv2(shape):
  images = _images(shape, seed=1)
  for k, sigma in ((3, 0), (5, 0), (7, 0), (9, 0), (11, 0), (5, 1.5),
                   (7, 0.8), (0, 1.2)):
    ref = _per_image(lambda im: cv2.GaussianBlur(im, (k, k), sigma), images)
    _assert_exact(degradations.gaussian_blur(jnp.asarray(images), k, sigma),
                  ref)


# (out_h, out_w) as functions of (h, w); 'exact' lists the methods that are
# bit-exact for that case, the rest are held to the near-tie bound. The
# sizes are odd, so no case here is an integer factor.
RESIZE_CASES = [
    ('down x2', lambda h, w: (h // 2, w // 2), ('nearest', 'bilinear')),
    ('down x4', lambda h, w: (h // 4, w // 4), ('nearest', 'bilinear')),
    ('down odd', lambda h, w: (h - 9, w - 11), ('nearest', 'bilinear')),
    ('up non-integer', lambda h, w: (h + 7, w + 12),
     ('nearest', 'bilinear', 'area')),
    ('up x2 down x2', lambda h, w: (2 * h, w // 2),
     ('nearest', 'bilinear', 'area')),
    ('up x3', lambda h, w: (3 * h, 3 * w), ('nearest', 'bilinear', 'area')),
]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('name,size_fn,exact', RESIZE_CASES,
                         ids=[c[0] for c in RESIZE_CASES])
def test_resize_matches_cv2(shape, name, size_fn, exact):
  del name
  images = _images(shape, seed=2)
  h, w = size_fn(*shape[:2])
  for method, flag in INTER.items():
    ref = _per_image(
        lambda im: cv2.resize(im, (w, h), interpolation=flag), images)
    out = degradations.resize(jnp.asarray(images), (h, w), method)
    if method in exact:
      _assert_exact(out, ref)
    else:
      _assert_near(out, ref)


@pytest.mark.parametrize('size,out,methods', [
    ((48, 64), (16, 16), ('area', 'bicubic', 'bilinear')),   # 3x by 4x
    ((60, 52), (30, 26), ('area', 'bicubic', 'bilinear')),   # 2x2 fast path
    ((64, 48), (48, 36), ('area',)),   # 4 -> 3 pixels, as 512 -> 384
])
def test_resize_exact_ratios(size, out, methods):
  """Integer downscales, and INTER_AREA wherever its weights are dyadic."""
  images = _images(size + (3,), seed=3)
  for method in methods:
    ref = _per_image(lambda im: cv2.resize(
        im, out[::-1], interpolation=INTER[method]), images)
    _assert_exact(degradations.resize(jnp.asarray(images), out, method), ref)


def test_presets_match_opencv_chain():
  """The study's chain (shared/reference/ref_degrade.py) on one 512 image."""
  image = _images((512, 512, 1), batch=1, seed=4)
  hr = cv2.resize(image[0, ..., 0], (384, 384), interpolation=cv2.INTER_AREA)
  primary = cv2.blur(hr, (2, 2))
  lr = cv2.resize(primary, (96, 96), interpolation=cv2.INTER_CUBIC)
  got = degradations.get('primary')(jnp.asarray(image))
  _assert_exact(got, primary[None, ..., None])
  got = degradations.get('primary+x4_bicubic')(jnp.asarray(image))
  _assert_exact(got, lr[None, ..., None])


def test_presets_small_rgb():
  images = _images((61, 45, 3), batch=2, seed=5)
  ref = _per_image(lambda im: cv2.blur(cv2.resize(
      im, (384, 384), interpolation=cv2.INTER_AREA), (5, 5)), images)
  _assert_exact(degradations.get('srgan_train')(jnp.asarray(images)), ref)
  # 61x45 -> 15x11 is not an integer ratio: IPP's float bicubic.
  ref = _per_image(lambda im: cv2.resize(
      im, (11, 15), interpolation=cv2.INTER_CUBIC), images)
  _assert_near(degradations.get('x4_bicubic')(jnp.asarray(images)), ref)


def test_float_inputs_match_cv2():
  images = np.random.default_rng(6).random((1, 37, 53, 3), np.float32)
  x = jnp.asarray(images)
  checks = [
      (degradations.box_blur(x, 4), cv2.blur(images[0], (4, 4))),
      (degradations.gaussian_blur(x, 5, 1.5),
       cv2.GaussianBlur(images[0], (5, 5), 1.5)),
  ]
  for method, flag in INTER.items():
    for h, w in ((18, 26), (50, 70)):
      checks.append((degradations.resize(x, (h, w), method),
                     cv2.resize(images[0], (w, h), interpolation=flag)))
  for out, ref in checks:
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out)[0], ref, atol=1e-6)


def test_batch_independence_and_shapes():
  images = _images((37, 53, 1), batch=3, seed=7)
  fn = degradations.get('resize(20,30,area)+box(3)')
  batch = np.asarray(fn(jnp.asarray(images)))
  assert batch.shape == (3, 20, 30, 1) and batch.dtype == np.uint8
  single = np.asarray(fn(jnp.asarray(images[1:2])))
  np.testing.assert_array_equal(batch[1:2], single)
  with pytest.raises(ValueError, match='NHWC'):
    degradations.box_blur(jnp.asarray(images[0]), 3)


def test_jit_and_spec_composition():
  images = jnp.asarray(_images((37, 53, 3), batch=2, seed=8))
  spec = ['resize(30,40,bilinear)', 'gaussian_blur(5,1.0)+rician(0.02)']
  fn = degradations.get(spec)
  rng = jax.random.key(0)
  jitted = jax.jit(fn)(images, rng)
  np.testing.assert_array_equal(np.asarray(jitted), np.asarray(fn(images, rng)))
  assert jitted.shape == (2, 30, 40, 3) and jitted.dtype == jnp.uint8
  text = degradations.describe(spec)
  assert text == ('resize(30,40,bilinear)+gaussian_blur(5,1.0)+'
                  'rician(0.02)')
  np.testing.assert_array_equal(
      np.asarray(degradations.get(text)(images, rng)), np.asarray(jitted))
  assert degradations.describe('primary+rician(0.02)') == (
      'resize(384,384,area)+box(2)+rician(0.02)')
  assert set(degradations.PRESETS) == {'primary', 'srgan_train', 'x4_bicubic'}


def test_noise_determinism_and_dtypes():
  images = jnp.asarray(_images((37, 53, 1), batch=2, seed=9))
  fn = degradations.get('gaussian(0.05)+poisson(500)')
  a = fn(images, jax.random.key(1))
  b = fn(images, jax.random.key(1))
  c = fn(images, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.any(np.asarray(a) != np.asarray(c))
  assert a.dtype == jnp.uint8
  f = degradations.rician_noise(images.astype(jnp.float32) / 255,
                                jax.random.key(3), 0.02)
  assert f.dtype == jnp.float32
  with pytest.raises(ValueError, match='needs an rng'):
    fn(images)


def test_rician_statistics():
  """Mean and std on a constant image against the Rice distribution."""
  a, sigma = 0.1, 0.05                      # low SNR: the bias is visible
  x = jnp.full((4, 128, 128, 1), a, jnp.float32)
  y = np.asarray(degradations.rician_noise(x, jax.random.key(0), sigma))
  t = -a * a / (2 * sigma * sigma)
  laguerre = np.exp(t / 2) * ((1 - t) * special.i0(-t / 2)
                              - t * special.i1(-t / 2))
  mean = sigma * np.sqrt(np.pi / 2) * laguerre
  std = np.sqrt(a * a + 2 * sigma * sigma - mean ** 2)
  assert abs(y.mean() - mean) < 0.01 * mean
  assert abs(y.std() - std) < 0.02 * std


def test_poisson_and_gaussian_statistics():
  x = jnp.full((4, 128, 128, 1), 0.5, jnp.float32)
  y = np.asarray(degradations.poisson_noise(x, jax.random.key(0), 100.0))
  assert abs(y.mean() - 0.5) < 0.005
  assert abs(y.var() - 0.5 / 100.0) < 0.05 * 0.5 / 100.0   # var = x / peak
  u = jnp.full((4, 64, 64, 1), 128, jnp.uint8)
  g = np.asarray(degradations.gaussian_noise(u, jax.random.key(1), 0.1),
                 np.float32)
  assert abs(g.mean() - 128) < 1.0 and abs(g.std() - 25.5) < 0.5


@pytest.mark.parametrize('spec,match', [
    ('prim', 'presets: primary, srgan_train, x4_bicubic'),
    ('primary+blurr(3)', "unknown degradation 'blurr'"),
    ('primary(2)', 'takes no arguments'),
    ('resize(10)', 'needs width'),
    ('box(2.5)', 'must be int'),
    ('resize(10,10,lanczos)', 'unknown resize method'),
    ('box(3', 'unbalanced'),
    ('', 'empty'),
])
def test_bad_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    degradations.get(spec)
