r"""Times the jitted train step of any config on synthetic batches.

  python bench/train_step.py --config=configs/dcgan_brain.py --batch_size=128
  python bench/train_step.py --config=configs/srgan_brain.py --batch_size=16

SR configs are timed on batches of HR-crop-sized images (96x96 for SRGAN, as
the PyTorch reference), so the crop is the whole image; the SRGAN content
loss runs through VGG19 with random weights unless --vgg_weights names the
converted file (the timing does not depend on the values).

Prints one JSON line per measurement (images/s, step ms, compile s, model
FLOPs per image from XLA's cost analysis and the model FLOP utilisation
against the chip's bf16 peak (benchlib.PEAK_BF16_TFLOPS; unknown on CPUs),
XLA's memory analysis of the step,
peak memory: the device's where it reports one, else the process's peak RSS,
and the host load average) and a short table. Any config key can be
overridden as for medjax.main (`--config.model.g_features=(64,32)`). Runs on
CPU and GPU; imports nothing that needs TensorFlow. Record results with the
device and date in docs/benchmarks.md.
"""

import argparse
import itertools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position

from medjax import config_lib  # pylint: disable=wrong-import-position
from medjax import packing  # pylint: disable=wrong-import-position
from medjax import trainers  # pylint: disable=wrong-import-position
from medjax.models import conv  # pylint: disable=wrong-import-position
from medjax.models import norm  # pylint: disable=wrong-import-position


def step_config(config_argv, dtype: str, vgg_weights: str = 'random_vgg'):
  """The config a step is timed with: the flags' config in `dtype`.

  SR configs train on HR crops, so their images are made crop-sized (the
  crop is then the whole image), and the VGG content loss uses
  `vgg_weights` ('random_vgg': random weights, same speed).
  """
  config = benchlib.load_config(config_argv)
  config.model.dtype = dtype
  if config.model.name in config_lib.SR_MODELS and config.sr.hr_crop:
    config.dataset.image_size = config.sr.hr_crop
    if config.sr.content_loss == 'vgg':
      config.sr.vgg_weights = vgg_weights
  return config


def build(config, batch_size: int, pack_state: bool = False):
  """The task's jitted train step (state donated), a state, batch and consts.

  Args:
    config: a validated-on-call experiment config.
    batch_size: images per step.
    pack_state: the step takes and returns the state packed, one flat array
      per dtype (`medjax.packing`), as medjax.train's loop does with
      `config.pack_state` (set here); `config.state_kernel_layout` too.

  Returns:
    (jitted step(state, batch, rng, consts) -> (state, metrics), state,
    batch, consts): the batch is random uint8 images of the config's size
    and random labels below `model.num_classes`, already on the device;
    consts are the task's constants (e.g. SRGAN's VGG19 weights), an
    argument as in medjax.train, so XLA's memory analysis counts them and
    does not embed them in the executable.
  """
  config_lib.validate(config)
  task = trainers.get_task(config)
  state = jax.jit(task.init)(jax.random.key(0))
  size = config.dataset.image_size
  shape = (batch_size, size, size, config.dataset.channels)
  rng = np.random.default_rng(0)
  # Labels too, as the real pipeline's batches have them (the conditional
  # GANs, StarGAN and the classifier read them).
  batch = {'image': jnp.asarray(rng.integers(0, 256, shape, np.uint8)),
           'label': jnp.asarray(rng.integers(
               0, max(config.model.num_classes, 1), batch_size, np.int32))}
  consts = jax.device_put(task.consts())
  step_fn = task.train_step
  config.pack_state = pack_state
  if packer := packing.for_config(config, state):
    state, step_fn = jax.jit(packer.pack)(state), packer.wrap(step_fn)
  step = jax.jit(step_fn, donate_argnums=0)
  return step, state, batch, consts


def measure(config, batch_size: int, steps: int, warmup: int,
            profile_dir: str | None = None, pack_state: bool = False) -> dict:
  """Compiles and times `steps` train steps; returns the measurement.

  With `profile_dir`, 3 more steps then run under jax.profiler.trace into
  profile_dir/<model>_<batch>_<dtype>[_packed], with the step's optimized
  HLO text beside the trace (`benchlib.trace`); summarise it with
  bench/trace_summary.py. The row records the folder as 'profile'.
  """
  step, state, batch, consts = build(config, batch_size, pack_state)
  # Made before the timed loop: an eager key per step would add a dispatch
  # and a host-to-device copy to each step (the train loop derives its keys
  # inside the step).
  keys = jax.block_until_ready(
      [jax.random.key(i) for i in range(max(steps, warmup, 3))])
  compiled, compile_s, flops, memory = benchlib.compile_timed(
      step, state, batch, keys[0], consts)
  for i in range(warmup):
    state, metrics = compiled(state, batch, keys[i], consts)
  jax.block_until_ready(state)
  t = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, batch, keys[i], consts)
  # Host time to dispatch the steps: near the step time, the host (e.g.
  # launching each kernel), not the device, sets the pace.
  loop_s = (time.perf_counter() - t) / steps
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t) / steps
  profile = {}
  if profile_dir:
    path = os.path.join(profile_dir, f'{config.model.name}_{batch_size}_'
                        f'{config.model.dtype}' + ('_packed' if pack_state
                                                   else ''))
    def run():
      nonlocal state
      for i in range(3):
        state, _ = compiled(state, batch, keys[i], consts)
      return state
    benchlib.trace(path, compiled, run)
    profile = {'profile': path}
  return {
      'bench': 'train_step', 'model': config.model.name,
      'image_size': config.dataset.image_size, 'batch': batch_size,
      'dtype': config.model.dtype, 'pack_state': pack_state,
      'state_kernel_layout': config.state_kernel_layout,
      'one_d_call': config.gan.one_d_call,
      'batchnorm': norm.mode(),  # MEDJAX_BATCHNORM, read when traced.
      'state_arrays': len(jax.tree.leaves(state)),
      'images_per_s': batch_size / step_s,
      'step_ms': 1e3 * step_s, 'host_loop_ms': 1e3 * loop_s,
      'compile_s': compile_s, 'gflop_per_image': flops / batch_size / 1e9,
      **benchlib.utilisation(flops, step_s),
      **benchlib.roofline(compiled, step_s),
      **{f'step_{k}': v for k, v in memory.items()},
      **benchlib.peak_memory(), **benchlib.environment(), **profile,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch_size', type=int, nargs='+', default=[128])
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--vgg_weights', default='random_vgg')
  parser.add_argument('--conv_forms', nargs='+', choices=conv.FORMS,
                      default=['auto'],
                      help="medjax.models.conv's equivalent convolution "
                           "forms: 'auto' (the backend's rule), 'on' (the "
                           "CPU rule anywhere), 'off' (plain lax), 'gemm' "
                           '(convolutions as patch products up to '
                           'MEDJAX_CONV_GEMM_MB); several are timed one '
                           'after the other')
  parser.add_argument('--batchnorm', nargs='+', choices=norm.MODES,
                      default=['flax'],
                      help="BatchNorm layers (MEDJAX_BATCHNORM): 'flax' "
                           "(nn.BatchNorm, the default) or 'fused' "
                           '(medjax.models.norm.BatchNorm); several are '
                           'timed one after the other')
  parser.add_argument('--pack_state', nargs='+', choices=('on', 'off'),
                      default=['off'],
                      help="'on': the step passes the state as one flat "
                           'array per dtype, as the training loop does with '
                           "config.pack_state; 'off' (the loop's default): "
                           "as the task's pytree of leaves; several are "
                           'timed one after the other at each batch')
  parser.add_argument('--profile_dir', default='',
                      help='if set, trace 3 more steps per row with '
                           'jax.profiler into DIR/<model>_<batch>_<dtype> '
                           '(under DIR/conv_<form>_bn_<batchnorm> when several '
                           'forms or batchnorms); '
                           'summarise with bench/trace_summary.py')
  args, config_argv = benchlib.parse_args(parser, argv,
                                          'configs/dcgan_brain.py')
  rows = []
  for forms, bn in itertools.product(args.conv_forms, args.batchnorm):
    os.environ['MEDJAX_CONV_FORMS'] = forms  # Read when the step is traced.
    os.environ['MEDJAX_BATCHNORM'] = bn  # So is this.
    for dtype in args.dtypes:
      for batch_size, pack in itertools.product(args.batch_size,
                                                args.pack_state):
        config = step_config(config_argv, dtype, args.vgg_weights)
        profile_dir = args.profile_dir and (
            os.path.join(args.profile_dir, f'conv_{forms}_bn_{bn}')
            if len(args.conv_forms) * len(args.batchnorm) > 1
            else args.profile_dir)
        row = measure(config, batch_size, args.steps, args.warmup,
                      profile_dir=profile_dir, pack_state=pack == 'on')
        row['conv_forms'] = forms
        row['conv_forms_used'] = conv.forms_rule()  # cpu, gpu, gemm or None.
        if forms == 'gemm':
          row['conv_gemm_mb'] = conv.gemm_max_bytes() / 2**20
        print(json.dumps(row), flush=True)
        rows.append(row)
  print('\n| model | size | batch | dtype | conv forms | BatchNorm | '
        'state arrays | img/s '
        '| step ms | host loop ms | compile s | GFLOP/img | MFU | peak MB | '
        'device |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
        '---|')
  for r in rows:
    print(f"| {r['model']} | {r['image_size']} | {r['batch']} | {r['dtype']} "
          f"| {r['conv_forms']} ({r['conv_forms_used'] or 'off'} rule) "
          f"| {r['batchnorm']} "
          f"| {r['state_arrays']} ({'packed' if r['pack_state'] else 'leaves'})"
          f" | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | "
          f"{r['host_loop_ms']:.2f} | "
          f"{r['compile_s']:.1f} | {r['gflop_per_image']:.2f} | "
          f"{benchlib.utilisation_cell(r)} | "
          f"{r['peak_memory_mb']:.0f} ({r['peak_memory_source'].split()[0]})"
          f" | {r['device']} |")
  return rows


if __name__ == '__main__':
  main()
