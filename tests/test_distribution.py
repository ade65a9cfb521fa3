"""Tests for medjax.metrics.distribution: FID, KID, precision/recall against
direct numpy transcriptions of the reference implementations."""

import numpy as np
import pytest
from scipy import linalg

from medjax.metrics import distribution as dist


def _pytorch_fid_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """pytorch-fid's `calculate_frechet_distance` (scipy sqrtm)."""
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    covmean = covmean.real
  return (diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2)
          - 2 * np.trace(covmean))


def _features(seed, n=300, d=64, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  mix = rng.standard_normal((d, d)) / np.sqrt(d)
  return (rng.standard_normal((n, d)) @ mix * scale + shift).astype(np.float32)


def test_feature_stats_matches_np_cov():
  f = _features(0)
  mu, sigma = dist.feature_stats(f)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, np.mean(f.astype(np.float64), axis=0),
                             rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-12,
                             atol=1e-12)
  with pytest.raises(ValueError):
    dist.feature_stats(f[:1])


@pytest.mark.parametrize('n', [300, 40])  # 40 < d + 1: singular covariances
def test_frechet_distance_matches_pytorch_fid(n):
  s1 = dist.feature_stats(_features(1, n=n))
  s2 = dist.feature_stats(_features(2, n=n, shift=0.3, scale=1.5))
  got = dist.frechet_distance(*s1, *s2)
  want = _pytorch_fid_frechet(*s1, *s2)
  assert abs(got - want) <= 1e-6 * abs(want), (got, want)
  # Symmetric, and ~0 for identical statistics.
  assert abs(dist.frechet_distance(*s2, *s1) - got) <= 1e-9 * got
  same = dist.frechet_distance(*s1, *s1)
  assert abs(same) < 1e-8 * np.trace(s1[1]), same
  assert dist.fid_from_features(_features(1, n=n), _features(
      2, n=n, shift=0.3, scale=1.5)) == pytest.approx(got, rel=1e-12)


def test_frechet_distance_of_known_gaussians():
  # Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  got = dist.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert got == pytest.approx(5 + 1 + 1, rel=1e-12)
  with pytest.raises(ValueError):
    dist.frechet_distance(mu1, np.eye(3), mu2[:2], np.eye(2))


def _clean_fid_kernel_distance(feats1, feats2, num_subsets=100,
                               max_subset_size=1000):
  """clean-fid's `kernel_distance`, as written there (global np.random)."""
  n = feats1.shape[1]
  m = min(min(feats1.shape[0], feats2.shape[0]), max_subset_size)
  t = 0
  for _ in range(num_subsets):
    x = feats2[np.random.choice(feats2.shape[0], m, replace=False)]
    y = feats1[np.random.choice(feats1.shape[0], m, replace=False)]
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
  return float(t / num_subsets / m)


def test_kid_matches_clean_fid():
  real = _features(3, n=120, d=32).astype(np.float64)
  fake = _features(4, n=90, d=32, shift=0.2).astype(np.float64)
  state = np.random.get_state()
  try:
    np.random.seed(5)
    want = _clean_fid_kernel_distance(real, fake, num_subsets=20,
                                      max_subset_size=50)
  finally:
    np.random.set_state(state)
  mean, std = dist.kid(real, fake, num_subsets=20, max_subset_size=50,
                       seed=5)
  assert mean == pytest.approx(want, rel=1e-10, abs=1e-12)
  assert std > 0
  # m = min(len(real), len(fake)) when that is below max_subset_size.
  np.random.seed(6)
  want = _clean_fid_kernel_distance(real, fake, num_subsets=3)
  np.random.set_state(state)
  assert dist.kid(real, fake, num_subsets=3, seed=6)[0] == pytest.approx(
      want, rel=1e-10, abs=1e-12)


def test_kid_same_distribution_near_zero():
  a = _features(7, n=400, d=16)
  b = _features(7, n=800, d=16)[400:]  # same mixing matrix, new samples
  far = _features(7, n=400, d=16, shift=1.0)
  near, _ = dist.kid(a, b, num_subsets=10, max_subset_size=200)
  off, _ = dist.kid(a, far, num_subsets=10, max_subset_size=200)
  assert abs(near) < 0.05 * off


def _brute_precision_recall(real, fake, k):
  def d(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
  r_rad = np.sort(d(real, real), axis=1)[:, k]
  f_rad = np.sort(d(fake, fake), axis=1)[:, k]
  rf = d(real, fake)
  precision = np.mean(np.any(rf <= r_rad[:, None], axis=0))
  recall = np.mean(np.any(rf <= f_rad[None, :], axis=1))
  return precision, recall


def test_precision_recall_constructed_cases():
  x = _features(8, n=50, d=8).astype(np.float64)
  assert dist.precision_recall(x, x, k=3) == (1.0, 1.0)
  assert dist.precision_recall(x, x + 1e3, k=3) == (0.0, 0.0)
  # Fake = a quarter of the real points: all inside the real manifold
  # (precision 1), but covering only part of it (recall < 1).
  p, r = dist.precision_recall(x, x[:12], k=3)
  assert p == 1.0 and r < 1.0


@pytest.mark.parametrize('k,batch', [(3, 17), (5, 1024)])
def test_precision_recall_matches_brute_force(k, batch):
  real = _features(9, n=150, d=10).astype(np.float64)
  fake = _features(10, n=110, d=10, shift=0.4, scale=0.8).astype(np.float64)
  got = dist.precision_recall(real, fake, k=k, batch_size=batch)
  want = _brute_precision_recall(real, fake, k)
  assert 0 < got[0] < 1 and 0 < got[1] < 1
  assert got == pytest.approx(want, abs=1e-12)
  np.testing.assert_allclose(
      np.sqrt(dist.knn_radii(real, k, batch_size=batch)),
      np.sort(np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1)),
              axis=1)[:, k], rtol=1e-9)
