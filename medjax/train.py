"""The training loop: mesh, data, state, resume, step, log, sample, checkpoint.

Model-specific code lives in `medjax.trainers`; this loop only needs a task
with `init`, `train_step`, `sample_latents` and `generate`.
"""

from __future__ import annotations

import os
import time

from absl import logging
from etils import epath
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from medjax import checkpointing
from medjax import config_lib
from medjax import images as image_lib
from medjax import writers
from medjax.data import degradations
from medjax.data import pipeline
from medjax.trainers import gan

CONFIG_FILE = 'config.json'


def make_mesh() -> Mesh:
  """A 1-D mesh over every device, axis 'data'."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that holds another experiment.

  Args:
    config: the config of this run.
    workdir: the run directory.

  Raises:
    ValueError: if the workdir belongs to another experiment.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if path.exists():
    saved = config_lib.from_json(path.read_text())
    if diffs := config_lib.experiment_differences(saved, config):
      raise ValueError(
          f'workdir {workdir} holds another experiment (its {CONFIG_FILE} '
          f'differs in: {"; ".join(diffs)}). Use a new --workdir, or the '
          'same config to resume.')
  elif (epath.Path(workdir) / 'checkpoints').exists():
    raise ValueError(f'workdir {workdir} has checkpoints but no {CONFIG_FILE}:'
                     ' it was not written by this medjax run; use a new '
                     '--workdir')


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Records the run's config in the workdir (atomically, process 0 only)."""
  if jax.process_index() == 0:
    path = epath.Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'{CONFIG_FILE}.tmp'
    tmp.write_text(config_lib.to_json(config))
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with, read from its workdir."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: --workdir must be a medjax '
                            'training run directory')
  return config_lib.from_json(path.read_text())


def batch_transform(dataset: ml_collections.ConfigDict):
  """The on-device transform of training images, or None.

  With `dataset.degradation` set, batches arrive at the stored size; the spec
  runs on them and the result is resized (area) to `dataset.image_size`.
  """
  if not dataset.degradation:
    return None
  degrade = degradations.get(dataset.degradation)
  size = (dataset.image_size, dataset.image_size)

  def transform(images, rng):
    images = degrade(images, rng)
    if images.shape[1:3] != size:
      images = degradations.resize(images, size, 'area')
    return images
  return transform


def restore_run(workdir: str, step: int | None = None
                ) -> tuple[ml_collections.ConfigDict, gan.GANTask, gan.GANState,
                           int]:
  """Loads a trained run's config and state (on one local device).

  Args:
    workdir: a training run directory (config.json, checkpoints/).
    step: checkpoint step; None for the latest.

  Returns:
    (config, task, state, step).
  """
  config = load_config(workdir)
  task = gan.GANTask(config)
  ckpt = checkpointing.Checkpointer(
      os.path.join(os.path.abspath(workdir), 'checkpoints'))
  step = step or ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {ckpt.directory}')
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = checkpointing.abstract_like(
      jax.eval_shape(task.init, jax.random.key(0)), sharding)
  state = ckpt.restore(step, abstract)
  ckpt.close()
  return config, task, state, step


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> gan.GANState:
  """Trains (or resumes) the configured GAN in `workdir`.

  Args:
    config: the experiment config.
    workdir: run directory for config.json, checkpoints/, samples/, and the
      TensorBoard event files.

  Returns:
    The final train state.
  """
  config_lib.validate(config)
  n_dev = jax.device_count()
  if config.batch_size % n_dev:
    raise ValueError(f'batch_size={config.batch_size} must be divisible by '
                     f'the {n_dev} devices')
  check_workdir(config, workdir)
  is_chief = jax.process_index() == 0

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  transform = batch_transform(config.dataset)
  data = pipeline.load(config.dataset, resize=transform is None)
  logging.info('Dataset %s/%s: %d images, %s. %s', config.dataset.name,
               config.dataset.split, len(data.images), data.images.shape[1:],
               data.description.splitlines()[0] if data.description else '')
  iterator = pipeline.make_iterator(
      data, config.batch_size, config.seed, jax.process_index(),
      jax.process_count())

  task = gan.GANTask(config)
  init_rng, step_root, sample_rng = jax.random.split(
      jax.random.key(config.seed), 3)
  init = jax.jit(task.init, out_shardings=replicated)
  # Written only once data and model are known to build, so a run that fails
  # at set-up leaves no config behind that would lock the workdir.
  write_config(config, workdir)
  ckpt = checkpointing.Checkpointer(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      config.keep_checkpoints)
  start = ckpt.latest_step() or 0
  if start:
    abstract = checkpointing.abstract_like(
        jax.eval_shape(task.init, init_rng), replicated)
    state = ckpt.restore(start, abstract, iterator)
    logging.info('Resumed from the checkpoint at step %d in %s: parameters, '
                 'optimizer state, RNG and data iterator position restored.',
                 start, ckpt.directory)
  else:
    state = init(init_rng)
    logging.info('Starting from scratch in %s.', workdir)

  def step_fn(state, batch, rng):
    if transform is not None:
      batch = dict(batch, image=transform(
          batch['image'], jax.random.fold_in(rng, 1)))
    return task.train_step(state, batch, rng)

  train_step = jax.jit(
      step_fn, in_shardings=(replicated, data_sharding, replicated),
      out_shardings=(replicated, replicated), donate_argnums=0)
  generate = jax.jit(task.generate, out_shardings=replicated)
  fixed_z = jax.device_put(
      task.sample_latents(sample_rng, config.num_sample_images), replicated)

  writer = writers.create_default_writer(workdir, just_logging=not is_chief)
  if start == 0:
    writer.write_hparams(config_lib.flatten(config))
  progress = writers.ReportProgress(config.num_train_steps, writer)

  def write_samples(step):
    grid = image_lib.make_grid(np.asarray(gan.to_uint8(
        generate(state.g_params, state.g_stats, fixed_z))))
    if is_chief:
      image_lib.save_png(grid, os.path.join(workdir, 'samples',
                                            f'step_{step:07d}.png'))
      writer.write_images(step, {'samples': grid})

  if start >= config.num_train_steps:
    logging.info('Nothing to do: already trained %d of %d steps.', start,
                 config.num_train_steps)
  train_metrics = None
  t_first = time.perf_counter()
  for step in range(start + 1, config.num_train_steps + 1):
    batch = pipeline.to_global(next(iterator), data_sharding)
    state, step_metrics = train_step(state, batch,
                                     jax.random.fold_in(step_root, step))
    train_metrics = (step_metrics if train_metrics is None
                     else train_metrics.merge(step_metrics))
    if step == start + 1:
      jax.block_until_ready(step_metrics)
      logging.info('First step (with compilation) took %.1fs.',
                   time.perf_counter() - t_first)
      progress.start(step)
    if step % config.log_every_steps == 0 or step == config.num_train_steps:
      scalars = {k: float(v) for k, v in train_metrics.compute().items()}
      writer.write_scalars(step, scalars)
      progress(step, scalars)
      train_metrics = None
    if step % config.sample_every_steps == 0:
      write_samples(step)
    if (step % config.checkpoint_every_steps == 0
        or step == config.num_train_steps):
      ckpt.save(step, state, iterator)
  if start < config.num_train_steps and (
      config.num_train_steps % config.sample_every_steps):
    write_samples(config.num_train_steps)
  ckpt.wait()
  ckpt.close()
  writer.flush()
  writer.close()
  return state
