r"""The PyTorch reference workloads, on the GPU or the CPU, optionally beside medjax's.

`../shared/reference/ref_torch.py` (kept outside the project; staged as
`.ref/ref_torch.py` by `../shared/device/prepare.sh`) defines the PyTorch
DCGAN and SRGAN train steps and the InceptionV3 forward medjax is compared
against, and times them with its own `timeit`. Its `main()` runs every case,
batch and mode, torch.compile included, which takes longer than one device
session allows; this script runs chosen ones through the same functions and
timer (`<case>_fn(batch, amp, channels_last, compile)`, `timeit`, `flops`),
and prints rows in ref_torch.py's own format (`case`, `bs`, `mode`,
`step_ms`, `img_s`, `gflop_per_img` for fp32_eager) plus the device and
date, which bench/report.py reads.

  # GPU (the device session): reference only; medjax runs in its own process
  python bench/reference.py --ref=.ref/ref_torch.py --case=dcgan64 \
    --batch_size 128 1024 --modes fp32_eager bf16_cl_eager
  # CPU: float32 eager only, alternating with medjax's step of the same
  # model and batch (`--medjax`), so both see the same machine load
  python bench/reference.py --ref=../shared/reference/ref_torch.py \
    --case=dcgan64 --batch_size=128 --steps=3 --warmup=1 --repeats=2 --medjax

With --medjax the medjax rows are bench/train_step.py's (or, for
inception_fid, bench/metrics.py's) rows, in the mode's dtype. The
inception_fid case needs torchvision. Needs torch (not a medjax dependency).
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

# Reference case -> (medjax config and overrides for the same model, loss and
# optimiser; ref_torch.py's builder).
CASES = {'dcgan64': ('configs/dcgan_brain.py', [], 'dcgan_step_fn'),
         'srgan_x4_96': ('configs/srgan_brain.py', ['--config.sr.hr_crop=96'],
                         'srgan_step_fn'),
         # Forward pass only (medjax: bench/metrics.py's inception_fid).
         'inception_fid': (None, [], 'inception_fn')}
# ref_torch.py's modes: (autocast bf16, channels-last, torch.compile), and
# medjax's compute dtype for the same comparison.
MODES = {'fp32_eager': ((False, False, False), 'float32'),
         'bf16_cl_eager': ((True, True, False), 'bfloat16'),
         'bf16_cl_compile': ((True, True, True), 'bfloat16')}


def load_reference(path: str):
  """ref_torch.py, on CUDA if torch sees a GPU, else on the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('ref_torch', path)
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  if not torch.cuda.is_available():
    ref.dev = 'cpu'
    torch.cuda.synchronize = lambda: None  # timeit() calls it; CPU is sync.
  return ref


def time_reference(ref, case: str, batch_size: int, mode: str, steps: int,
                   warmup: int) -> dict:
  """One reference measurement, as ref_torch.main() records it."""
  make = getattr(ref, CASES[case][2])
  flags = MODES[mode][0]
  t = time.perf_counter()
  step = make(batch_size, *flags)
  seconds = ref.timeit(step, iters=steps, warm=warmup)
  row = {'bench': 'reference', 'case': case, 'bs': batch_size, 'mode': mode,
         'step_ms': round(seconds * 1e3, 3),
         'img_s': round(batch_size / seconds, 1)}
  if mode == 'fp32_eager':
    flops = ref.flops(make(batch_size, False, False, False))
    row['gflop_per_img'] = round(flops / batch_size / 1e9, 3)
    row['tflops_achieved'] = round(flops / seconds / 1e12, 2)
  import torch  # pylint: disable=g-import-not-at-top
  return {**row, 'wall_s': time.perf_counter() - t, 'torch': torch.__version__,
          'torch_device': ref.dev, 'torch_threads': torch.get_num_threads(),
          **benchlib.environment()}


def time_medjax(case: str, batch_size: int, dtype: str, steps: int,
                warmup: int) -> dict:
  """medjax's measurement of the same workload (bench/train_step.py's)."""
  config_path, overrides, _ = CASES[case]
  if config_path is None:
    return medjax_metrics.bench_inception(batch_size, dtype, steps, warmup)
  config = medjax_step.step_config([f'--config={config_path}', *overrides],
                                   dtype)
  return medjax_step.measure(config, batch_size, steps, warmup)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--ref', required=True, help='path of ref_torch.py')
  parser.add_argument('--case', choices=sorted(CASES), default='dcgan64')
  parser.add_argument('--batch_size', type=int, nargs='+', default=[128])
  parser.add_argument('--modes', nargs='+', choices=sorted(MODES),
                      default=['fp32_eager'])
  parser.add_argument('--steps', type=int, default=30,
                      help='timed iterations (ref_torch.py: 30)')
  parser.add_argument('--warmup', type=int, default=5,
                      help='untimed iterations first (ref_torch.py: 5)')
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--medjax', action='store_true',
                      help="also time medjax's step, alternating")
  args = parser.parse_args(argv)
  ref = load_reference(args.ref)
  if ref.dev == 'cpu' and set(args.modes) - {'fp32_eager'}:
    parser.error("ref_torch.py's bf16 modes autocast on CUDA only; on the CPU"
                 ' use --modes fp32_eager')
  rows = []
  for _ in range(args.repeats):
    for batch_size in args.batch_size:
      for mode in args.modes:
        try:
          row = time_reference(ref, args.case, batch_size, mode, args.steps,
                               args.warmup)
        except Exception as e:  # pylint: disable=broad-except
          # As ref_torch.main(): record the failure and go on.
          row = {'bench': 'reference', 'case': args.case, 'bs': batch_size,
                 'mode': mode, 'error': repr(e)[:300]}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.medjax:
          row = time_medjax(args.case, batch_size, MODES[mode][1],
                            args.steps, args.warmup)
          print(json.dumps(row), flush=True)
          rows.append(row)
  print('\n| impl | case | batch | mode / dtype | step ms | img/s |\n'
        '|---|---|---|---|---|---|')
  for r in rows:
    if r['bench'] == 'reference':
      print(f"| PyTorch | {r['case']} | {r['bs']} | {r['mode']} | "
            f"{r.get('step_ms', 'error')} | {r.get('img_s', '-')} |")
    else:
      print(f"| medjax | {args.case} | {r['batch']} | {r['dtype']} | "
            f"{r['step_ms']:.1f} | {r['images_per_s']:.1f} |")
  return rows


if __name__ == '__main__':
  main()
