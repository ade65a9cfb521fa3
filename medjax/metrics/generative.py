"""Evaluation of a trained GAN generator: metrics with cards and 95% CIs.

`evaluate_generator` draws `num_samples` images from a run (`medjax.sample.
generate`, deterministic for the seed), loads the real images of a split and
computes:

  * network-free, always: SWD x 1e3 (`medjax.metrics.swd`, on as many real as
    generated images) and MS-SSIM diversity of the generated set and of the
    real set (the reference line);
  * with Inception weights, a trained medjax classifier run
    (`classifier_workdir`: its penultimate features) or any other
    `features.Extractor`, in each of these feature spaces: the Frechet
    distance (called FID only with pytorch-fid's Inception, see
    `card.metric_label`; 'FD_classifier:<dataset>:<run>' on classifier
    features), KID (mean +- std over subsets) and improved precision/recall
    (k = 3);
  * optionally the memorisation audit (`medjax.metrics.audit`) against the
    training split.

Each value comes with a card (`medjax.metrics.card`). Intervals are 95%
percentile bootstrap intervals over images: the real and the generated sets
are resampled independently with replacement and the metric recomputed
(features are computed once). Resampling duplicates images, which inflates
every distance between sets (a duplicated point shrinks the covariance, the
k-NN radii, the sorted-projection match), so the bootstrap distribution is
re-centred on the point value before its percentiles are taken; the shift is
recorded as `bootstrap_shift`. For MS-SSIM diversity the fixed random pairs
are re-weighted by the images' resampling counts (no duplicate pairs).
"""

from __future__ import annotations

import datetime
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from medjax import config_lib
from medjax import train
from medjax import weights
from medjax.metrics import audit as audit_lib
from medjax.metrics import card as card_lib
from medjax.metrics import distribution
from medjax.metrics import diversity
from medjax.metrics import features as features_lib
from medjax.metrics import swd as swd_lib

IMAGE_METRICS = ('swd', 'ms_ssim')
FEATURE_METRICS = ('fid', 'kid', 'precision_recall')
METRICS = IMAGE_METRICS + FEATURE_METRICS
# Bootstrap resamples per metric: each FID resample costs two 2048-d
# eigendecompositions (seconds), each SWD resample a pass over the images.
DEFAULT_RESAMPLES = {'fid': 20, 'kid': 50, 'precision_recall': 50,
                     'swd': 20, 'ms_ssim': 200}
KID_SUBSETS = 100
KID_BOOTSTRAP_SUBSETS = 10  # per resample: the resampling dominates anyway
PR_K = 3
NUM_PAIRS = 1000
_CI_METHOD = ('95% percentile bootstrap over images (real and generated '
              'resampled independently), re-centred on the point value')


def _interval(point, reps: np.ndarray, num: int, clip=None,
              method: str = _CI_METHOD) -> dict:
  """Re-centred percentile interval of bootstrap replicates."""
  if num == 0:
    return {'ci_method': 'none', 'num_resamples': 0}
  reps = np.asarray(reps, np.float64)
  shift = float(reps.mean() - point)
  lo, hi = np.quantile(reps - shift, [0.025, 0.975])
  if clip is not None:
    lo, hi = np.clip([lo, hi], *clip)
  return {'ci_low': float(lo), 'ci_high': float(hi), 'ci_method': method,
          'num_resamples': int(num), 'bootstrap_shift': shift}


def _resample_pairs(fn, real, fake, num: int, seed: int) -> np.ndarray:
  """`fn` on `num` independent resamples of (real, fake); (num, K) array."""
  if num == 0:
    return np.zeros((0, 1))
  rng = np.random.default_rng([seed, 1])
  out = []
  for _ in range(num):
    ir = rng.integers(0, len(real), len(real))
    ig = rng.integers(0, len(fake), len(fake))
    out.append(np.atleast_1d(fn(real[ir], fake[ig])))
  return np.asarray(out, np.float64).reshape(num, -1)


def _pair_values(images: np.ndarray, pairs: np.ndarray, num_scales: int,
                 batch_size: int = 100) -> np.ndarray:
  vals = []
  for s in range(0, len(pairs), batch_size):
    p = pairs[s:s + batch_size]
    vals.append(np.asarray(diversity.ms_ssim_scales(
        jnp.asarray(images[p[:, 0]]), jnp.asarray(images[p[:, 1]]),
        None, num_scales)))
  return np.concatenate(vals).astype(np.float64)


def _diversity(images: np.ndarray, num_pairs: int, num_scales: int,
               num_resamples: int, seed: int) -> tuple[float, dict, dict]:
  """Mean pairwise MS-SSIM, its interval and details."""
  pairs = diversity.random_pairs(len(images), num_pairs, seed)
  vals = _pair_values(images, pairs, num_scales)
  point = float(vals.mean())
  rng = np.random.default_rng([seed, 2])
  reps = []
  for _ in range(num_resamples):
    # Bootstrap over images: a pair counts as often as both its images are
    # drawn (with the fixed pairs, no image is paired with its own copy).
    counts = rng.multinomial(len(images), np.full(len(images),
                                                  1 / len(images)))
    w = counts[pairs[:, 0]] * counts[pairs[:, 1]]
    reps.append(float((w * vals).sum() / w.sum()) if w.sum() else point)
  method = ('95% percentile bootstrap over images (pair values re-weighted '
            'by the images\' resampling counts), re-centred')
  return point, _interval(point, reps, num_resamples, (0., 1.), method), {
      'num_pairs': num_pairs, 'num_scales': num_scales,
      'std_over_pairs': float(vals.std()),
      'note': 'lower = more diverse; generated well above real hints at '
              'mode collapse'}


def _resamples(num_bootstrap) -> dict[str, int]:
  if num_bootstrap is None:
    return dict(DEFAULT_RESAMPLES)
  if isinstance(num_bootstrap, dict):
    return {**DEFAULT_RESAMPLES, **num_bootstrap}
  return {k: int(num_bootstrap) for k in DEFAULT_RESAMPLES}


def evaluate_generator(workdir: str, num_samples: int = 2048,
                       split: str | None = None,
                       metrics: tuple[str, ...] | None = None,
                       inception_weights: str | None = None, seed: int = 0,
                       num_bootstrap: int | dict | None = None,
                       extractor: features_lib.Extractor | None = None,
                       audit: bool = True, out_dir: str | None = None,
                       step: int | None = None, num_pairs: int = NUM_PAIRS,
                       audit_percentile: float = 1.0,
                       classifier_workdir: str | None = None) -> dict:
  """Metrics of a GAN run's generator against real images, with cards.

  Args:
    workdir: a GAN training run.
    num_samples: images to generate.
    split: real images' split; default 'test'.
    metrics: subset of `METRICS`; None: every metric that can run
      (feature metrics only with weights or an `extractor`; the others are
      listed in the report's `skipped`).
    inception_weights: pytorch-fid Inception weights (see `medjax.weights`).
    seed: seed of the latents, real subsets, SWD and the resampling.
    num_bootstrap: resamples for every metric (int), per metric (dict over
      `DEFAULT_RESAMPLES`' keys), or None for `DEFAULT_RESAMPLES`.
    extractor: a feature extractor replacing Inception (e.g. for tests or
      another backbone), or a list of them; its Frechet distance is not
      called FID.
    audit: run the memorisation audit against the training split.
    out_dir: where the audit grid goes; None: no file.
    step: checkpoint step; None for the latest.
    num_pairs: MS-SSIM pairs per set.
    audit_percentile: the audit's "suspiciously close" percentile.
    classifier_workdir: a trained medjax classifier run
      (`features.ClassifierExtractor`, its best checkpoint): the feature
      metrics are computed on its penultimate features too (after Inception's
      when `inception_weights` is given). The audit uses the first feature
      space.

  Returns:
    {'rows': [{'metric', 'label', 'value', 'ci_low', 'ci_high',
    'num_warnings'}], 'cards': [card per row], 'run', 'generation',
    'reference', 'skipped', 'audit' (dict or None), 'date', 'device'}; JSON-
    serialisable.

  Raises:
    ValueError: not a GAN run, or an unknown metric.
    FileNotFoundError: a feature metric was asked for without weights.
  """
  t0 = time.time()
  config = train.load_config(workdir)
  if config.model.name not in config_lib.GAN_MODELS:
    raise ValueError(f'{workdir} is a {config.model.name!r} run, not a GAN '
                     f'({config_lib.GAN_MODELS})')
  if extractor is None:
    extractors = []
    if inception_weights:
      extractors.append(features_lib.InceptionExtractor(inception_weights))
  elif isinstance(extractor, (list, tuple)):
    extractors = list(extractor)
  else:
    extractors = [extractor]
  if classifier_workdir:
    extractors.append(features_lib.ClassifierExtractor(classifier_workdir))
  skipped = {}
  if metrics is None:
    metrics = IMAGE_METRICS + (FEATURE_METRICS if extractors else ())
    if not extractors:
      skipped = {m: 'no feature extractor (--inception_weights or '
                    '--classifier_workdir)' for m in FEATURE_METRICS}
  metrics = tuple(metrics)
  unknown = set(metrics) - set(METRICS)
  if unknown:
    raise ValueError(f'unknown metrics {sorted(unknown)}; known: {METRICS}')
  if not extractors and set(metrics) & set(FEATURE_METRICS):
    weights.require('inception_fid', inception_weights)  # raises
  resamples = _resamples(num_bootstrap)
  split = split or 'test'

  from medjax import sample  # pylint: disable=g-import-not-at-top
  real = train.load_images(config, split)
  gen, manifest = sample.generate(workdir, num_samples, seed, step)
  logging.info('Generated %d images (step %d, seed %d); %d real images of '
               '%s/%s.', len(gen), manifest['step'], seed, len(real),
               config.dataset.name, split)
  reference = {'dataset': config.dataset.name, 'split': split}
  common = dict(num_real=len(real), num_generated=len(gen),
                reference=reference, seed=seed)
  cards = []

  if 'swd' in metrics:
    n = min(len(real), len(gen))
    rng = np.random.default_rng([seed, 3])
    real_s = real[np.sort(rng.choice(len(real), n, replace=False))]
    gen_s = gen[:n]
    try:
      res = swd_lib.sliced_wasserstein(real_s, gen_s, seed)
    except ValueError as e:  # images under 16x16
      skipped['swd'] = str(e)
    else:
      logging.info('SWD x1e3 %.3f; bootstrap (%d).', res.average,
                   resamples['swd'])
      reps = _resample_pairs(
          lambda a, b: swd_lib.sliced_wasserstein(a, b, seed).average,
          real_s, gen_s, resamples['swd'], seed)
      cards.append(card_lib.make_card(
          'swd', res.average, _interval(res.average, reps, resamples['swd']),
          extractor=None, **{**common, 'num_real': n, 'num_generated': n},
          details={'per_level': res.as_dict(),
                   'resize': 'none (Laplacian pyramid of the images)',
                   'note': 'x1e3, lower = closer; real subset of as many '
                           'images as generated ones used'}))

  if 'ms_ssim' in metrics:
    num_scales = diversity.num_scales_for(*gen.shape[1:3])
    for name, images in (('ms_ssim_generated', gen), ('ms_ssim_real', real)):
      point, ci, details = _diversity(images, num_pairs, num_scales,
                                      resamples['ms_ssim'], seed)
      logging.info('%s %.4f', name, point)
      cards.append(card_lib.make_card(name, point, ci, extractor=None,
                                      **common, details=details))

  feats = set(metrics) & set(FEATURE_METRICS)
  audit_features = None  # (extractor, generated features) for the audit
  for ext in (extractors if feats else []):
    desc = ext.describe()
    warn = []
    ext_dataset = getattr(ext, 'dataset', None)
    if ext_dataset and ext_dataset != config.dataset.name:
      warn.append(f'the feature extractor was trained on {ext_dataset}, the '
                  f'images are {config.dataset.name}')
    logging.info('%s features of %d real and %d generated images.',
                 ext.name, len(real), len(gen))
    fr = np.asarray(ext(real), np.float64)
    fg = np.asarray(ext(gen), np.float64)
    if audit_features is None:
      audit_features = (ext, fg)
    if 'fid' in metrics:
      point = distribution.fid_from_features(fr, fg)
      logging.info('%s %.3f; bootstrap (%d).',
                   card_lib.metric_label('fid', desc), point,
                   resamples['fid'])
      reps = _resample_pairs(distribution.fid_from_features, fr, fg,
                             resamples['fid'], seed)
      cards.append(card_lib.make_card(
          'fid', point, _interval(point, reps, resamples['fid']),
          extractor=desc, **common, warnings=warn))
    if 'kid' in metrics:
      m = min(len(fr), len(fg), 1000)
      mean, std = distribution.kid(fr, fg, KID_SUBSETS, 1000, seed)
      reps = _resample_pairs(
          lambda a, b: distribution.kid(a, b, KID_BOOTSTRAP_SUBSETS, 1000,
                                        seed)[0],
          fr, fg, resamples['kid'], seed)
      cards.append(card_lib.make_card(
          'kid', mean, _interval(mean, reps, resamples['kid']),
          extractor=desc, **common, kid_subset_size=m, warnings=warn,
          details={'std_over_subsets': std, 'num_subsets': KID_SUBSETS,
                   'subset_size': m,
                   'bootstrap_subsets_per_resample': KID_BOOTSTRAP_SUBSETS}))
    if 'precision_recall' in metrics:
      p, r = distribution.precision_recall(fr, fg, PR_K)
      reps = _resample_pairs(
          lambda a, b: distribution.precision_recall(a, b, PR_K), fr, fg,
          resamples['precision_recall'], seed)
      for j, (name, point) in enumerate((('precision', p), ('recall', r))):
        cards.append(card_lib.make_card(
            name, point, _interval(point, reps[:, j],
                                   resamples['precision_recall'], (0., 1.)),
            extractor=desc, **common, details={'k': PR_K}, warnings=warn))

  audit_report = None
  if audit:
    train_images = train.load_images(config, config.dataset.split)
    if audit_features is None and extractors:
      audit_features = (extractors[0], None)
    audit_ext, audit_fg = audit_features or (None, None)
    audit_report = audit_lib.memorisation_audit(
        gen, train_images, audit_ext, percentile=audit_percentile,
        out_dir=out_dir, generated_features=audit_fg)
    audit_report['train_split'] = config.dataset.split
    logging.info('Audit: %d of %d generated images suspiciously close.',
                 audit_report['num_suspicious'], len(gen))

  rows = [{'metric': c['metric'], 'label': c['label'], 'value': c['value'],
           'ci_low': c['ci_low'], 'ci_high': c['ci_high'],
           'num_warnings': len(c['warnings'])} for c in cards]
  logging.info('Evaluation took %.1f s.', time.time() - t0)
  return {
      'rows': rows, 'cards': cards,
      'run': {'workdir': os.path.abspath(workdir),
              'model': config.model.name, 'step': manifest['step'],
              'dataset': config.dataset.name,
              'image_size': config.dataset.image_size},
      'generation': {'num_samples': int(len(gen)), 'seed': seed},
      'reference': {**reference, 'num_images': int(len(real))},
      'skipped': skipped, 'audit': audit_report,
      'date': datetime.date.today().isoformat(),
      'device': jax.devices()[0].device_kind,
  }


def _fmt(x) -> str:
  if x is None:
    return 'n/a'
  return f'{x:.4g}'


def format_table(report: dict) -> str:
  """The report as Markdown: the table, then warnings and the audit."""
  run, ref = report['run'], report['reference']
  lines = [
      f"{run['model']} {os.path.basename(run['workdir'])} (step "
      f"{run['step']}): {report['generation']['num_samples']} generated "
      f"images (seed {report['generation']['seed']}) vs "
      f"{ref['dataset']}/{ref['split']} ({ref['num_images']} images); "
      'value [95% CI].', '',
      '| metric | value | 95% CI | real | generated | features | warnings |',
      '|---|---|---|---|---|---|---|']
  notes = []
  for c in report['cards']:
    marks = []
    for w in c['warnings']:
      if w not in notes:
        notes.append(w)
      marks.append(str(notes.index(w) + 1))
    lines.append(
        f"| {c['label']} | {_fmt(c['value'])} | [{_fmt(c['ci_low'])}, "
        f"{_fmt(c['ci_high'])}] | {c['num_real']} | {c['num_generated']} | "
        f"{c['extractor'] or '-'} | {','.join(marks) or '-'} |")
  if notes:
    lines += [''] + [f'{i + 1}. {w}' for i, w in enumerate(notes)]
  if report['skipped']:
    lines.append('')
    lines += [f'Skipped {metric}: {why}.'
              for metric, why in report['skipped'].items()]
  a = report.get('audit')
  if a:
    g, t = a['generated_to_train'], a['train_to_train']
    lines += [
        '', f"Memorisation audit ({a['extractor']['extractor']} features, "
        f"{a['num_train']} training images): {a['num_suspicious']} of "
        f"{a['num_generated']} generated images "
        f"({100 * a['suspicious_fraction']:.1f}%) at or below percentile "
        f"{a['percentile']:g} of the train->train nearest distances "
        f"({a['threshold']:.4g}). Median nearest distance generated->train "
        f"{g['median']:.4g}, train->train {t['median']:.4g}; KS p = "
        f"{a['ks']['pvalue']:.3g}."]
    if a['grid']:
      lines.append(f"Closest pairs (generated | train): {a['grid']}")
  return '\n'.join(lines) + '\n'

