"""Memorisation audit: are generated images copies of training images?

For each generated image:

  * its nearest training image in a feature space (Inception pool_3 when
    weights exist, else `PixelExtractor`), Euclidean distance; candidates come
    from the expanded ||a||^2 - 2ab + ||b||^2 form and their distances are
    recomputed directly, so an exact copy gets distance 0, not rounding noise;
  * the most similar training image by pixel SSIM among its `num_candidates`
    nearest feature neighbours (SSIM to every training image would cost
    N_gen x N_train full-resolution SSIMs).

The generated->train nearest distances are compared with the training set's
own leave-one-out nearest-neighbour distances (train->train): a generator that
copies puts generated images closer to the training set than training images
are to each other. A generated image is "suspiciously close" when its distance
is at or below the `percentile`-th percentile (default 1st) of the
train->train distances. The closest pairs are written as a PNG grid
(generated | nearest training image), for a person to look at: a distance is
evidence, not proof.
"""

from __future__ import annotations

import os

from absl import logging
import jax.numpy as jnp
import numpy as np
from scipy import stats

from medjax import images as image_lib
from medjax.metrics import features as features_lib
from medjax.metrics import image as image_metrics

GRID_FILE = 'audit_closest_pairs.png'


def _quantiles(x: np.ndarray) -> dict[str, float]:
  x = np.asarray(x, np.float64)
  return {'min': float(x.min()), 'p1': float(np.percentile(x, 1)),
          'p5': float(np.percentile(x, 5)),
          'median': float(np.median(x)), 'mean': float(x.mean()),
          'max': float(x.max())}


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
  a_sq = np.einsum('ij,ij->i', a, a)
  return np.maximum(a_sq[:, None] - 2 * (a @ b.T) + b_sq[None, :], 0)


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise ||a_i - b_ij|| for a (N, D), b (N, K, D)."""
  return np.sqrt(np.sum((a[:, None, :] - b) ** 2, axis=-1))


def nearest_neighbours(query, reference, k: int = 1,
                       leave_one_out: bool = False,
                       batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest reference rows of each query row, Euclidean.

  Args:
    query: (N, D) features.
    reference: (M, D) features.
    k: neighbours per query (k <= M, or M - 1 with `leave_one_out`).
    leave_one_out: query is reference; each row's own index is excluded.
    batch_size: query rows per distance block.

  Returns:
    (indices (N, k), distances (N, k)), nearest first; distances computed
    directly (exactly 0 for identical rows).
  """
  q = np.asarray(query, np.float64)
  r = np.asarray(reference, np.float64)
  r_sq = np.einsum('ij,ij->i', r, r)
  idx = np.empty((len(q), k), np.int64)
  dist = np.empty((len(q), k), np.float64)
  for s in range(0, len(q), batch_size):
    block = q[s:s + batch_size]
    d = _sq_dists(block, r, r_sq)
    if leave_one_out:
      rows = np.arange(len(block))
      d[rows, s + rows] = np.inf
    cand = np.argpartition(d, k - 1, axis=1)[:, :k]
    exact = _exact(block, r[cand])
    order = np.argsort(exact, axis=1, kind='stable')
    idx[s:s + batch_size] = np.take_along_axis(cand, order, 1)
    dist[s:s + batch_size] = np.take_along_axis(exact, order, 1)
  return idx, dist


def _candidate_ssim(generated: np.ndarray, train: np.ndarray,
                    cand: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """SSIM of each generated image with each of its candidates, (N, k)."""
  n, k = cand.shape
  gi = np.repeat(np.arange(n), k)
  ti = cand.reshape(-1)
  out = []
  for s in range(0, len(gi), batch_size):
    out.append(np.asarray(image_metrics.ssim(
        jnp.asarray(generated[gi[s:s + batch_size]]),
        jnp.asarray(train[ti[s:s + batch_size]]))))
  return np.concatenate(out).reshape(n, k)


def memorisation_audit(generated, train_images, extractor=None, *,
                       percentile: float = 1.0, num_candidates: int = 5,
                       num_pairs_shown: int = 16, out_dir: str | None = None,
                       generated_features=None, train_features=None) -> dict:
  """Nearest training images of generated images and how close is too close.

  Args:
    generated: uint8 (N, H, W, C) generated images.
    train_images: uint8 (M, H, W, C) training images, M >= 2.
    extractor: a `medjax.metrics.features.Extractor`; default
      `PixelExtractor()` (network-free).
    percentile: generated images at or below this percentile of the
      train->train nearest distances are "suspiciously close".
    num_candidates: feature neighbours per generated image that are scored by
      SSIM.
    num_pairs_shown: closest pairs in the PNG grid.
    out_dir: where the grid goes (`audit_closest_pairs.png`); None: no file.
    generated_features: precomputed `extractor(generated)`, optional.
    train_features: precomputed `extractor(train_images)`, optional.

  Returns:
    A JSON-serialisable dict: settings, `threshold`, `num_suspicious`,
    `suspicious_fraction`, `suspicious_indices`, quantiles of
    `generated_to_train` and `train_to_train` distances, their two-sample
    Kolmogorov-Smirnov test, SSIM summary, `closest_pairs`, `per_image`
    arrays and `grid` (the PNG path or None).
  """
  generated = np.asarray(generated)
  train_images = np.asarray(train_images)
  if len(train_images) < 2:
    raise ValueError('the audit needs at least 2 training images')
  extractor = extractor or features_lib.PixelExtractor()
  logging.info('Audit: %s features of %d generated and %d training images.',
               extractor.name, len(generated), len(train_images))
  fg = (extractor(generated) if generated_features is None
        else generated_features)
  ft = extractor(train_images) if train_features is None else train_features
  k = min(num_candidates, len(train_images))
  cand, cand_dist = nearest_neighbours(fg, ft, k)
  _, tt_dist = nearest_neighbours(ft, ft, 1, leave_one_out=True)
  nn_dist, tt_dist = cand_dist[:, 0], tt_dist[:, 0]
  threshold = float(np.percentile(tt_dist, percentile))
  suspicious = np.flatnonzero(nn_dist <= threshold)
  ks = stats.ks_2samp(nn_dist, tt_dist)

  ssim_note = None
  if min(generated.shape[1:3]) >= 11 and generated.shape[1:] == (
      train_images.shape[1:]):
    cand_ssim = _candidate_ssim(generated, train_images, cand)
    best = np.argmax(cand_ssim, axis=1)
    ssim_idx = np.take_along_axis(cand, best[:, None], 1)[:, 0]
    ssim_best = np.take_along_axis(cand_ssim, best[:, None], 1)[:, 0]
    ssim_summary = _quantiles(ssim_best)
  else:
    ssim_idx = ssim_best = None
    ssim_summary = None
    ssim_note = 'SSIM skipped: images under 11x11 or of different shapes'

  order = np.argsort(nn_dist, kind='stable')[:num_pairs_shown]
  pairs = [{'generated': int(i), 'train': int(cand[i, 0]),
            'distance': float(nn_dist[i]),
            'ssim': None if ssim_best is None else float(
                cand_ssim[i, 0])} for i in order]
  grid_path = None
  if out_dir and generated.shape[1:] == train_images.shape[1:]:
    tiles = np.stack([x for i in order
                      for x in (generated[i], train_images[cand[i, 0]])])
    grid_path = os.path.join(out_dir, GRID_FILE)
    image_lib.save_png(image_lib.make_grid(tiles, ncols=2), grid_path)

  tt_median = float(np.median(tt_dist))
  return {
      'extractor': extractor.describe(),
      'num_generated': int(len(generated)),
      'num_train': int(len(train_images)),
      'percentile': float(percentile),
      'threshold': threshold,
      'num_candidates': int(k),
      'num_suspicious': int(len(suspicious)),
      'suspicious_fraction': float(len(suspicious) / len(generated)),
      'suspicious_indices': suspicious.tolist(),
      'generated_to_train': _quantiles(nn_dist),
      'train_to_train': _quantiles(tt_dist),
      'median_ratio': (float(np.median(nn_dist)) / tt_median
                       if tt_median > 0 else None),
      'ks': {'statistic': float(ks.statistic), 'pvalue': float(ks.pvalue)},
      'ssim': ssim_summary, 'ssim_note': ssim_note,
      'closest_pairs': pairs,
      'per_image': {
          'nearest_feature_index': cand[:, 0].tolist(),
          'feature_distance': nn_dist.tolist(),
          'nearest_ssim_index': (None if ssim_idx is None
                                 else ssim_idx.tolist()),
          'ssim': None if ssim_best is None else ssim_best.tolist()},
      'grid': grid_path,
  }
