"""Classification metrics: accuracy and one-vs-rest ROC AUC, with intervals.

`roc_auc` is the Mann-Whitney form of the area under the ROC curve: the
probability that a random positive scores above a random negative, ties
counting one half,

  AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg),

with R_pos the sum of the positives' ranks among all scores (tied scores get
their average rank). This equals `sklearn.metrics.roc_auc_score` (which
integrates the ROC curve with the trapezoidal rule; a tie block is one
diagonal segment, i.e. half credit) and the brute-force pairwise count.

`macro_ovr_auc` averages the per-class one-vs-rest AUCs of class
probabilities (sklearn's `roc_auc_score(y, p, multi_class='ovr',
average='macro')` when every class occurs); a class absent from the labels
(or the only one present) has no AUC (NaN) and is left out of the mean.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats


def accuracy(probs, labels) -> float:
  """Fraction of argmax(probs) == labels."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  return float((probs.argmax(-1) == labels).mean())


def roc_auc(scores, positive) -> float:
  """Area under the ROC curve of binary `positive` given `scores`.

  Args:
    scores: (N,) real scores, higher = more likely positive.
    positive: (N,) bool (or 0/1).

  Returns:
    The AUC in [0, 1]; NaN if there are no positives or no negatives.
  """
  scores = np.asarray(scores, np.float64).ravel()
  positive = np.asarray(positive).astype(bool).ravel()
  n_pos = int(positive.sum())
  n_neg = len(positive) - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = scipy_stats.rankdata(scores)  # average ranks for ties, 1-based
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2)
               / (n_pos * n_neg))


def per_class_auc(probs, labels, num_classes: int | None = None
                  ) -> np.ndarray:
  """One-vs-rest AUC of each class, (K,), NaN for undefined classes."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  k = num_classes or probs.shape[-1]
  return np.array([roc_auc(probs[:, c], labels == c) for c in range(k)])


def macro_ovr_auc(probs, labels) -> float:
  """Mean one-vs-rest AUC over the classes that have one (NaN if none)."""
  aucs = per_class_auc(probs, labels)
  aucs = aucs[np.isfinite(aucs)]
  return float(aucs.mean()) if len(aucs) else float('nan')


def bootstrap_intervals(probs, labels, num_resamples: int = 1000,
                        seed: int = 0, confidence: float = 0.95) -> dict:
  """Accuracy, macro AUC and per-class AUCs with percentile bootstrap CIs.

  Images are resampled with replacement (`num_resamples` times) and every
  statistic recomputed; a per-class AUC that is undefined in a resample (the
  class drawn never, or only it) is left out of that class's replicates.

  Args:
    probs: (N, K) class probabilities.
    labels: (N,) int labels.
    num_resamples: bootstrap replicates.
    seed: resampling seed.
    confidence: the intervals' coverage.

  Returns:
    {'accuracy': {'value', 'ci_low', 'ci_high'}, 'auc': {...},
     'per_class_auc': [{...} per class], 'num_images', 'num_resamples',
     'ci_method'}. Values are floats (NaN for an undefined AUC).
  """
  probs = np.asarray(probs, np.float64)
  labels = np.asarray(labels)
  n, k = probs.shape
  rng = np.random.default_rng(seed)
  acc_reps, auc_reps, class_reps = [], [], []
  for _ in range(num_resamples):
    idx = rng.integers(0, n, n)
    p, y = probs[idx], labels[idx]
    acc_reps.append(accuracy(p, y))
    per = per_class_auc(p, y, k)
    class_reps.append(per)
    auc_reps.append(np.nanmean(per) if np.isfinite(per).any() else np.nan)
  class_reps = np.asarray(class_reps).reshape(num_resamples, k)
  alpha = (1 - confidence) / 2

  def interval(value, reps):
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    if not len(reps) or not np.isfinite(value):
      return {'value': float(value), 'ci_low': float('nan'),
              'ci_high': float('nan')}
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return {'value': float(value), 'ci_low': float(lo), 'ci_high': float(hi)}

  per = per_class_auc(probs, labels, k)
  return {
      'accuracy': interval(accuracy(probs, labels), acc_reps),
      'auc': interval(macro_ovr_auc(probs, labels), auc_reps),
      'per_class_auc': [interval(per[c], class_reps[:, c]) for c in range(k)],
      'num_images': int(n), 'num_resamples': int(num_resamples),
      'ci_method': f'{100 * confidence:g}% percentile bootstrap over images',
  }
