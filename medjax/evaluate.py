r"""Evaluates trained runs and writes a table of metrics with 95% CIs.

  python -m medjax.evaluate --workdir=runs/srresnet_brain \
    --workdir=runs/srgan_brain [--split=test] [--checkpoint=best]

For restoration runs (SRResNet, SRGAN): every image of the split is degraded
exactly as in training (`sr.lr_degradation`), restored by each run and by the
interpolation baselines (nearest, bilinear, bicubic upscaling with OpenCV's
rules; for scale 1, the degraded input itself), rounded to uint8 and compared
with the original: PSNR and SSIM on the 0-255 grey scale with `crop_border`
pixels cut from each side. Each cell is the mean over images with its 95%
Student-t confidence interval. Results go to `<out>/metrics.json` (values,
per-image arrays' summary and how they were made) and `<out>/metrics.md`
(the table), and the table is printed. `--out` defaults to
`<first workdir>/eval`.

All runs must share dataset, degradation and scale: the rows of one table are
computed on the same images.

For GAN runs (`config_lib.GAN_MODELS`), `medjax.metrics.generative.
evaluate_generator` instead: `--num_samples` generated images (`--seed`)
against the split's real images, SWD and MS-SSIM diversity always, FID / KID /
precision-recall with `--inception_weights`, each value with a metric card
and a bootstrap CI, plus the memorisation audit (`--audit`, on by default;
its grid is `<out>/audit_closest_pairs.png`). GAN runs are evaluated one at a
time (several --workdir: one `<out>/<run name>` each).

  python -m medjax.evaluate --workdir=runs/dcgan_brain \
    --inception_weights=weights/inception_fid [--num_samples=2048]

`--classifier_workdir=RUN` (a trained medjax classifier, configs/
classifier_brain.py) adds the same feature metrics on the classifier's
penultimate features, labelled 'FD_classifier:<dataset>:<run>' etc. (never
FID); with both flags, both feature spaces are reported.

For classifier runs (model.name 'classifier'): accuracy and macro one-vs-rest
ROC AUC (and each class's AUC) on the whole split (default the run's
`classifier.eval_split`), each with a 95% percentile bootstrap interval over
images (`--num_bootstrap`, default 1000), from the best checkpoint by default.

  python -m medjax.evaluate --workdir=runs/classifier_brain
"""

from __future__ import annotations

import datetime
import json
import os

import jax
import numpy as np

from medjax import config_lib
from medjax import train
from medjax.metrics import classification
from medjax.metrics import generative
from medjax.metrics import image as image_metrics
from medjax.metrics import stats
from medjax.trainers import adversarial
from medjax.trainers import sr as sr_lib

BASELINES = ('nearest', 'bilinear', 'bicubic')
_SAME_KEYS = ('dataset', 'sr.lr_degradation', 'model.sr.scale')


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config


def _restore(workdir: str, checkpoint: str):
  config, task, state, step, kind = train.restore_checkpoint(workdir, checkpoint)
  if not isinstance(task, sr_lib.SRTask):
    raise ValueError(
        f'{workdir} is a {config.model.name!r} run; evaluate GAN runs with '
        '`medjax.metrics.generative.evaluate_generator` (the command does)')
  return {'workdir': os.path.abspath(workdir), 'config': config, 'task': task,
          'state': state, 'step': int(step), 'checkpoint': kind}


def evaluate_restoration(workdirs: list[str], split: str | None = None,
                         num_images: int = 0, crop_border: int | None = None,
                         checkpoint: str = 'best',
                         batch_size: int = 16) -> dict:
  """PSNR/SSIM of restoration runs and interpolation baselines.

  Args:
    workdirs: SR training runs (same dataset, degradation and scale).
    split: dataset split; default the first run's `sr.eval_split`.
    num_images: evaluate the first N images of the split (0 = all).
    crop_border: pixels cut from each side; default the first run's
      `sr.crop_border`.
    checkpoint: 'best' (best validation checkpoint, else latest), 'latest',
      or a step number.
    batch_size: images per device call (memory only; not the result).

  Returns:
    A report: {'rows': [{'method', 'run', 'step', 'psnr': {mean, ci_low,
    ci_high, std, n}, 'ssim': {...}}], 'card': how it was made}.
  """
  if not workdirs:
    raise ValueError('give at least one --workdir')
  runs = [_restore(w, checkpoint) for w in workdirs]
  c0 = runs[0]['config']
  for r in runs[1:]:
    for key in _SAME_KEYS:
      if _get(r['config'], key) != _get(c0, key):
        raise ValueError(f'{r["workdir"]} and {runs[0]["workdir"]} differ in '
                         f'{key}: their metrics would not be comparable')
  split = split or c0.sr.eval_split
  crop_border = c0.sr.crop_border if crop_border is None else crop_border
  images = train.load_images(c0, split)
  if num_images:
    images = images[:num_images]
  task0 = runs[0]['task']
  scale = task0.scale
  methods = list(BASELINES) if scale > 1 else ['degraded input']

  def batch_fn(params_list, images):
    lr, hr = task0.eval_pairs(images)
    size = hr.shape[1:3]
    outs = ([sr_lib.upscale(lr, size, m) for m in BASELINES] if scale > 1
            else [lr])
    outs += [r['task'].restore(p, s, lr)
             for r, (p, s) in zip(runs, params_list)]
    return {'psnr': [image_metrics.psnr(o, hr, crop_border=crop_border)
                     for o in outs],
            'ssim': [image_metrics.ssim(o, hr, crop_border=crop_border)
                     for o in outs]}

  fn = jax.jit(batch_fn)
  # The G EMA when the run kept one (what it validated and restores with).
  params = [(adversarial.sampling_params(r['state']), r['state'].g_stats)
            for r in runs]
  per_image = {'psnr': [], 'ssim': []}
  for i in range(0, len(images), batch_size):
    out = fn(params, images[i:i + batch_size])
    for k in per_image:
      per_image[k].append(np.stack([np.asarray(v) for v in out[k]]))
  per_image = {k: np.concatenate(v, axis=1) for k, v in per_image.items()}

  labels = [(m, '', None) for m in methods] + [
      (r['config'].model.name, r['workdir'], r['step']) for r in runs]
  rows = []
  for j, (method, run, step) in enumerate(labels):
    row = {'method': method, 'run': run, 'step': step}
    for k in ('psnr', 'ssim'):
      row[k] = stats.mean_ci(per_image[k][j])
    if run:
      row['checkpoint'] = runs[j - len(methods)]['checkpoint']
    rows.append(row)
  card = {
      'metrics': {
          'psnr': 'dB, 10 log10(255^2 / MSE), skimage-equal',
          'ssim': 'skimage structural_similarity, Gaussian sigma 1.5, '
                  'population covariances, data_range 255'},
      'data_range': 255, 'rounding': 'outputs rounded to uint8 first',
      'crop_border': crop_border, 'dataset': c0.dataset.name,
      'split': split, 'num_images': int(len(images)),
      'degradation': c0.sr.lr_degradation,
      'dataset_degradation': c0.dataset.degradation,
      'scale': scale, 'interval': '95% Student-t CI of the mean over images',
      'date': datetime.date.today().isoformat(),
      'device': jax.devices()[0].device_kind,
  }
  return {'rows': rows, 'card': card}


def evaluate_classifier(workdir: str, split: str | None = None,
                        checkpoint: str = 'best', num_images: int = 0,
                        num_bootstrap: int = 1000, seed: int = 0,
                        batch_size: int = 64) -> dict:
  """Accuracy and one-vs-rest ROC AUC of a classifier run, with 95% CIs.

  Args:
    workdir: a classifier training run.
    split: dataset split; default the run's `classifier.eval_split`, else
      'test'.
    checkpoint: 'best' (best validation AUC, else latest), 'latest' or a
      step number.
    num_images: the first N images of the split (0 = all).
    num_bootstrap: bootstrap resamples over images.
    seed: resampling seed.
    batch_size: images per device call (memory only).

  Returns:
    {'rows': [{'metric', 'value', 'ci_low', 'ci_high'}] (accuracy, auc,
    auc_<class> per class), 'card': how it was made}; JSON-serialisable
    (NaN as None).
  """
  config, task, state, step, kind = train.restore_checkpoint(workdir, checkpoint)
  if config.model.name != 'classifier':
    raise ValueError(f'{workdir} is a {config.model.name!r} run, not a '
                     'classifier')
  split = split or config.classifier.eval_split or 'test'
  images, labels, names = train.load_images(config, split, with_labels=True)
  if num_images:
    images, labels = images[:num_images], labels[:num_images]
  probs, _ = task.predict(state, images, batch_size)
  res = classification.bootstrap_intervals(probs, labels, num_bootstrap, seed)
  k = probs.shape[1]
  names = tuple(names) if len(names) == k else tuple(
      str(c) for c in range(k))

  def row(metric, r):
    return {'metric': metric, 'value': _finite(r['value']),
            'ci_low': _finite(r['ci_low']), 'ci_high': _finite(r['ci_high'])}

  rows = [row('accuracy', res['accuracy']), row('auc', res['auc'])]
  rows += [row(f'auc_{n}', r) for n, r in zip(names, res['per_class_auc'])]
  counts = np.bincount(labels, minlength=k)
  card = {
      'run': os.path.abspath(workdir), 'step': int(step), 'checkpoint': kind,
      'dataset': config.dataset.name, 'split': split,
      'num_images': int(len(labels)), 'image_size': config.dataset.image_size,
      'class_counts': {n: int(c) for n, c in zip(names, counts)},
      'metrics': {
          'accuracy': 'fraction of images whose argmax class is the label',
          'auc': 'macro mean of one-vs-rest ROC AUCs of the softmax '
                 'probabilities (classes present in the split; sklearn '
                 "roc_auc_score(multi_class='ovr', average='macro'))",
          'auc_<class>': 'that class vs the rest'},
      'interval': res['ci_method'], 'num_resamples': res['num_resamples'],
      'seed': seed, 'date': datetime.date.today().isoformat(),
      'device': jax.devices()[0].device_kind,
  }
  return {'rows': rows, 'card': card}


def _finite(x):
  x = float(x)
  return x if np.isfinite(x) else None


def format_classifier_table(report: dict) -> str:
  """A classifier report as a Markdown table (value [95% CI])."""
  c = report['card']
  lines = [
      f"classifier {os.path.basename(c['run'])} ({c['checkpoint']}, step "
      f"{c['step']}) on {c['dataset']}/{c['split']}, {c['num_images']} "
      f"images; value [95% CI, {c['num_resamples']} bootstrap resamples].",
      '', '| metric | value | 95% CI |', '|---|---|---|']
  f = lambda x: 'n/a' if x is None else f'{x:.4f}'
  for r in report['rows']:
    lines.append(f"| {r['metric']} | {f(r['value'])} | [{f(r['ci_low'])}, "
                 f"{f(r['ci_high'])}] |")
  return '\n'.join(lines) + '\n'


def format_table(report: dict) -> str:
  """The report as a Markdown table (mean [95% CI])."""
  card = report['card']
  lines = [
      f"{card['dataset']}/{card['split']}, {card['num_images']} images, "
      f"LR = {card['degradation']} (scale {card['scale']}), crop border "
      f"{card['crop_border']}, 0-255 grey scale; mean [95% CI].", '',
      '| method | run | PSNR (dB) | SSIM |', '|---|---|---|---|']
  for r in report['rows']:
    run = (f"{os.path.basename(r['run'])} ({r['checkpoint']}, step "
           f"{r['step']})" if r['run'] else '-')
    p, s = r['psnr'], r['ssim']
    lines.append(
        f"| {r['method']} | {run} | {p['mean']:.2f} [{p['ci_low']:.2f}, "
        f"{p['ci_high']:.2f}] | {s['mean']:.4f} [{s['ci_low']:.4f}, "
        f"{s['ci_high']:.4f}] |")
  return '\n'.join(lines) + '\n'


def write_report(report: dict, out: str, table=format_table) -> None:
  """Writes `metrics.json` and `metrics.md` (by `table(report)`) into `out`."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'metrics.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(out, 'metrics.md'), 'w') as f:
    f.write(table(report))


def _define_flags():
  """Defined only when run as a command (absl flags are global)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_multi_string('workdir', None, 'Training run(s) to evaluate.')
  flags.DEFINE_string('split', None, 'Split; default the run\'s eval split.')
  flags.DEFINE_integer('num_images', 0, 'First N images (0 = all).')
  flags.DEFINE_integer('crop_border', None, 'Default: the run\'s config.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
  flags.DEFINE_integer('batch_size', 16, 'Images per device call.')
  flags.DEFINE_string('out', None, 'Output dir; default <workdir>/eval.')
  # GAN runs only.
  flags.DEFINE_integer('num_samples', 2048, 'GAN: images to generate.')
  flags.DEFINE_list('metrics', None, 'GAN: subset of '
                    f'{",".join(generative.METRICS)}; default all that can '
                    'run (feature metrics need --inception_weights).')
  flags.DEFINE_string('inception_weights', None,
                      'GAN: pytorch-fid Inception weights (medjax.weights).')
  flags.DEFINE_string('classifier_workdir', None,
                      'GAN: a trained medjax classifier run; the feature '
                      'metrics are computed on its penultimate features too '
                      '(labelled FD_classifier:..., not FID).')
  flags.DEFINE_integer('seed', 0, 'GAN: latent, subset and bootstrap seed.')
  flags.DEFINE_integer('num_bootstrap', None, 'GAN: bootstrap resamples for '
                       'every metric; default per metric (see docs). '
                       'Classifier: resamples (default 1000).')
  flags.DEFINE_bool('audit', True, 'GAN: memorisation audit against the '
                    'training split.')
  flags.mark_flag_as_required('workdir')


def _evaluate_gans(f) -> None:
  """The command for GAN runs: one report per run."""
  step = None if f.checkpoint in ('best', 'latest') else int(f.checkpoint)
  for workdir in f.workdir:
    if f.out is None:
      out = os.path.join(workdir, 'eval')
    elif len(f.workdir) == 1:
      out = f.out
    else:
      out = os.path.join(f.out, os.path.basename(os.path.normpath(workdir)))
    report = generative.evaluate_generator(
        workdir, num_samples=f.num_samples, split=f.split,
        metrics=tuple(f.metrics) if f.metrics else None,
        inception_weights=f.inception_weights, seed=f.seed,
        num_bootstrap=f.num_bootstrap, audit=f.audit, out_dir=out, step=step,
        classifier_workdir=f.classifier_workdir)
    write_report(report, out, generative.format_table)
    print(generative.format_table(report))


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  name = train.load_config(f.workdir[0]).model.name
  if name in config_lib.GAN_MODELS:
    _evaluate_gans(f)
    return
  if name == 'classifier':
    for workdir in f.workdir:
      report = evaluate_classifier(
          workdir, f.split, f.checkpoint, f.num_images,
          1000 if f.num_bootstrap is None else f.num_bootstrap, f.seed,
          f.batch_size)
      out = f.out or os.path.join(workdir, 'eval')
      if f.out and len(f.workdir) > 1:
        out = os.path.join(f.out, os.path.basename(os.path.normpath(workdir)))
      write_report(report, out, format_classifier_table)
      print(format_classifier_table(report))
    return
  report = evaluate_restoration(f.workdir, f.split, f.num_images,
                                f.crop_border, f.checkpoint, f.batch_size)
  write_report(report, f.out or os.path.join(f.workdir[0], 'eval'))
  print(format_table(report))


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
