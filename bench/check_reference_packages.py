r"""Checks medjax's LPIPS and FID against the real `lpips` and `pytorch-fid`.

medjax's tests compare LPIPS and FID's Inception with torch transcriptions
written in this repo. This script runs the published packages' own code
instead: `lpips` 0.1.4 (Zhang et al., v0.1 linear layers, the real
`weights/v0.1/{alex,vgg}.pth` shipped in the wheel) and `pytorch-fid` 0.3.0
(`InceptionV3`, `calculate_frechet_distance`). It is a one-off check, not a
test: pytest does not collect it (testpaths = tests) and no test needs it.

Pretrained backbones (torchvision AlexNet / VGG16, pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`) are downloads, so both sides get the
SAME random backbone weights, written with `torch.save` and converted with
`python -m medjax.weights convert`, exactly as real files would be. Nothing
is downloaded: lpips is built with `pnet_rand=True` (torchvision
`alexnet(pretrained=False)` / `vgg16(pretrained=False)`, random init; its
linear layers come from the wheel's file), and pytorch-fid's
`load_state_dict_from_url` is replaced by a function returning the random
Inception state dict (loaded back from the saved .pth).

Setup (once; PyPI only):

  pip download --no-deps lpips==0.1.4 pytorch-fid==0.3.0 -d /tmp/lp
  python -m venv --system-site-packages /tmp/tvenv  # keeps the main torch
  /tmp/tvenv/bin/pip install --no-deps torchvision==0.28.0  # torch==2.13.*
  # run from the repository root:
  nice -n 19 /tmp/tvenv/bin/python bench/check_reference_packages.py \
      --lpips=/tmp/lp/lpips-0.1.4-py3-none-any.whl \
      --pytorch_fid=/tmp/lp/pytorch_fid-0.3.0-py3-none-any.whl

`--lpips` / `--pytorch_fid` take the .whl (unpacked into --workdir) or a
directory holding the unpacked package (e.g. /tmp/lp/ext with `lpips/` and
`pytorch_fid/` in it). Pick the torchvision release whose metadata requires
the installed torch (`torchvision==0.28.0` requires `torch==2.13.0`). The
PyPI torchvision wheel is a CUDA build; beside a `+cpu` torch its compiled
ops (`_C.so`, needs libc10_cuda.so) do not load, and torchvision 0.28's
import then fails registering fake kernels for `torchvision::nms` / `qnms`.
This script then defines those two operator schemas (never called) before
importing torchvision, so the pure-Python model definitions load.

Output: one JSON line per comparison (`check`, sizes, `max_abs`, `max_rel`,
reference value range, `tol`, `ok`), then a summary line. Everything runs on
the CPU in float32 (medjax with `precision='highest'` for LPIPS, the default
for Inception). Results of 2026-11-25 are in docs/metrics.md ("Checked
against the reference packages").
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _emit(record: dict) -> dict:
  print(json.dumps(record), flush=True)
  return record


def _package_dir(path: str, name: str, workdir: str) -> str:
  """A directory to put on sys.path that holds package `name`."""
  if os.path.isdir(path):
    if not os.path.isdir(os.path.join(path, name)):
      raise FileNotFoundError(f'{path} holds no {name}/ package directory')
    return path
  if path.endswith('.whl') and os.path.isfile(path):
    out = os.path.join(workdir, 'wheels', os.path.basename(path)[:-4])
    with zipfile.ZipFile(path) as zf:
      zf.extractall(out)
    return out
  raise FileNotFoundError(f'{path}: neither a wheel nor a directory')


def _import_torchvision():
  """Imports torchvision, stubbing its two unguarded fake-kernel ops when
  the compiled extension cannot load (CUDA wheel beside a CPU torch)."""
  import torch  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('torchvision')
  if spec is None:
    raise ImportError('torchvision is not installed (see the docstring)')
  lib_dir = list(spec.submodule_search_locations)[0]
  ext = [f for f in os.listdir(lib_dir) if f.startswith('_C.')]
  loaded = False
  if ext:
    try:
      torch.ops.load_library(os.path.join(lib_dir, ext[0]))
      loaded = True
    except (OSError, RuntimeError):
      loaded = False
  if not loaded:
    lib = torch.library.Library('torchvision', 'DEF')  # pylint: disable=unused-variable
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> '
               'Tensor')
    _import_torchvision.lib = lib  # keep the registration alive
  import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision, loaded


def _convert(kind: str, src: str, out: str) -> dict:
  """`python -m medjax.weights convert`, as a user would run it."""
  res = subprocess.run(
      [sys.executable, '-m', 'medjax.weights', 'convert', f'--kind={kind}',
       f'--src={src}', f'--out={out}'], cwd=REPO, capture_output=True,
      text=True, check=False)
  if res.returncode != 0:
    raise RuntimeError(f'convert {kind} failed:\n{res.stderr}')
  with open(os.path.join(out, 'weights.json')) as f:
    return json.load(f)


def _diff(check: str, ours: np.ndarray, ref: np.ndarray, tol: float,
          rel_floor: float = 0.0, **extra) -> dict:
  """max |ours - ref|, max relative difference (relative to |ref|, entries
  with |ref| <= rel_floor excluded), and ok = max_rel <= tol."""
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (check, ours.shape, ref.shape)
  d = np.abs(ours - ref)
  mask = np.abs(ref) > rel_floor
  rel = float(np.max(d[mask] / np.abs(ref[mask]))) if mask.any() else 0.0
  return _emit({'check': check, 'shape': list(ref.shape),
                'max_abs': float(d.max()), 'max_rel': rel,
                'ref_min': float(ref.min()), 'ref_max': float(ref.max()),
                'tol': tol, 'ok': bool(rel <= tol), **extra})


# --- Images ------------------------------------------------------------------


def _smooth_images(rng, n, size, channels, low=8):
  """Random smooth images in [0, 1]: bilinear-upsampled low-res noise plus a
  little pixel noise, (n, size, size, channels) float32."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  base = rng.uniform(0, 1, (n, low, low, channels))
  up = ndimage.zoom(base, (1, size / low, size / low, 1), order=1)
  up = up[:, :size, :size] + 0.05 * rng.standard_normal((n, size, size,
                                                         channels))
  return np.clip(up, 0, 1).astype(np.float32)


def _lpips_pairs(rng, n, size, channels):
  """n pairs in [-1, 1]: the first half perturbed copies (small distances),
  the second half independent images (large distances)."""
  a = _smooth_images(rng, n, size, channels) * 2 - 1
  b = _smooth_images(rng, n, size, channels) * 2 - 1
  h = n // 2
  b[:h] = np.clip(a[:h] + 0.15 * rng.standard_normal(a[:h].shape), -1, 1)
  return a.astype(np.float32), b.astype(np.float32)


# --- LPIPS -------------------------------------------------------------------


def check_lpips(args, workdir, torch, lpips_pkg) -> list[dict]:
  from medjax.metrics import lpips as mj_lpips  # pylint: disable=g-import-not-at-top
  out = []
  lin_dir = os.path.join(os.path.dirname(lpips_pkg.__file__), 'weights',
                         'v0.1')
  for net, kind in (('alex', 'alexnet'), ('vgg', 'vgg16')):
    t0 = time.time()
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # torchvision's `pretrained` warning
      ref = lpips_pkg.LPIPS(net=net, pretrained=True, pnet_rand=True,
                            verbose=False).eval()
    # Random biases too (torchvision's VGG init sets them to 0), so that the
    # bias path is exercised; the same values go to both sides.
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
      for name, p in ref.net.named_parameters():
        if name.endswith('bias'):
          p.copy_(0.1 * torch.randn(p.shape, generator=g))
    # The backbone in torchvision's layout: lpips' slices keep torchvision's
    # `features` indices as module names ('slice2.3.weight' is features.3).
    sd = collections.OrderedDict(
        (f'features.{k.split(".", 1)[1]}', v.detach().clone())
        for k, v in ref.net.state_dict().items())
    tv_model = getattr(args.torchvision.models, kind)(weights=None)
    tv_model.features.load_state_dict(
        {k[len('features.'):]: v for k, v in sd.items()}, strict=True)
    backbone_pth = os.path.join(workdir, f'{kind}_random.pth')
    torch.save(sd, backbone_pth)
    backbone_dir = os.path.join(workdir, f'{kind}_random')
    lin_pth = os.path.join(lin_dir, f'{net}.pth')
    lin_out = os.path.join(workdir, f'lpips_{net}')
    _convert(kind, backbone_pth, backbone_dir)
    lin_info = _convert(f'lpips_{net}', lin_pth, lin_out)
    metric = mj_lpips.LPIPS(net, backbone_weights=backbone_dir,
                            lin_weights=lin_out)
    # The converted linear layers are the package's, bit for bit.
    lin_ref = np.concatenate([ref.lins[l].model[-1].weight.detach().numpy()
                              .ravel() for l in range(5)])
    lin_ours = np.concatenate([np.asarray(metric.params['lin'][f'lin{l}'])
                               for l in range(5)])
    out.append(_diff(f'lpips_{net}_lin_weights', lin_ours, lin_ref, 0.0,
                     lin_sha256=lin_info['source_sha256']))
    rng = np.random.default_rng(args.seed)
    cases = [('64_rgb', 64, 3, args.num_pairs),
             ('64_gray', 64, 1, args.num_pairs),
             ('256_rgb', 256, 3, args.num_pairs_256)]
    for name, size, c, n in cases:
      a, b = _lpips_pairs(rng, n, size, c)
      ours = np.asarray(metric(a, b, per_layer=True))   # (n, 5)

      def to_torch(x):
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

      with torch.no_grad():
        total, layers = ref(to_torch(a), to_torch(b), retPerLayer=True,
                            normalize=False)
      total = total.numpy().reshape(n)
      layers = np.stack([r.numpy().reshape(n) for r in layers], axis=-1)
      out.append(_diff(f'lpips_{net}_{name}', ours.sum(-1), total,
                       args.lpips_tol, n_pairs=n))
      out.append(_diff(f'lpips_{net}_{name}_per_layer', ours, layers,
                       args.lpips_tol, rel_floor=1e-6, n_pairs=n))
      if name == '64_rgb':
        # [0, 1] inputs: the package's normalize=True == medjax on 2x - 1.
        a01, b01 = (a + 1) / 2, (b + 1) / 2
        with torch.no_grad():
          t01 = ref(to_torch(a01), to_torch(b01), normalize=True)
        out.append(_diff(f'lpips_{net}_{name}_normalize_true',
                         np.asarray(metric(2 * a01 - 1, 2 * b01 - 1)),
                         t01.numpy().reshape(n), args.lpips_tol, n_pairs=n))
    _emit({'check': f'lpips_{net}_time_s', 'seconds': time.time() - t0})
  return out


# --- FID ---------------------------------------------------------------------


def _random_inception_state_dict(torch, torchvision, seed):
  """pytorch-fid's key layout (torchvision Inception3, 1008 classes, no aux)
  with random values: He-scaled kernels, BatchNorm affine and running
  statistics away from (1, 0, 0, 1), so that the BN folding is exercised."""
  model = torchvision.models.inception_v3(
      weights=None, aux_logits=False, num_classes=1008, init_weights=False)
  g = torch.Generator().manual_seed(seed)
  sd = collections.OrderedDict()
  for k, v in model.state_dict().items():
    shape = tuple(v.shape)
    if k.endswith('num_batches_tracked'):
      sd[k] = v.clone()
    elif k.endswith('conv.weight'):
      fan_in = shape[1] * shape[2] * shape[3]
      sd[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    elif k.endswith('bn.weight') or k.endswith('running_var'):
      sd[k] = 0.5 + torch.rand(shape, generator=g)
    elif k.endswith('bn.bias') or k.endswith('running_mean'):
      sd[k] = 0.1 * torch.randn(shape, generator=g)
    else:  # fc.weight, fc.bias (not used by either side)
      sd[k] = 0.01 * torch.randn(shape, generator=g)
  return sd


def _fid_image_sets(rng, n):
  """Two grayscale 64x64 uint8 sets of different distributions: smooth
  blobs, and noisier, darker images with stripes."""
  a = _smooth_images(rng, n, 64, 1)
  b = _smooth_images(rng, n, 64, 1, low=16) * 0.6
  b += 0.2 * (np.sin(np.arange(64) / 3.0)[None, :, None, None] > 0)
  b += 0.1 * rng.standard_normal(b.shape)
  to8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  return to8(a), to8(b)


def check_fid(args, workdir, torch, fid_inception, fid_score) -> list[dict]:
  from medjax import weights  # pylint: disable=g-import-not-at-top
  from medjax.metrics import distribution  # pylint: disable=g-import-not-at-top
  from medjax.models import inception  # pylint: disable=g-import-not-at-top
  out = []
  t0 = time.time()
  sd = _random_inception_state_dict(torch, args.torchvision, args.seed)
  zip_pth = os.path.join(workdir, 'inception_random_zip.pth')
  legacy_pth = os.path.join(workdir, 'inception_random_legacy.pth')
  torch.save(sd, zip_pth)
  torch.save(sd, legacy_pth, _use_new_zipfile_serialization=False)
  zip_dir = os.path.join(workdir, 'inception_zip')
  legacy_dir = os.path.join(workdir, 'inception_legacy')
  _convert('inception_fid', zip_pth, zip_dir)
  _convert('inception_fid', legacy_pth, legacy_dir)
  params = weights.load('inception_fid', zip_dir)
  params_legacy = weights.load('inception_fid', legacy_dir)
  import jax  # pylint: disable=g-import-not-at-top
  leaves = jax.tree.leaves(params)
  leaves_legacy = jax.tree.leaves(params_legacy)
  same = (len(leaves) == len(leaves_legacy) and all(
      np.array_equal(x, y) for x, y in zip(leaves, leaves_legacy)))
  out.append(_emit({'check': 'inception_convert_zip_vs_legacy',
                    'num_arrays': len(leaves), 'identical': bool(same),
                    'ok': bool(same)}))

  # pytorch-fid's own constructor, its download replaced by the saved file.
  calls = []

  def fake_load(url, *a, **kw):
    del a, kw
    calls.append(url)
    return torch.load(zip_pth, map_location='cpu')

  fid_inception.load_state_dict_from_url = fake_load
  ref = fid_inception.InceptionV3(
      [fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
      normalize_input=True, use_fid_inception=True).eval()
  assert calls == [fid_inception.FID_WEIGHTS_URL], calls

  def torch_features(images_u8):
    feats = []
    for s in range(0, len(images_u8), args.batch_size):
      x = images_u8[s:s + args.batch_size].astype(np.float32) / 255.0
      x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
      if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)   # medjax's grayscale policy, done by hand
      with torch.no_grad():
        pred = ref(x)[0]
      feats.append(pred.squeeze(3).squeeze(2).numpy())
    return np.concatenate(feats)

  rng = np.random.default_rng(args.seed + 2)
  set_a, set_b = _fid_image_sets(rng, args.num_fid)
  rgb = np.round(_smooth_images(rng, args.num_rgb299, 299, 3, low=13)
                 * 255).astype(np.uint8)
  feats = {}
  for name, imgs in (('fid_a_64_gray', set_a), ('fid_b_64_gray', set_b),
                     ('299_rgb', rgb)):
    t1 = time.time()
    t = torch_features(imgs)
    t_torch = time.time() - t1
    t1 = time.time()
    m = inception.fid_features(params, imgs, batch_size=args.batch_size)
    t_ours = time.time() - t1
    feats[name] = (m, t)
    scale = float(np.abs(t).max())
    rec = _diff(f'inception_features_{name}', m, t, args.feature_tol,
                rel_floor=1e-2 * scale, n_images=len(imgs),
                max_abs_over_max=float(np.abs(m - t).max() / scale),
                allclose_rtol_1em4=bool(np.allclose(
                    m, t, rtol=1e-4, atol=1e-4 * scale)),
                seconds_torch=round(t_torch, 1),
                seconds_medjax=round(t_ours, 1))
    out.append(rec)

  def ref_stats(f):   # pytorch-fid's calculate_activation_statistics
    return np.mean(f, axis=0), np.cov(f, rowvar=False)

  (ma, ta), (mb, tb) = feats['fid_a_64_gray'], feats['fid_b_64_gray']
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # scipy's `disp`
    fid_ref = float(fid_score.calculate_frechet_distance(
        *ref_stats(ta), *ref_stats(tb)))
    fid_ref_ours_feats = float(fid_score.calculate_frechet_distance(
        *ref_stats(ma), *ref_stats(mb)))
  fid_ours = distribution.frechet_distance(
      *distribution.feature_stats(ma), *distribution.feature_stats(mb))
  fid_ours_ref_feats = distribution.frechet_distance(
      *distribution.feature_stats(ta), *distribution.feature_stats(tb))
  n = args.num_fid
  out.append(_diff('fid_end_to_end', fid_ours, fid_ref, args.fid_tol,
                   n_per_set=n, note='medjax features + frechet_distance vs '
                   'pytorch-fid features + calculate_frechet_distance'))
  out.append(_diff('fid_distance_same_features', fid_ours_ref_feats, fid_ref,
                   args.fid_tol, n_per_set=n, note='both distance functions '
                   'on pytorch-fid features'))
  out.append(_diff('fid_network_same_distance', fid_ref_ours_feats, fid_ref,
                   args.fid_tol, n_per_set=n, note='calculate_frechet_distance'
                   ' on medjax vs pytorch-fid features'))
  self_ref = float(fid_score.calculate_frechet_distance(
      *ref_stats(ta), *ref_stats(ta)))
  self_ours = distribution.frechet_distance(
      *distribution.feature_stats(ma), *distribution.feature_stats(ma))
  _emit({'check': 'fid_set_vs_itself', 'pytorch_fid': self_ref,
         'medjax': self_ours, 'note': 'singular covariances: sqrtm noise'})

  # Non-singular covariances (N > D = 2048): synthetic correlated features.
  d = 2048
  nn_ = args.num_synthetic
  base = rng.standard_normal((nn_, d)) @ (
      rng.standard_normal((d, d)) / np.sqrt(d))
  f1 = np.abs(base).astype(np.float32)
  f2 = (np.abs(base + 0.5 * rng.standard_normal((nn_, d))) * 1.1
        ).astype(np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    fr = float(fid_score.calculate_frechet_distance(*ref_stats(f1),
                                                    *ref_stats(f2)))
  fo = distribution.fid_from_features(f1, f2)
  out.append(_diff('frechet_distance_nonsingular_2048', fo, fr, args.fid_tol,
                   n_per_set=nn_))
  _emit({'check': 'fid_time_s', 'seconds': time.time() - t0})
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--lpips', required=True,
                 help='lpips-0.1.4 wheel, or a directory holding lpips/')
  p.add_argument('--pytorch_fid', required=True,
                 help='pytorch_fid-0.3.0 wheel, or a directory holding '
                      'pytorch_fid/')
  p.add_argument('--workdir', default=None,
                 help='scratch directory (default: a new temporary one)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--num_pairs', type=int, default=16,
                 help='LPIPS pairs at 64x64 (RGB and grayscale)')
  p.add_argument('--num_pairs_256', type=int, default=16,
                 help='LPIPS pairs at 256x256 RGB')
  p.add_argument('--num_fid', type=int, default=64,
                 help='images per FID set (64x64 grayscale)')
  p.add_argument('--num_rgb299', type=int, default=8,
                 help='299x299 RGB images for the feature check')
  p.add_argument('--num_synthetic', type=int, default=3000,
                 help='synthetic 2048-d features per set (non-singular FID)')
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--lpips_tol', type=float, default=1e-4)
  p.add_argument('--feature_tol', type=float, default=1e-4)
  p.add_argument('--fid_tol', type=float, default=1e-3)
  p.add_argument('--skip', nargs='*', default=(), choices=('lpips', 'fid'))
  args = p.parse_args(argv)

  workdir = args.workdir or tempfile.mkdtemp(prefix='medjax_refcheck_')
  os.makedirs(workdir, exist_ok=True)
  sys.path.insert(0, _package_dir(args.pytorch_fid, 'pytorch_fid', workdir))
  sys.path.insert(0, _package_dir(args.lpips, 'lpips', workdir))
  sys.path.insert(0, REPO)

  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  torchvision, tv_ops = _import_torchvision()
  args.torchvision = torchvision
  import jax  # pylint: disable=g-import-not-at-top
  import lpips as lpips_pkg  # pylint: disable=g-import-not-at-top
  from pytorch_fid import fid_score  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as fid_inception  # pylint: disable=g-import-not-at-top
  import pytorch_fid  # pylint: disable=g-import-not-at-top
  _emit({'check': 'environment', 'torch': torch.__version__,
         'torchvision': torchvision.__version__,
         'torchvision_compiled_ops': tv_ops,
         'lpips_file': lpips_pkg.__file__,
         'pytorch_fid': pytorch_fid.__version__,
         'pytorch_fid_file': fid_inception.__file__,
         'jax': jax.__version__, 'jax_backend': jax.default_backend(),
         'workdir': workdir, 'date': time.strftime('%Y-%m-%d')})
  results = []
  if 'lpips' not in args.skip:
    results += check_lpips(args, workdir, torch, lpips_pkg)
  if 'fid' not in args.skip:
    results += check_fid(args, workdir, torch, fid_inception, fid_score)
  failed = [r['check'] for r in results if not r.get('ok', True)]
  _emit({'check': 'summary', 'num_checks': len(results), 'failed': failed})
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
