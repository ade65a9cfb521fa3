"""Uncertainty of reported values: confidence intervals over images.

`mean_ci` is the usual Student-t interval of a mean over independent images
(per-image PSNR/SSIM of a restoration method). `bootstrap_ci` resamples the
images with replacement and recomputes any statistic (percentile interval),
for values that are not means (FID, KID, ...).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats


def mean_ci(values, confidence: float = 0.95) -> dict[str, float]:
  """Mean and its Student-t confidence interval.

  Args:
    values: one number per independent sample (e.g. per image).
    confidence: the interval's coverage.

  Returns:
    {'mean', 'ci_low', 'ci_high', 'std', 'n'}; the interval is NaN for n < 2.
  """
  x = np.asarray(values, np.float64).ravel()
  n = len(x)
  if n == 0:
    raise ValueError('no values')
  mean = float(x.mean())
  if n < 2:
    return {'mean': mean, 'ci_low': float('nan'), 'ci_high': float('nan'),
            'std': float('nan'), 'n': n}
  std = float(x.std(ddof=1))
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
  return {'mean': mean, 'ci_low': mean - half, 'ci_high': mean + half,
          'std': std, 'n': n}


def bootstrap_ci(samples, statistic: Callable[[np.ndarray], float],
                 num_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, float]:
  """Percentile bootstrap interval of `statistic(samples)`.

  Args:
    samples: array whose first axis indexes independent samples.
    statistic: maps a (resampled) array to a number.
    num_resamples: bootstrap replicates.
    confidence: the interval's coverage.
    seed: resampling seed.

  Returns:
    {'value' (on the original samples), 'ci_low', 'ci_high',
     'num_resamples'}.
  """
  x = np.asarray(samples)
  rng = np.random.default_rng(seed)
  reps = np.array([statistic(x[rng.integers(0, len(x), len(x))])
                   for _ in range(num_resamples)])
  alpha = (1 - confidence) / 2
  lo, hi = np.quantile(reps, [alpha, 1 - alpha])
  return {'value': float(statistic(x)), 'ci_low': float(lo),
          'ci_high': float(hi), 'num_resamples': num_resamples}
