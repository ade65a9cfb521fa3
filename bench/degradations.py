r"""Times the on-device degradation presets on synthetic uint8 batches.

  python bench/degradations.py --batch_size 64 256 --steps 10

Each spec (`medjax.data.degradations.get`) is jitted and run on random
512x512 uint8 images already on the device, so the figure is the device's
throughput, without host transfers. Prints one JSON line per measurement and
a short markdown table, with device and date. Runs on CPU and GPU; imports
nothing that needs TensorFlow. The OpenCV figure to compare with comes from
shared/reference/ref_degrade.py on the CPU.
"""

import argparse
import datetime
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position

from medjax.data import degradations  # pylint: disable=g-import-not-at-top


def measure(spec: str, batch_size: int, size: int, channels: int, steps: int,
            warmup: int) -> dict:
  """Compiles and times `steps` calls of one spec; returns the measurement."""
  images = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch_size, size, size, channels), np.uint8))
  timing = benchlib.time_stateless(degradations.get(spec),
                                   (images, jax.random.key(0)), steps, warmup)
  out, step_s, compile_s = (timing['output'], timing['step_s'],
                            timing['compile_s'])
  return {
      'bench': 'degradations', 'spec': spec,
      'steps': degradations.describe(spec), 'batch': batch_size,
      'input': f'{size}x{size}x{channels} uint8',
      'output': 'x'.join(str(d) for d in out.shape[1:]),
      'images_per_s': batch_size / step_s, 'batch_ms': 1e3 * step_s,
      'compile_s': compile_s, 'device': jax.devices()[0].device_kind,
      'backend': jax.default_backend(), 'jax': jax.__version__,
      'date': datetime.date.today().isoformat(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--specs', nargs='+',
                      default=['primary', 'srgan_train', 'x4_bicubic'])
  parser.add_argument('--batch_size', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  args = parser.parse_args()
  rows = []
  for spec in args.specs:
    for batch_size in args.batch_size:
      row = measure(spec, batch_size, args.size, args.channels, args.steps,
                    args.warmup)
      print(json.dumps(row), flush=True)
      rows.append(row)
  print('\n| spec | batch | input -> output | img/s | batch ms | compile s | '
        'device | date |\n|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['spec']} | {r['batch']} | {r['input']} -> {r['output']} | "
          f"{r['images_per_s']:.1f} | {r['batch_ms']:.1f} | "
          f"{r['compile_s']:.2f} | {r['device']} ({r['backend']}) | "
          f"{r['date']} |")


if __name__ == '__main__':
  main()
