r"""Applies a trained restoration model to a whole dataset; writes a new one.

  python -m medjax.restore --workdir=runs/srgan_deblur_brain \
    --dataset=mni_brain_phantom_primary --out=mni_brain_phantom_primary_deblurred

reads every split of `--dataset` (or one: `--dataset=NAME/test`) from the
run's TFDS data dir (`--data_dir` to override) at its stored size, restores
each image with the run's generator (best validation checkpoint by default)
in batches sharded over the local devices, and writes the results as the TFDS
dataset `--out` beside it, labels kept; its metadata records the run, the
checkpoint step and kind, and the source dataset.

Images of any size (SRResNet/SRGAN): the generator is fully convolutional, so
an image is restored whole when it fits `--tile` (in input pixels); a larger
one is cut
into tiles of `--tile` plus a margin on every side that is at least the
network's receptive-field radius (`receptive_field_radius`), each tile is
restored, and only its centre (which saw the same context as in the whole
image) is kept. Tiles never extend past the image (those at the border are
shifted inwards), so the result equals restoring the whole image, without
seams, up to float rounding. A Pix2Pix U-Net has a global receptive field:
its images are restored whole (their side must divide by 2**num_downs).
"""

from __future__ import annotations

import math
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from medjax import train
from medjax.data import pipeline
from medjax.data.builders import arrays
from medjax.trainers import adversarial
from medjax.trainers import sr as sr_lib


def receptive_field_radius(num_blocks: int, scale: int) -> float:
  """Receptive-field radius of SRResNet, in input pixels.

  head 9x9 (4) + two 3x3 per residual block + trunk 3x3 (1) + one 3x3 per
  upsampling stage at 1, 2, 4... times the input resolution + tail 9x9 at
  `scale` times it.
  """
  stages = scale.bit_length() - 1
  return 4 + 2 * num_blocks + 1 + sum(1 / 2**i for i in range(stages)) + (
      4 / scale)


def _windows(size: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
  """(crop start, core start, core end) along one axis."""
  if size <= tile + 2 * margin:
    return [(0, 0, size)]
  out = []
  for core in range(0, size, tile):
    end = min(core + tile, size)
    start = min(max(core - margin, 0), size - (tile + 2 * margin))
    out.append((start, core, end))
  return out


def restore_images(fn, images: np.ndarray, scale: int, tile: int,
                   margin: int, batch_size: int) -> np.ndarray:
  """Restores uint8 images (N, h, w, C) in batches, tiled when large.

  Args:
    fn: uint8 (B, th, tw, C) -> uint8 (B, scale*th, scale*tw, C).
    images: the inputs.
    scale: output / input size.
    tile: core tile size in input pixels.
    margin: context kept around each tile (>= the receptive-field radius).
    batch_size: tiles per call.

  Returns:
    uint8 (N, scale*h, scale*w, C).
  """
  n, h, w, c = images.shape
  out = np.empty((n, h * scale, w * scale, c), np.uint8)
  wy, wx = _windows(h, tile, margin), _windows(w, tile, margin)
  for ys, y0, y1 in wy:
    for xs, x0, x1 in wx:
      th = h if len(wy) == 1 else tile + 2 * margin
      tw = w if len(wx) == 1 else tile + 2 * margin
      crops = images[:, ys:ys + th, xs:xs + tw]
      res = np.concatenate([np.asarray(fn(crops[i:i + batch_size]))
                            for i in range(0, n, batch_size)])
      out[:, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = res[
          :, (y0 - ys) * scale:(y1 - ys) * scale,
          (x0 - xs) * scale:(x1 - xs) * scale]
  return out


def _sharded(task, state):
  """The generator as a function of a batch sharded over local devices."""
  devices = np.asarray(jax.local_devices())
  mesh = Mesh(devices, ('data',))
  data = NamedSharding(mesh, P('data'))
  rep = NamedSharding(mesh, P())
  params = jax.device_put(
      (adversarial.sampling_params(state), state.g_stats), rep)
  apply = jax.jit(lambda p, x: task.restore(p[0], p[1], x),
                  in_shardings=(rep, data), out_shardings=data)

  def fn(batch):
    pad = -len(batch) % len(devices)
    if pad:
      batch = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)])
    out = apply(params, batch)
    return np.asarray(out)[:len(out) - pad]
  return fn


def restore_dataset(workdir: str, dataset: str, out: str,
                    data_dir: str | None = None, checkpoint: str = 'best',
                    tile: int = 256, batch_size: int = 8):
  """Restores every image of `dataset` with the run in `workdir`.

  Args:
    workdir: a trained SR run.
    dataset: 'NAME' (all splits) or 'NAME/SPLIT'.
    out: the new dataset's name.
    data_dir: TFDS data dir of input and output; default the run's.
    checkpoint: 'best' (else latest), 'latest' or a step number.
    tile: largest image side restored whole, and the tile core size beyond.
    batch_size: images (tiles) per device call.

  Returns:
    The prepared builder of the new dataset.
  """
  config, task, state, step, kind = train.restore_checkpoint(workdir,
                                                             checkpoint)
  if not isinstance(task, sr_lib.SRTask):
    raise ValueError(f'{workdir} is a {config.model.name!r} run, not a '
                     'restoration run (srresnet, srgan)')
  name, _, only = dataset.partition('/')
  ds = config.dataset.copy_and_resolve_references()
  with ds.unlocked():
    ds.name = name
    ds.degradation = ''
    if data_dir is not None:
      ds.data_dir = data_dir
    ds.detail_filter.min_score = None
    ds.detail_filter.keep_top = None
  splits = [only] if only else sorted(_splits(ds))
  if task.paired_d:
    # A U-Net sees the whole image (its bottleneck is 1x1): tiles would
    # change the result, so images are restored whole.
    tile, margin = 1 << 30, 0
  else:
    margin = math.ceil(receptive_field_radius(config.model.sr.num_blocks,
                                              task.scale))
  fn = _sharded(task, state)
  result, names = {}, ()
  for split in splits:
    data = pipeline.load(ds, split, resize=False)
    names = data.label_names
    if data.images.shape[-1] != task.channels:
      raise ValueError(f'{name}/{split} has {data.images.shape[-1]} channels;'
                       f' the model restores {task.channels}')
    result[split] = (restore_images(fn, data.images, task.scale, tile, margin,
                                    batch_size), data.labels)
  description = (
      f'{name} restored by a medjax {config.model.name} model '
      f'(x{task.scale}) from {os.path.abspath(workdir)}, {kind} checkpoint, '
      f'step {step} (medjax.restore).')
  metadata = {'source': name, 'splits': splits,
              'workdir': os.path.abspath(workdir), 'model': config.model.name,
              'checkpoint': kind, 'step': int(step), 'scale': task.scale,
              'tile': tile, 'margin': margin,
              'run_config': config.to_dict()}
  return arrays.write(out, ds.data_dir or None, result, names, description,
                      metadata)


def _splits(ds) -> list[str]:
  """Split names of a prepared dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(ds.name, data_dir=ds.data_dir or None)
  except Exception as e:  # TFDS raises several types for unknown names.
    raise ValueError(f'dataset {ds.name!r} not found in '
                     f'{ds.data_dir or "the TFDS data dir"}: {e}') from e
  if not builder.is_prepared():
    raise FileNotFoundError(f'dataset {ds.name!r} is not prepared in '
                            f'{builder.data_dir}')
  return list(builder.info.splits)


def _define_flags():
  """Defined only when run as a command (absl flags are global)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A trained SR run.')
  flags.DEFINE_string('dataset', None, "Input: 'NAME' or 'NAME/SPLIT'.")
  flags.DEFINE_string('out', None, 'Name of the new dataset.')
  flags.DEFINE_string('data_dir', None, 'TFDS data dir; default the run\'s.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
  flags.DEFINE_integer('tile', 256, 'Tile core size in input pixels.')
  flags.DEFINE_integer('batch_size', 8, 'Images (tiles) per device call.')
  flags.mark_flags_as_required(['workdir', 'dataset', 'out'])


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  builder = restore_dataset(f.workdir, f.dataset, f.out, f.data_dir,
                            f.checkpoint, f.tile, f.batch_size)
  logging.info('Wrote %s to %s.', builder.info.full_name, builder.data_dir)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
