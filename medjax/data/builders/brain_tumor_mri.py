"""TF-free TFDS builder of the Kaggle Brain Tumor MRI Dataset (Nickparvar 2021).

Reads the published layout `Training/<class>/*.jpg` and `Testing/<class>/*.jpg`
from a manual folder (nothing is downloaded) into `train` / `test`, with the
four classes in the order of `CLASSES` (the same as the phantom's). Images are
normalised by `folders.NORMALISATION_RULE`; unreadable files are skipped and
reported (`folders.read_report`).
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging
import tensorflow_datasets as tfds

from medjax.data.builders import folders

NAME = 'brain_tumor_mri'
CLASSES = ('glioma', 'meningioma', 'notumor', 'pituitary')
# Folder names of the older SARTAJ set that the Kaggle set merged.
_ALIASES = {'glioma_tumor': 'glioma', 'meningioma_tumor': 'meningioma',
            'no_tumor': 'notumor', 'pituitary_tumor': 'pituitary'}
_SPLIT_FOLDERS = (('train', 'Training'), ('test', 'Testing'))

LAYOUT = """\
<manual_dir>/                  (or <manual_dir>/<one folder>/, e.g. archive/)
  Training/
    glioma/       Tr-gl_0010.jpg ...
    meningioma/   Tr-me_0010.jpg ...
    notumor/      Tr-no_0010.jpg ...
    pituitary/    Tr-pi_0010.jpg ...
  Testing/
    glioma/       Te-gl_0010.jpg ...
    meningioma/
    notumor/
    pituitary/
(image files: .jpg .jpeg .png .bmp .tif .tiff; sub-folders allowed)"""

_DESCRIPTION = """\
Brain Tumor MRI Dataset (Msoud Nickparvar, Kaggle, 2021): 2D brain MRI slices \
(T1 post-contrast, T2, FLAIR; axial, coronal, sagittal) in four classes, \
merged from the figshare (Cheng et al.), SARTAJ and Br35H sets; 5,712 \
training and 1,311 test images, mostly 512x512. Splits are the published \
Training/ and Testing/ folders. Patient identities are not available, so \
slices of one patient may sit in both splits."""

_CITATION = """\
@misc{nickparvar2021brain,
  title={Brain Tumor MRI Dataset},
  author={Nickparvar, Msoud},
  publisher={Kaggle},
  year={2021},
  doi={10.34740/KAGGLE/DSV/2645886},
  url={https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset}
}
"""


@dataclasses.dataclass
class BrainTumorMriConfig(folders.FolderConfig):
  """Image size, channels and limit; this dataset has no other option."""


_DEFAULT_CONFIG = folders.make_config(
    BrainTumorMriConfig, prefix=None, image_size=256, channels=1, limit=None)


def config_for(image_size: int, channels: int,
               limit: int | None) -> BrainTumorMriConfig:
  """The config of a variant, named like 's256_c1' or 's64_c3_n100'."""
  return folders.make_config(BrainTumorMriConfig, prefix=None,
                             image_size=image_size, channels=channels,
                             limit=limit, default=_DEFAULT_CONFIG)


def _find_root(manual_dir: str) -> str | None:
  """The folder holding Training/ and Testing/: manual_dir or one child."""
  def has_splits(path: str) -> bool:
    names = {n.lower() for n in folders.visible_dirs(path)}
    return all(f.lower() in names for _, f in _SPLIT_FOLDERS)
  if has_splits(manual_dir):
    return manual_dir
  children = [os.path.join(manual_dir, n)
              for n in folders.visible_dirs(manual_dir)]
  found = [c for c in children if has_splits(c)]
  return found[0] if len(found) == 1 else None


class BrainTumorMri(folders.FolderBuilder):
  """Kaggle Brain Tumor MRI Dataset, read from a manual folder."""

  LAYOUT = LAYOUT
  DESCRIPTION = _DESCRIPTION
  HOMEPAGE = ('https://www.kaggle.com/datasets/masoudnickparvar/'
              'brain-tumor-mri-dataset')
  CITATION = _CITATION
  BUILDER_CONFIGS = [_DEFAULT_CONFIG]
  DEFAULT_CONFIG_NAME = _DEFAULT_CONFIG.name

  def _extra_features(self):
    return {'label': tfds.features.ClassLabel(names=CLASSES)}

  def _scan(self, manual_dir: str) -> dict[str, list[folders.Item]]:
    root = _find_root(manual_dir)
    if root is None:
      raise self._layout_error(
          manual_dir, 'no Training/ and Testing/ folders found (found: '
          f'{folders.visible_dirs(manual_dir)}).')
    by_lower = {n.lower(): n for n in folders.visible_dirs(root)}
    folders.note_strays(root, [by_lower[f.lower()] for _, f in _SPLIT_FOLDERS],
                        self._report.split(folders.UNASSIGNED))
    splits = {}
    for split, folder in _SPLIT_FOLDERS:
      top = os.path.join(root, by_lower[folder.lower()])
      seen = {}

      def label_of(entry: str, top=top, seen=seen) -> int:
        name = _ALIASES.get(entry.lower(), entry.lower())
        if name not in CLASSES:
          raise self._layout_error(
              manual_dir, f'unknown class folder {os.path.join(top, entry)};'
              f' expected {", ".join(CLASSES)}.')
        if name in seen:
          raise self._layout_error(
              manual_dir, f'class {name} appears twice in {top}: '
              f'{seen[name]} and {entry}.')
        seen[name] = entry
        return CLASSES.index(name)

      splits[split] = folders.scan_class_tree(
          top, root, self._report.split(split), label_of)
      missing = sorted(set(CLASSES) - set(
          _ALIASES.get(e.lower(), e.lower()) for e in seen))
      if missing:
        logging.warning('%s %s: no folder for class(es) %s in %s.', NAME,
                        split, missing, top)
    return splits


def prepare(data_dir: str | None, manual_dir: str | None, image_size: int,
            channels: int, limit: int | None) -> tfds.core.DatasetBuilder:
  """Prepares the dataset (idempotent); see `folders.prepare`.

  Args:
    data_dir: TFDS data dir; None for TFDS's default.
    manual_dir: the folder with Training/ and Testing/ (see `LAYOUT`).
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.

  Returns:
    The prepared builder.
  """
  return folders.prepare(BrainTumorMri,
                         config_for(image_size, channels, limit), data_dir,
                         manual_dir)
