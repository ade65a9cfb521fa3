"""Distribution metrics on feature sets: FID, KID, precision and recall.

Features are typically the 2048-d pool_3 features of pytorch-fid's Inception
(`medjax.models.inception.fid_features`). Everything here is float64 numpy on
the host: the statistics are small next to the network, and float64 keeps the
matrix square root and the kernel sums accurate.

  * `feature_stats` + `frechet_distance`: FID (Heusel et al. 2017), equal to
    pytorch-fid's `calculate_frechet_distance`.
  * `kid`: kernel inception distance (Binkowski et al. 2018), equal to
    clean-fid's `kernel_distance`, plus the std over subsets.
  * `precision_recall`: improved precision and recall (Kynkaanniemi et al.
    2019), k-NN balls, distances computed in blocks.
"""

from __future__ import annotations

import numpy as np


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of a feature set, as pytorch-fid.

  Args:
    features: (N, D) array, N >= 2.

  Returns:
    (mu, sigma): (D,) mean and (D, D) sample covariance (ddof=1,
    `np.cov(rowvar=False)`), float64.
  """
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'features must be (N >= 2, D), got {f.shape}')
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix (negative eigenvalues
  from rounding are clipped to 0)."""
  w, v = np.linalg.eigh(a)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
  """tr(sqrtm(sigma1 sigma2)) for symmetric PSD sigma1, sigma2.

  sigma1 sigma2 is similar to the symmetric PSD matrix
  M = sqrt(sigma1) sigma2 sqrt(sigma1) (same eigenvalues), so the trace is the
  sum of the square roots of M's eigenvalues, from `eigh`: no complex
  arithmetic and no ill-conditioned Schur iteration, unlike
  `scipy.linalg.sqrtm(sigma1 @ sigma2)`.

  Args:
    sigma1: (D, D) symmetric PSD.
    sigma2: (D, D) symmetric PSD.

  Returns:
    The trace, float.
  """
  s1 = np.asarray(sigma1, np.float64)
  s2 = np.asarray(sigma2, np.float64)
  r = _psd_sqrt((s1 + s1.T) / 2)
  m = r @ ((s2 + s2.T) / 2) @ r
  w = np.linalg.eigvalsh((m + m.T) / 2)
  # Eigenvalues below eigvalsh's resolution are rounding noise around 0 (rank-
  # deficient covariances, N <= D); their square roots would add
  # ~sqrt(eps * |M|) each, so they are zeroed.
  tol = w.size * np.finfo(np.float64).eps * max(float(np.max(np.abs(w))), 0.)
  return float(np.sum(np.sqrt(np.where(w > tol, w, 0.))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)),
  pytorch-fid's `calculate_frechet_distance`, with the trace of the matrix
  square root from `trace_sqrt_product` (float64).

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) covariances.

  Returns:
    The distance (FID when the inputs are Inception pool_3 statistics), float.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (
      mu1.size, mu1.size):
    raise ValueError(f'shapes differ: mu {mu1.shape} / {mu2.shape}, sigma '
                     f'{s1.shape} / {s2.shape}')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * trace_sqrt_product(s1, s2))


def fid_from_features(real, fake) -> float:
  """FID between two feature sets: `frechet_distance(*feature_stats(real),
  *feature_stats(fake))`.

  Args:
    real: (N, D) features.
    fake: (M, D) features.

  Returns:
    FID, float. Strongly biased upwards for small sets (see docs/metrics.md).
  """
  return frechet_distance(*feature_stats(real), *feature_stats(fake))


def kid(real, fake, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel inception distance: unbiased MMD^2 with a cubic polynomial kernel.

  clean-fid's `kernel_distance(real, fake, num_subsets, max_subset_size)`
  after `np.random.seed(seed)`: with d the feature dimension and
  m = min(len(real), len(fake), max_subset_size), each subset draws m fake
  then m real rows without replacement (`RandomState(seed).choice`, same
  order), k(a, b) = (a.b / d + 1)^3 and

    v = [ (sum_{i != j} k(x_i, x_j) + k(y_i, y_j)) / (m - 1)
          - 2 sum_{i, j} k(x_i, y_j) / m ] / m.

  Args:
    real: (N, D) features.
    fake: (M, D) features.
    num_subsets: number of random subsets.
    max_subset_size: largest subset size.
    seed: seed of the subset draws.

  Returns:
    (mean, std) of v over the subsets; the mean is clean-fid's KID. The std is
    the population std (ddof=0), as torch-fidelity's `kid_std`.
  """
  feats1 = np.asarray(real, np.float64)
  feats2 = np.asarray(fake, np.float64)
  if feats1.ndim != 2 or feats2.ndim != 2 or feats1.shape[1] != feats2.shape[1]:
    raise ValueError(f'features must be (N, D) with equal D, got '
                     f'{feats1.shape} and {feats2.shape}')
  n = feats1.shape[1]
  m = min(feats1.shape[0], feats2.shape[0], max_subset_size)
  if m < 2:
    raise ValueError('KID needs at least 2 samples in each set')
  rng = np.random.RandomState(seed)
  values = np.empty(num_subsets, np.float64)
  for s in range(num_subsets):
    x = feats2[rng.choice(feats2.shape[0], m, replace=False)]
    y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    values[s] = ((a.sum() - np.trace(a)) / (m - 1) - b.sum() * 2 / m) / m
  return float(values.mean()), float(values.std())


def _sq_norms(x: np.ndarray) -> np.ndarray:
  return np.einsum('ij,ij->i', x, x)


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray,
              b_sq: np.ndarray) -> np.ndarray:
  # ||a||^2 - 2 a.b + ||b||^2, clipped: rounding can make it slightly < 0.
  return np.maximum(a_sq[:, None] - 2 * (a @ b.T) + b_sq[None, :], 0)


def knn_radii(features, k: int = 3, batch_size: int = 1024) -> np.ndarray:
  """Squared distance of each point to its k-th nearest neighbour (itself
  excluded) within the same set.

  Args:
    features: (N, D), N > k.
    k: neighbourhood size.
    batch_size: rows of the distance matrix computed at once (memory is
      batch_size * N float64).

  Returns:
    (N,) squared radii, float64.
  """
  x = np.asarray(features, np.float64)
  if x.shape[0] <= k:
    raise ValueError(f'need more than k={k} points, got {x.shape[0]}')
  sq = _sq_norms(x)
  out = np.empty(x.shape[0], np.float64)
  for s in range(0, x.shape[0], batch_size):
    d = _sq_dists(x[s:s + batch_size], sq[s:s + batch_size], x, sq)
    # Index k of the sorted row: index 0 is the point itself (distance 0).
    out[s:s + batch_size] = np.partition(d, k, axis=1)[:, k]
  return out


def precision_recall(real, fake, k: int = 3, batch_size: int = 1024
                     ) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019).

  Each set's manifold is the union of balls around its points, with radius
  the distance to the point's k-th nearest neighbour in the same set (itself
  excluded). Precision = fraction of fake points inside the real manifold
  (within the radius of at least one real point, boundary included); recall =
  fraction of real points inside the fake manifold. Distances are Euclidean,
  float64, computed `batch_size` rows at a time so that no N x M matrix is
  held (50k x 50k works in bounded memory).

  Args:
    real: (N, D) features.
    fake: (M, D) features.
    k: neighbourhood size (3 in the paper).
    batch_size: rows per distance block.

  Returns:
    (precision, recall), floats in [0, 1].
  """
  r = np.asarray(real, np.float64)
  f = np.asarray(fake, np.float64)
  if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
    raise ValueError(f'features must be (N, D) with equal D, got {r.shape} '
                     f'and {f.shape}')
  r_rad = knn_radii(r, k, batch_size)
  f_rad = knn_radii(f, k, batch_size)
  r_sq, f_sq = _sq_norms(r), _sq_norms(f)
  fake_in_real = np.zeros(f.shape[0], bool)
  real_in_fake = np.zeros(r.shape[0], bool)
  # One pass over the real x fake block serves both directions.
  for s in range(0, r.shape[0], batch_size):
    d = _sq_dists(r[s:s + batch_size], r_sq[s:s + batch_size], f, f_sq)
    fake_in_real |= np.any(d <= r_rad[s:s + batch_size, None], axis=0)
    real_in_fake[s:s + batch_size] = np.any(d <= f_rad[None, :], axis=1)
  return float(fake_in_real.mean()), float(real_in_fake.mean())
