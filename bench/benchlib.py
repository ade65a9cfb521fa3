"""Helpers shared by the bench/ scripts (not a benchmark itself).

Imported by the scripts as `benchlib` (they put bench/ on sys.path, so this
works both as `python bench/x.py` and when a test loads a script by path).
Nothing here needs TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gzip
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Sequence

from absl import flags
import jax
import medjax
import numpy as np
from ml_collections import config_flags

# A sibling script; benchlib may itself be loaded by path (tests).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hlo_cost  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               default_config: str) -> tuple[argparse.Namespace, list[str]]:
  """Parses a bench's flags plus `--config=path` and `--config.key=value`.

  Args:
    parser: the bench's parser (without --config).
    argv: the arguments (without the program name); None for sys.argv[1:].
    default_config: the config file used when --config is not given.

  Returns:
    (the parsed argparse namespace, the config flags for `load_config`).
  """
  parser.add_argument('--config', default=default_config,
                      help='config file; override keys with --config.KEY=V')
  args, rest = parser.parse_known_args(argv)
  if bad := [a for a in rest if not a.startswith('--config.')]:
    parser.error(f'unrecognized arguments: {" ".join(bad)}')
  return args, [f'--config={args.config}', *rest]


def load_config(config_argv: Sequence[str]):
  """A fresh config from `--config=path` and `--config.key=value` flags.

  The same parser as `python -m medjax.main` (ml_collections config_flags on
  a locked config: an unknown key is an error), on a flag registry of its
  own, so the bench's other flags can stay argparse.
  """
  config_argv = ['bench', *config_argv]
  values = flags.FlagValues()
  # config_flags finds the overrides in sys_argv (default: sys.argv).
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                  flag_values=values, lock_config=True,
                                  sys_argv=config_argv)
  values(config_argv)
  return values.config


def cpu_model() -> str:
  """The CPU's model name (Linux /proc/cpuinfo), or platform's guess."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
  """Device, versions, date and host load: the context of a measurement.

  `loadavg` is the host's 1/5/15-minute load average when the measurement
  ended; on a shared machine other work inflates CPU timings. `xla_flags`
  (the XLA_FLAGS the backend started with) and `matmul_precision`
  (jax_default_matmul_precision; None lets XLA use TF32 for float32
  convolutions and matmuls on NVIDIA GPUs, as the PyTorch reference allows
  with `allow_tf32`) say which compiler settings a figure was taken with;
  `xla_flags` leaves out the flag medjax adds itself on CPU-only machines,
  recorded as `cpu_convolutions` ('eigen' or 'ynn', `medjax.
  CPU_CONVOLUTIONS`).
  """
  flags_ = [f for f in os.environ.get('XLA_FLAGS', '').split()
            if f != medjax.EIGEN_CONVOLUTIONS]
  return {
      'device': jax.devices()[0].device_kind,
      'backend': jax.default_backend(),
      'xla_flags': ' '.join(flags_),
      'cpu_convolutions': medjax.CPU_CONVOLUTIONS,
      'matmul_precision': jax.config.jax_default_matmul_precision,
      'num_devices': jax.device_count(), 'jax': jax.__version__,
      'cpu': cpu_model(), 'cpu_count': os.cpu_count(),
      'loadavg': [round(x, 2) for x in os.getloadavg()],
      'date': datetime.date.today().isoformat(),
  }


# Dense bfloat16 peak of one chip in TFLOP/s (vendor data sheets, no
# sparsity), by `device_kind` prefix: the denominator of model FLOP
# utilisation, as the performance issue defines it (XLA's FLOP count of the
# step over its measured time, against the bf16 peak, whatever the compute
# dtype). H100 SXM and H200 share the H100 SXM's tensor cores (989.4); the
# PCIe H100 runs at lower clocks (756).
PEAK_BF16_TFLOPS = (
    ('NVIDIA H100 PCIe', 756.0), ('NVIDIA H100 NVL', 835.0),
    ('NVIDIA H100', 989.4), ('NVIDIA H200', 989.4), ('NVIDIA GH200', 989.4),
    ('NVIDIA A100', 312.0), ('NVIDIA L4', 121.0),
    ('TPU v4', 275.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0),
    ('TPU v5p', 459.0), ('TPU v5', 459.0), ('TPU v6 lite', 918.0),
    ('TPU v6e', 918.0),
)


def peak_tflops(device_kind: str | None = None) -> float | None:
  """The bf16 peak of `device_kind` (default: this process's first device).

  Returns:
    TFLOP/s, or None for a device not in `PEAK_BF16_TFLOPS` (e.g. CPUs,
    whose peak depends on the core count and vector units).
  """
  kind = device_kind or jax.devices()[0].device_kind
  env = os.environ.get('MEDJAX_PEAK_TFLOPS')
  if env:
    return float(env)
  for prefix, value in PEAK_BF16_TFLOPS:
    if kind.startswith(prefix):
      return value
  return None


# HBM bandwidth by device kind, bytes/s (data sheets): with the bf16 peaks
# above, what `roofline` bounds a GPU program's time with.
BANDWIDTH = (
    ('NVIDIA H100 PCIe', 2.0e12), ('NVIDIA H100 NVL', 3.9e12),
    ('NVIDIA H100', 3.35e12), ('NVIDIA H200', 4.8e12),
    ('NVIDIA GH200', 4.0e12), ('NVIDIA A100', 2.0e12), ('NVIDIA L4', 0.3e12),
)


def roofline(compiled, seconds: float,
             device_kind: str | None = None) -> dict[str, Any]:
  """The roofline of a compiled GPU program and how close a timed call came.

  Args:
    compiled: the executable (`compile_timed`); its optimized HLO is read.
    seconds: measured seconds per call.
    device_kind: the chip (default: this process's first device).

  Returns:
    {'roofline_ms': `hlo_cost.roofline`'s bound at this chip's bandwidth
    and peaks (H100 SXM's per-type peaks scaled by its bf16 peak),
    'roofline_fraction': the bound over the measured time, 'kernels': the
    program's kernels per call (`hlo_cost.kernels`: inside a CUDA graph
    each still runs on its own, so with `roofline_ms` it tells a step's
    per-kernel cost from its arithmetic), and `hlo_cost.zero_dilated`'s
    count of kernels writing zero-dilated tensors}; {} for chips
    not in `BANDWIDTH` (CPUs, TPUs: their programs are not GPU kernels);
    {'roofline_error'} if the program's text cannot be read.
  """
  kind = device_kind or jax.devices()[0].device_kind
  bandwidth = next((v for k, v in BANDWIDTH if kind.startswith(k)), None)
  peak = peak_tflops(kind)
  if bandwidth is None or peak is None:
    return {}
  scale = peak * 1e12 / hlo_cost.PEAK_FLOPS['bf16']
  try:
    text = compiled.as_text()
    bound = hlo_cost.roofline(
        text, bandwidth, {k: v * scale for k, v in hlo_cost.PEAK_FLOPS.items()})
    dilated = hlo_cost.zero_dilated(text)
    count = hlo_cost.kernels(hlo_cost.census(text))
  except Exception as e:  # pylint: disable=broad-except
    # HLO text this parser does not know must not cost the measurement.
    return {'roofline_error': f'{type(e).__name__}: {e}'[:200]}
  return {'roofline_ms': bound['roofline_ms'],
          'roofline_fraction': bound['roofline_ms'] / 1e3 / seconds,
          'kernels': count, **dilated}


def utilisation(flops: float, seconds: float,
                device_kind: str | None = None) -> dict[str, Any]:
  """Achieved TFLOP/s and model FLOP utilisation of one timed call.

  Args:
    flops: XLA's FLOP count of the call (`compile_timed`); the benches
      compile for one device, so this is one chip's work.
    seconds: measured seconds per call.
    device_kind: the chip (default: this process's first device).

  Returns:
    {'tflops_achieved', 'peak_bf16_tflops', 'mfu'}: MFU is achieved over
    peak; None where the peak is unknown
    (`MEDJAX_PEAK_TFLOPS` sets it by hand). Then, for this process's own
    device, also 'matmul_tflops' (`matmul_tflops`) and 'of_matmul'
    (achieved over it).
  """
  achieved = flops / seconds / 1e12
  peak = peak_tflops(device_kind)
  row = {'tflops_achieved': achieved, 'peak_bf16_tflops': peak,
         'mfu': achieved / peak if peak else None}
  if peak is None and device_kind is None:
    matmul = matmul_tflops()
    row.update(matmul_tflops=matmul, of_matmul=achieved / matmul)
  return row


@functools.cache
def matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
  """This device's float32 TFLOP/s on an n x n matrix product, best of runs.

  The yardstick where no data-sheet peak is known (CPUs, whose peak depends
  on cores, clocks and vector units): what XLA itself reaches on a large,
  well-shaped product here, so `of_matmul` says how far a program is from it.
  Measured once per process (about 1 s on a 2-core CPU).

  Args:
    n: the matrices' side (2048: 17 GFLOP, big enough to reach the rate).
    repeats: timed calls after one warm-up; the fastest counts.

  Returns:
    TFLOP/s (multiply-add = 2).
  """
  a = jax.device_put(np.ones((n, n), np.float32))
  product = jax.jit(lambda a: a @ a).lower(a).compile()
  product(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    product(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e12


def utilisation_cell(row: dict[str, Any]) -> str:
  """MFU as a table cell, or the share of `matmul_tflops` where no peak."""
  if row.get('mfu') is None and row.get('of_matmul') is not None:
    return f"{percent(row['of_matmul'])} of matmul"
  return percent(row.get('mfu'))


def percent(fraction: float | None) -> str:
  """'12.3%' for a table cell; '-' where the value is unknown."""
  return '-' if fraction is None else f'{100 * fraction:.1f}%'


def compile_timed(jitted, *args) -> tuple[Any, float, float, dict]:
  """Lowers and compiles `jitted` for `args`.

  A later call of `jitted` with arguments like `args` reuses this executable.
  The FLOPs are XLA's cost analysis of the lowered, not the optimized,
  program: on GPU the optimized one holds its convolutions as cuDNN custom
  calls, which the analysis does not count (H200, 2026-11-26: 0.010 instead
  of 1.95 GFLOP per DCGAN image).

  Returns:
    (compiled, compile seconds, XLA's FLOP count (nan if neither stage
    reports it), XLA's memory analysis of the executable in MB (empty if
    not reported)).
  """
  t = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  flops = float('nan')
  for stage in (lowered, compiled):
    try:
      cost = stage.cost_analysis()
    except jax.errors.JaxRuntimeError:
      # jax 0.11's lowered stage refuses it for a GPU target compiled
      # without a GPU (bench/max_batch.py --target_config).
      continue
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and cost.get('flops', 0) > 0:
      flops = float(cost['flops'])
      break
  memory = {}
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    # Not every backend reports it.
    m = None
  if m is not None:
    mb = 1 / 2**20
    memory = {'argument_mb': m.argument_size_in_bytes * mb,
              'output_mb': m.output_size_in_bytes * mb,
              'alias_mb': m.alias_size_in_bytes * mb,
              'temp_mb': m.temp_size_in_bytes * mb}
  return compiled, compile_s, flops, memory


def trace(path: str, compiled, run: Callable[[], Any]) -> None:
  """Runs `run()` under `jax.profiler.trace(path)`, blocking on its result,
  and writes `compiled`'s optimized HLO beside the trace
  (path/module.hlo.txt.gz), for bench/trace_summary.py to name each op's
  source."""
  with jax.profiler.trace(path):
    jax.block_until_ready(run())
  with gzip.open(os.path.join(path, 'module.hlo.txt.gz'), 'wt') as f:
    f.write(compiled.as_text())


def time_stateless(fn, args, iters: int, warmup: int,
                   profile_dir: str | None = None) -> dict[str, Any]:
  """Compiles jax.jit(fn) for `args`, then times `iters` calls after
  `warmup` untimed ones (for functions without state to thread through).
  With `profile_dir`, 3 more calls are traced there (`trace`).

  Returns:
    {'step_s': seconds per call, 'compile_s' and 'flops' (as
    `compile_timed`), 'output': the last call's result}.
  """
  # On the device once: numpy arguments would be copied there on every call
  # and timed with it (InceptionV3's weights: 87 MB in 470 arrays).
  args = jax.device_put(args)
  compiled, compile_s, flops, _ = compile_timed(jax.jit(fn), *args)
  out = None
  for _ in range(warmup):
    out = compiled(*args)
  jax.block_until_ready(out)
  t = time.perf_counter()
  for _ in range(iters):
    out = compiled(*args)
  jax.block_until_ready(out)
  step_s = (time.perf_counter() - t) / iters
  if profile_dir:
    trace(profile_dir, compiled, lambda: [compiled(*args) for _ in range(3)])
  return {'step_s': step_s, 'compile_s': compile_s, 'flops': flops,
          **roofline(compiled, step_s), 'output': out}


def peak_memory() -> dict[str, Any]:
  """Peak memory so far, with where the figure comes from.

  On a device that reports `memory_stats()` (GPU, TPU): its
  `peak_bytes_in_use`, i.e. device memory. Otherwise (CPU): the peak resident
  set size of this whole process (`resource.getrusage(...).ru_maxrss`), which
  includes the Python runtime, the dataset in host memory and XLA's buffers.
  Both only grow over a process's life.
  """
  stats = jax.devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return {'peak_memory_mb': stats['peak_bytes_in_use'] / 2**20,
            'peak_memory_source': 'device memory_stats peak_bytes_in_use'}
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux.
  return {'peak_memory_mb': kib / 1024,
          'peak_memory_source': 'process ru_maxrss (host, whole process)'}
