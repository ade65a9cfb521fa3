"""Image degradations on device that reproduce OpenCV (cv2) pixel for pixel.

Every function takes a batch of NHWC images, uint8 or float, and is pure and
jit-able with static sizes, so a degradation can run inside a jitted train
step. uint8 in gives uint8 out, with OpenCV's own fixed-point arithmetic,
rounding and saturation after every op, so that a chain of ops matches the
same chain of cv2 calls; float in gives float out (no rounding, no clipping).

What is reproduced (measured against opencv-python-headless 5.0 on x86-64,
whose wheels use Intel IPP for some ops; docs/degradations.md has the rules
and the measurements):

  box_blur        cv2.blur, BORDER_REFLECT_101: bit-exact.
  gaussian_blur   cv2.GaussianBlur: bit-exact (8-bit fixed-point kernel).
  resize nearest  INTER_NEAREST: bit-exact.
  resize bilinear INTER_LINEAR (11-bit coefficients and the truncations of
                  OpenCV's SIMD vertical pass): bit-exact.
  resize area     INTER_AREA: bit-exact for upscaling, integer factors and
                  whenever n_in / gcd(n_in, n_out) is a power of two (512 ->
                  384); other downscales <= 1 grey level on ~1e-4 of the
                  pixels (float32 summation order).
  resize bicubic  INTER_CUBIC (IPP's float path on x86): bit-exact for
                  integer downscales; elsewhere <= 1 grey level on ~2e-5 of
                  the pixels, where the exact value is a tie.

The per-axis weights are computed once on the host in numpy, for the static
shapes, with OpenCV's coordinate and coefficient rules. On device a banded
polyphase matrix (integer factors, 512 -> 384) is a few fused multiply-adds
of strided views, any other one a HIGHEST-precision matmul; all of it is
exact wherever OpenCV's arithmetic is integer or dyadic, on any backend.

Presets and compositions are built from a small spec grammar, parsed once on
the host (`get`, `describe`, `PRESETS`):

  degrade = degradations.get('primary+rician(0.02)')
  lr = degrade(hr_uint8_batch, rng)   # inside jit too
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Optional, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Degradation = Callable[..., Array]

# OpenCV's fixed-point resize coefficients (INTER_RESIZE_COEF_BITS).
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS
_CUBIC_A = -0.75
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_HIGHEST = lax.Precision.HIGHEST

METHODS = ('nearest', 'bilinear', 'bicubic', 'area')
_METHOD_ALIASES = {'linear': 'bilinear', 'cubic': 'bicubic',
                   'inter_nearest': 'nearest', 'inter_linear': 'bilinear',
                   'inter_cubic': 'bicubic', 'inter_area': 'area'}


def _check_images(images: Array) -> None:
  if images.ndim != 4:
    raise ValueError(f'expected a batch of NHWC images (4 dims), got shape '
                     f'{images.shape}')
  if not (images.dtype == jnp.uint8
          or jnp.issubdtype(images.dtype, jnp.floating)):
    raise ValueError(f'images must be uint8 or float, got {images.dtype}')


def _is_uint8(images: Array) -> bool:
  return images.dtype == jnp.uint8


def _to_float(images: Array) -> Array:
  """float32 for uint8 and narrower floats; wider floats are kept."""
  if _is_uint8(images) or jnp.finfo(images.dtype).bits < 32:
    return images.astype(jnp.float32)
  return images


def _round_to_uint8(x: Array) -> Array:
  """cvRound then saturate_cast<uchar>: half to even, clipped to [0, 255]."""
  return jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)


# ---------------------------------------------------------------------------
# Separable filtering with BORDER_REFLECT_101.


def _filter_axis(x: Array, axis: int, taps: Sequence[Any], before: int,
                 after: int) -> Array:
  """sum_i taps[i] * x_pad[..., i + j, ...] over a reflect-101 padded axis.

  Shifted slices rather than a convolution: exact in int32, and XLA fuses the
  few multiply-adds into one pass.
  """
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (before, after)
  # numpy's (and jnp's) 'reflect' excludes the edge pixel: BORDER_REFLECT_101.
  xp = jnp.pad(x, pad, mode='reflect') if before or after else x
  out = None
  for i, w in enumerate(taps):
    if w == 0:
      continue
    sl = lax.slice_in_dim(xp, i, i + n, axis=axis)
    term = sl if w == 1 else sl * w
    out = term if out is None else out + term
  return out


def _box_fixed_point(k2: int) -> tuple[int, int]:
  """ColumnSum<ushort, uchar>: (s + delta) * scale >> 23 divides by k2."""
  shift = 23
  scalef = (1 << shift) / k2
  div_scale = math.floor(scalef)
  frac = scalef - div_scale
  div_delta = k2 // 2
  if frac < 0.5:
    div_delta += 1
  else:
    div_scale += 1
  return div_delta, div_scale


@functools.partial(jax.jit, static_argnames=('ksize',))
def box_blur(images: Array, ksize: int) -> Array:
  """`cv2.blur(img, (ksize, ksize))`: the normalised box filter.

  Default anchor (ksize // 2, so for even k the window is [x - k/2, x + k/2 -
  1]) and border (BORDER_REFLECT_101). For uint8, the window sum is divided
  as OpenCV does: for k <= 16 (sum fits 16 bits) by its fixed-point
  `(s + delta) * scale >> 23`, which rounds halves up; for k > 16 by
  float32 `s * (1/k^2)` rounded half to even, except in the columns OpenCV
  leaves to scalar code, which round the float64 product. Bit-exact for
  uint8.

  Args:
    images: (B, H, W, C) uint8 or float.
    ksize: the side of the square window, >= 1.

  Returns:
    The blurred batch, same shape and dtype.
  """
  _check_images(images)
  k = int(ksize)
  if k < 1:
    raise ValueError(f'ksize must be >= 1, got {ksize}')
  if k == 1:
    return images
  before, after = k // 2, k - 1 - k // 2
  x = images.astype(jnp.int32) if _is_uint8(images) else _to_float(images)
  # numpy's (and jnp's) 'reflect' excludes the edge pixel: BORDER_REFLECT_101.
  x = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)),
              mode='reflect')
  s = lax.reduce_window(x, 0, lax.add, (1, 1, k, 1), (1, 1, 1, 1), 'VALID')
  s = lax.reduce_window(s, 0, lax.add, (1, k, 1, 1), (1, 1, 1, 1), 'VALID')
  if not _is_uint8(images):
    return (s * (1.0 / (k * k))).astype(images.dtype)
  if k * k <= 256:
    delta, scale = _box_fixed_point(k * k)
    # < 2^31 for every k <= 16; uint32 keeps the shift logical.
    q = ((s + delta).astype(jnp.uint32) * np.uint32(scale)) >> 23
    return q.astype(jnp.uint8)
  # ColumnSum<int, uchar>: SIMD lanes round float32(s) * float32(1/k^2); the
  # last (W*C) % 8 values of each row, done by scalar code, round the double
  # product, which can differ on exact ties.
  k2 = k * k
  y = _round_to_uint8(s.astype(jnp.float32) * np.float32(1.0 / k2))
  _, _, w, c = images.shape
  tail = np.arange(w * c).reshape(1, 1, w, c) >= (w * c) // 8 * 8
  if not tail.any():
    return y
  q = s // k2
  r = s - q * k2
  tie_up = np.array([int(np.rint((i * k2 + k2 / 2) * (1.0 / k2))) - i
                     for i in range(256)], np.int32)
  tie = jnp.where(2 * r == k2, jnp.take(jnp.asarray(tie_up), q), 0)
  z = jnp.clip(q + (2 * r > k2) + tie, 0, 255).astype(jnp.uint8)
  return jnp.where(tail, z, y)


# ---------------------------------------------------------------------------
# Gaussian blur.

_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    9: [4 / 256, 13 / 256, 30 / 256, 51 / 256, 60 / 256, 51 / 256, 30 / 256,
        13 / 256, 4 / 256],
}


def gaussian_ksize(sigma: float, uint8: bool) -> int:
  """The kernel size cv2.GaussianBlur picks for ksize=0 (3 or 4 sigma)."""
  return int(np.rint(sigma * (3 if uint8 else 4) * 2 + 1)) | 1


@functools.lru_cache(maxsize=None)
def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
  """`getGaussianKernelBitExact`: OpenCV's 1-D kernel, float64.

  For sigma <= 0 and ksize <= 9, OpenCV's fixed binomial-like tables;
  otherwise exp(-x^2 / (2 sigma^2)) normalised, with sigma = 0.3 * ((ksize -
  1) / 2 - 1) + 0.8 when sigma <= 0.

  Args:
    ksize: odd kernel size.
    sigma: the standard deviation, or <= 0 for the size rule.

  Returns:
    (ksize,) float64 weights summing to 1.
  """
  n = int(ksize)
  if sigma <= 0 and n in _SMALL_GAUSSIAN:
    return np.array(_SMALL_GAUSSIAN[n], np.float64)
  s = sigma if sigma > 0 else n * 0.15 + 0.35
  scale2x = -0.125 / (s * s)
  half = (n - 1) // 2
  values = [math.exp(float(x * x) * scale2x)
            for x in range(1 - n, 1 - n + 2 * half, 2)]
  total = 2.0 * sum(values) + 1.0
  mul = 1.0 / total
  k = np.empty(n, np.float64)
  for i, v in enumerate(values):
    k[i] = k[n - 1 - i] = v * mul
  k[half] = mul
  return k


@functools.lru_cache(maxsize=None)
def gaussian_kernel_fixed(ksize: int, sigma: float) -> tuple[int, ...]:
  """The uint8 path's kernel: 8 fraction bits, error-diffused, sum 256."""
  k = gaussian_kernel(ksize, sigma)
  n, half = len(k), len(k) // 2
  out = [0] * n
  err, total = 0.0, 0
  for i in range(half):
    adj = k[i] * 256.0 + err
    v = int(np.rint(adj))
    err = adj - v
    out[i] = out[n - 1 - i] = v
    total += v
  out[half] = 256 - 2 * total
  return tuple(out)


@functools.partial(jax.jit, static_argnames=('ksize', 'sigma'))
def gaussian_blur(images: Array, ksize: int, sigma: float = 0.0) -> Array:
  """`cv2.GaussianBlur(img, (ksize, ksize), sigma)`, BORDER_REFLECT_101.

  uint8 follows OpenCV's bit-exact fixed-point path: the kernel quantised to
  1/256 by error diffusion, a row pass and a column pass in integers, and
  `(v + 2^15) >> 16`. Bit-exact for uint8. Floats use the float64 kernel
  rounded to float32, as OpenCV does (agreement to float32 rounding).

  Args:
    images: (B, H, W, C) uint8 or float.
    ksize: odd kernel size, or 0 to derive it from sigma as OpenCV does.
    sigma: standard deviation in pixels; <= 0 derives it from ksize.

  Returns:
    The blurred batch, same shape and dtype.
  """
  _check_images(images)
  uint8 = _is_uint8(images)
  k, sigma = int(ksize), float(sigma)
  if k <= 0:
    if sigma <= 0:
      raise ValueError('gaussian_blur needs ksize > 0 or sigma > 0')
    k = gaussian_ksize(sigma, uint8)
  if k % 2 != 1:
    raise ValueError(f'ksize must be odd (as in cv2.GaussianBlur), got {k}')
  if k == 1:
    return images
  half = k // 2
  if uint8:
    taps = [int(t) for t in gaussian_kernel_fixed(k, max(sigma, 0.0))]
    x = images.astype(jnp.int32)
    r = _filter_axis(x, 2, taps, half, half)    # <= 255 * 256
    c = _filter_axis(r, 1, taps, half, half)    # <= 255 * 256 * 256
    return ((c + (1 << 15)) >> 16).astype(jnp.uint8)
  taps = [np.float32(t) for t in gaussian_kernel(k, max(sigma, 0.0))]
  x = _to_float(images)
  y = _filter_axis(_filter_axis(x, 2, taps, half, half), 1, taps, half, half)
  return y.astype(images.dtype)


# ---------------------------------------------------------------------------
# Resize: host-side per-axis tables.


@dataclasses.dataclass(frozen=True)
class _Taps:
  """Per output index: source indices (clamped) and weights, (n_out, taps)."""
  index: np.ndarray
  weight: np.ndarray      # OpenCV's float32 (or IPP's float64) weights
  fixed: np.ndarray       # int32, cvRound(weight * 2048) (linear only)


def _dense(taps: _Taps, n_in: int, weights: np.ndarray) -> np.ndarray:
  """The (n_out, n_in) matrix of a tap table; clamped taps add up."""
  w = np.zeros((taps.index.shape[0], n_in), np.float64)
  rows = np.repeat(np.arange(taps.index.shape[0]), taps.index.shape[1])
  np.add.at(w, (rows, taps.index.ravel()), weights.ravel().astype(np.float64))
  return w


@functools.lru_cache(maxsize=None)
def _linear_taps(n_in: int, n_out: int, area_mode: bool, is_x: bool,
                 ipp: bool = False) -> _Taps:
  """resize.cpp's INTER_LINEAR (and INTER_AREA upscale) coefficients.

  Coordinates in float64 as OpenCV, then float32 `fx`; the x axis clamps the
  source to the image and zeroes fx there, the y axis only clamps the rows it
  fetches (so both taps may read the same edge row, with their own weights).
  With `ipp`, fx stays float64: IPP's linear resize, which cv2 uses for
  float images (not for uint8, where it is not bit-exact).
  """
  real = np.float64 if ipp else np.float32
  inv = n_out / n_in
  scale = 1.0 / inv
  index = np.zeros((n_out, 2), np.int32)
  weight = np.zeros((n_out, 2), real)
  for d in range(n_out):
    if area_mode:
      s = math.floor(d * scale)
      f = real((d + 1) - (s + 1) * inv)
      f = real(0) if f <= 0 else real(f - real(math.floor(f)))
    else:
      f = real((d + 0.5) * scale - 0.5)
      s = math.floor(f)
      f = real(f - real(s))
    if is_x:
      if s < 0:
        f, s = real(0), 0
      if s >= n_in - 1:
        f, s = real(0), n_in - 1
    index[d] = [min(max(s, 0), n_in - 1), min(max(s + 1, 0), n_in - 1)]
    weight[d] = [real(1) - f, f]
  fixed = np.rint(weight * real(_COEF_SCALE)).astype(np.int32)
  return _Taps(index, weight, fixed)


@functools.lru_cache(maxsize=None)
def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Bicubic (A = -0.75, replicated border) weights, (n_out, n_in) float32.

  Computed in float64 and applied in float: that is IPP's resize, which
  OpenCV's x86 wheels use for INTER_CUBIC; for integer downscales the
  weights are dyadic and OpenCV's own 11-bit path gives the same result.
  """
  a = _CUBIC_A
  scale = 1.0 / (n_out / n_in)
  index = np.zeros((n_out, 4), np.int32)
  weight = np.zeros((n_out, 4), np.float64)
  for d in range(n_out):
    f = (d + 0.5) * scale - 0.5
    s = math.floor(f)
    x = f - s
    c0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    c1 = ((a + 2) * x - (a + 3)) * x * x + 1
    c2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    weight[d] = [c0, c1, c2, 1.0 - c0 - c1 - c2]
    index[d] = np.clip([s - 1, s, s + 1, s + 2], 0, n_in - 1)
  taps = _Taps(index, weight, np.zeros_like(index))
  return _dense(taps, n_in, weight).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`computeResizeAreaTab`: fractional-overlap weights, (n_out, n_in) f32."""
  scale = 1.0 / (n_out / n_in)
  w = np.zeros((n_out, n_in), np.float32)
  for d in range(n_out):
    f1 = d * scale
    f2 = f1 + scale
    cell = min(scale, n_in - f1)
    s1, s2 = math.ceil(f1), math.floor(f2)
    s2 = min(s2, n_in - 1)
    s1 = min(s1, s2)
    if s1 - f1 > 1e-3:
      w[d, s1 - 1] = np.float32((s1 - f1) / cell)
    for s in range(s1, s2):
      w[d, s] = np.float32(1.0 / cell)
    if f2 - s2 > 1e-3:
      w[d, s2] = np.float32(min(min(f2 - s2, 1.0), cell) / cell)
  return w


@functools.lru_cache(maxsize=None)
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
  """INTER_NEAREST: floor(d * (1 / (n_out / n_in))), clamped."""
  ifx = 1.0 / (n_out / n_in)
  return np.minimum(np.floor(np.arange(n_out) * ifx).astype(np.int64),
                    n_in - 1).astype(np.int32)


def _integer_factor(n_in: int, n_out: int) -> Optional[int]:
  """resize.cpp's is_area_fast test for one axis: the factor, or None."""
  scale = 1.0 / (n_out / n_in)
  iscale = int(np.rint(scale))
  return iscale if abs(scale - iscale) < _DBL_EPSILON else None


# ---------------------------------------------------------------------------
# Resize: device side.


@dataclasses.dataclass(frozen=True)
class _BlockPlan:
  """An (n_out, n_in) matrix as g blocks of q outputs from p inputs each.

  Output block j reads input blocks j + lo .. j + lo + nb - 1; `terms` lists
  the (block offset, output phase, input phase, per-block weights) of the
  nonzero entries, with weights (g,) or a scalar when all blocks agree.
  """
  g: int
  p: int
  q: int
  lo: int
  nb: int
  terms: tuple[tuple[int, int, int, Any], ...]


# Beyond this many multiply-adds per output block a matmul is the better op
# (and the unrolled graph would be slow to compile).
_MAX_TERMS = 48


@functools.lru_cache(maxsize=None)
def _block_plan(key: bytes, shape: tuple[int, int]) -> Optional[_BlockPlan]:
  """Splits a resize matrix into polyphase blocks, or None to use a matmul.

  With g = gcd(n_in, n_out), output block j (q = n_out / g pixels) depends on
  a few input blocks (p = n_in / g pixels) near block j: integer factors and
  ratios such as 512 -> 384 (p = 4, q = 3) need a handful of multiply-adds
  per pixel instead of a dense row of n_in. Keyed by the matrix's bytes, so
  that every table builder shares the cache.
  """
  m = np.frombuffer(key, np.float32).reshape(shape)
  n_out, n_in = shape
  g = math.gcd(n_in, n_out)
  p, q = n_in // g, n_out // g
  if g < 4:
    return None
  mb = m.reshape(g, q, g, p)
  j, k = np.nonzero(np.abs(mb).sum(axis=(1, 3)))
  lo, hi = int((k - j).min()), int((k - j).max())
  nb = hi - lo + 1
  if nb * p > _MAX_TERMS:
    return None
  jj = np.arange(g)
  terms = []
  for o in range(nb):
    kk = jj + lo + o
    ok = (kk >= 0) & (kk < g)
    # OpenCV sums each output's taps in ascending source order: o, then t.
    for r in range(q):
      for t in range(p):
        w = np.zeros(g, np.float32)
        w[ok] = mb[jj[ok], r, kk[ok], t]
        if not w.any():
          continue
        terms.append((o, r, t, float(w[0]) if (w == w[0]).all() else w))
        if len(terms) > _MAX_TERMS:
          return None
  return _BlockPlan(g, p, q, lo, nb, tuple(terms))


def _apply_axis(x: Array, m: np.ndarray, axis: int) -> Array:
  """Applies an (n_out, n_in) float32 matrix along `axis` of NHWC `x`.

  Banded polyphase matrices become a few fused multiply-adds of strided
  views (memory-bound on any device); others a HIGHEST-precision matmul.
  Both are exact wherever the products and sums are exactly representable
  (OpenCV's integer coefficient paths, dyadic weights).
  """
  m = np.ascontiguousarray(m, np.float32)
  plan = _block_plan(m.tobytes(), m.shape)
  if plan is None:
    spec = 'bhwc,oh->bowc' if axis == 1 else 'bhwc,ow->bhoc'
    return jnp.einsum(spec, x, jnp.asarray(m, x.dtype), precision=_HIGHEST)
  g, p, q = plan.g, plan.p, plan.q
  shape = x.shape
  xb = x.reshape(shape[:axis] + (g, p) + shape[axis + 1:])
  pad_lo, pad_hi = max(0, -plan.lo), max(0, plan.lo + plan.nb - 1)
  if pad_lo or pad_hi:
    pad = [(0, 0)] * xb.ndim
    pad[axis] = (pad_lo, pad_hi)
    xb = jnp.pad(xb, pad)
  bshape = (1,) * axis + (g,) + (1,) * (x.ndim - axis - 1)
  outs = [None] * q
  for o, r, t, w in plan.terms:
    start = plan.lo + o + pad_lo
    view = lax.slice_in_dim(xb, start, start + g, axis=axis)
    view = lax.index_in_dim(view, t, axis=axis + 1, keepdims=False)
    w = (np.asarray(w, x.dtype) if isinstance(w, float)
         else jnp.asarray(w, x.dtype).reshape(bshape))
    term = view * w
    outs[r] = term if outs[r] is None else outs[r] + term
  zero = jnp.zeros(shape[:axis] + (g,) + shape[axis + 1:], x.dtype)
  out = jnp.stack([zero if v is None else v for v in outs], axis=axis + 1)
  return out.reshape(shape[:axis] + (g * q,) + shape[axis + 1:])


def _resize_nearest(images: Array, height: int, width: int) -> Array:
  _, h, w, _ = images.shape
  x = jnp.take(images, jnp.asarray(_nearest_index(h, height)), axis=1)
  return jnp.take(x, jnp.asarray(_nearest_index(w, width)), axis=2)


def _resize_linear(images: Array, height: int, width: int,
                   area_mode: bool) -> Array:
  """INTER_LINEAR, or INTER_AREA when upscaling (area_mode coordinates)."""
  _, h, w, _ = images.shape
  if (not area_mode and _integer_factor(w, width) == 2
      and _integer_factor(h, height) == 2):
    return _resize_area(images, height, width)   # as cv2.resize does.
  if not _is_uint8(images):
    ipp = not area_mode   # cv2 runs float INTER_LINEAR through IPP.
    tx = _linear_taps(w, width, area_mode, True, ipp)
    ty = _linear_taps(h, height, area_mode, False, ipp)
    x = _apply_axis(_to_float(images), _dense(tx, w, tx.weight), 2)
    return _apply_axis(x, _dense(ty, h, ty.weight), 1).astype(images.dtype)
  tx = _linear_taps(w, width, area_mode, True)
  ty = _linear_taps(h, height, area_mode, False)
  # Horizontal pass: integers <= 255 * 2048 < 2^24, exact in float32.
  s = _apply_axis(images.astype(jnp.float32), _dense(tx, w, tx.fixed), 2)
  s = s.astype(jnp.int32)
  # Vertical pass as OpenCV's SIMD VResizeLinearVec_32s8u, which cv2 uses for
  # every column: ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16), then
  # (t + 2) >> 2. Not the exact (S0 b0 + S1 b1 + 2^21) >> 22.
  s0 = jnp.take(s, jnp.asarray(ty.index[:, 0]), axis=1)
  s1 = jnp.take(s, jnp.asarray(ty.index[:, 1]), axis=1)
  b0 = jnp.asarray(ty.fixed[:, 0]).reshape(1, -1, 1, 1)
  b1 = jnp.asarray(ty.fixed[:, 1]).reshape(1, -1, 1, 1)
  t = ((s0 >> 4) * b0 >> 16) + ((s1 >> 4) * b1 >> 16)
  return jnp.clip((t + 2) >> 2, 0, 255).astype(jnp.uint8)


def _resize_cubic(images: Array, height: int, width: int) -> Array:
  _, h, w, _ = images.shape
  x = _apply_axis(_to_float(images), _cubic_matrix(w, width), 2)
  y = _apply_axis(x, _cubic_matrix(h, height), 1)
  return _round_to_uint8(y) if _is_uint8(images) else y.astype(images.dtype)


def _resize_area(images: Array, height: int, width: int) -> Array:
  b, h, w, c = images.shape
  if width > w or height > h:
    # OpenCV's true area mode is downscale-only; otherwise it is bilinear
    # with area-mode coordinates on both axes.
    return _resize_linear(images, height, width, area_mode=True)
  fx, fy = _integer_factor(w, width), _integer_factor(h, height)
  if fx is not None and fy is not None:
    # resizeAreaFast: block sums.
    acc = jnp.int32 if _is_uint8(images) else _to_float(images).dtype
    blocks = images.astype(acc).reshape(b, height, fy, width, fx, c)
    s = blocks.sum(axis=(2, 4))
    if not _is_uint8(images):
      return (s * (1.0 / (fx * fy))).astype(images.dtype)
    if fx == 2 and fy == 2 and c in (1, 3, 4):
      return ((s + 2) >> 2).astype(jnp.uint8)   # the SIMD 2x2 path: half up.
    return _round_to_uint8(s.astype(jnp.float32) * np.float32(1.0 / (fx * fy)))
  x = _apply_axis(_to_float(images), _area_matrix(w, width), 2)
  y = _apply_axis(x, _area_matrix(h, height), 1)
  return _round_to_uint8(y) if _is_uint8(images) else y.astype(images.dtype)


def _canonical_method(method: str) -> str:
  m = str(method).lower()
  m = _METHOD_ALIASES.get(m, m)
  if m not in METHODS:
    raise ValueError(f'unknown resize method {method!r}; valid: {METHODS} '
                     f'(aliases: {sorted(_METHOD_ALIASES)})')
  return m


def resize(images: Array, size: Sequence[int],
           method: str = 'bilinear') -> Array:
  """`cv2.resize(img, (width, height), interpolation=...)` on a batch.

  Note the order: `size` is (height, width), cv2's dsize is (width, height).

  Args:
    images: (B, H, W, C) uint8 or float.
    size: the output (height, width).
    method: 'nearest' (INTER_NEAREST), 'bilinear' (INTER_LINEAR), 'bicubic'
      (INTER_CUBIC) or 'area' (INTER_AREA); 'linear' and 'cubic' are aliases.

  Returns:
    (B, height, width, C), same dtype.
  """
  _check_images(images)
  height, width = (int(v) for v in size)
  if height < 1 or width < 1:
    raise ValueError(f'size must be positive, got {size}')
  return _resize(images, (height, width), _canonical_method(method))


@functools.partial(jax.jit, static_argnames=('size', 'method'))
def _resize(images: Array, size: tuple[int, int], method: str) -> Array:
  height, width = size
  if (height, width) == images.shape[1:3]:
    return images   # cv2.resize copies.
  if method == 'nearest':
    return _resize_nearest(images, height, width)
  if method == 'bilinear':
    return _resize_linear(images, height, width, area_mode=False)
  if method == 'bicubic':
    return _resize_cubic(images, height, width)
  return _resize_area(images, height, width)


# ---------------------------------------------------------------------------
# Noise.


def _data_range(images: Array, data_range: Optional[float]) -> float:
  if data_range is not None:
    return float(data_range)
  return 255.0 if _is_uint8(images) else 1.0


def _from_float(y: Array, like: Array) -> Array:
  return _round_to_uint8(y) if _is_uint8(like) else y.astype(like.dtype)


@functools.partial(jax.jit, static_argnames=('sigma', 'data_range'))
def gaussian_noise(images: Array, rng: Array, sigma: float,
                   data_range: Optional[float] = None) -> Array:
  """Additive white Gaussian noise, x + sigma * range * N(0, 1).

  Args:
    images: (B, H, W, C) uint8 or float.
    rng: a PRNG key.
    sigma: the standard deviation as a fraction of `data_range`.
    data_range: full scale; default 255 for uint8 and 1 for floats.

  Returns:
    Same shape and dtype; uint8 is rounded (half to even) and clipped.
  """
  _check_images(images)
  x = _to_float(images)
  s = float(sigma) * _data_range(images, data_range)
  return _from_float(x + s * jax.random.normal(rng, x.shape, x.dtype), images)


@functools.partial(jax.jit, static_argnames=('sigma', 'data_range'))
def rician_noise(images: Array, rng: Array, sigma: float,
                 data_range: Optional[float] = None) -> Array:
  """Magnitude-MRI noise: sqrt((x + s n1)^2 + (s n2)^2), n1, n2 ~ N(0, 1).

  The magnitude of a complex signal x with Gaussian noise of standard
  deviation s = sigma * range in each of the real and imaginary channels.

  Args:
    images: (B, H, W, C) uint8 or float, the noiseless magnitude (>= 0).
    rng: a PRNG key.
    sigma: the per-channel standard deviation as a fraction of `data_range`.
    data_range: full scale; default 255 for uint8 and 1 for floats.

  Returns:
    Same shape and dtype; uint8 is rounded (half to even) and clipped.
  """
  _check_images(images)
  x = _to_float(images)
  s = float(sigma) * _data_range(images, data_range)
  n = jax.random.normal(rng, (2,) + x.shape, x.dtype) * s
  return _from_float(jnp.sqrt(jnp.square(x + n[0]) + jnp.square(n[1])),
                     images)


@functools.partial(jax.jit, static_argnames=('peak', 'data_range'))
def poisson_noise(images: Array, rng: Array, peak: float,
                  data_range: Optional[float] = None) -> Array:
  """Photon-counting noise: counts ~ Poisson(peak * x / range), rescaled.

  `peak` is the expected photon count of a full-scale pixel: the result has
  mean x and variance x * range / peak (the relative noise falls as 1 /
  sqrt(counts)), as for a quantum-limited CT or X-ray detector.

  Args:
    images: (B, H, W, C) uint8 or float, intensities >= 0.
    rng: a PRNG key.
    peak: expected counts at `data_range`, > 0.
    data_range: full scale; default 255 for uint8 and 1 for floats.

  Returns:
    Same shape and dtype; uint8 is rounded (half to even) and clipped.
  """
  _check_images(images)
  if peak <= 0:
    raise ValueError(f'peak must be > 0, got {peak}')
  x = _to_float(images)
  r = _data_range(images, data_range)
  lam = jnp.maximum(x, 0) * (float(peak) / r)
  counts = jax.random.poisson(rng, lam, x.shape).astype(x.dtype)
  return _from_float(counts * (r / float(peak)), images)


# ---------------------------------------------------------------------------
# Presets and the spec grammar.

PRESETS = {
    'primary': ('resize to 384x384 with INTER_AREA (the study: 512 -> 384), '
                'then a 2x2 box blur (cv2.blur, BORDER_REFLECT_101)'),
    'srgan_train': ('resize to 384x384 with INTER_AREA, then a 5x5 box blur '
                    '(cv2.blur, BORDER_REFLECT_101)'),
    'x4_bicubic': ('downsample by 4 with INTER_CUBIC; output size = input '
                   'size // 4'),
}
_PRESET_STEPS = {
    'primary': 'resize(384,384,area)+box(2)',
    'srgan_train': 'resize(384,384,area)+box(5)',
    'x4_bicubic': 'downscale(4,bicubic)',
}


@dataclasses.dataclass(frozen=True)
class _Param:
  name: str
  kind: type
  default: Any = None
  required: bool = True
  minimum: Optional[float] = None   # smallest valid value
  positive: bool = False            # > 0 rather than >= minimum


# Step name -> its parameters, in positional order.
_STEPS = {
    'resize': (_Param('height', int, minimum=1),
               _Param('width', int, minimum=1),
               _Param('method', str, 'bilinear', False)),
    'downscale': (_Param('factor', int, minimum=1),
                  _Param('method', str, 'bicubic', False)),
    'box': (_Param('ksize', int, minimum=1),),
    'gaussian_blur': (_Param('ksize', int, minimum=0),
                      _Param('sigma', float, 0.0, False)),
    'gaussian': (_Param('sigma', float, minimum=0),),
    'rician': (_Param('sigma', float, minimum=0),),
    'poisson': (_Param('peak', float, positive=True),),
}
_NOISE_STEPS = ('gaussian', 'rician', 'poisson')
_STEP_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?$', re.S)


def _valid_names() -> str:
  def signature(name, params):
    args = [p.name if p.required else f'{p.name}={p.default}' for p in params]
    return f"{name}({', '.join(args)})"
  steps = ', '.join(signature(n, ps) for n, ps in _STEPS.items())
  return f'presets: {", ".join(sorted(PRESETS))}; steps: {steps}'


def _split_top(text: str, sep: str) -> list[str]:
  """Splits on `sep` outside parentheses."""
  parts, depth, cur = [], 0, []
  for ch in text:
    if ch == '(':
      depth += 1
    elif ch == ')':
      depth -= 1
      if depth < 0:
        raise ValueError(f'unbalanced parentheses in {text!r}')
    if ch == sep and depth == 0:
      parts.append(''.join(cur))
      cur = []
    else:
      cur.append(ch)
  if depth:
    raise ValueError(f'unbalanced parentheses in {text!r}')
  parts.append(''.join(cur))
  return parts


def _literal(text: str) -> Union[int, float, str]:
  t = text.strip()
  for cast in (int, float):
    try:
      return cast(t)
    except ValueError:
      pass
  return t.strip('\'"')


def _format_value(v: Any) -> str:
  return repr(v) if isinstance(v, float) else str(v)


def _convert(step: str, p: _Param, v: Any) -> Any:
  """Checks and converts one argument of a step."""
  bad = ValueError(f'{step}(): {p.name} must be {p.kind.__name__}, got {v!r}')
  if p.kind is str:
    if not isinstance(v, str):
      raise bad
    return _canonical_method(v) if p.name == 'method' else v
  if isinstance(v, str) or (p.kind is int and float(v) != int(v)):
    raise bad
  v = p.kind(v)
  if ((p.minimum is not None and v < p.minimum) or (p.positive and v <= 0)):
    limit = '> 0' if p.positive else f'>= {p.minimum}'
    raise ValueError(f'{step}(): {p.name} must be {limit}, got {v}')
  return v


@dataclasses.dataclass(frozen=True)
class _Step:
  name: str
  args: tuple[Any, ...]

  def __str__(self) -> str:
    return f"{self.name}({','.join(_format_value(a) for a in self.args)})"


def _parse_step(text: str) -> list[_Step]:
  t = text.strip()
  m = _STEP_RE.match(t)
  if not m:
    raise ValueError(f'cannot parse degradation step {t!r}; {_valid_names()}')
  name, arg_text = m.group(1).lower(), m.group(2)
  if name in _PRESET_STEPS:
    if arg_text is not None and arg_text.strip():
      raise ValueError(f'preset {name!r} takes no arguments')
    return _parse(_PRESET_STEPS[name])
  if name not in _STEPS:
    raise ValueError(f'unknown degradation {name!r}; {_valid_names()}')
  params = _STEPS[name]
  raw = ([] if arg_text is None or not arg_text.strip()
         else _split_top(arg_text, ','))
  values: dict[str, Any] = {}
  for i, a in enumerate(raw):
    if '=' in a:
      key, val = a.split('=', 1)
      key = key.strip()
      if key not in {p.name for p in params}:
        raise ValueError(f'{name}() has no parameter {key!r}; '
                         f'{_valid_names()}')
    else:
      if i >= len(params):
        raise ValueError(f'too many arguments to {name}(): {t!r}')
      key, val = params[i].name, a
    if key in values:
      raise ValueError(f'{name}(): {key} given twice in {t!r}')
    values[key] = _literal(val)
  args = []
  for p in params:
    if p.name not in values:
      if p.required:
        raise ValueError(f'{name}() needs {p.name}: {t!r}; {_valid_names()}')
      values[p.name] = p.default
    args.append(_convert(name, p, values[p.name]))
  return [_Step(name, tuple(args))]


def _parse(spec: Union[str, Sequence[str]]) -> list[_Step]:
  if isinstance(spec, str):
    items = [spec]
  else:
    items = list(spec)
  steps = []
  for item in items:
    if not isinstance(item, str):
      raise ValueError(f'degradation steps must be strings, got {item!r}')
    for part in _split_top(item, '+'):
      if not part.strip():
        raise ValueError(f'empty step in degradation spec {item!r}')
      steps.extend(_parse_step(part))
  if not steps:
    raise ValueError(f'empty degradation spec; {_valid_names()}')
  return steps


def _apply_step(step: _Step, images: Array, rng: Optional[Array]) -> Array:
  a = step.args
  if step.name == 'resize':
    return resize(images, (a[0], a[1]), a[2])
  if step.name == 'downscale':
    _, h, w, _ = images.shape
    if h // a[0] < 1 or w // a[0] < 1:
      raise ValueError(f'downscale({a[0]}) of {h}x{w} images is empty')
    return resize(images, (h // a[0], w // a[0]), a[1])
  if step.name == 'box':
    return box_blur(images, a[0])
  if step.name == 'gaussian_blur':
    return gaussian_blur(images, a[0], a[1])
  if step.name == 'gaussian':
    return gaussian_noise(images, rng, a[0])
  if step.name == 'rician':
    return rician_noise(images, rng, a[0])
  if step.name == 'poisson':
    return poisson_noise(images, rng, a[0])
  raise AssertionError(step)


def describe(spec: Union[str, Sequence[str]]) -> str:
  """The canonical, fully expanded form of a spec, for run metadata.

  `get(describe(s))` is the same degradation as `get(s)`.

  Args:
    spec: as for `get`.

  Returns:
    e.g. 'resize(384,384,area)+box(2)+rician(0.02)' for
    'primary+rician(0.02)'.
  """
  return '+'.join(str(s) for s in _parse(spec))


def get(spec: Union[str, Sequence[str]]) -> Degradation:
  """Parses a degradation spec once, on the host, into a pure function.

  Grammar: steps joined by '+' (or given as a list of such strings); a step
  is a preset name (`PRESETS`) or `name(arg, ...)` with positional or
  `key=value` arguments:

    resize(height, width, method=bilinear)   downscale(factor, method=bicubic)
    box(ksize)                               gaussian_blur(ksize, sigma=0)
    gaussian(sigma)   rician(sigma)          poisson(peak)

  Noise sigmas are fractions of full scale (255 for uint8, 1 for floats).

  Args:
    spec: e.g. 'primary', 'primary+rician(0.02)', ['srgan_train',
      'gaussian(0.01)'].

  Returns:
    `fn(images, rng=None) -> images`, jit-able; each noise step draws from
    `jax.random.fold_in(rng, step_index)`, so `rng` is needed only when the
    spec has noise.

  Raises:
    ValueError: for unknown presets or steps (the message lists the valid
      ones) and malformed arguments.
  """
  steps = _parse(spec)
  noisy = any(s.name in _NOISE_STEPS for s in steps)
  text = '+'.join(str(s) for s in steps)

  def degrade(images: Array, rng: Optional[Array] = None) -> Array:
    _check_images(images)
    if noisy and rng is None:
      raise ValueError(f'degradation {text!r} adds noise and needs an rng')
    for i, step in enumerate(steps):
      key = (jax.random.fold_in(rng, i)
             if step.name in _NOISE_STEPS else None)
      images = _apply_step(step, images, key)
    return images

  degrade.__name__ = 'degrade'
  degrade.__doc__ = f'Applies {text} to a batch of NHWC images.'
  return degrade
