"""Helpers shared by medjax's TFDS builders."""

import contextlib
import os
import tempfile
import time
from typing import Iterator

from absl import logging
import tensorflow_datasets as tfds

# An `incomplete.*` folder untouched this long is a killed run's leftover,
# not a preparation in progress elsewhere.
STALE_S = 3600.0


def remove_stale_incomplete(builder: tfds.core.DatasetBuilder) -> None:
  """Deletes `incomplete.*` folders left by killed preparations.

  TFDS writes into `incomplete.*` and renames it when complete, so a killed
  preparation never reads as prepared; this only reclaims the space. Younger
  folders get a warning: another process may be preparing the same dataset.
  """
  config_dir = builder.data_path.parent
  if not config_dir.exists():
    return
  now = time.time()
  for path in config_dir.glob('incomplete.*'):
    age = now - os.path.getmtime(path)
    if age > STALE_S:
      logging.warning('Removing %s, left by an interrupted preparation %.1f h '
                      'ago.', path, age / 3600)
      path.rmtree(missing_ok=True)
    else:
      logging.warning('%s exists: another process may be preparing the same '
                      'dataset right now.', path)


@contextlib.contextmanager
def no_leftover_tempdirs() -> Iterator[None]:
  """Points `tempfile` at a folder that is removed on exit.

  Constructing a TFDS builder whose dataset is not prepared yet calls
  `DatasetInfo.initialize_from_bucket`, which makes a `tempfile.mkdtemp`
  folder and never removes it (tensorflow-datasets 4.9): one empty
  `/tmp/tmp*tfds` per preparation. Wrap builder construction in this.
  """
  saved = tempfile.tempdir
  with tempfile.TemporaryDirectory(prefix='medjax_tfds_') as folder:
    tempfile.tempdir = folder
    try:
      yield
    finally:
      tempfile.tempdir = saved
