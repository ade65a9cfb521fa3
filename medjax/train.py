"""The training loop: mesh, data, state, resume, step, log, panels, validate,
checkpoint.

Model-specific code lives in `medjax.trainers` (the task protocol is in its
`__init__`); this loop knows nothing about models.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from medjax import checkpointing
from medjax import config_lib
from medjax import images as image_lib
from medjax import packing
from medjax import writers
from medjax.data import degradations
from medjax.data import pipeline
from medjax import trainers

CONFIG_FILE = 'config.json'
BEST_FILE = 'best.json'
PyTree = Any


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


def load_images(config: ml_collections.ConfigDict, split: str,
                batch_size: int = 64, with_labels: bool = False):
  """A whole split as uint8 (N, H, W, C), transformed as training images are.

  Args:
    config: the experiment config (its `dataset` block).
    split: the split.
    batch_size: images per device call of the transform (memory only).
    with_labels: also return the split's labels and class names.

  Returns:
    The images, on the host; with `with_labels`, (images, labels (N,),
    label names) from the same read.
  """
  transform = batch_transform(config.dataset)
  data = pipeline.load(config.dataset, split, resize=transform is None)
  images = data.images
  if transform is not None:
    # Random parts of a spec draw from a fixed key: validation is repeatable.
    fn = jax.jit(lambda x: transform(x, jax.random.key(0)))
    images = np.concatenate([np.asarray(fn(data.images[i:i + batch_size]))
                             for i in range(0, len(data.images), batch_size)])
  if with_labels:
    return images, data.labels, data.label_names
  return images


def _restore_state(directory: str, task, step: int | None
                   ) -> tuple[PyTree, int]:
  ckpt = checkpointing.Checkpointer(directory)
  step = step or ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = checkpointing.abstract_like(
      jax.eval_shape(task.init, jax.random.key(0)), sharding)
  state = ckpt.restore(step, abstract)
  ckpt.close()
  return state, step


def restore_run(workdir: str, step: int | None = None, best: bool = False,
                inference: bool = True) -> tuple[
                    ml_collections.ConfigDict, Any, PyTree, int]:
  """Loads a trained run's config and state (on one local device).

  Args:
    workdir: a training run directory (config.json, checkpoints/).
    step: checkpoint step; None for the latest.
    best: load the best-validation checkpoint (`best/`) instead.
    inference: build the task for inference only (see `trainers.get_task`).

  Returns:
    (config, task, state, step).
  """
  config = load_config(workdir)
  task = trainers.get_task(config, inference=inference)
  root = os.path.abspath(workdir)
  if best:
    if not os.path.isfile(os.path.join(root, BEST_FILE)):
      raise FileNotFoundError(f'{workdir} has no {BEST_FILE}: the run has no '
                              'validated checkpoint yet')
    state, step = _restore_state(os.path.join(root, 'best'), task, None)
  else:
    state, step = _restore_state(os.path.join(root, 'checkpoints'), task,
                                 step)
  return config, task, state, step


def make_train_step(task, transform, step_root: jax.Array,
                    replicated: NamedSharding, data_sharding: NamedSharding,
                    packer: packing.StatePacker | None = None):
  """The loop's compiled step and metric merge (also used by bench/).

  Args:
    task: the task (`medjax.trainers`).
    transform: `batch_transform(config.dataset)` or None.
    step_root: the key every step's key is folded from.
    replicated, data_sharding: the state's and the batch's shardings.
    packer: if given, the step takes and returns the state in the form the
      loop carries it (`packing.for_config`: packed, kernels OHWI).

  Returns:
    (train_step(state, batch, step, consts) -> (state, metrics), state
    donated, a partial of the jitted function (`.func`); merge(metrics,
    metrics) -> metrics).
  """

  step_state = (task.train_step if packer is None
                else packer.wrap(task.train_step))

  def step_fn(root, state, batch, step, consts):
    # The step's key is derived inside the compiled step: an eager fold_in
    # costs the host ~0.2 ms per step (bench/NOTES.md).
    rng = jax.random.fold_in(root, step)
    if transform is not None:
      batch = dict(batch, image=transform(
          batch['image'], jax.random.fold_in(rng, 1)))
    return step_state(state, batch, rng, consts)

  # The root key is an argument, not a closed-over constant: a constant is
  # read back to the host to be embedded when compiling, and would make the
  # executable depend on the seed (no compilation-cache hits across seeds).
  train_step = jax.jit(
      step_fn, in_shardings=(replicated, replicated, data_sharding,
                             replicated, replicated),
      out_shardings=(replicated, replicated), donate_argnums=1)
  # One dispatch instead of one eager op per metric field and step.
  merge = jax.jit(lambda a, b: a.merge(b))
  return functools.partial(train_step, step_root), merge


def restore_checkpoint(workdir: str, checkpoint: str | int = 'best'):
  """`restore_run` of a checkpoint chosen as the commands' flags name it.

  Args:
    workdir: a training run directory.
    checkpoint: 'best' (the best-validation checkpoint, else the latest),
      'latest', or a step number (int or digits).

  Returns:
    (config, task, state, step, kind): kind is 'best', 'latest' or
    'step N', for cards and metadata.
  """
  if checkpoint == 'best':
    config, task, state, step = restore_best_or_latest(workdir)
    kind = ('best' if os.path.isfile(os.path.join(workdir, BEST_FILE))
            else 'latest')
  elif checkpoint == 'latest':
    config, task, state, step = restore_run(workdir)
    kind = 'latest'
  else:
    config, task, state, step = restore_run(workdir, int(checkpoint))
    kind = f'step {checkpoint}'
  return config, task, state, step, kind


def restore_best_or_latest(workdir: str, inference: bool = True):
  """`restore_run` of the best checkpoint if the run has one, else latest."""
  best = os.path.isfile(os.path.join(workdir, BEST_FILE))
  return restore_run(workdir, best=best, inference=inference)


def _init_generator_from(task, state, source: str):
  """Copies G (and its BatchNorm statistics) from another run's checkpoint."""
  _, src_task, src_state, src_step = restore_best_or_latest(source)
  want = jax.tree.map(lambda x: (x.shape, x.dtype), state.g_params)
  got = jax.tree.map(lambda x: (x.shape, x.dtype), src_state.g_params)
  if want != got:
    raise ValueError(f'sr.init_from={source!r}: its generator differs from '
                     "this run's (model.sr settings must match)")
  logging.info('Generator initialised from %s (step %d).', source, src_step)
  del src_task
  return task.with_generator(state, src_state.g_params, src_state.g_stats)


def _read_best(workdir: str) -> dict | None:
  path = os.path.join(workdir, BEST_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return None


def _write_json(path: str, value: dict) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> PyTree:
  """Trains (or resumes) the configured task in `workdir`.

  Args:
    config: the experiment config.
    workdir: run directory for config.json, checkpoints/, best/ (tasks with
      validation), samples/, and the TensorBoard event files.

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
  workdir = os.path.abspath(workdir)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  task = trainers.get_task(config)
  transform = batch_transform(config.dataset)
  data = pipeline.load(config.dataset, resize=transform is None)
  logging.info('Dataset %s/%s: %d images, %s. %s', config.dataset.name,
               config.dataset.split, len(data.images), data.images.shape[1:],
               data.description.splitlines()[0] if data.description else '')
  if hasattr(task, 'check_data'):
    task.check_data(data.labels, data.label_names)
  iterator = pipeline.DevicePrefetch(
      pipeline.make_iterator(data, config.batch_size, config.seed,
                             jax.process_index(), jax.process_count()),
      functools.partial(pipeline.to_global, sharding=data_sharding),
      config.device_prefetch)
  # Validation images; tasks without validation may still want fixed images
  # for their panels (`visual_split`).
  eval_images = None
  # Tasks without validation (StarGAN) have no `evaluate`.
  evaluate = getattr(task, 'evaluate', None)
  visual_inputs = task.visual_inputs
  split = task.eval_split or getattr(task, 'visual_split', None)
  if split:
    if getattr(task, 'eval_needs_labels', False):
      eval_images, eval_labels, _ = load_images(config, split,
                                                with_labels=True)
      evaluate = functools.partial(task.evaluate, labels=eval_labels)
      visual_inputs = functools.partial(task.visual_inputs,
                                        labels=eval_labels)
    else:
      eval_images = load_images(config, split)
    logging.info('%s: %s/%s, %d images.',
                 'Validation' if task.eval_split else 'Panel images',
                 config.dataset.name, split, len(eval_images))

  init_rng, step_root, sample_rng = jax.random.split(
      jax.random.key(config.seed), 3)
  # Init runs once; on a CPU, XLA's backend optimisations cost its compile
  # 3-7 s (DCGAN 5.3 -> 1.2 s without them, 2-core EPYC) and buy nothing.
  # The draws then differ from an optimised compile's by rounding only
  # (<= 1.5e-7 of each leaf's largest value in six configs).
  init = jax.jit(task.init, out_shardings=replicated,
                 compiler_options={'xla_backend_optimization_level': 0}
                 if jax.default_backend() == 'cpu' else None)
  # Written only once data and model are known to build, so a run that fails
  # at set-up leaves no config behind that would lock the workdir.
  write_config(config, workdir)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
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
    if getattr(task, 'init_from', ''):
      state = jax.device_put(
          _init_generator_from(task, state, task.init_from), replicated)
    logging.info('Starting from scratch in %s.', workdir)

  # With `config.pack_state` the loop carries the state packed: one array per
  # dtype crosses each step call instead of hundreds of leaves; with
  # `state_kernel_layout='ohwi'`, convolution kernels output channel first.
  packer = packing.for_config(config, state)
  if packer:
    loop_state = jax.jit(packer.pack, out_shardings=replicated)(state)
    unpack = jax.jit(packer.unpack, out_shardings=replicated)
  else:
    loop_state, unpack = state, lambda s: s
  del state  # Only the loop's copy stays on the devices.
  train_step, merge_metrics = make_train_step(
      task, transform, step_root, replicated, data_sharding, packer)
  consts = jax.device_put(task.consts(), replicated)
  visuals = jax.jit(task.visuals, out_shardings=replicated)
  visual_inputs = jax.device_put(visual_inputs(sample_rng, eval_images),
                                 replicated)

  writer = writers.create_default_writer(workdir, just_logging=not is_chief)
  if start == 0:
    writer.write_hparams(config_lib.flatten(config))
  progress = writers.ReportProgress(config.num_train_steps, writer)

  def write_visuals(step, state):
    for name, batch in visuals(state, visual_inputs).items():
      grid = image_lib.make_grid(np.asarray(batch), task.visual_columns)
      if is_chief:
        stem = f'step_{step:07d}.png' if name == 'samples' else (
            f'{name}_step_{step:07d}.png')
        image_lib.save_png(grid, os.path.join(workdir, 'samples', stem))
        writer.write_images(step, {name: grid})

  best = _read_best(workdir) if task.best_metric else None
  best_ckpt = None

  def validate(step, state):
    nonlocal best, best_ckpt
    values = evaluate(state, eval_images)
    writer.write_scalars(step, {f'val/{k}': v for k, v in values.items()})
    logging.info('Validation at step %d: %s', step, ', '.join(
        f'{k}={v:.4f}' for k, v in sorted(values.items())))
    if not task.best_metric:
      return
    value = values[task.best_metric]
    if best is None or value > best['value']:
      if best_ckpt is None:
        best_ckpt = checkpointing.Checkpointer(
            os.path.join(workdir, 'best'), max_to_keep=1)
      best_ckpt.save(step, state, iterator)
      best_ckpt.wait()  # best.json only names a complete checkpoint.
      best = {'metric': task.best_metric, 'value': value, 'step': step,
              'split': task.eval_split, 'values': values}
      if is_chief:
        _write_json(os.path.join(workdir, BEST_FILE), best)
      logging.info('New best %s %.4f at step %d (kept in best/).',
                   task.best_metric, value, step)

  if start >= config.num_train_steps:
    logging.info('Nothing to do: already trained %d of %d steps.', start,
                 config.num_train_steps)
  train_metrics = None
  t_first = time.perf_counter()
  for step in range(start + 1, config.num_train_steps + 1):
    batch = next(iterator)
    loop_state, step_metrics = train_step(loop_state, batch, step, consts)
    train_metrics = (step_metrics if train_metrics is None
                     else merge_metrics(train_metrics, step_metrics))
    if step == start + 1:
      jax.block_until_ready(step_metrics)
      logging.info('First step (with compilation) took %.1fs.',
                   time.perf_counter() - t_first)
      progress.start(step)
    last = step == config.num_train_steps
    if step % config.log_every_steps == 0 or last:
      scalars = {k: float(v) for k, v in train_metrics.compute().items()}
      writer.write_scalars(step, scalars)
      progress(step, scalars)
      train_metrics = None
    sample = step % config.sample_every_steps == 0
    check = task.eval_split and (step % config.eval_every_steps == 0 or last)
    save = step % config.checkpoint_every_steps == 0 or last
    if sample or check or save:
      state = unpack(loop_state)
      if sample:
        write_visuals(step, state)
      if check:
        validate(step, state)
      if save:
        ckpt.save(step, state, iterator)
      del state  # Not kept on the devices beside the loop's copy.
  state = unpack(loop_state)
  if start < config.num_train_steps and (
      config.num_train_steps % config.sample_every_steps):
    write_visuals(config.num_train_steps, state)
  ckpt.wait()
  ckpt.close()
  iterator.close()  # After the checkpoints have its position.
  if best_ckpt is not None:
    best_ckpt.close()
  writer.flush()
  writer.close()
  return state
