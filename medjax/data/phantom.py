"""Synthetic brain-tumour PHANTOM slices cut from the MNI152 T1 template.

THIS IS A PHANTOM, NOT PATIENT DATA. Every image is a 2D slice of one healthy
average brain (the MNI152 2009 T1 template that nilearn ships) with a randomly
drawn geometric warp, bias field, noise and, for three of the four classes, a
hand-modelled synthetic lesion. It exists so that the medjax tools can be
tried, tested and benchmarked offline; nothing learned or measured on it says
anything about real tumours, real scanners or real patients, and it must never
support a clinical claim.

Generation of one example (all geometry in normalised image coordinates, the
image spanning [-1, 1] on each axis, so everything scales with `image_size`):

1. Plane uniform over axial / coronal / sagittal; slice uniform in the central
   60% of the brain extent along that axis (pituitary: a slice through the
   sella, otherwise the lesion would not be in the slice).
2. One resampling (bilinear, `scipy.ndimage.map_coordinates`) maps the output
   grid to the slice: a fixed square field of view per plane (aspect kept,
   brain filling ~90% of the frame), a random affine (rotation +-10 deg, scale
   +-8%, translation +-4% of the width), a smooth elastic displacement (std
   ~1.5-2.5 px at 256) and, for tumours, the mass effect that pushes tissue
   away from the lesion.
3. The synthetic lesion is painted (see `_paint_lesion`).
4. A smooth multiplicative bias field (+-15%) shades tissue and lesion alike.
5. Rician noise (sigma 1-3% of the template maximum), clipped and scaled to
   uint8 with one fixed gain (no per-image normalisation).

Every example draws from its own `numpy.random.SeedSequence` keyed by
(seed, split, index), with one independent stream per stage, so generation is
order-independent (shardable) and the `lesion=False` twin of an example differs
from it only where the lesion and its mass effect are.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import dataclasses
import functools
import zlib

import numpy as np
from scipy import ndimage

CLASSES = ('glioma', 'meningioma', 'notumor', 'pituitary')
PLANES = ('axial', 'coronal', 'sagittal')
SPLITS = ('train', 'test')

GLIOMA, MENINGIOMA, NOTUMOR, PITUITARY = range(4)

# Volume axis held fixed by each plane (the template is RAS: x, y, z).
_PLANE_AXIS = (2, 1, 0)
# Centre of a pituitary macroadenoma: the sella turcica, below the
# hypothalamus and in front of the pons (MNI mm, read off the template).
_SELLA_MNI = (0.0, -2.0, -30.0)
# Fraction of the brain extent, on each side, that slices are not drawn from.
_SLICE_MARGIN = 0.2
# Field of view = this factor times the largest in-plane brain extent.
_FOV_FACTOR = 1.1
# Template intensity above which a voxel counts as tissue (background is 0).
_TISSUE = 0.15
# Template white matter is ~0.8-0.9; gliomas are seeded where it is above this.
_WHITE_MATTER = 0.72
# Intensity mapped to 255: leaves head-room for bright lesions times bias.
_FULL_SCALE = 1.2
# Side of the low-resolution grid the lesion is placed on.
_PLACEMENT_SIZE = 64

# Geometry augmentation ranges.
_MAX_ROTATION_DEG = 10.0
_MAX_SCALE = 0.08
_MAX_TRANSLATION = 0.08  # Normalised units: 4% of the image width.
_ELASTIC_STD = (0.012, 0.02)  # Normalised units: ~1.5-2.5 px at 256.
_ELASTIC_CONTROL = 7  # Control points per axis: ~50 px wavelength at 256.
_BIAS_MAX = 0.15
_NOISE_SIGMA = (0.01, 0.03)

# Half side of the box a lesion is drawn in, in lesion radii (oedema <= 2R
# plus its soft edge and lobulation).
_LESION_REACH = 2.4
# Lesion radii in mm of the template (1 mm voxels).
_GLIOMA_RADIUS_MM = (12.0, 24.0)
_MENINGIOMA_RADIUS_MM = (11.0, 20.0)
_PITUITARY_RADIUS_MM = (9.0, 14.0)


@dataclasses.dataclass(frozen=True)
class PhantomParams:
  """What a phantom dataset is generated with.

  Attributes:
    image_size: side S of the square (S, S, 1) uint8 images.
    num_train: number of training examples.
    num_test: number of test examples.
    seed: root seed; train and test use independent streams derived from it.
  """
  image_size: int = 256
  num_train: int = 2000
  num_test: int = 400
  seed: int = 0

  def num_examples(self, split: str) -> int:
    """Number of examples of `split` ('train' or 'test')."""
    if split == 'train':
      return self.num_train
    if split == 'test':
      return self.num_test
    raise ValueError(f'unknown split {split!r}, expected one of {SPLITS}')


@dataclasses.dataclass(frozen=True)
class _Template:
  """The MNI152 T1 volume and what slicing it needs, computed once."""
  volume: np.ndarray  # float32 (X, Y, Z), [0, 1], RAS, 1 mm.
  slice_range: tuple[tuple[int, int], ...]  # Per plane: [lo, hi] slice index.
  centre: tuple[tuple[float, float], ...]  # Per plane: in-plane brain centre.
  half_fov: tuple[float, ...]  # Per plane: half the square FOV, in voxels.
  sella: tuple[float, float, float]  # Voxel coordinates.


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
  """Loads the MNI152 template once per process, from nilearn's package."""
  # Imported here: nilearn takes seconds to import and only this needs it.
  from nilearn import datasets  # pylint: disable=g-import-not-at-top
  img = datasets.load_mni152_template(resolution=1)
  volume = np.ascontiguousarray(img.get_fdata(dtype=np.float32))
  if not np.allclose(np.diag(img.affine)[:3], 1.0):
    raise ValueError(f'expected a 1 mm RAS template, got {img.affine}')
  tissue = volume > _TISSUE
  lo, hi = [], []
  for axis in range(3):
    present = np.flatnonzero(tissue.any(axis=tuple(a for a in range(3)
                                                     if a != axis)))
    lo.append(int(present[0]))
    hi.append(int(present[-1]))
  slice_range, centre, half_fov = [], [], []
  for axis in _PLANE_AXIS:
    extent = hi[axis] - lo[axis]
    slice_range.append((int(round(lo[axis] + _SLICE_MARGIN * extent)),
                        int(round(hi[axis] - _SLICE_MARGIN * extent))))
    a0, a1 = [a for a in range(3) if a != axis]
    centre.append(((lo[a0] + hi[a0]) / 2, (lo[a1] + hi[a1]) / 2))
    half_fov.append(_FOV_FACTOR * max(hi[a0] - lo[a0], hi[a1] - lo[a1]) / 2)
  sella = np.linalg.solve(img.affine, np.array([*_SELLA_MNI, 1.0]))[:3]
  return _Template(volume=volume, slice_range=tuple(slice_range),
                   centre=tuple(centre), half_fov=tuple(half_fov),
                   sella=tuple(float(v) for v in sella))


@functools.lru_cache(maxsize=1)
def _blas_controller():
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
  except ImportError:  # Comes with scikit-learn (a nilearn dependency).
    return None
  return threadpoolctl.ThreadpoolController()


def _single_blas_thread() -> contextlib.AbstractContextManager:
  """Limits BLAS to one thread while generating.

  The matmuls here are tiny: a multi-threaded BLAS spends more time waking
  and spinning its threads than computing, ~3x slower per example on a busy
  machine. Cheap (~20 us) once the controller exists.
  """
  controller = _blas_controller()
  if controller is None:
    return contextlib.nullcontext()
  return controller.limit(limits=1, user_api='blas')


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> np.ndarray:
  """Pixel-centre coordinates of `size` pixels spanning [-1, 1]."""
  return ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size)
          - 1.0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _rbf_basis(size: int, num_control: int) -> np.ndarray:
  """(size, num_control) Gaussian basis with unit-norm rows.

  B @ G @ B.T with G iid N(0, 1) is Gaussian-smoothed white noise sampled on
  the size x size grid with unit variance everywhere, computed from a small
  control grid: a smooth random field at the cost of two small matmuls, and
  the same field at any resolution (placement grid and output grid agree).

  Args:
    size: number of output pixels along the axis.
    num_control: number of control points along the axis.

  Returns:
    The float32 basis matrix.
  """
  centres = np.linspace(-1.2, 1.2, num_control, dtype=np.float32)
  width = centres[1] - centres[0]
  basis = np.exp(-0.5 * ((_grid(size)[:, None] - centres[None, :]) / width)**2)
  # Truncated: the far tails would make the matmuls crawl through denormals.
  basis[basis < 1e-6] = 0.0
  basis /= np.linalg.norm(basis, axis=1, keepdims=True)
  return basis.astype(np.float32)


def _smooth_field(rng: np.random.Generator | None, size: int,
                  num_control: int, coefficients: np.ndarray | None = None
                  ) -> np.ndarray:
  """A unit-variance smooth random field of shape (size, size).

  Args:
    rng: draws the control coefficients unless `coefficients` is given.
    size: output side.
    num_control: control points per axis (more: finer structure).
    coefficients: (num_control, num_control) control values, if fixed.

  Returns:
    float32 (size, size).
  """
  if coefficients is None:
    coefficients = rng.standard_normal((num_control, num_control),
                                       dtype=np.float32)
  basis = _rbf_basis(size, num_control)
  return basis @ coefficients @ basis.T


def _local_field(rng: np.random.Generator, ux: np.ndarray, uy: np.ndarray,
                 spacing: float) -> np.ndarray:
  """Unit-variance smooth random field on the grid ux x uy (lesion units).

  Control points cover the whole reach at a fixed spacing, so the number of
  draws (and the field) does not depend on where the frame crops the lesion.
  """
  centres = np.arange(-_LESION_REACH - spacing, _LESION_REACH + 1.5 * spacing,
                      spacing, dtype=np.float32)
  coefficients = rng.standard_normal((len(centres),) * 2, dtype=np.float32)

  def basis(u):
    b = np.exp(-0.5 * ((u[:, None] - centres[None, :]) / spacing)**2)
    b[b < 1e-6] = 0.0
    return b / np.linalg.norm(b, axis=1, keepdims=True)

  return basis(uy) @ coefficients @ basis(ux).T


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
  """0 at edge0, 1 at edge1, smooth in between (edges may be reversed)."""
  t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def _split_entropy(seed: int, split: str) -> list[int]:
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}, expected one of {SPLITS}')
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  # crc32, not hash(): stable across processes and Python versions.
  return [seed, zlib.crc32(split.encode())]


@functools.lru_cache(maxsize=16)
def _split_labels(seed: int, split: str, num: int) -> np.ndarray:
  """Balanced labels of a split, in a seeded random order."""
  rng = np.random.default_rng(
      np.random.SeedSequence(_split_entropy(seed, split), spawn_key=(0,)))
  labels = np.resize(np.arange(len(CLASSES)), num)
  rng.shuffle(labels)
  labels.setflags(write=False)
  return labels


def _stage_rngs(seed: int, split: str, index: int
                ) -> tuple[np.random.Generator, ...]:
  """Independent (geometry, bias, lesion, noise) streams of one example."""
  entropy = _split_entropy(seed, split)
  return tuple(
      np.random.default_rng(
          np.random.SeedSequence(entropy, spawn_key=(1, index, stage)))
      for stage in range(4))


@dataclasses.dataclass(frozen=True)
class _Warp:
  """Output-to-slice mapping: affine + elastic + FOV (see `_slice_coords`)."""
  plane: int
  cos: float
  sin: float
  zoom: float  # Output size / source size.
  shift: tuple[float, float]  # (x, y), normalised units.
  elastic: tuple[np.ndarray, np.ndarray]  # Control coefficients, x and y.
  elastic_std: float


def _choose_slice(tpl: _Template, label: int, rng: np.random.Generator
                  ) -> tuple[int, int]:
  """Draws (plane, slice index)."""
  plane = int(rng.integers(len(PLANES)))
  axis = _PLANE_AXIS[plane]
  if label == PITUITARY:
    # A few mm either side of the sella: the adenoma is in every such slice.
    index = int(round(tpl.sella[axis])) + int(rng.integers(-3, 4))
  else:
    lo, hi = tpl.slice_range[plane]
    index = int(rng.integers(lo, hi + 1))
  return plane, index


def _draw_warp(plane: int, rng: np.random.Generator) -> _Warp:
  angle = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
  return _Warp(
      plane=plane, cos=float(np.cos(angle)), sin=float(np.sin(angle)),
      zoom=float(rng.uniform(1 - _MAX_SCALE, 1 + _MAX_SCALE)),
      shift=tuple(rng.uniform(-_MAX_TRANSLATION, _MAX_TRANSLATION, size=2)),
      elastic=tuple(rng.standard_normal((2, _ELASTIC_CONTROL, _ELASTIC_CONTROL),
                                        dtype=np.float32)),
      elastic_std=float(rng.uniform(*_ELASTIC_STD)))


def _displaced_grid(warp: _Warp, size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Output grid (x, y) plus the elastic displacement, each (size, size)."""
  q = _grid(size)
  x = q[None, :] + warp.elastic_std * _smooth_field(
      None, size, _ELASTIC_CONTROL, warp.elastic[0])
  y = q[:, None] + warp.elastic_std * _smooth_field(
      None, size, _ELASTIC_CONTROL, warp.elastic[1])
  return x, y


def _slice_coords(tpl: _Template, warp: _Warp, x: np.ndarray, y: np.ndarray
                  ) -> np.ndarray:
  """Maps displaced output coordinates to (2, ...) voxel coords in the slice.

  Image columns follow the first in-plane volume axis upwards and rows the
  second one downwards, so that superior (coronal, sagittal) and anterior
  (axial) are at the top.
  """
  u = (warp.cos * x - warp.sin * y) / warp.zoom + warp.shift[0]
  v = (warp.sin * x + warp.cos * y) / warp.zoom + warp.shift[1]
  (c0, c1), h = tpl.centre[warp.plane], tpl.half_fov[warp.plane]
  return np.stack([c0 + h * u, c1 - h * v])


def _to_output(tpl: _Template, warp: _Warp, a0: float, a1: float
               ) -> tuple[float, float]:
  """Inverse of `_slice_coords` without the (small) elastic part."""
  (c0, c1), h = tpl.centre[warp.plane], tpl.half_fov[warp.plane]
  u = (a0 - c0) / h - warp.shift[0]
  v = (c1 - a1) / h - warp.shift[1]
  return (warp.zoom * (warp.cos * u + warp.sin * v),
          warp.zoom * (-warp.sin * u + warp.cos * v))


def _sample(image2d: np.ndarray, coords: np.ndarray) -> np.ndarray:
  return ndimage.map_coordinates(image2d, coords, order=1, mode='constant',
                                 cval=0.0, prefilter=False, output=np.float32)


def _slice2d(tpl: _Template, plane: int, index: int) -> np.ndarray:
  return np.ascontiguousarray(
      np.take(tpl.volume, index, axis=_PLANE_AXIS[plane]))


@dataclasses.dataclass(frozen=True)
class _Lesion:
  """A lesion in normalised output coordinates."""
  label: int
  centre: tuple[float, float]  # (x, y).
  radius: float
  normal: tuple[float, float] = (0.0, -1.0)  # Outward, meningioma only.
  push: float = 0.0  # Mass-effect strength, < 1 so the warp cannot fold.


def _place_lesion(tpl: _Template, warp: _Warp, image2d: np.ndarray,
                  label: int, size: int, rng: np.random.Generator) -> _Lesion:
  """Chooses where the lesion goes, on a low-resolution warped image."""
  mm = warp.zoom / tpl.half_fov[warp.plane]  # Normalised units per mm.
  if label == PITUITARY:
    a0, a1 = [tpl.sella[a] for a in range(3) if a != _PLANE_AXIS[warp.plane]]
    centre = _to_output(tpl, warp, a0, a1)
    radius = mm * rng.uniform(*_PITUITARY_RADIUS_MM)
    return _Lesion(label, centre, radius, push=float(rng.uniform(0.2, 0.4)))

  small = min(size, _PLACEMENT_SIZE)
  x, y = _displaced_grid(warp, small)
  coords = _slice_coords(tpl, warp, x, y)
  low = _sample(image2d, coords)
  tissue = low > _TISSUE
  pixel = 2.0 / small  # Normalised units per placement pixel.
  q = _grid(small)

  if label == GLIOMA:
    radius = mm * rng.uniform(*_GLIOMA_RADIUS_MM)
    # Deep white matter: the whole tumour (not the oedema) inside tissue.
    depth = ndimage.distance_transform_edt(tissue) * pixel
    ok = (depth >= 1.05 * radius) & (low > _WHITE_MATTER)
    if not ok.any():
      ok = depth >= 1.05 * radius
    if not ok.any():  # Small slice: shrink the tumour to the deepest spot.
      ok = depth >= depth.max() - 1e-6
      radius = max(min(radius, float(depth.max())), 3 * pixel)
    rows, cols = np.nonzero(ok)
    pick = int(rng.integers(len(rows)))
    return _Lesion(label, (float(q[cols[pick]]), float(q[rows[pick]])),
                   radius, push=float(rng.uniform(0.3, 0.55)))

  if label == MENINGIOMA:
    radius = mm * rng.uniform(*_MENINGIOMA_RADIUS_MM)
    brain = ndimage.binary_fill_holes(tissue)
    # border_value=1: where the frame cuts the brain is not its surface.
    surface = brain & ~ndimage.binary_erosion(brain, border_value=1)
    edge = surface
    if warp.plane != 0:
      # The template ends at the foramen magnum: not a dural surface.
      edge = surface & (coords[1] > 8.0)
    if not edge.any():
      edge = surface if surface.any() else brain
    smooth = ndimage.gaussian_filter(brain.astype(np.float32), 2.0)
    gy, gx = np.gradient(smooth)
    rows, cols = np.nonzero(edge)
    pick = int(rng.integers(len(rows)))
    nx, ny = -gx[rows[pick], cols[pick]], -gy[rows[pick], cols[pick]]
    norm = float(np.hypot(nx, ny)) or 1.0
    nx, ny = nx / norm, ny / norm
    # Extra-axial: centred just inside the surface; its flat dural base (see
    # `_paint_lesion`) lies about on the surface and it indents the brain.
    out = -rng.uniform(0.05, 0.35) * radius
    centre = (float(q[cols[pick]] + out * nx), float(q[rows[pick]] + out * ny))
    return _Lesion(label, centre, radius, normal=(float(nx), float(ny)),
                   push=float(rng.uniform(0.45, 0.7)))
  raise ValueError(f'label {label} has no lesion')


def _mass_effect(lesion: _Lesion, x: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Displaced (x, y): tissue pushed radially away from the lesion.

  An output point at distance r samples the source at r * (1 - push * w(r))
  with w = (1 - (r / 3R)^2)^3 for r < 3R: compact, smooth, and monotone in r
  (no folding) because push < 1.
  """
  cx, cy = lesion.centre
  dx, dy = x - cx, y - cy
  r2 = (dx * dx + dy * dy) / (3.0 * lesion.radius)**2
  w = np.clip(1.0 - r2, 0.0, None)**3
  f = 1.0 - lesion.push * w
  return cx + dx * f, cy + dy * f


def _paint_lesion(image: np.ndarray, lesion: _Lesion, rng: np.random.Generator
                  ) -> np.ndarray:
  """Paints the lesion into the warped slice, in place and returned.

  Intensities mimic post-contrast T1 (as in public brain-tumour MRI sets)
  relative to the template (white matter ~0.85, grey ~0.6, CSF < 0.4).

  * glioma: irregular intra-axial mass (a thresholded smooth random field),
    heterogeneous, usually an enhancing ring around a dark necrotic core,
    inside a larger, softer, irregular hypointense oedema.
  * meningioma: well-circumscribed oval on the brain surface, flattened on
    its broad dural base, homogeneous and bright, with a thin dark CSF cleft
    where it indents the brain.
  * pituitary: rounded, slightly tall mass in the sella, moderately bright
    and mildly heterogeneous.

  Args:
    image: (S, S) float32 warped slice.
    lesion: where and how large.
    rng: the lesion stream (shape and intensity draws).

  Returns:
    `image`.
  """
  size = image.shape[0]
  q = _grid(size)
  # Work on the bounding box only: the lesion (and its oedema) is compact.
  cx, cy = lesion.centre
  reach = _LESION_REACH * lesion.radius
  c0, c1 = np.searchsorted(q, [cx - reach, cx + reach])
  r0, r1 = np.searchsorted(q, [cy - reach, cy + reach])
  # Lesion units: 1 = the radius. Texture fields live in these units so
  # the shape irregularity scales with the lesion, not with the image.
  ux = (q[c0:c1] - cx) / lesion.radius
  uy = (q[r0:r1] - cy) / lesion.radius
  coarse = _local_field(rng, ux, uy, 0.4)  # Lobulation.
  fine = _local_field(rng, ux, uy, 0.2)  # Heterogeneity.
  crop = image[r0:r1, c0:c1]
  dx, dy = ux[None, :], uy[:, None]
  rho = np.sqrt(dx * dx + dy * dy)
  edge = max(0.03, (2.0 / size) / lesion.radius)  # ~1 px soft edge.

  if lesion.label == GLIOMA:
    level = rho + 0.25 * coarse + 0.06 * fine
    # Oedema: larger, softer, irregular, darkening tissue only; windowed so
    # that it fades out inside the box.
    oedema_scale = rng.uniform(1.4, 1.8)
    oedema = (_smoothstep(1.1, 0.6, rho / oedema_scale + 0.2 * coarse)
              * _smoothstep(_LESION_REACH, _LESION_REACH - 0.5, rho))
    crop *= 1.0 - rng.uniform(0.25, 0.4) * oedema
    value = rng.uniform(0.38, 0.55) + 0.08 * fine
    if rng.uniform() < 0.75:  # Ring enhancement around a necrotic core.
      ring_at = rng.uniform(0.55, 0.8)
      ring = np.exp(-0.5 * ((level - ring_at) / rng.uniform(0.07, 0.12))**2)
      value = value + ring * (rng.uniform(0.95, 1.05) - value)
      necrosis = _smoothstep(ring_at - 0.1, ring_at - 0.3, level)
      value = value + necrosis * (rng.uniform(0.22, 0.32) - value)
  elif lesion.label == MENINGIOMA:
    nx, ny = lesion.normal
    across = dx * nx + dy * ny  # Outwards, towards the dura.
    along = -dx * ny + dy * nx
    level = np.sqrt(across**2 + (along / rng.uniform(1.0, 1.3))**2)
    level = level + 0.05 * coarse
    base = rng.uniform(0.3, 0.55)
    level = np.maximum(level, across / base)  # Flat, broad dural base.
    # Thin CSF cleft where the mass indents the brain (extra-axial sign).
    cleft = np.exp(-0.5 * ((level - 1.0 - 1.5 * edge) / edge)**2)
    crop *= 1.0 - 0.4 * cleft * (across < 0.8 * base)
    value = rng.uniform(0.94, 1.04) + 0.025 * fine
  elif lesion.label == PITUITARY:
    tall = rng.uniform(1.0, 1.25)
    level = np.sqrt(dx**2 + (dy / tall)**2) + 0.05 * coarse
    value = rng.uniform(0.72, 0.9) + 0.05 * fine
  else:
    raise ValueError(f'label {lesion.label} has no lesion')
  alpha = _smoothstep(1.0 + edge, 1.0 - edge, level)
  crop += alpha * (value - crop)
  return image


def make_example(params: PhantomParams, split: str, index: int, *,
                 lesion: bool = True) -> dict[str, np.ndarray | int | str]:
  """Generates example `index` of `split`, deterministically.

  Args:
    params: dataset parameters.
    split: 'train' or 'test'.
    index: in [0, params.num_examples(split)).
    lesion: False gives the same example without its lesion (and without the
      mass effect); everything else is identical, noise included.

  Returns:
    A dict with 'image' (uint8 (S, S, 1)), 'label', 'plane', 'slice_index'
    (ints) and 'id' (str, unique within the dataset).
  """
  with _single_blas_thread():
    return _make_example(params, split, index, lesion)


def _make_example(params: PhantomParams, split: str, index: int,
                  lesion: bool) -> dict[str, np.ndarray | int | str]:
  num = params.num_examples(split)
  if not 0 <= index < num:
    raise IndexError(f'index {index} out of range for {num} {split} examples')
  size = params.image_size
  tpl = _template()
  label = int(_split_labels(params.seed, split, num)[index])
  geometry_rng, bias_rng, lesion_rng, noise_rng = _stage_rngs(
      params.seed, split, index)

  plane, slice_index = _choose_slice(tpl, label, geometry_rng)
  warp = _draw_warp(plane, geometry_rng)
  image2d = _slice2d(tpl, plane, slice_index)
  x, y = _displaced_grid(warp, size)
  spec = None
  if lesion and label != NOTUMOR:
    spec = _place_lesion(tpl, warp, image2d, label, size, lesion_rng)
    x, y = _mass_effect(spec, x, y)
  image = _sample(image2d, _slice_coords(tpl, warp, x, y))
  if spec is not None:
    _paint_lesion(image, spec, lesion_rng)

  # Bias after the lesion: the scanner shades the lesion like any tissue.
  bias = _smooth_field(bias_rng, size, 4)
  image *= 1.0 + _BIAS_MAX * np.tanh(bias_rng.uniform(0.4, 0.9) * bias)

  # Rician magnitude noise: Gaussian in both channels of the complex signal.
  sigma = noise_rng.uniform(*_NOISE_SIGMA)
  noise = noise_rng.standard_normal((2, size, size), dtype=np.float32)
  image = np.sqrt((image + sigma * noise[0])**2 + (sigma * noise[1])**2)

  image = np.clip(image * (255.0 / _FULL_SCALE) + 0.5, 0, 255).astype(np.uint8)
  return {
      'image': image[..., None],
      'label': label,
      'plane': plane,
      'slice_index': slice_index,
      'id': f'{split}_{index:06d}',
  }


def generate(params: PhantomParams, split: str, *, lesion: bool = True
             ) -> Iterator[dict[str, np.ndarray | int | str]]:
  """Yields all examples of `split` in index order (see `make_example`).

  Args:
    params: dataset parameters.
    split: 'train' or 'test'.
    lesion: False omits the lesions (for tests and illustrations).

  Yields:
    Example dicts.
  """
  for index in range(params.num_examples(split)):
    with _single_blas_thread():
      example = _make_example(params, split, index, lesion)
    yield example
