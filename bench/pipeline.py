r"""Times the real input pipeline, alone and feeding the train step.

  python bench/pipeline.py --config=configs/dcgan_brain.py --batch_size=128
  python bench/pipeline.py --config=configs/srresnet_brain.py --batch_size=16
  # any config key, as for medjax.main (e.g. a tiny run):
  python bench/pipeline.py --config=configs/dcgan_brain.py --batch_size=8 \
    --config.dataset.phantom.image_size=32 --config.dataset.phantom.num_train=24

The data, iterator, mesh, shardings, on-device transform and jitted step are
built as `medjax.train.train_and_evaluate` builds them (the prepared TFDS
split read into memory by `medjax.data.pipeline.load`, grain batches from
`pipeline.make_iterator`, `pipeline.to_global` onto the 'data' sharding, the
step jitted with the same shardings and donation). Measurements, one JSON
line each, then a short table:

  host       images/s of the grain iterator alone (`next`), after
             --host_warmup batches, over --host_batches, with the grain
             worker threads / prefetch buffer it was built with (the
             pipeline's own unless --host_threads sweeps them); also with
             `to_global` + block_until_ready (the host-to-device copy).
  step       the train step fed the way train.py's loop feeds it, per
             source: `synthetic` (one fixed batch already on the device),
             `real` (train.py's `pipeline.DevicePrefetch` over the grain
             iterator: `device_prefetch` batches read and put on the device
             ahead by a background thread, the config's, 2 by default;
             `--config.device_prefetch=K` sets it), and where that is above
             0 also `real_unprefetched` (each batch read and put on the
             loop's thread when the step asks for it, for comparison).
             `host_next_ms` is the loop's wait in next(), `host_put_ms`
             the put's time wherever it ran.
             Each loop also does train.py's per-step metric merge;
             timed from the first to the last step's result.
             `load_s` is the time to read the split into memory on
             `read_threads` threads (--read_threads; default the
             pipeline's own).
  end_to_end real / synthetic step time, compile time (lower + compile of
             the step), XLA's memory analysis of the step, and peak memory:
             device `memory_stats()` where there is one (GPU), else this
             process's peak RSS (`ru_maxrss`, CPU: the whole process).

--repeats R alternates the sources R times (helps on a loaded machine); the
row's step_ms is the median. Every row records `loadavg`. Runs on CPU and GPU;
imports nothing that needs TensorFlow. Record results with the device and
date in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Iterator

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position

from medjax import config_lib  # pylint: disable=wrong-import-position
from medjax import packing  # pylint: disable=wrong-import-position
from medjax import train  # pylint: disable=wrong-import-position
from medjax import trainers  # pylint: disable=wrong-import-position
from medjax.data import pipeline  # pylint: disable=wrong-import-position

SOURCES = ('synthetic', 'real', 'real_unprefetched')


class Setup:
  """What train.train_and_evaluate builds before its training loop."""

  def __init__(self, config):
    config_lib.validate(config)
    if config.batch_size % jax.device_count():
      raise ValueError(f'batch_size={config.batch_size} must be divisible by '
                       f'the {jax.device_count()} devices')
    self.config = config
    mesh = train.make_mesh()
    self.replicated = NamedSharding(mesh, P())
    self.data_sharding = NamedSharding(mesh, P('data'))
    self.task = task = trainers.get_task(config)
    transform = train.batch_transform(config.dataset)
    t = time.perf_counter()
    self.data = pipeline.load(config.dataset, resize=transform is None)
    self.load_s = time.perf_counter() - t
    init_rng, self.step_root, _ = jax.random.split(
        jax.random.key(config.seed), 3)
    self.state = jax.jit(task.init, out_shardings=self.replicated)(init_rng)
    packer = packing.for_config(config, self.state)
    if packer:  # As train_and_evaluate carries it.
      self.state = jax.jit(packer.pack, out_shardings=self.replicated)(
          self.state)

    # train_and_evaluate's compiled step and metric merge.
    self.train_step, self.merge = train.make_train_step(
        task, transform, self.step_root, self.replicated, self.data_sharding,
        packer)
    self.consts = jax.device_put(task.consts(), self.replicated)
    self.step = 0

  def iterator(self, num_threads=None, prefetch_buffer_size=None):
    """`pipeline.make_iterator` as train.py calls it (this process's slice)."""
    return pipeline.make_iterator(
        self.data, self.config.batch_size, self.config.seed,
        jax.process_index(), jax.process_count(), num_threads=num_threads,
        prefetch_buffer_size=prefetch_buffer_size)


def measure_host(setup: Setup, batches: int, warmup: int,
                 num_threads: int | None = None,
                 prefetch_buffer_size: int | None = None) -> dict[str, Any]:
  """images/s of the grain iterator alone, and with the copy to the device."""
  threads = pipeline.NUM_THREADS if num_threads is None else num_threads
  buffer = (pipeline.PREFETCH_BUFFER_SIZE if prefetch_buffer_size is None
            else prefetch_buffer_size)
  it = setup.iterator(threads, buffer)
  for _ in range(warmup):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  host_s = (time.perf_counter() - t) / batches
  t = time.perf_counter()
  for _ in range(batches):
    out = pipeline.to_global(next(it), setup.data_sharding)
  jax.block_until_ready(out)
  put_s = (time.perf_counter() - t) / batches
  b = setup.config.batch_size
  image = batch['image']
  return {
      'bench': 'pipeline', 'measure': 'host',
      'dataset': f'{setup.config.dataset.name}/{setup.config.dataset.split}',
      'num_images': len(setup.data.images),
      'batch_shape': list(image.shape), 'batch_mb': image.nbytes / 2**20,
      'load_s': setup.load_s, 'read_threads': pipeline.READ_THREADS,
      'grain_num_threads': threads,
      'grain_prefetch_buffer_size': buffer,
      'pipeline_defaults': threads == pipeline.NUM_THREADS
                           and buffer == pipeline.PREFETCH_BUFFER_SIZE,
      'batches': batches, 'warmup': warmup,
      'images_per_s': b / host_s, 'batch_ms': 1e3 * host_s,
      'to_device_images_per_s': b / put_s, 'to_device_batch_ms': 1e3 * put_s,
  }


def _feed(setup: Setup, source: str, fixed):
  """An endless iterator of global batches, and its (next, put) timers.

  `real` reads as train.py's loop does: `pipeline.DevicePrefetch` over the
  grain iterator with the config's `device_prefetch`; `real_unprefetched`
  the same with none (each batch put when the step asks for it).
  """
  timers = {'next': 0.0, 'put': 0.0}
  if source == 'synthetic':
    def fixed_batches():
      while True:
        yield fixed
    return fixed_batches(), timers

  def put(host):
    t = time.perf_counter()
    batch = pipeline.to_global(host, setup.data_sharding)
    timers['put'] += time.perf_counter() - t
    return batch
  size = setup.config.device_prefetch if source == 'real' else 0
  it = pipeline.DevicePrefetch(setup.iterator(), put, size)

  def timed_next():
    while True:
      t = time.perf_counter()
      batch = next(it)
      timers['next'] += time.perf_counter() - t  # Unprefetched: + put.
      yield batch
  return timed_next(), timers


def run_steps(setup: Setup, batches: Iterator, n: int) -> tuple[float, float]:
  """n steps of train.py's loop body; (wall seconds, host loop seconds)."""
  metrics = None
  t = time.perf_counter()
  for _ in range(n):
    setup.step += 1
    batch = next(batches)
    setup.state, step_metrics = setup.train_step(
        setup.state, batch, setup.step, setup.consts)
    metrics = (step_metrics if metrics is None
               else setup.merge(metrics, step_metrics))
  loop_s = time.perf_counter() - t
  jax.block_until_ready((setup.state, metrics))
  return time.perf_counter() - t, loop_s


def synthetic_batch(setup: Setup) -> dict[str, jax.Array]:
  """A fixed batch like the pipeline's (random images), on the devices."""
  host = next(setup.iterator())
  rng = np.random.default_rng(0)
  host = dict(host, image=rng.integers(0, 256, host['image'].shape,
                                       host['image'].dtype))
  return jax.block_until_ready(pipeline.to_global(host, setup.data_sharding))


def measure_steps(setup: Setup, steps: int, warmup: int, repeats: int = 1
                  ) -> list[dict[str, Any]]:
  """Step rows (one per source) and the end_to_end summary row."""
  fixed = synthetic_batch(setup)
  compiled, compile_s, flops, memory = benchlib.compile_timed(
      setup.train_step.func, *setup.train_step.args, setup.state, fixed, 1,
      setup.consts)
  del compiled  # setup.train_step reuses it, as train.py's jit would.
  prefetch = setup.config.device_prefetch
  sources = SOURCES if prefetch else SOURCES[:2]
  feeds = {s: _feed(setup, s, fixed) for s in sources}
  for batches, _ in feeds.values():
    run_steps(setup, batches, warmup)
  times = {s: [] for s in sources}
  loops = {s: [] for s in sources}
  host = {s: {'next': 0.0, 'put': 0.0} for s in sources}
  for _ in range(repeats):
    for s in sources:
      batches, timers = feeds[s]
      before = dict(timers)
      wall, loop = run_steps(setup, batches, steps)
      times[s].append(wall / steps)
      loops[s].append(loop / steps)
      for k in host[s]:
        host[s][k] += timers[k] - before[k]
  c = setup.config
  b = c.batch_size
  common = {'bench': 'pipeline', 'model': c.model.name,
            'dataset': f'{c.dataset.name}/{c.dataset.split}',
            'image_size': c.dataset.image_size,
            'batch_shape': list(fixed['image'].shape), 'batch': b,
            'dtype': c.model.dtype, 'steps': steps, 'warmup': warmup,
            'repeats': repeats,
            # medjax.models.conv's rule, read when the step was traced.
            'conv_forms': os.environ.get('MEDJAX_CONV_FORMS', 'auto')}
  rows = []
  for s in sources:
    step_s = statistics.median(times[s])
    n = steps * repeats
    rows.append({
        **common, 'measure': 'step', 'source': s,
        'device_prefetch': prefetch if s == 'real' else 0,
        'images_per_s': b / step_s, 'step_ms': 1e3 * step_s,
        'step_ms_runs': [1e3 * x for x in times[s]],
        'host_loop_ms': 1e3 * statistics.median(loops[s]),
        # The loop's wait in next() (the put included when it runs on the
        # loop's thread, i.e. without prefetch), and the put's own time
        # (on DevicePrefetch's thread with prefetch).
        'host_next_ms': 1e3 * host[s]['next'] / n,
        'host_put_ms': 1e3 * host[s]['put'] / n,
        **benchlib.environment()})
  synthetic, real = rows[0]['step_ms'], rows[1]['step_ms']
  summary = {
      **common, 'measure': 'end_to_end', 'synthetic_step_ms': synthetic,
      'real_step_ms': real, 'ratio': real / synthetic,
      'within_10_percent': real <= 1.1 * synthetic,
      'compile_s': compile_s, 'gflop_per_image': flops / b / 1e9,
      **{f'step_{k}': v for k, v in memory.items()},
      **benchlib.peak_memory(), **benchlib.environment()}
  summary['device_prefetch'] = prefetch
  if prefetch:
    summary['real_unprefetched_step_ms'] = rows[2]['step_ms']
    summary['real_unprefetched_ratio'] = rows[2]['step_ms'] / synthetic
  return rows + [summary]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch_size', type=int, default=None,
                      help='global batch; default: the config\'s')
  parser.add_argument('--steps', type=int, default=5,
                      help='timed train steps per source (and repeat)')
  parser.add_argument('--warmup', type=int, default=2,
                      help='untimed steps per source after compilation')
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--host_batches', type=int, default=50)
  parser.add_argument('--host_warmup', type=int, default=5)
  parser.add_argument('--host_threads', type=int, nargs='*', default=None,
                      help='grain worker threads to sweep; default: the '
                           "pipeline's own (pipeline.NUM_THREADS)")
  parser.add_argument('--read_threads', type=int, default=None,
                      help='threads reading the split into memory; default: '
                           "the pipeline's own (pipeline.READ_THREADS)")
  parser.add_argument('--skip_steps', action='store_true',
                      help='host pipeline only')
  parser.add_argument('--vgg_weights', default='random_vgg',
                      help='VGG19 for an SRGAN content loss (random weights '
                           'time the same)')
  args, config_argv = benchlib.parse_args(parser, argv,
                                          'configs/dcgan_brain.py')
  config = benchlib.load_config(config_argv)
  if args.batch_size:
    config.batch_size = args.batch_size
  if args.read_threads:
    pipeline.READ_THREADS = args.read_threads
  if config.sr.content_loss == 'vgg' and args.vgg_weights:
    config.sr.vgg_weights = args.vgg_weights
  setup = Setup(config)
  rows = []
  for threads in args.host_threads or [None]:
    row = measure_host(setup, args.host_batches, args.host_warmup, threads)
    row.update(benchlib.environment())
    print(json.dumps(row), flush=True)
    rows.append(row)
  if not args.skip_steps:
    for row in measure_steps(setup, args.steps, args.warmup, args.repeats):
      print(json.dumps(row), flush=True)
      rows.append(row)
  print('\n| measure | model | batch | grain threads/buffer or source | '
        'img/s | ms | notes |\n|---|---|---|---|---|---|---|')
  for r in rows:
    if r['measure'] == 'host':
      print(f"| host | {config.model.name} | {config.batch_size} | "
            f"{r['grain_num_threads']}/{r['grain_prefetch_buffer_size']} | "
            f"{r['images_per_s']:.0f} | {r['batch_ms']:.2f} | with to_global:"
            f" {r['to_device_images_per_s']:.0f} img/s, load {r['load_s']:.2f}"
            f" s on {r['read_threads']} threads |")
    elif r['measure'] == 'step':
      print(f"| step | {r['model']} | {r['batch']} | {r['source']} | "
            f"{r['images_per_s']:.1f} | {r['step_ms']:.1f} | next "
            f"{r['host_next_ms']:.2f} ms, put {r['host_put_ms']:.2f} ms |")
    else:
      print(f"| end_to_end | {r['model']} | {r['batch']} | real/synthetic "
            f"{r['ratio']:.3f} | | | compile {r['compile_s']:.1f} s, peak "
            f"{r['peak_memory_mb']:.0f} MB ({r['peak_memory_source']}), "
            f"load {r['loadavg']}, {r['device']} |")
  return rows


if __name__ == '__main__':
  main()
