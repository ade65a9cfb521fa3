"""Shared machinery of the TF-free builders of user-provided image folders.

Users bring real datasets in a manual folder; the builders in this package
turn them into TFDS datasets in `file_format='array_record'`, which
`tfds.data_source` reads without TensorFlow. This module holds what they
share:

* scanning helpers (sorted, hidden files and `__MACOSX` folders set aside),
* robust decoding: a corrupt, truncated or non-image file is skipped with a
  reason and counted, never a crash halfway through and never a silent drop,
* one normalisation rule for every image (`NORMALISATION_RULE`),
* the report of what was read and skipped, written as JSON next to the
  dataset (`read_report`),
* `FolderBuilder`, the base builder (features, parallel bounded decoding,
  `limit`, the report), and `prepare`.

Images are stored as zlib-encoded uint8 tensors, not `tfds.features.Image`,
whose PNG encoding needs TensorFlow.
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
import time
from typing import Any, TypeVar

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError
import tensorflow_datasets as tfds

from medjax.data.builders import tfds_utils

REPORT_FILENAME = 'medjax_report.json'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
# Pseudo-split of the report for files rejected before a split was chosen.
UNASSIGNED = 'unassigned'

DECODE_RULE = """\
Every image file is decoded fully with Pillow (EXIF orientation applied; \
first frame of multi-frame files; alpha dropped; palette expanded). 16-bit, \
32-bit and float images are rescaled linearly from their own min..max to \
0..255."""
SHAPE_RULE = """\
An RGB image whose channels agree (difference <= 8 grey levels on >= 99.9% \
of pixels) is RGB-encoded grayscale and is collapsed to one channel. \
channels=1: colour becomes ITU-R 601-2 luma (Pillow 'L'); channels=3: \
grayscale is repeated over the 3 channels. The image is then padded with \
black to a centred square (side = longer edge: nothing cropped, aspect kept, \
whole field of view) and resized to SxS with Pillow: BOX (area average) when \
shrinking, BICUBIC when enlarging, untouched when already SxS."""
NORMALISATION_RULE = f'{DECODE_RULE} {SHAPE_RULE}'

# RGB-encoded grayscale: JPEG chroma rounding moves channels apart by a few
# levels, so a small tolerance and a few outlier pixels are allowed.
_GRAY_TOLERANCE = 8
_GRAY_OUTLIER_FRACTION = 1e-3
_GRAY_CHECK_PIXELS = 1 << 20  # Subsample larger images for the check.
# Decoding threads: Pillow releases the GIL while decoding and resizing. The
# window bounds decoded images held at once (memory), whatever the data size.
_WORKERS = max(1, min(8, os.cpu_count() or 1))
_WINDOW_PER_WORKER = 4
_MAX_NAME_OPTIONS = 60

_T = TypeVar('_T')
_R = TypeVar('_R')


class Skip(Exception):
  """A file that is not used, with the reason that goes into the report."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


# ---------------------------------------------------------------------------
# Configs.


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """Fields common to every folder builder's config.

  Attributes:
    image_size: side S of the stored square images.
    channels: 1 (grayscale) or 3 (RGB) stored channels.
    limit: at most this many examples per split (a deterministic subset, for
      quick tries); None for all.
  """
  image_size: int = 256
  channels: int = 1
  limit: int | None = None

  def options(self) -> dict[str, Any]:
    """The builder-specific fields (everything but the common ones)."""
    common = {f.name for f in dataclasses.fields(FolderConfig)}
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in common}


_C = TypeVar('_C', bound=FolderConfig)


def _format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '-'.join(_format_value(v) for v in value)
  if isinstance(value, float):
    return f'{value:g}'
  if value is None:
    return 'none'
  return str(value).lower() if isinstance(value, bool) else str(value)


def _name_options(options: Mapping[str, Any]) -> str:
  """Readable `keyvalue` tokens, or a hash when they would be unsafe/long."""
  if not options:
    return ''
  text = '_'.join(f'{k}{_format_value(v)}' for k, v in sorted(options.items()))
  if len(text) <= _MAX_NAME_OPTIONS and re.fullmatch(r'[\w+\-.]+', text):
    return text
  # Sanitising could merge different values: hash the exact options instead.
  digest = hashlib.sha1(json.dumps(
      {k: _format_value(v) for k, v in sorted(options.items())}).encode())
  return 'o' + digest.hexdigest()[:10]


def make_config(config_cls: type[_C], *, prefix: str | None, image_size: int,
                channels: int, limit: int | None,
                default: _C | None = None, unnamed: Sequence[str] = (),
                **options) -> _C:
  """Validates arguments and builds a config whose name encodes them.

  The name is `[prefix_]s{S}_c{C}[_n{limit}][_options]`, where options lists
  only the values that differ from the config class defaults (so adding an
  option with a default never renames existing datasets).

  Args:
    config_cls: the builder's `FolderConfig` subclass.
    prefix: leading part of the name (e.g. a user tag), or None.
    image_size: side of the stored images (>= 8).
    channels: 1 or 3.
    limit: examples per split cap (>= 1) or None.
    default: the builder's predefined default config: returned itself when
      the arguments give its name (TFDS refuses a second object of that name).
    unnamed: options left out of the name (e.g. already in `prefix`).
    **options: the builder-specific fields of `config_cls`.

  Returns:
    The config.

  Raises:
    TypeError: unknown option.
    ValueError: invalid value.
  """
  if not isinstance(image_size, (int, np.integer)) or image_size < 8:
    raise ValueError(f'image_size must be an int >= 8, got {image_size!r}')
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels!r}')
  if limit is not None and (not isinstance(limit, (int, np.integer))
                            or limit < 1):
    raise ValueError(f'limit must be None or an int >= 1, got {limit!r}')
  common = {f.name for f in dataclasses.fields(FolderConfig)}
  own = {f.name: f for f in dataclasses.fields(config_cls)
         if f.name not in common}
  unknown = sorted(set(options) - set(own))
  if unknown:
    raise TypeError(f'unknown option(s) {unknown} for {config_cls.__name__}; '
                    f'valid options: {sorted(own)}')
  non_default = {k: v for k, v in options.items()
                 if v != own[k].default and k not in unnamed}
  parts = [prefix] if prefix else []
  parts += [f's{int(image_size)}', f'c{channels}']
  if limit is not None:
    parts.append(f'n{int(limit)}')
  if non_default:
    parts.append(_name_options(non_default))
  name = '_'.join(parts)
  if default is not None and name == default.name:
    return default
  values = {k: f.default for k, f in own.items()} | options
  described = ', '.join(f'{k}={v!r}' for k, v in sorted(values.items()))
  return config_cls(
      name=name,
      description=(f'{image_size}x{image_size}x{channels} uint8, limit '
                   f'{limit} per split' + (f'; {described}' if described
                                           else '') + '.'),
      image_size=int(image_size), channels=channels,
      limit=None if limit is None else int(limit), **options)


# ---------------------------------------------------------------------------
# Scanning and errors.


def tag_for(manual_dir: str | None, default: str) -> str:
  """A config-name-safe tag from the manual folder's name."""
  base = os.path.basename(os.path.normpath(manual_dir)) if manual_dir else ''
  return re.sub(r'[^\w.-]+', '-', base).strip('-.') or default


def is_hidden(name: str) -> bool:
  """Dot files (incl. macOS `._*` resource forks) and `__MACOSX` folders."""
  return name.startswith('.') or name == '__MACOSX'


def walk_files(top: str) -> Iterator[str]:
  """All files under `top`, recursively, in sorted (deterministic) order."""
  seen = set()  # Symlinked folders are followed, but never twice (loops).
  for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen:
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames.sort()
    for name in sorted(filenames):
      yield os.path.join(dirpath, name)


def visible_dirs(top: str) -> list[str]:
  """Sorted names of the non-hidden sub-folders of `top`."""
  return sorted(n for n in os.listdir(top)
                if not is_hidden(n) and os.path.isdir(os.path.join(top, n)))


def relpath(path: str, root: str) -> str:
  """`path` relative to `root`, with '/' separators (stable keys)."""
  return os.path.relpath(path, root).replace(os.sep, '/')


def hidden_part(rel: str) -> bool:
  return any(is_hidden(p) for p in rel.split('/'))


def layout_error(dataset: str, manual_dir: str, problem: str,
                 layout: str) -> FileNotFoundError:
  """The error raised when the manual folder does not have the layout."""
  return FileNotFoundError(
      f'{dataset}: {problem}\nExpected layout of the manual folder '
      f'({manual_dir}):\n{layout}\nPass its path as `manual_dir`; see '
      'docs/datasets.md.')


def check_manual_dir(dataset: str, manual_dir: str, layout: str) -> None:
  """Raises `layout_error` unless `manual_dir` is a non-empty folder."""
  if not os.path.isdir(manual_dir):
    raise layout_error(dataset, manual_dir,
                       f'the manual folder {manual_dir} does not exist.',
                       layout)
  if not [n for n in os.listdir(manual_dir) if not is_hidden(n)]:
    raise layout_error(dataset, manual_dir,
                       f'the manual folder {manual_dir} is empty.', layout)


def scan_class_tree(top: str, root: str, tally: _Tally,
                    label_of: Callable[[str], int]) -> list[Item]:
  """The images of `top/<class>/**` (recursive), labelled by folder.

  Hidden files and folders, files directly in `top` and files without an
  image extension are recorded as skipped in `tally`, not returned.

  Args:
    top: folder holding one sub-folder per class.
    root: the dataset root; keys are paths relative to it.
    tally: where scan-time skips are counted.
    label_of: class folder name -> label id (raises for an unknown class).

  Returns:
    The candidate items, sorted by key.
  """
  items = []
  for entry in sorted(os.listdir(top)):
    path = os.path.join(top, entry)
    if is_hidden(entry) or not os.path.isdir(path):
      reason = 'hidden_file' if is_hidden(entry) else 'outside_class_folder'
      for f in walk_files(path) if os.path.isdir(path) else [path]:
        tally.skip(reason, relpath(f, root))
      continue
    label = label_of(entry)
    for f in walk_files(path):
      rel = relpath(f, root)
      if hidden_part(relpath(f, path)):
        tally.skip('hidden_file', rel)
      elif os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS:
        tally.skip('not_image_extension', rel)
      else:
        items.append(Item(rel, f, label))
  return items


def note_strays(root: str, used: Iterable[str], tally: _Tally) -> None:
  """Records the files under `root` outside its `used` top-level folders.

  Args:
    root: the dataset root.
    used: names of the entries of `root` that are read (split folders).
    tally: where they are counted ('outside_split_folder', 'hidden_file').
  """
  used = set(used)
  for entry in sorted(os.listdir(root)):
    if entry in used:
      continue
    path = os.path.join(root, entry)
    reason = 'hidden_file' if is_hidden(entry) else 'outside_split_folder'
    for f in walk_files(path) if os.path.isdir(path) else [path]:
      tally.skip(reason, relpath(f, root))


# ---------------------------------------------------------------------------
# Decoding and normalisation.


@dataclasses.dataclass
class Decoded:
  """An image in mode 'L' or 'RGB' and how it was obtained from the file."""
  image: Image.Image
  orig_height: int
  orig_width: int
  orig_channels: int  # In the file, alpha excluded (RGB-encoded gray: 3).
  conversion: str  # e.g. 'L', 'RGB', 'RGB(gray)->L', 'I;16->L(minmax)'.


def read_bytes(path: str) -> bytes:
  """The file's bytes; `Skip` when it cannot be read or is empty."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError as e:
    raise Skip('missing_file', str(e)) from e
  except OSError as e:
    raise Skip('unreadable', f'{type(e).__name__}: {e}') from e
  if not data:
    raise Skip('empty_file')
  return data


def _is_gray_rgb(rgb: np.ndarray) -> bool:
  step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1]
                                    / _GRAY_CHECK_PIXELS))))
  a = rgb[::step, ::step].astype(np.int16)
  diff = np.maximum(np.abs(a[..., 0] - a[..., 1]),
                    np.abs(a[..., 1] - a[..., 2]))
  return (np.count_nonzero(diff > _GRAY_TOLERANCE)
          <= _GRAY_OUTLIER_FRACTION * diff.size)


def minmax_to_uint8(values: np.ndarray) -> tuple[np.ndarray, float, float]:
  """Linear rescale of the finite range to 0..255 (constant -> 0)."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  if finite.size == 0:
    return np.zeros(values.shape, np.uint8), 0.0, 0.0
  lo, hi = float(finite.min()), float(finite.max())
  if hi <= lo:
    return np.zeros(values.shape, np.uint8), lo, hi
  scaled = (np.nan_to_num(values, nan=lo) - lo) * (255.0 / (hi - lo))
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), lo, hi


def from_pil(image: Image.Image) -> Decoded:
  """Brings a loaded Pillow image to mode 'L' or 'RGB' by the stated rule."""
  try:
    ImageOps.exif_transpose(image, in_place=True)
  except Exception:  # pylint: disable=broad-except
    pass  # A broken EXIF block must not cost the image: keep as stored.
  width, height = image.size
  mode = image.mode
  # The first frame (the one loaded) of a multi-frame GIF/TIFF, said so.
  first = 'frame1:' if getattr(image, 'n_frames', 1) > 1 else ''
  if mode.startswith('I;16') or mode in ('I', 'F'):
    u8, _, _ = minmax_to_uint8(np.asarray(image))
    return Decoded(Image.fromarray(u8), height, width, 1,
                   f'{first}{mode}->L(minmax)')
  if mode in ('1', 'L', 'LA', 'La'):
    return Decoded(image if mode == 'L' else image.convert('L'), height,
                   width, 1, first + ('L' if mode == 'L' else f'{mode}->L'))
  try:
    rgb = image if mode == 'RGB' else image.convert('RGB')
  except ValueError as e:
    raise Skip('unsupported_mode', f'{mode}: {e}') from e
  prefix = first + ('' if mode == 'RGB' else f'{mode}->')
  if _is_gray_rgb(np.asarray(rgb)):
    return Decoded(rgb.convert('L'), height, width, 3,
                   f'{prefix}RGB(gray)->L')
  return Decoded(rgb, height, width, 3, f'{prefix}RGB')


def decode_image(data: bytes) -> Decoded:
  """Decodes an image file's bytes fully; `Skip` with a reason otherwise."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()  # Decode everything now: truncation shows up here.
  except Image.DecompressionBombError as e:
    raise Skip('too_large', str(e)) from e
  except UnidentifiedImageError as e:
    raise Skip('not_an_image', 'Pillow cannot identify the format') from e
  except Exception as e:  # pylint: disable=broad-except
    # Pillow reports damage as OSError, SyntaxError, ValueError, EOFError,
    # zlib or struct errors depending on the format.
    message = f'{type(e).__name__}: {e}'
    truncated = any(s in message.lower() for s in (
        'truncated', 'broken data stream', 'premature end', 'eof'))
    raise Skip('truncated' if truncated else 'decode_error', message) from e
  return from_pil(image)


def square_resize(image: Image.Image, size: int) -> tuple[Image.Image, str]:
  """Pads to a centred black square, then resizes to `size` (BOX/BICUBIC)."""
  width, height = image.size
  side = max(width, height)
  steps = []
  if width != height:
    canvas = Image.new(image.mode, (side, side), 0)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    image = canvas
    steps.append(f'pad {height}x{width}->{side}x{side}')
  if side > size:
    image = image.resize((size, size), Image.Resampling.BOX)
    steps.append(f'box {side}->{size}')
  elif side < size:
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    steps.append(f'bicubic {side}->{size}')
  return image, '; '.join(steps)


@dataclasses.dataclass
class Loaded:
  """One normalised example: its features, and facts for the report."""
  features: dict[str, Any]
  digest: str  # sha1 of the file bytes, for the duplicate report.
  conversion: str


def normalise(decoded: Decoded, size: int, channels: int,
              prefix: str = '') -> tuple[np.ndarray, str, str]:
  """Applies the channel and geometry rule.

  Args:
    decoded: the decoded image ('L' or 'RGB').
    size: output side.
    channels: 1 or 3.
    prefix: earlier steps for the per-example description (e.g. windowing).

  Returns:
    (uint8 (size, size, channels) array, conversion, full description).
  """
  image, conversion = decoded.image, decoded.conversion
  if channels == 1 and image.mode == 'RGB':
    image = image.convert('L')
    conversion += '->L'
  image, geometry = square_resize(image, size)
  array = np.asarray(image)
  if array.ndim == 2:
    array = array[..., None]
  if channels == 3 and array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
    conversion += '->RGB(repeat)'
  steps = [s for s in (prefix, conversion, geometry) if s]
  return np.ascontiguousarray(array), conversion, '; '.join(steps)


def load_image_file(path: str, size: int, channels: int) -> Loaded:
  """Reads, decodes and normalises one image file (`Skip` on failure)."""
  data = read_bytes(path)
  decoded = decode_image(data)
  array, conversion, description = normalise(decoded, size, channels)
  return Loaded(
      features={'image': array, 'orig_height': decoded.orig_height,
                'orig_width': decoded.orig_width,
                'orig_channels': decoded.orig_channels,
                'preprocess': description},
      digest=hashlib.sha1(data).hexdigest(), conversion=conversion)


def parallel_map(fn: Callable[[_T], _R], items: Iterable[_T],
                 workers: int = _WORKERS) -> Iterator[tuple[_T, _R]]:
  """(item, fn(item)) in input order, computed by a bounded thread pool.

  At most `workers * _WINDOW_PER_WORKER` results are pending at once, so
  memory stays bounded however many items there are. Closing the iterator
  early cancels what has not started.

  Args:
    fn: the function; it should not raise.
    items: its inputs.
    workers: threads (1: in the calling thread).

  Yields:
    (item, result) pairs.
  """
  if workers <= 1:
    for item in items:
      yield item, fn(item)
    return
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    iterator = iter(items)
    pending = collections.deque(
        (item, pool.submit(fn, item))
        for item in itertools.islice(iterator, workers * _WINDOW_PER_WORKER))
    while pending:
      item, future = pending.popleft()
      for following in itertools.islice(iterator, 1):
        pending.append((following, pool.submit(fn, following)))
      yield item, future.result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------
# The report.


@dataclasses.dataclass
class _Tally:
  """What happened to the files of one split."""
  found: int = 0  # Candidate files handed to the decoder.
  decode_skipped: int = 0  # Candidates that failed to decode.
  read: int = 0
  not_attempted: int = 0  # Candidates left out by `limit`.
  skipped: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  details: dict[str, str] = dataclasses.field(default_factory=dict)
  labels: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  sizes: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  conversions: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  digests: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  def skip(self, reason: str, key: str, detail: str = '') -> None:
    self.skipped[reason].append(key)
    if detail and len(self.details) < 50:  # Examples of messages, bounded.
      self.details[key] = detail[:300]

  def files(self) -> int:
    """Files seen: candidates plus those set aside while scanning."""
    return self.found + sum(map(len, self.skipped.values())) - (
        self.decode_skipped)

  def to_dict(self) -> dict[str, Any]:
    skipped = {r: len(p) for r, p in sorted(self.skipped.items())}
    # files == read + skipped_total + not_attempted_limit.
    return {
        'files': self.files(),
        'read': self.read,
        'skipped_total': sum(skipped.values()),
        'skipped': skipped,
        'not_attempted_limit': self.not_attempted,
        'labels': dict(sorted(self.labels.items())),
        'orig_sizes_top': dict(self.sizes.most_common(20)),
        'distinct_orig_sizes': len(self.sizes),
        'conversions': dict(sorted(self.conversions.items())),
        **self.extra,
        'skipped_paths': {r: sorted(p) for r, p in sorted(
            self.skipped.items())},
        'skip_messages': self.details,
    }


class Report:
  """Counts per split of read and skipped files, with the skipped paths."""

  def __init__(self, dataset: str, manual_dir: str, config: FolderConfig,
               rule: str):
    self.dataset = dataset
    self.manual_dir = manual_dir
    self.config = config
    self.rule = rule
    self.splits: dict[str, _Tally] = collections.defaultdict(_Tally)
    self.notes: dict[str, Any] = {}
    self.start = time.time()

  def split(self, name: str) -> _Tally:
    return self.splits[name]

  def duplicates(self) -> dict[str, Any]:
    """Byte-identical files (same sha1), reported, never dropped."""
    where = collections.defaultdict(list)
    for split, tally in self.splits.items():
      for digest, keys in tally.digests.items():
        where[digest] += [f'{split}:{k}' for k in keys]
    groups = sorted(sorted(v) for v in where.values() if len(v) > 1)
    across = [g for g in groups if len({k.split(':', 1)[0] for k in g}) > 1]
    return {'groups': len(groups),
            'extra_copies': sum(len(g) - 1 for g in groups),
            'groups_across_splits': len(across),
            'group_paths': groups}

  def to_dict(self) -> dict[str, Any]:
    order = sorted(self.splits, key=lambda s: (s == UNASSIGNED, s))
    return {
        'dataset': self.dataset,
        'manual_dir': self.manual_dir,
        'config': self.config.name,
        'image_size': self.config.image_size,
        'channels': self.config.channels,
        'limit': self.config.limit,
        'options': self.config.options(),
        'normalisation': self.rule,
        'seconds': round(time.time() - self.start, 1),
        **self.notes,
        'splits': {s: self.splits[s].to_dict() for s in order},
        'duplicates': self.duplicates(),
    }

  def summary(self) -> str:
    lines = []
    for split in sorted(self.splits, key=lambda s: (s == UNASSIGNED, s)):
      t = self.splits[split]
      reasons = ', '.join(f'{r} {len(p)}' for r, p in sorted(
          t.skipped.items())) or 'none'
      lines.append(f'  {split}: read {t.read} of {t.files()} files; '
                   f'skipped {sum(map(len, t.skipped.values()))} ({reasons})'
                   + (f'; {t.not_attempted} left out by limit'
                      if t.not_attempted else ''))
    dup = self.duplicates()
    if dup['groups']:
      lines.append(f"  byte-identical duplicates: {dup['groups']} groups "
                   f"({dup['groups_across_splits']} across splits), kept")
    return '\n'.join(lines)


def read_report(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """The report of a prepared folder dataset (`REPORT_FILENAME`, JSON).

  Args:
    builder: a prepared builder of this package (or a read-only builder of
      the same folder, e.g. from `tfds.builder`).

  Returns:
    The report: per split 'files', 'read', 'skipped' (counts per reason),
    'skipped_paths' (per reason), label and size counts; 'duplicates'.

  Raises:
    FileNotFoundError: the dataset is not prepared or has no report.
  """
  path = os.path.join(os.fspath(builder.data_dir), REPORT_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no report at {path}: is {builder.name} '
                            'prepared with medjax.data.builders.registry?')
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------------------
# The base builder.


@dataclasses.dataclass(frozen=True)
class Item:
  """A candidate example found by scanning.

  Attributes:
    key: unique, stable record key and `id` feature (the relative path).
    path: absolute path of the file to read.
    label: label id, or None for datasets without `label`.
    extra: more features, copied into the example as they are.
  """
  key: str
  path: str
  label: int | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the folder builders: subclasses scan, this class does the rest.

  Subclasses set `LAYOUT` (a tree of the expected manual folder) and
  implement `_scan` (and `_extra_features`, maybe `_load`).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  LAYOUT = ''
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''
  _report: Report | None = None  # Set while preparing.

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.LAYOUT:
      cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
          f'Put the data in the manual folder with this layout:\n{cls.LAYOUT}')

  @abc.abstractmethod
  def _scan(self, manual_dir: str) -> dict[str, list[Item]]:
    """Finds the candidate examples per split; records scan-time skips."""

  def _generate_examples(self, **kwargs):
    # `_split_generators` returns `_generate` generators directly.
    raise NotImplementedError

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Features beyond the common ones (label included)."""
    return {}

  def _load(self, item: Item) -> Loaded:
    """Reads one example (raises `Skip`). Default: an image file."""
    c = self.builder_config
    return load_image_file(item.path, c.image_size, c.channels)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    features = {
        # Not tfds.features.Image: encoding it to PNG needs TensorFlow.
        'image': tfds.features.Tensor(
            shape=(c.image_size, c.image_size, c.channels), dtype=np.uint8,
            encoding=tfds.features.Encoding.ZLIB),
        'id': tfds.features.Text(),
        'orig_height': tfds.features.Scalar(np.int32),
        'orig_width': tfds.features.Scalar(np.int32),
        'orig_channels': tfds.features.Scalar(np.int32),
        'preprocess': tfds.features.Text(),
        **self._extra_features(),
    }
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f'{self.DESCRIPTION}\nConfig: {c.description}\n'
                     f'Normalisation: {self._rule()}\nExpected layout:\n'
                     f'{self.LAYOUT}'),
        features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label') if 'label' in features else None,
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
    )

  def _rule(self) -> str:
    return NORMALISATION_RULE

  def _label_names(self) -> list[str]:
    feature = self.info.features['label'] if 'label' in (
        self.info.features) else None
    return list(feature.names) if feature is not None else []

  def _set_label_names(self, names: Sequence[str]) -> None:
    """Sets the names of a `ClassLabel()` left open in `_info`."""
    feature = self.info.features['label']
    if feature.num_classes is None:
      feature.names = list(names)
    elif list(feature.names) != list(names):
      raise ValueError(f'label names {list(names)} differ from the '
                       f'builder\'s {feature.names}')

  def _layout_error(self, manual_dir: str, problem: str) -> FileNotFoundError:
    return layout_error(self.name, manual_dir, problem, self.LAYOUT)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    self._report = Report(f'{self.name}/{self.builder_config.name}',
                          manual_dir, self.builder_config, self._rule())
    splits = self._scan(manual_dir)
    for split, items in splits.items():
      keys = [i.key for i in items]
      if len(set(keys)) != len(keys):
        raise ValueError(f'{self.name}: duplicate keys in split {split}')
      if not items:
        raise self._layout_error(
            manual_dir, f'no candidate image for split {split!r}.')
    return {split: self._generate(split, items)
            for split, items in splits.items()}

  def _load_or_skip(self, item: Item) -> Loaded | Skip:
    try:
      return self._load(item)
    except Skip as skip:
      return skip
    except Exception as e:  # pylint: disable=broad-except
      # A bad file must not stop a long build: count it, say why.
      logging.warning('Unexpected error reading %s: %r', item.path, e)
      return Skip('unexpected_error', f'{type(e).__name__}: {e}')

  def _generate(self, split: str, items: list[Item]):
    c = self.builder_config
    tally = self._report.split(split)
    tally.found = len(items)
    order = list(items)
    if c.limit is not None and c.limit < len(order):
      # A seeded shuffle, so a capped split still spans the classes.
      order = [order[i] for i in np.random.default_rng(0).permutation(
          len(order))]
    target = len(order) if c.limit is None else min(c.limit, len(order))
    names = self._label_names()
    step = max(1, target // 10)
    attempted = 0
    with contextlib.closing(parallel_map(self._load_or_skip, order)) as done:
      for item, result in done:
        attempted += 1
        if isinstance(result, Skip):
          tally.skip(result.reason, item.key, result.detail)
          tally.decode_skipped += 1
          continue
        example = dict(result.features, id=item.key, **item.extra)
        if item.label is not None:
          example['label'] = item.label
          tally.labels[names[item.label] if names else item.label] += 1
        tally.read += 1
        tally.sizes[f"{example['orig_height']}x{example['orig_width']}"] += 1
        tally.conversions[result.conversion] += 1
        tally.digests[result.digest].append(item.key)
        if tally.read % step == 0 or tally.read == target:
          logging.info('%s %s: %d/%d examples read, %d skipped.', self.name,
                       split, tally.read, target,
                       sum(map(len, tally.skipped.values())))
        yield item.key, example
        if tally.read == target:
          break
    tally.not_attempted = len(order) - attempted
    if tally.read == 0:
      raise ValueError(
          f'{self.name}: no readable example in split {split!r} '
          f'({tally.found} candidates):\n{self._report.summary()}')

  def _download_and_prepare(self, dl_manager, download_config):
    super()._download_and_prepare(dl_manager, download_config)
    report = self._report
    # self.data_dir is the `incomplete.*` folder here: the report is renamed
    # into place together with the data.
    path = os.path.join(os.fspath(self.data_dir), REPORT_FILENAME)
    with open(path, 'w') as f:
      json.dump(report.to_dict(), f, indent=1)
    skipped = sum(sum(map(len, t.skipped.values()))
                  for t in report.splits.values())
    (logging.warning if skipped else logging.info)(
        'Prepared %s from %s:\n%s\nReport: %s (in the dataset folder).',
        report.dataset, report.manual_dir, report.summary(), REPORT_FILENAME)


# ---------------------------------------------------------------------------
# Preparation.


def prepare(builder_cls: type[FolderBuilder], config: FolderConfig,
            data_dir: str | None,
            manual_dir: str | None) -> tfds.core.DatasetBuilder:
  """Prepares a folder dataset unless it is already there.

  Idempotent and cheap once prepared (reads the dataset info only; the
  manual folder is then not needed).

  Args:
    builder_cls: the builder class.
    config: its config (see each module's `config_for`).
    data_dir: TFDS data dir; None for TFDS's default.
    manual_dir: the folder holding the user's data; None for TFDS's default
      `<data_dir>/downloads/manual`.

  Returns:
    The prepared builder (array_record; `builder.as_data_source(split)`).

  Raises:
    FileNotFoundError: the manual folder is missing, empty or not laid out as
      expected (the message shows the expected tree).
  """
  with tfds_utils.no_leftover_tempdirs():
    builder = builder_cls(config=config, data_dir=data_dir,
                          file_format='array_record')
  if builder.is_prepared():
    logging.info('%s already prepared in %s.', builder.info.full_name,
                 builder.data_dir)
    try:
      source = read_report(builder).get('manual_dir')
    except (FileNotFoundError, ValueError):
      source = None
    if manual_dir and source and os.path.abspath(manual_dir) != source:
      logging.warning(
          '%s was prepared from %s, not from %s: delete %s (or choose '
          'another tag/config) to rebuild from the new folder.',
          builder.info.full_name, source, os.path.abspath(manual_dir),
          builder.data_dir)
    return builder
  if manual_dir is None:
    manual_dir = os.path.join(os.fspath(builder.data_dir_root), 'downloads',
                              'manual')
  manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
  check_manual_dir(builder.name, manual_dir, builder_cls.LAYOUT)
  tfds_utils.remove_stale_incomplete(builder)
  logging.info('Preparing %s in %s from %s.', builder.info.full_name,
               builder.data_dir, manual_dir)
  start = time.time()
  builder.download_and_prepare(
      file_format='array_record',
      # Nothing is downloaded: the data is the user's manual folder.
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, manual_dir=manual_dir))
  logging.info('Prepared %s in %.1f s.', builder.info.full_name,
               time.time() - start)
  return builder
