"""One entry point to prepare the user-provided datasets by name.

    from medjax.data.builders import registry
    builder = registry.prepare('brain_tumor_mri', data_dir=None,
                               manual_dir='~/data/brain-tumor-mri',
                               image_size=256, channels=1, limit=None)
    source = builder.as_data_source('train')  # No TensorFlow needed.

The embedded phantom keeps its own `mni_brain_phantom.prepare`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import tensorflow_datasets as tfds

from medjax.data.builders import brain_tumor_mri
from medjax.data.builders import chexpert
from medjax.data.builders import dicom_folder
from medjax.data.builders import folders
from medjax.data.builders import image_folder

_MODULES = {
    'brain_tumor_mri': brain_tumor_mri,
    'image_folder': image_folder,
    'dicom_folder': dicom_folder,
    'chexpert': chexpert,
}
_CONFIGS = {
    'brain_tumor_mri': brain_tumor_mri.BrainTumorMriConfig,
    'image_folder': image_folder.ImageFolderConfig,
    'dicom_folder': dicom_folder.DicomFolderConfig,
    'chexpert': chexpert.ChexpertConfig,
}
_BUILDERS = {
    'brain_tumor_mri': brain_tumor_mri.BrainTumorMri,
    'image_folder': image_folder.ImageFolder,
    'dicom_folder': dicom_folder.DicomFolder,
    'chexpert': chexpert.MedjaxChexpert,
}
NAMES = tuple(_MODULES)

read_report = folders.read_report


def _check(name: str) -> None:
  if name not in _MODULES:
    raise ValueError(f'unknown dataset {name!r}; known: {NAMES}')


def default_options(name: str) -> dict[str, Any]:
  """The options `prepare(name, ...)` accepts, with their defaults."""
  _check(name)
  signature = inspect.signature(_MODULES[name].prepare)
  common = {'data_dir', 'manual_dir', 'image_size', 'channels', 'limit'}
  out = {k: p.default for k, p in signature.parameters.items()
         if k not in common and p.kind == p.POSITIONAL_OR_KEYWORD}
  if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
    base = {f.name for f in dataclasses.fields(folders.FolderConfig)}
    out |= {f.name: f.default for f in dataclasses.fields(_CONFIGS[name])
            if f.name not in base and f.name not in out}
  return out


def tfds_name(name: str) -> str:
  """The TFDS dataset name of a registry name ('chexpert' is taken by TFDS)."""
  _check(name)
  return _BUILDERS[name].name


def prepare(name: str, /, data_dir: str | None, manual_dir: str | None,
            image_size: int, channels: int, limit: int | None,
            **options) -> tfds.core.DatasetBuilder:
  """Prepares dataset `name` from the user's manual folder (idempotent).

  Args:
    name: one of `NAMES`.
    data_dir: TFDS data dir; None for TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    manual_dir: the folder holding the user's copy of the data (layout per
      dataset: see each module's `LAYOUT` or docs/datasets.md); None for
      TFDS's default `<data_dir>/downloads/manual`.
    image_size: side S of the stored S x S images.
    channels: 1 (grayscale) or 3 (RGB).
    limit: at most this many examples per split (deterministic subset), or
      None for all.
    **options: dataset options (`default_options(name)` lists them with
      their defaults):
      brain_tumor_mri: none; image_folder: tag, test_fraction, seed;
      dicom_folder: tag, scaling, window, percentiles, label_level,
      labels_csv, test_fraction, seed; chexpert: uncertain, target,
      frontal_only.

  Returns:
    The prepared builder: `builder.as_data_source(split)` reads a split
    without TensorFlow; `builder.info.full_name` is what `tfds.builder` and
    `tfds.data_source` take (with the same data_dir).

  Raises:
    ValueError: unknown name or invalid value.
    TypeError: unknown option.
    FileNotFoundError: the manual folder is missing, empty or not laid out as
      expected (the message shows the expected layout).
  """
  _check(name)
  valid = default_options(name)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise TypeError(f'unknown option(s) {unknown} for {name}; valid: '
                    f'{sorted(valid)}')
  return _MODULES[name].prepare(data_dir, manual_dir, image_size, channels,
                                limit, **options)
