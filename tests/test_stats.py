"""Confidence intervals (medjax.metrics.stats)."""

import numpy as np
import pytest
from scipy import stats as sp_stats

from medjax.metrics import stats


def test_mean_ci_is_the_student_t_interval():
  x = np.array([30.1, 31.5, 29.8, 32.0, 30.6])
  got = stats.mean_ci(x)
  half = sp_stats.t.ppf(0.975, 4) * x.std(ddof=1) / np.sqrt(5)
  assert got['n'] == 5
  np.testing.assert_allclose(got['mean'], x.mean())
  np.testing.assert_allclose([got['ci_low'], got['ci_high']],
                             [x.mean() - half, x.mean() + half])
  assert np.isnan(stats.mean_ci([1.0])['ci_low'])
  with pytest.raises(ValueError):
    stats.mean_ci([])


def test_mean_ci_covers_the_true_mean_about_95_percent():
  rng = np.random.default_rng(0)
  hits = 0
  for _ in range(2000):
    r = stats.mean_ci(rng.normal(3.0, 2.0, 10))
    hits += r['ci_low'] <= 3.0 <= r['ci_high']
  assert 0.93 < hits / 2000 < 0.97


def test_bootstrap_ci_of_the_mean_is_close_to_t():
  x = np.random.default_rng(1).normal(0.0, 1.0, 400)
  b = stats.bootstrap_ci(x, np.mean, num_resamples=2000, seed=0)
  t = stats.mean_ci(x)
  assert b['value'] == pytest.approx(x.mean())
  assert b['ci_low'] == pytest.approx(t['ci_low'], abs=0.02)
  assert b['ci_high'] == pytest.approx(t['ci_high'], abs=0.02)
  assert stats.bootstrap_ci(x, np.mean, seed=3) == stats.bootstrap_ci(
      x, np.mean, seed=3)
