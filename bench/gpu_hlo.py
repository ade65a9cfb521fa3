r"""Kernel census of a workload's GPU program, compiled here without a GPU.

  pip install --target /tmp/cudasite --no-deps jax-cuda12-plugin==$JAXV \
      jax-cuda12-pjrt==$JAXV nvidia-cuda-nvcc-cu12 nvidia-cudnn-cu12
  JAX_PLATFORMS=cpu PYTHONPATH=/tmp/cudasite python bench/gpu_hlo.py \
      --workloads dcgan:128 srgan:16 inception:256 --pack_state off on
  ... --workloads srgan:16 --conv_forms gpu gemm   # cuDNN vs patch GEMMs

XLA compiles for a GPU it does not have ("deviceless" ahead-of-time
compilation: the CUDA PJRT plugin's topology from a target description,
bench/h100_sxm.txtpb), so the optimized program a GPU session would run can
be read on a CPU machine: which operations become kernels (fusions, cuDNN
and cuBLAS calls, copies), how many per step. The paper-batch steps are
launch-bound (bench/NOTES.md), so the count is what a change must lower.
Without the device there is no autotuning: algorithm choices differ, the
fusion structure does not. Each row also carries the program's roofline
(`roofline`: every kernel at the tensor-core peak or the memory bandwidth,
whichever binds, summed), a lower bound of the step's device time, so a
goal can be checked against what the program could do at best. Prints one
JSON line per program and a table; imports nothing that needs TensorFlow.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position
from hlo_cost import census, kernels, roofline, thunks, zero_dilated  # pylint: disable=wrong-import-position
import train_step  # pylint: disable=wrong-import-position

from medjax import packing  # pylint: disable=wrong-import-position
from medjax import trainers  # pylint: disable=wrong-import-position
from medjax.metrics import features  # pylint: disable=wrong-import-position
from medjax.models import conv  # pylint: disable=wrong-import-position
from medjax.models import inception  # pylint: disable=wrong-import-position

TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'h100_sxm.txtpb')
CONFIGS = {'dcgan': 'configs/dcgan_brain.py', 'srgan': 'configs/srgan_brain.py'}


def gpu_device(target_config: str):
  """A compile-only GPU device described by a GpuTargetConfig text proto.

  Needs the CUDA PJRT plugin (see the module docstring); the error says so.
  """
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  with open(target_config) as f:
    text = f.read()
  try:
    topology = topologies.get_topology_desc(
        '', 'cuda', target_config=text, topology='1x1x1')
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        f'cannot compile for the GPU of {target_config} without a GPU: this '
        'needs the CUDA PJRT plugin on the path (pip install --target '
        '/tmp/cudasite --no-deps jax-cuda12-plugin==<jax version> '
        'jax-cuda12-pjrt==<jax version> nvidia-cuda-nvcc-cu12 '
        f'nvidia-cudnn-cu12; PYTHONPATH=/tmp/cudasite): {e}') from e
  return topology.devices[0]


def _target_field(target_config: str, name: str) -> int:
  """An integer field of a GpuTargetConfig text proto's device info."""
  with open(target_config) as f:
    m = re.search(rf'^\s*{name}:\s*(\d+)', f.read(), re.M)
  if not m:
    raise ValueError(f'{target_config} has no {name}')
  return int(m.group(1))


def device_memory_bytes(target_config: str) -> int:
  """`device_memory_size` of a GpuTargetConfig text proto: the card's total
  memory as the CUDA driver reports it."""
  return _target_field(target_config, 'device_memory_size')


def _abstract(tree, sharding):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def abstract_step(config, batch: int, sharding) -> tuple:
  """A config's train step (bench/train_step.py's: state donated, packed as
  `config.pack_state` says) and abstract arguments on `sharding`'s device.

  Nothing is computed or allocated: the state comes from `jax.eval_shape`,
  so the step compiles for a device this machine does not have.

  Returns:
    (jitted step, state, {'image': images[, 'label': labels]}, key,
    consts): the arguments are
    `jax.ShapeDtypeStruct`s carrying `sharding`.
  """
  task = trainers.get_task(config)
  state = jax.eval_shape(task.init, jax.random.key(0))
  fn = task.train_step
  if packer := packing.for_config(config, state):
    state, fn = jax.eval_shape(packer.pack, state), packer.wrap(fn)
  size = config.dataset.image_size
  images = jax.ShapeDtypeStruct(
      (batch, size, size, config.dataset.channels), jnp.uint8,
      sharding=sharding)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding)
  data = {'image': images}
  if config.model.get('num_classes'):  # Conditional GANs, classifiers.
    data['label'] = jax.ShapeDtypeStruct((batch,), jnp.int32,
                                         sharding=sharding)
  return (jax.jit(fn, donate_argnums=0), _abstract(state, sharding),
          data, key,
          _abstract(jax.eval_shape(task.consts), sharding))


def train_program(model: str, batch: int, dtype: str, pack: bool,
                  sharding, kernel_layout: str = 'hwio') -> tuple:
  """(jitted step, abstract args) of a config's train step, as timed by
  bench/train_step.py (state donated; packed with `pack`, kernels stored
  in `kernel_layout`: see medjax.packing)."""
  config = train_step.step_config([f'--config={CONFIGS.get(model, model)}'],
                                  dtype)
  config.pack_state, config.state_kernel_layout = pack, kernel_layout
  jitted, *args = abstract_step(config, batch, sharding)
  return jitted, tuple(args)


def inception_program(batch: int, dtype: str, fold: bool, sharding):
  """(jitted forward, abstract args) of bench/metrics.py's Inception case."""
  model = inception.FIDInceptionV3(dtype=jnp.dtype(dtype), fold_bn=fold)
  params = jax.eval_shape(lambda: features.random_inception_params(0))
  x = jax.ShapeDtypeStruct((batch, 299, 299, 3), jnp.float32,
                           sharding=sharding)
  return jax.jit(lambda p, x: model.apply({'params': p}, x)), (
      _abstract(params, sharding), x)


def measure(name: str, jitted, args, options=None, bandwidth=None,
            **fields) -> dict:
  """Compiles `jitted` for `args` (with XLA `options`); one JSON row, with
  the program's `roofline` on a device of `bandwidth` bytes/s if given.

  XLA dumps the program into a temporary folder (its thunk sequence is
  where CUDA graphs show: `thunks`); compile_s includes the dump.
  """
  with tempfile.TemporaryDirectory() as dump:
    t = time.perf_counter()
    compiled = jitted.trace(*args).lower().compile(compiler_options={
        **(options or {}), 'xla_dump_to': dump,
        'xla_dump_hlo_pass_re': 'NONE'})
    compile_s = time.perf_counter() - t
    # XLA writes the sequence after its thunk passes only where they changed
    # it (e.g. made CUDA graphs); otherwise the first one is final.
    sequences = glob.glob(os.path.join(
        dump, '*.thunk_sequence_after_thunk_passes.txt')) or glob.glob(
            os.path.join(dump, '*.thunk_sequence.txt'))
    launches = {}
    if sequences:  # The step's module: the largest.
      with open(max(sequences, key=os.path.getsize)) as f:
        launches = thunks(f.read())
  text = compiled.as_text()
  counts = census(text)
  bound = roofline(text, bandwidth) if bandwidth else {}
  bound.update(zero_dilated(text))
  return {'bench': 'gpu_hlo', 'workload': name, **fields,
          'kernels': kernels(counts), **launches, **bound,
          'compile_s': compile_s,
          'xla_options': options or {}, 'census': dict(counts.most_common()),
          **benchlib.environment()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workloads', nargs='+',
                      default=['dcgan:128', 'srgan:16', 'inception:256'],
                      help='NAME:BATCH, NAME one of dcgan, srgan, '
                           'inception or a config file (its train step)')
  parser.add_argument('--dtypes', nargs='+', default=['float32'])
  parser.add_argument('--pack_state', nargs='+', choices=('off', 'on'),
                      default=['off'], help='train steps: see train_step.py')
  parser.add_argument('--state_kernel_layout', nargs='+',
                      choices=('hwio', 'ohwi'), default=['hwio'],
                      help='train steps: config.state_kernel_layout')
  parser.add_argument('--inception_fold_bn', nargs='+', choices=('off', 'on'),
                      default=['off'], help='inception: see metrics.py')
  parser.add_argument('--batchnorm', nargs='+', choices=('flax', 'fused'),
                      default=['flax'],
                      help="train steps' BatchNorm layers: see "
                           'train_step.py')
  parser.add_argument('--conv_forms', nargs='+', default=['gpu'],
                      choices=('gpu', 'gemm', 'cudnn', 'cudnn_dw', 'off'),
                      help="medjax.models.conv's rules to compile with: "
                           "'gpu' (what a GPU run uses), 'gemm', 'cudnn' or "
                           "'cudnn_dw' (MEDJAX_CONV_FORMS=...) or 'off'")
  parser.add_argument('--target_config', default=TARGET)
  parser.add_argument('--xla_options', nargs='*', default=[],
                      metavar='NAME=VALUE',
                      help='XLA debug options for every compile, e.g. '
                           'xla_gpu_graph_min_graph_size=1 (as XLA_FLAGS '
                           'would set them, without the dashes)')
  args = parser.parse_args(argv)
  options = dict(o.split('=', 1) for o in args.xla_options)
  sharding = jax.sharding.SingleDeviceSharding(gpu_device(args.target_config))
  bandwidth = _target_field(args.target_config, 'memory_bandwidth')
  rows = []
  for spec, forms, dtype in itertools.product(args.workloads, args.conv_forms,
                                              args.dtypes):
    name, batch = spec.split(':')
    # The rule is read when tracing; here the default backend is the CPU.
    conv.forms_rule = lambda forms=forms: None if forms == 'off' else forms
    if name == 'inception':
      for fold in args.inception_fold_bn:
        jitted, a = inception_program(int(batch), dtype, fold == 'on',
                                      sharding)
        rows.append(measure(name, jitted, a, options, bandwidth,
                            batch=int(batch), dtype=dtype, conv_forms=forms,
                            fold_bn=fold == 'on'))
        print(json.dumps(rows[-1]), flush=True)
      continue
    for bn, pack, layout in itertools.product(
        args.batchnorm, args.pack_state, args.state_kernel_layout):
      os.environ['MEDJAX_BATCHNORM'] = bn  # Read when the step is traced.
      jitted, a = train_program(name, int(batch), dtype, pack == 'on',
                                sharding, layout)
      rows.append(measure(name, jitted, a, options, bandwidth,
                          batch=int(batch), dtype=dtype, conv_forms=forms,
                          batchnorm=bn,
                          pack_state=pack == 'on',
                          state_kernel_layout=layout))
      print(json.dumps(rows[-1]), flush=True)
  print(f'\nTarget: {args.target_config}; '
        f'XLA options: {options or "-"}.\n\n'
        '| workload | batch | dtype | variant | kernels | cuDNN convs | '
        'fusions | copies | launches (CUDA graphs; kernels in them) | '
        'roofline ms (compute; memory) | zero-dilated kernels (GB) | '
        'compile s |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    c = r['census']
    variant = ', '.join(
        v for v, on in (('convs as GEMMs', r['conv_forms'] == 'gemm'),
                        ('cuDNN rule', r['conv_forms'] == 'cudnn'),
                        ("cuDNN rule's dW", r['conv_forms'] == 'cudnn_dw'),
                        ('conv forms off', r['conv_forms'] == 'off'),
                        ('BN folded', r.get('fold_bn')),
                        ('BatchNorm fused', r.get('batchnorm') == 'fused'),
                        ('state packed', r.get('pack_state')),
                        ('kernels OHWI',
                         r.get('state_kernel_layout') == 'ohwi')) if on
    ) or '-'
    convs = sum(v for k, v in c.items() if k.startswith('custom-call:__cudnn'))
    fusions = sum(v for k, v in c.items() if k.startswith('fusion:'))
    print(f"| {r['workload']} | {r['batch']} | {r['dtype']} | {variant} | "
          f"{r['kernels']} | {convs} | {fusions} | {c.get('copy', 0)} | "
          f"{r.get('launches', '-')} ({r.get('graphs', '-')}; "
          f"{r.get('in_graphs', '-')}) | {r['roofline_ms']:.2f} "
          f"({r['compute_ms']:.2f}; {r['memory_ms']:.2f}) | "
          f"{r['zero_dilated_kernels']} ({r['zero_dilated_gbyte']:.2f}) | "
          f"{r['compile_s']:.1f} |")
  return rows


if __name__ == '__main__':
  main()
