r"""Writes a degraded copy of a dataset as a new TFDS dataset.

  python -m medjax.degrade --config=configs/dcgan_brain.py \
    --preset=primary --name=mni_brain_phantom_primary

The source is the config's `dataset` block (name, data dir, phantom sizes,
detail filter; `--config.dataset.*` overrides work), read at its stored size.
The preset (`medjax.data.degradations`) runs on device in batches; the new
dataset keeps the labels and records the preset, source and seed in its
metadata, so the study's datasets (original / primary / repaired) can be
trained side by side: `--config.dataset.name=mni_brain_phantom_primary`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medjax.data import degradations
from medjax.data import pipeline
from medjax.data.builders import arrays

def _define_flags():
  """Defined only when run as a command, so that the module imports
  cleanly beside other commands (absl flags are global)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config whose `dataset` is the source.',
      lock_config=True)
  flags.DEFINE_string('preset', None, 'Degradation spec, e.g. primary '
                      'or "x4_bicubic+rician(0.02)".')
  flags.DEFINE_string('name', None, 'Name of the new dataset.')
  flags.DEFINE_list('splits', None, 'Splits to copy; default all.')
  flags.DEFINE_integer('seed', 0, 'Seed of random degradations.')
  flags.DEFINE_integer('batch_size', 64, 'Images per device call.')
  flags.mark_flags_as_required(['config', 'preset', 'name'])


def degrade_dataset(dataset: ml_collections.ConfigDict, spec: str, name: str,
                    splits: list[str] | None = None, seed: int = 0,
                    batch_size: int = 64):
  """Degrades every image of `splits` and writes dataset `name`.

  Args:
    dataset: the source `config.dataset` block.
    spec: degradation spec for `degradations.get`.
    name: the new dataset's name (written to the source's data dir).
    splits: splits to copy; None for all of the source's.
    seed: seed of the random parts (noise); image i of a split always gets
      the key fold_in(fold_in(key(seed), split), i).
    batch_size: images per device call (memory only; not the result).

  Returns:
    The prepared builder of the new dataset.
  """
  degrade = jax.jit(jax.vmap(
      lambda image, key: degradations.get(spec)(image[None], key)[0]))
  _, builder = pipeline.data_source(dataset, dataset.split)
  splits = splits or sorted(builder.info.splits)
  out, names = {}, ()
  for split_id, split in enumerate(splits):
    data = pipeline.load(dataset, split, resize=False)
    names = data.label_names
    root = jax.random.fold_in(jax.random.key(seed), split_id)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(
        jnp.arange(len(data.images)))
    chunks = [np.asarray(degrade(jnp.asarray(data.images[i:i + batch_size]),
                                 keys[i:i + batch_size]))
              for i in range(0, len(data.images), batch_size)]
    out[split] = (np.concatenate(chunks), data.labels)
    logging.info('Degraded %s/%s: %d images %s -> %s.', dataset.name, split,
                 len(data.images), data.images.shape[1:], out[split][0].shape[1:])
  description = (f'{dataset.name} degraded on device with '
                 f'"{degradations.describe(spec)}" (medjax.degrade).')
  metadata = {'source': dataset.name, 'preset': spec,
              'preset_description': degradations.describe(spec),
              'seed': seed, 'splits': list(splits),
              'source_dataset_config': dataset.to_dict()}
  return arrays.write(name, dataset.data_dir or None, out, names, description,
                      metadata)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  builder = degrade_dataset(f.config.dataset, f.preset, f.name, f.splits,
                            f.seed, f.batch_size)
  logging.info('Wrote %s to %s.', builder.info.full_name, builder.data_dir)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
