r"""The PyTorch reference workloads on the CPU, beside medjax's, same process.

`../shared/reference/ref_torch.py` (kept outside the project) defines the
PyTorch DCGAN and SRGAN train steps medjax is compared against; it targets
CUDA. This script imports it with the device switched to the CPU and times
its float32 eager step next to medjax's step of the same model and batch
(`bench/train_step.py`'s measurement), alternating the two so that both see
the same machine load. For laptops and CI-class machines; the issue's
targets are GPU figures (docs/benchmarks.md).

Needs torch (not a medjax dependency). Prints one JSON line per measurement
and a table:

  python bench/reference_on_cpu.py --ref=../shared/reference/ref_torch.py \
    --case=dcgan64 --batch_size=128 --steps=3 --repeats=2
  python bench/reference_on_cpu.py --ref=../shared/reference/ref_torch.py \
    --case=srgan_x4_96 --batch_size=16 --steps=3 --repeats=2
  python bench/reference_on_cpu.py --ref=../shared/reference/ref_torch.py \
    --case=inception_fid --batch_size=16 --steps=3 --repeats=2  # torchvision
"""

import argparse
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position
import metrics as medjax_metrics  # pylint: disable=wrong-import-position
import train_step as medjax_step  # pylint: disable=wrong-import-position

# medjax config of each reference case (same model, loss and optimiser).
CASES = {'dcgan64': ('configs/dcgan_brain.py', 'dcgan_step_fn', []),
         'srgan_x4_96': ('configs/srgan_brain.py', 'srgan_step_fn',
                         ['--config.sr.hr_crop=96']),
         # Forward pass only; the reference's needs torchvision.
         'inception_fid': (None, 'inception_fn', [])}


def load_reference(path: str):
  """ref_torch.py with its device set to the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('ref_torch', path)
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  ref.dev = 'cpu'
  torch.cuda.synchronize = lambda: None  # timeit() calls it; CPU is sync.
  return ref


def time_reference(ref, case: str, batch_size: int, steps: int,
                   warmup: int) -> float:
  """Seconds per float32 eager step of the reference."""
  step = getattr(ref, CASES[case][1])(batch_size, False, False, False)
  return ref.timeit(step, iters=steps, warm=warmup)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--ref', required=True, help='path of ref_torch.py')
  parser.add_argument('--case', choices=sorted(CASES), default='dcgan64')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=2)
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  ref = load_reference(args.ref)
  config_path, _, overrides = CASES[args.case]
  if config_path:
    config = benchlib.load_config([f'--config={config_path}', *overrides,
                                   '--config.model.dtype=float32'])
  if args.case == 'srgan_x4_96':
    config.sr.vgg_weights = 'random_vgg'  # Speed only, as the reference.
  rows = []
  for r in range(args.repeats):
    t = time.perf_counter()
    torch_s = time_reference(ref, args.case, args.batch_size, args.steps,
                             args.warmup)
    rows.append({'bench': 'reference_on_cpu', 'impl': 'pytorch_fp32_eager',
                 'case': args.case, 'batch': args.batch_size, 'repeat': r,
                 'step_ms': 1e3 * torch_s,
                 'images_per_s': args.batch_size / torch_s,
                 'torch_threads': torch.get_num_threads(),
                 'wall_s': time.perf_counter() - t, **benchlib.environment()})
    print(json.dumps(rows[-1]), flush=True)
    if config_path:
      m = medjax_step.measure(config, args.batch_size, args.steps,
                              args.warmup)
    else:
      m = medjax_metrics.bench_inception(args.batch_size, 'float32',
                                         args.steps, args.warmup)
    rows.append({'bench': 'reference_on_cpu', 'impl': 'medjax_fp32',
                 'case': args.case, 'batch': args.batch_size, 'repeat': r,
                 'step_ms': m['step_ms'], 'images_per_s': m['images_per_s'],
                 'compile_s': m['compile_s'], **benchlib.environment()})
    print(json.dumps(rows[-1]), flush=True)
  print('\n| impl | case | batch | step ms (per repeat) | images/s (best) |')
  print('|---|---|---|---|---|')
  for impl in ('pytorch_fp32_eager', 'medjax_fp32'):
    mine = [x for x in rows if x['impl'] == impl]
    times = ', '.join(f"{x['step_ms']:.0f}" for x in mine)
    best = max(x['images_per_s'] for x in mine)
    print(f'| {impl} | {args.case} | {args.batch_size} | {times} | '
          f'{best:.2f} |')
  return rows


if __name__ == '__main__':
  main()
