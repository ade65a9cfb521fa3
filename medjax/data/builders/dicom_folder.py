"""TF-free TFDS builder of a folder tree of DICOM slices (e.g. CPTAC-GBM).

Every single-frame DICOM image under the manual folder becomes one 2D
example. Pixel values go through the modality rescale (RescaleSlope,
RescaleIntercept), then to 8 bit by a VOI window (the file's WindowCenter /
WindowWidth, or an explicit `window`) or by per-slice percentiles; MONOCHROME1
is inverted so that bright always means high. The split is by patient
(seeded): no PatientID is in both train and test. Labels come from a folder
level, a CSV, or are absent.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
from typing import Any

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
try:
  import pydicom
  from pydicom import errors as pydicom_errors
  from pydicom import multival
except ImportError:  # Needed to build DICOM datasets only (GPU hosts lack it).
  pydicom = None

from medjax.data.builders import folders

NAME = 'dicom_folder'
SCALINGS = ('auto', 'window', 'percentile')
_DICOMDIR_SOP_CLASS = '1.2.840.10008.1.3.10'
_HEADER_TAGS = ('PatientID', 'SeriesInstanceUID', 'InstanceNumber',
                'Modality', 'Rows', 'NumberOfFrames')

LAYOUT = """\
<manual_dir>/            any tree of DICOM files (any names, .dcm or none)
  <patient>/             e.g. C3L-00016/
    <study>/<series>/    e.g. 11-05-2000-.../3.000000-AX T1 POST-12345/
      1-001.dcm  1-002.dcm  ...
Each file: one single-frame image with PatientID and SeriesInstanceUID.
Labels (optional): `label_level=k` takes the k-th folder below <manual_dir>
(0 = the first) as the class, or `labels_csv=` a CSV with a `label` column
and one key column: `path` (a file or folder relative to <manual_dir>),
`SeriesInstanceUID` or `PatientID`."""

DICOM_RULE = """\
DICOM pixel data (any bit depth, signed or not) -> x * RescaleSlope + \
RescaleIntercept -> 8 bit: with a window (center c, width w; the explicit \
`window` option, else the file's first WindowCenter/WindowWidth) by the DICOM \
linear VOI function ((x - (c - 0.5)) / (w - 1) + 0.5) clipped to [0, 1] x \
255; otherwise ('percentile', or 'auto' without a window in the file) \
linearly between this slice's lower and upper `percentiles`, clipped. \
MONOCHROME1 is then inverted (255 - v). 8-bit RGB DICOMs skip this step."""


@dataclasses.dataclass
class DicomFolderConfig(folders.FolderConfig):
  """Options of a DICOM folder dataset.

  Attributes:
    tag: short name of the collection; prefixes the config name.
    scaling: 'auto' (the file's window, else percentiles), 'window' (the
      file's or the `window` option; slices without one are skipped) or
      'percentile'.
    window: explicit (center, width) in rescaled units (e.g. HU), overriding
      the files' windows; None to use theirs.
    percentiles: (low, high) percentiles of a slice mapped to 0 and 255.
    label_level: folder level below the root used as the class, or None.
    labels_csv: CSV mapping files/series/patients to a `label`, or None.
    test_fraction: share of patients held out as `test`.
    seed: seed of the patient split.
  """
  tag: str = 'dicom'
  scaling: str = 'auto'
  window: tuple[float, float] | None = None
  percentiles: tuple[float, float] = (0.5, 99.5)
  label_level: int | None = None
  labels_csv: str | None = None
  test_fraction: float = 0.2
  seed: int = 0

  @property
  def has_label(self) -> bool:
    return self.label_level is not None or self.labels_csv is not None


def config_for(image_size: int, channels: int, limit: int | None, tag: str,
               **options) -> DicomFolderConfig:
  """The config of a variant, named like 'cptac_gbm_s256_c1'.

  Args:
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    tag: collection name, the config name's prefix.
    **options: the other `DicomFolderConfig` fields.

  Returns:
    The config.
  """
  if not re.fullmatch(r'[A-Za-z0-9][\w.-]*', tag or ''):
    raise ValueError(f'tag must be letters, digits, _ . - (got {tag!r})')
  if options.get('scaling', 'auto') not in SCALINGS:
    raise ValueError(f'scaling must be one of {SCALINGS}, got '
                     f'{options["scaling"]!r}')
  if options.get('window') is not None:
    center, width = (float(v) for v in options['window'])
    if width < 1:
      raise ValueError(f'window width must be >= 1, got {width}')
    options['window'] = (center, width)
  if 'percentiles' in options:
    low, high = (float(v) for v in options['percentiles'])
    if not 0 <= low < high <= 100:
      raise ValueError(f'need 0 <= low < high <= 100, got {(low, high)}')
    options['percentiles'] = (low, high)
  if options.get('label_level') is not None and options['label_level'] < 0:
    raise ValueError('label_level must be >= 0')
  if options.get('label_level') is not None and options.get('labels_csv'):
    raise ValueError('give label_level or labels_csv, not both')
  if options.get('labels_csv'):
    options['labels_csv'] = os.path.abspath(options['labels_csv'])
  if not 0.0 < options.get('test_fraction', 0.2) < 1.0:
    raise ValueError('test_fraction must be in (0, 1)')
  return folders.make_config(DicomFolderConfig, prefix=tag,
                             image_size=image_size, channels=channels,
                             limit=limit, unnamed=('tag',), tag=tag,
                             **options)


def _first(value: Any) -> float | None:
  """The first number of a (possibly multi-valued) DICOM element."""
  if value is None:
    return None
  if isinstance(value, (list, tuple, multival.MultiValue)):
    value = value[0] if len(value) else None
  try:
    return None if value is None or value == '' else float(value)
  except (TypeError, ValueError):
    return None


def _read_header(path: str) -> dict[str, Any] | folders.Skip:
  """The fields the split and the labels need, or why the file is unused."""
  try:
    if os.path.getsize(path) == 0:
      return folders.Skip('empty_file')
    ds = pydicom.dcmread(path, stop_before_pixels=True,
                         specific_tags=list(_HEADER_TAGS))
  except pydicom_errors.InvalidDicomError:
    return folders.Skip('not_dicom')
  except Exception as e:  # pylint: disable=broad-except
    return folders.Skip('bad_header', f'{type(e).__name__}: {e}')
  meta = getattr(ds, 'file_meta', None)
  if meta is not None and meta.get('MediaStorageSOPClassUID') == (
      _DICOMDIR_SOP_CLASS):
    return folders.Skip('dicomdir')
  if 'Rows' not in ds:
    return folders.Skip('no_pixel_data', 'not an image object')
  frames = _first(ds.get('NumberOfFrames')) or 1
  if frames > 1:
    return folders.Skip('multi_frame', f'{int(frames)} frames')
  return {'patient_id': str(ds.get('PatientID', '') or '').strip(),
          'series_uid': str(ds.get('SeriesInstanceUID', '') or ''),
          'instance_number': int(_first(ds.get('InstanceNumber')) or 0),
          'modality': str(ds.get('Modality', '') or '')}


def _window_to_uint8(x: np.ndarray, center: float,
                     width: float) -> np.ndarray:
  """DICOM PS3.3 C.11.2.1.2.1 linear VOI function to 0..255."""
  y = np.asarray(x, np.float32) - np.float32(center - 0.5)
  y *= np.float32(1.0 / max(width - 1.0, 1e-6))
  y += np.float32(0.5)
  return _unit_to_uint8(y)


def _unit_to_uint8(y: np.ndarray) -> np.ndarray:
  """[0, 1] (clipped, in place) -> rounded uint8."""
  np.clip(y, 0.0, 1.0, out=y)
  y *= np.float32(255.0)
  return np.rint(y, out=y).astype(np.uint8)


def _percentiles(pixels: np.ndarray,
                 q: tuple[float, float]) -> tuple[float, float]:
  """np.percentile(pixels, q) ('linear'), exact and fast for integers."""
  if not np.issubdtype(pixels.dtype, np.integer):
    low, high = np.percentile(pixels, q)
    return float(low), float(high)
  # Order statistics from a histogram: ~6x faster than partitioning.
  lo = int(pixels.min())
  cdf = np.cumsum(np.bincount((pixels.astype(np.int64) - lo).ravel()))
  n = int(cdf[-1])
  out = []
  for percent in q:
    position = percent / 100.0 * (n - 1)
    k = int(np.floor(position))
    below = np.searchsorted(cdf, k + 1)  # The k-th smallest, 0-based.
    above = np.searchsorted(cdf, min(k + 2, n))
    out.append(lo + below + (position - k) * (above - below))
  return float(out[0]), float(out[1])


class DicomFolder(folders.FolderBuilder):
  """A folder tree of DICOM slices, split by patient."""

  LAYOUT = LAYOUT
  DESCRIPTION = ('User-provided DICOM slices, one example per single-frame '
                 'image, split by patient (seeded).')

  def _rule(self) -> str:
    return f'{DICOM_RULE} {folders.SHAPE_RULE}'

  def _extra_features(self):
    features = {
        'patient_id': tfds.features.Text(),
        'series_uid': tfds.features.Text(),
        'instance_number': tfds.features.Scalar(np.int32),
        'modality': tfds.features.Text(),
    }
    if self.builder_config.has_label:
      features['label'] = tfds.features.ClassLabel()  # Names from the scan.
    return features

  def _label_lookup(self, manual_dir: str):
    """rel path, header -> label name (or None), from the config's source."""
    c = self.builder_config
    if c.label_level is not None:
      level = c.label_level

      def by_folder(rel: str, header: dict[str, Any]) -> str | None:
        del header
        parts = rel.split('/')[:-1]
        return parts[level] if len(parts) > level else None
      return by_folder, None
    if not c.labels_csv:
      return None, None
    if not os.path.isfile(c.labels_csv):
      raise FileNotFoundError(f'labels_csv {c.labels_csv} does not exist')
    with open(c.labels_csv, newline='') as f:
      rows = list(csv.DictReader(f))
    columns = {k.strip().lower(): k for k in (rows[0] if rows else {})}
    key_column = next((columns[k] for k in ('path', 'seriesinstanceuid',
                                            'patientid') if k in columns),
                      None)
    if 'label' not in columns or key_column is None:
      raise ValueError(
          f'{c.labels_csv}: needs a `label` column and one of `path`, '
          f'`SeriesInstanceUID`, `PatientID` (found {sorted(columns)})')
    table = {r[key_column].strip().strip('/'): r[columns['label']].strip()
             for r in rows if r[columns['label']].strip()}
    kind = key_column.strip().lower()

    def by_csv(rel: str, header: dict[str, Any]) -> str | None:
      if kind == 'path':
        parts = rel.split('/')
        for n in range(len(parts), 0, -1):  # The file, then its folders.
          label = table.get('/'.join(parts[:n]))
          if label is not None:
            return label
        return None
      return table.get(header['series_uid' if kind == 'seriesinstanceuid'
                              else 'patient_id'])
    return by_csv, sorted(set(table.values()))

  def _scan(self, manual_dir: str) -> dict[str, list[folders.Item]]:
    if pydicom is None:
      raise ImportError('building a dicom_folder dataset needs pydicom: '
                        'pip install pydicom (a medjax dependency)')
    c = self.builder_config
    unassigned = self._report.split(folders.UNASSIGNED)
    paths = []
    for path in folders.walk_files(manual_dir):
      rel = folders.relpath(path, manual_dir)
      if folders.hidden_part(rel):
        unassigned.skip('hidden_file', rel)
      else:
        paths.append(path)
    lookup, names = self._label_lookup(manual_dir)
    found = []
    fallback = 0
    for path, header in folders.parallel_map(_read_header, paths):
      rel = folders.relpath(path, manual_dir)
      if isinstance(header, folders.Skip):
        unassigned.skip(header.reason, rel, header.detail)
        continue
      if not header['patient_id']:
        # Without a PatientID the top folder stands for the patient (the
        # TCIA layout); counted in the report.
        header['patient_id'] = 'folder:' + rel.split('/')[0]
        fallback += 1
      label = None
      if lookup is not None:
        label = lookup(rel, header)
        if label is None:
          unassigned.skip('no_label', rel)
          continue
      found.append((rel, path, header, label))
    if not found:
      raise self._layout_error(manual_dir, 'no readable DICOM image found.')
    if lookup is not None:
      names = names or sorted({f[3] for f in found})
      self._set_label_names(names)
    patients = sorted({f[2]['patient_id'] for f in found})
    if len(patients) < 2:
      raise self._layout_error(
          manual_dir, f'the split is by patient and needs >= 2 patients; '
          f'found {patients}.')
    order = np.random.default_rng(c.seed).permutation(len(patients))
    n_test = min(len(patients) - 1,
                 max(1, int(round(c.test_fraction * len(patients)))))
    test = {patients[i] for i in order[:n_test]}
    splits = {'train': [], 'test': []}
    for rel, path, header, label in found:
      split = 'test' if header['patient_id'] in test else 'train'
      splits[split].append(folders.Item(
          rel, path, None if label is None else names.index(label),
          dict(header)))
    for split, items in splits.items():
      ids = sorted({i.extra['patient_id'] for i in items})
      self._report.split(split).extra.update(
          patients=len(ids), series=len({i.extra['series_uid']
                                         for i in items}), patient_ids=ids)
    self._report.notes['split_rule'] = (
        f'by patient: {n_test} of {len(patients)} patients to test '
        f'(test_fraction {c.test_fraction}, seed {c.seed})')
    self._report.notes['patient_id_from_folder'] = fallback
    if fallback:
      logging.warning('%s: %d files have no PatientID; their top folder is '
                      'used as the patient.', NAME, fallback)
    return splits

  def _to_uint8(self, ds: pydicom.Dataset,
                pixels: np.ndarray) -> tuple[np.ndarray, str, str]:
    """Rescale + window/percentiles (+ MONOCHROME1 inversion) to uint8.

    Args:
      ds: the DICOM dataset (for rescale, window, photometric).
      pixels: its stored pixel values.

    Returns:
      (uint8 image, description of the steps, 'window(file)',
      'window(option)' or 'percentile').
    """
    c = self.builder_config
    slope = _first(ds.get('RescaleSlope'))
    intercept = _first(ds.get('RescaleIntercept'))
    slope = 1.0 if not slope else slope
    intercept = intercept or 0.0
    x = pixels.astype(np.float32)
    if slope != 1.0:
      x *= np.float32(slope)
    if intercept:
      x += np.float32(intercept)
    steps = [f'rescale x{slope:g} {intercept:+g}']
    window = c.window
    source = 'window(option)'
    if window is None and c.scaling != 'percentile':
      center = _first(ds.get('WindowCenter'))
      width = _first(ds.get('WindowWidth'))
      if center is not None and width is not None and width >= 1:
        window, source = (center, width), 'window(file)'
      elif c.scaling == 'window':
        raise folders.Skip('no_window', 'no usable WindowCenter/WindowWidth')
    if window is not None:
      u8 = _window_to_uint8(x, *window)
      steps.append(f'{source} c{window[0]:g} w{window[1]:g}')
      kind = source
    else:
      if slope > 0:  # Percentiles commute with an increasing rescale.
        low, high = (v * slope + intercept
                     for v in _percentiles(pixels, c.percentiles))
      else:
        low, high = _percentiles(x, c.percentiles)
      if high > low:
        x -= np.float32(low)
        x *= np.float32(1.0 / (high - low))
        u8 = _unit_to_uint8(x)
      else:  # A constant slice.
        u8 = np.zeros(x.shape, np.uint8)
      steps.append(f'percentile {c.percentiles[0]:g}-{c.percentiles[1]:g} '
                   f'({low:g}..{high:g})')
      kind = 'percentile'
    photometric = str(ds.get('PhotometricInterpretation', ''))
    if photometric == 'MONOCHROME1':
      u8 = 255 - u8
      steps.append('MONOCHROME1 inverted')
    return u8, '; '.join(steps), kind

  def _load(self, item: folders.Item) -> folders.Loaded:
    c = self.builder_config
    data = folders.read_bytes(item.path)
    try:
      ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # pylint: disable=broad-except
      raise folders.Skip('bad_header', f'{type(e).__name__}: {e}') from e
    if 'PixelData' not in ds:
      raise folders.Skip('no_pixel_data')
    try:
      pixels = ds.pixel_array
    except Exception as e:  # pylint: disable=broad-except
      syntax = getattr(getattr(ds, 'file_meta', None), 'TransferSyntaxUID',
                       None)
      compressed = syntax is not None and syntax.is_compressed
      message = f'{type(e).__name__}: {e}'
      if compressed and ('decoder' in message or 'plugin' in message
                         or 'handler' in message):
        raise folders.Skip('unsupported_transfer_syntax',
                           f'{syntax.name}: {message}') from e
      raise folders.Skip('pixel_decode_error', message) from e
    photometric = str(ds.get('PhotometricInterpretation', ''))
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
      if pixels.dtype != np.uint8:
        raise folders.Skip('unsupported_color', f'{pixels.dtype} RGB')
      decoded = folders.from_pil(Image.fromarray(pixels))
      prefix = photometric
    elif pixels.ndim != 2:
      raise folders.Skip('unsupported_shape', str(pixels.shape))
    elif photometric not in ('MONOCHROME1', 'MONOCHROME2'):
      raise folders.Skip('unsupported_photometric', photometric)
    else:
      u8, prefix, kind = self._to_uint8(ds, pixels)
      decoded = folders.Decoded(Image.fromarray(u8), u8.shape[0],
                                u8.shape[1], 1, photometric)
    array, conversion, description = folders.normalise(
        decoded, c.image_size, c.channels, prefix)
    if decoded.orig_channels == 1:  # Say how it became 8 bit in the report.
      conversion = conversion.replace(photometric, f'{photometric} {kind}', 1)
    return folders.Loaded(
        features={'image': array, 'orig_height': decoded.orig_height,
                  'orig_width': decoded.orig_width,
                  'orig_channels': decoded.orig_channels,
                  'preprocess': description},
        digest=hashlib.sha1(data).hexdigest(), conversion=conversion)


def prepare(data_dir: str | None, manual_dir: str | None, image_size: int,
            channels: int, limit: int | None, tag: str | None = None,
            **options) -> tfds.core.DatasetBuilder:
  """Prepares a DICOM folder dataset (idempotent); see `folders.prepare`.

  Args:
    data_dir: TFDS data dir; None for TFDS's default.
    manual_dir: the root of the DICOM tree (see `LAYOUT`).
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    tag: collection name for the config name; default: the root's name.
    **options: `DicomFolderConfig` fields (scaling, window, percentiles,
      label_level, labels_csv, test_fraction, seed).

  Returns:
    The prepared builder, e.g. `dicom_folder/cptac-gbm_s256_c1`.
  """
  config = config_for(
      image_size, channels, limit,
      tag if tag is not None else folders.tag_for(manual_dir, 'dicom'),
      **options)
  return folders.prepare(DicomFolder, config, data_dir, manual_dir)
