r"""Times metric networks and image metrics on device.

  python bench/metrics.py --inception_batch=256 --dtypes float32 bfloat16

Cases (random weights: the speed does not depend on their values):
  * inception_fid: pytorch-fid InceptionV3 pool features of 299x299 RGB
    images (the PyTorch reference's `inception_fid` case feeds 299x299 too),
    one jitted forward per batch, in each compute dtype (and with the
    BatchNorms folded into the convolutions: --inception_fold_bn off on);
  * ssim: SSIM (dm-pix, skimage-equal settings) of 256x256 grayscale pairs;
  * lpips_alex / lpips_vgg: LPIPS distances of 64x64 RGB pairs.
Prints one JSON line per measurement and a table; imports nothing that needs
TensorFlow. Record results with the device and date in docs/benchmarks.md.
"""

import argparse
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # pylint: disable=wrong-import-position

from medjax.metrics import features  # pylint: disable=g-import-not-at-top
from medjax.metrics import image as image_metrics
from medjax.metrics import lpips
from medjax.models import inception


def _time(fn, args, iters: int, warmup: int,
          profile_dir: str | None = None) -> dict:
  """Compiles and times a jitted fn (traced into profile_dir if given);
  returns its timing fields."""
  timing = benchlib.time_stateless(fn, args, iters, warmup, profile_dir)
  del timing['output']
  return {**timing, **benchlib.utilisation(timing['flops'], timing['step_s'])}


def _row(case, batch, dtype, timing):
  step_s = timing.pop('step_s')
  flops = timing.pop('flops')
  return {'bench': 'metrics', 'case': case, 'batch': batch, 'dtype': dtype,
          'images_per_s': batch / step_s, 'step_ms': 1e3 * step_s,
          'gflop_per_image': flops / batch / 1e9, **timing,
          **benchlib.peak_memory(), **benchlib.environment()}


def bench_inception(batch: int, dtype: str, iters: int, warmup: int,
                    profile_dir: str = '', fold_bn: bool = False) -> dict:
  params = features.random_inception_params(0)
  model = inception.FIDInceptionV3(dtype=jnp.dtype(dtype), fold_bn=fold_bn)
  x = jnp.asarray(np.random.default_rng(0).uniform(
      -1, 1, (batch, 299, 299, 3)).astype(np.float32))
  fn = lambda p, x: model.apply({'params': p}, x)
  path = profile_dir and os.path.join(
      profile_dir, f'inception_{batch}_{dtype}' + ('_fold' if fold_bn else ''))
  row = dict(_row('inception_fid', batch, dtype,
                  _time(fn, (params, x), iters, warmup, path)),
             fold_bn=fold_bn)
  return dict(row, profile=path) if path else row


def bench_ssim(batch: int, iters: int, warmup: int) -> dict:
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.integers(0, 256, (batch, 256, 256, 1), np.uint8))
  b = jnp.asarray(rng.integers(0, 256, (batch, 256, 256, 1), np.uint8))
  return _row('ssim_256', batch, 'float32',
              _time(image_metrics.ssim, (a, b), iters, warmup))


def bench_lpips(net: str, batch: int, iters: int, warmup: int) -> dict:
  metric = lpips.LPIPS.random_weights(net, 0)
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32))
  b = jnp.asarray(rng.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32))
  return _row(f'lpips_{net}_64', batch, 'float32',
              _time(lambda a, b: metric(a, b), (a, b), iters, warmup))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--inception_batch', type=int, default=256)
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
  parser.add_argument('--batch', type=int, default=64,
                      help='batch of the SSIM and LPIPS cases')
  parser.add_argument('--cases', nargs='+',
                      default=['inception_fid', 'ssim', 'lpips'])
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--inception_fold_bn', nargs='+', choices=('off', 'on'),
                      default=['off'],
                      help="'on': InceptionV3 with each BatchNorm folded "
                           'into its convolution (conv + bias + ReLU, '
                           "FIDInceptionV3(fold_bn=True)); 'off': "
                           "pytorch-fid's order (the default everywhere); "
                           'several are timed one after the other')
  parser.add_argument('--profile_dir', default='',
                      help='if set, trace 3 more InceptionV3 calls per dtype '
                           'into DIR/inception_<batch>_<dtype>; summarise '
                           'with bench/trace_summary.py')
  args = parser.parse_args(argv)
  rows = []
  if 'inception_fid' in args.cases:
    rows += [bench_inception(args.inception_batch, d, args.iters, args.warmup,
                             args.profile_dir, fold == 'on')
             for d in args.dtypes for fold in args.inception_fold_bn]
  if 'ssim' in args.cases:
    rows.append(bench_ssim(args.batch, args.iters, args.warmup))
  if 'lpips' in args.cases:
    rows += [bench_lpips(n, args.batch, args.iters, args.warmup)
             for n in ('alex', 'vgg')]
  for r in rows:
    print(json.dumps(r), flush=True)
  print('\n| case | batch | dtype | img/s | step ms | compile s | MFU | '
        'device |\n|---|---|---|---|---|---|---|---|')
  for r in rows:
    case = r['case'] + (' (BN folded)' if r.get('fold_bn') else '')
    print(f"| {case} | {r['batch']} | {r['dtype']} | "
          f"{r['images_per_s']:.1f} | {r['step_ms']:.1f} | "
          f"{r['compile_s']:.1f} | {benchlib.utilisation_cell(r)} | "
          f"{r['device']} |")


if __name__ == '__main__':
  main()
