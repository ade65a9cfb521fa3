"""TF-free TFDS builder of any class-per-folder image collection.

For sets such as ISIC skin lesions or chest CT slices exported as images:
`<root>/<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff}`, RGB or grayscale, any
size. With `train/` and `test/` (optionally `val/`) top folders those are the
splits; without them a seeded, per-class split holds out `test_fraction` of
the files of every class. Class names are the folder names, sorted.

A user `tag` (default: the root folder's name) prefixes the config name, so
different roots prepared in one data dir do not collide.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import zlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from medjax.data.builders import folders

NAME = 'image_folder'
# Top folder names (lower case) that mean "these are splits, not classes".
_SPLIT_ALIASES = {'train': 'train', 'training': 'train', 'test': 'test',
                  'testing': 'test', 'val': 'validation',
                  'valid': 'validation', 'validation': 'validation'}

LAYOUT = """\
Either one folder per class (split into train/test by `test_fraction`):
<manual_dir>/
  <class_a>/   img001.png  img002.jpg  ...   (sub-folders allowed)
  <class_b>/   ...
or the same under split folders (train/ required; test/, val/ optional):
<manual_dir>/
  train/
    <class_a>/  ...
    <class_b>/  ...
  test/
    <class_a>/  ...
    <class_b>/  ...
(image files: .png .jpg .jpeg .bmp .tif .tiff; class names = folder names)"""


@dataclasses.dataclass
class ImageFolderConfig(folders.FolderConfig):
  """Options of an image folder dataset.

  Attributes:
    tag: short name of the collection (letters, digits, '_', '-', '.');
      prefixes the config name.
    test_fraction: share of each class held out as `test` when the folder
      has no split folders (ignored otherwise).
    seed: seed of that split.
  """
  tag: str = 'images'
  test_fraction: float = 0.2
  seed: int = 0


def config_for(image_size: int, channels: int, limit: int | None,
               tag: str, test_fraction: float = 0.2,
               seed: int = 0) -> ImageFolderConfig:
  """The config of a variant, named like 'isic_s256_c3'.

  Args:
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    tag: collection name, the config name's prefix.
    test_fraction: held-out share per class (folders without split folders).
    seed: split seed.

  Returns:
    The config.
  """
  if not re.fullmatch(r'[A-Za-z0-9][\w.-]*', tag or ''):
    raise ValueError(f'tag must be letters, digits, _ . - (got {tag!r})')
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
  return folders.make_config(
      ImageFolderConfig, prefix=tag, image_size=image_size, channels=channels,
      limit=limit, unnamed=('tag',), tag=tag,
      test_fraction=float(test_fraction), seed=int(seed))


class ImageFolder(folders.FolderBuilder):
  """A class-per-folder image collection read from a manual folder."""

  LAYOUT = LAYOUT
  DESCRIPTION = ('A user-provided class-per-folder image collection. Class '
                 'names are the folder names, sorted; label ids follow that '
                 'order.')

  def _extra_features(self):
    # Names are set when scanning the folder (`_set_label_names`), or read
    # back from the prepared dataset's label file.
    return {'label': tfds.features.ClassLabel()}

  def _scan(self, manual_dir: str) -> dict[str, list[folders.Item]]:
    c = self.builder_config
    tops = folders.visible_dirs(manual_dir)
    split_dirs = {}
    for name in tops:
      split = _SPLIT_ALIASES.get(name.lower())
      if split is not None:
        if split in split_dirs:
          raise self._layout_error(
              manual_dir, f'two folders for split {split}: '
              f'{split_dirs[split]} and {name}.')
        split_dirs[split] = name
    if tops and len(split_dirs) == len(tops) and 'train' in split_dirs:
      return self._scan_split_folders(manual_dir, split_dirs)
    if split_dirs:
      logging.warning('%s: %s look like split folders but are read as '
                      'classes (needs train/ and only split folders).', NAME,
                      sorted(split_dirs.values()))
    if not tops:
      raise self._layout_error(manual_dir, 'no class folder found.')
    names = tops
    self._set_label_names(names)
    unassigned = self._report.split(folders.UNASSIGNED)
    items = folders.scan_class_tree(manual_dir, manual_dir, unassigned,
                                    names.index)
    splits = {'train': [], 'test': []}
    for label, name in enumerate(names):
      of_class = [i for i in items if i.label == label]
      # A per-class stream keyed by the class name: adding a class leaves
      # the split of the others unchanged.
      rng = np.random.default_rng([c.seed, zlib.crc32(name.encode())])
      order = rng.permutation(len(of_class))
      n_test = int(round(c.test_fraction * len(of_class)))
      test = set(order[:n_test].tolist())
      for index, item in enumerate(of_class):
        splits['test' if index in test else 'train'].append(item)
      if not of_class:
        logging.warning('%s: class folder %s has no image.', NAME, name)
    if not splits['test']:
      per_class = collections.Counter(names[i.label] for i in items)
      raise ValueError(
          f'{NAME}: test_fraction={c.test_fraction} sends no file to test '
          f'(files per class: {dict(per_class)}); raise it, add files, or '
          'make train/ and test/ folders.')
    self._report.notes['split_rule'] = (
        f'seeded per-class split: round({c.test_fraction} x files of a '
        f'class) to test, seed {c.seed}; by file, not by patient')
    return splits

  def _scan_split_folders(self, manual_dir: str,
                          split_dirs: dict[str, str]
                          ) -> dict[str, list[folders.Item]]:
    names = sorted({n for d in split_dirs.values() for n in
                    folders.visible_dirs(os.path.join(manual_dir, d))})
    if not names:
      raise self._layout_error(manual_dir,
                               'no class folder inside the split folders.')
    self._set_label_names(names)
    folders.note_strays(manual_dir, split_dirs.values(),
                        self._report.split(folders.UNASSIGNED))
    self._report.notes['split_rule'] = 'from the split folders ' + ', '.join(
        f'{d}/ -> {s}' for s, d in sorted(split_dirs.items()))
    return {split: folders.scan_class_tree(
        os.path.join(manual_dir, d), manual_dir, self._report.split(split),
        names.index) for split, d in sorted(split_dirs.items())}


def prepare(data_dir: str | None, manual_dir: str | None, image_size: int,
            channels: int, limit: int | None, tag: str | None = None,
            test_fraction: float = 0.2,
            seed: int = 0) -> tfds.core.DatasetBuilder:
  """Prepares an image folder dataset (idempotent); see `folders.prepare`.

  Args:
    data_dir: TFDS data dir; None for TFDS's default.
    manual_dir: the collection's root folder (see `LAYOUT`).
    image_size: side of the stored square images.
    channels: 1 or 3.
    limit: examples per split cap, or None.
    tag: collection name for the config name; default: the root's name.
    test_fraction: held-out share per class (without split folders).
    seed: split seed.

  Returns:
    The prepared builder, e.g. `image_folder/isic_s256_c3`.
  """
  if tag is None:
    tag = folders.tag_for(manual_dir, 'images')
  config = config_for(image_size, channels, limit, tag, test_fraction, seed)
  return folders.prepare(ImageFolder, config, data_dir, manual_dir)
