"""Metric cards: every reported value with how it was made and its caveats.

A card is a JSON-serialisable dict:

  metric, label, value, ci_low, ci_high, ci_method, num_resamples,
  extractor, weights_sha256, resize, num_real, num_generated,
  reference {dataset, split}, seed, date, warnings, details.

Label rule: a Frechet distance is called "FID" (and a kernel distance "KID")
only when the features come from pytorch-fid's Inception loaded from weights
(`Extractor.is_fid_reference`); with any other extractor it is
"FD_<extractor>" ("KD_<extractor>"), so that numbers from random networks,
pixels or other backbones are never read as, or compared with, published FIDs.
"""

from __future__ import annotations

import datetime
import math

# Below these sizes the estimates are known to be unreliable.
FID_MIN_IMAGES = 2048  # FID's bias is large below the feature dimension.
KID_MIN_SUBSET = 1000  # clean-fid / torch-fidelity default subset size.
MIN_IMAGES = 50

# Metrics computed in a feature space (label depends on the extractor).
_FEATURE_LABELS = {'fid': ('FID', 'FD'), 'kid': ('KID', 'KD')}
# Display names of image-space metrics.
PLAIN_LABELS = {'swd': 'SWDx1e3_avg',
                'ms_ssim_generated': 'MS-SSIM diversity (generated)',
                'ms_ssim_real': 'MS-SSIM diversity (real, reference)'}


def metric_label(metric: str, extractor: dict | None = None) -> str:
  """Display name of a metric given its extractor's description.

  Args:
    metric: 'fid', 'kid', 'precision', 'recall', 'swd', ...
    extractor: `Extractor.describe()` (keys 'extractor', 'fid_reference'), or
      None for image-space metrics.

  Returns:
    E.g. 'FID', 'FD_pixels32', 'KD_inception_random_TEST_ONLY',
    'precision (inception_fid)', or `metric` itself.
  """
  if metric in _FEATURE_LABELS:
    if extractor is None:
      raise ValueError(f'{metric} needs an extractor description')
    ref, generic = _FEATURE_LABELS[metric]
    if extractor.get('fid_reference'):
      return ref
    return f"{generic}_{extractor['extractor']}"
  if extractor is not None:
    return f"{metric} ({extractor['extractor']})"
  return PLAIN_LABELS.get(metric, metric)


def size_warnings(metric: str, num_real: int, num_generated: int,
                  kid_subset_size: int | None = None) -> list[str]:
  """The standard caveats for the sample sizes of one value."""
  out = []
  fewest = min(num_real, num_generated)
  if metric == 'fid' and fewest < FID_MIN_IMAGES:
    out.append(
        f'fewer than {FID_MIN_IMAGES} images in a set (real {num_real}, '
        f'generated {num_generated}): the Frechet distance is strongly '
        'biased upwards and not comparable across set sizes; compare KID')
  if kid_subset_size is not None and kid_subset_size < KID_MIN_SUBSET:
    out.append(f'KID subset size {kid_subset_size} < {KID_MIN_SUBSET}: '
               'higher variance than the usual setting')
  if fewest < MIN_IMAGES:
    out.append(f'fewer than {MIN_IMAGES} images in a set (real {num_real}, '
               f'generated {num_generated}): the value is very uncertain')
  return out


def make_card(metric: str, value: float, interval: dict | None, *,
              extractor: dict | None, num_real: int, num_generated: int,
              reference: dict, seed: int, details: dict | None = None,
              warnings: list[str] | None = None,
              kid_subset_size: int | None = None) -> dict:
  """A card for one value.

  Args:
    metric: metric key ('fid', 'kid', 'swd', 'ms_ssim_generated', ...).
    value: the point value.
    interval: {'ci_low', 'ci_high', 'ci_method', 'num_resamples', ...} or
      None.
    extractor: `Extractor.describe()` or None (image-space metric; `resize`
      may then be given in `details`).
    num_real: real images used.
    num_generated: generated images used.
    reference: {'dataset', 'split'} of the real images.
    seed: the seed of generation, subsets and resampling.
    details: metric-specific settings (k, subsets, pairs, ...).
    warnings: extra warnings, after the size warnings.
    kid_subset_size: for KID, the subset size (warned below 1000).

  Returns:
    The card (JSON-serialisable).
  """
  interval = dict(interval or {})
  ext = extractor or {}
  card = {
      'metric': metric,
      'label': metric_label(metric, extractor),
      'value': _num(value),
      'ci_low': _num(interval.pop('ci_low', float('nan'))),
      'ci_high': _num(interval.pop('ci_high', float('nan'))),
      'ci_method': interval.pop('ci_method', 'none'),
      'num_resamples': interval.pop('num_resamples', 0),
      'extractor': ext.get('extractor'),
      'weights_sha256': ext.get('weights_sha256'),
      'resize': ext.get('resize') or (details or {}).get('resize', 'none'),
      'num_real': int(num_real), 'num_generated': int(num_generated),
      'reference': dict(reference), 'seed': int(seed),
      'date': datetime.date.today().isoformat(),
      'warnings': size_warnings(metric, num_real, num_generated,
                                kid_subset_size) + list(warnings or []),
      'details': {**(details or {}), **interval},
  }
  return card


def _num(x) -> float | None:
  """float, with NaN/inf as None (strict JSON has no NaN)."""
  x = float(x)
  return x if math.isfinite(x) else None
