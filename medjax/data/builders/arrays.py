"""Writes image arrays held in memory as a new TFDS dataset (TF-free).

Used by commands that derive a dataset from another (`medjax.degrade`; later
restoration and synthetic-sample export). The dataset is written in
array_record with zlib-encoded uint8 tensors, like every medjax dataset, and
read back by name with `tfds.builder(name, data_dir=...)`, which needs no
registered class (TFDS rebuilds a read-only builder from the files). What made
it (preset, source, seed, ...) goes into `info.metadata`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from medjax.data.builders import tfds_utils

_NAME = re.compile(r'^[a-z][a-z0-9_]*$')


def write(name: str, data_dir: str | None,
          splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
          label_names: tuple[str, ...], description: str,
          metadata: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
  """Writes `splits` as the TFDS dataset `name` in `data_dir`.

  Args:
    name: snake_case dataset name; must not exist yet in `data_dir`.
    data_dir: TFDS data dir (None: TFDS's default).
    splits: split name -> (images uint8 (N, H, W, C), labels int (N,)); all
      splits share one image shape.
    label_names: class names ('label' feature); () for unlabelled data.
    description: the dataset's description.
    metadata: JSON-serialisable facts about how it was made.

  Returns:
    The prepared builder.
  """
  if not _NAME.match(name):
    raise ValueError(f'dataset name {name!r} must be snake_case '
                     '([a-z][a-z0-9_]*)')
  shapes = {v[0].shape[1:] for v in splits.values()}
  if len(shapes) != 1:
    raise ValueError(f'all splits must share one image shape, got {shapes}')
  (shape,) = shapes
  features = {'image': tfds.features.Tensor(
      shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB),
              'index': tfds.features.Scalar(np.int64)}
  if label_names:
    features['label'] = tfds.features.ClassLabel(names=list(label_names))

  class _Arrays(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=description,
          features=tfds.features.FeaturesDict(features),
          metadata=tfds.core.MetadataDict(metadata))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {k: self._generate_examples(k) for k in splits}

    def _generate_examples(self, split):
      images, labels = splits[split]
      for i, image in enumerate(images):
        example = {'image': image, 'index': i}
        if label_names:
          example['label'] = int(labels[i])
        yield i, example

  _Arrays.name = name
  with tfds_utils.no_leftover_tempdirs():
    builder = _Arrays(data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    raise FileExistsError(f'{builder.data_dir} exists: choose another name '
                          'or delete it first')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
