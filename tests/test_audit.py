"""Memorisation audit: planted copies are found, different images are not."""

import json
import os

import numpy as np

from medjax.metrics import audit
from medjax.metrics import features


def _blobs(n, seed, size=16):
  """Random smooth-ish uint8 images: distinct from one another."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(0, 255, (n, size // 4, size // 4, 1))
  return np.repeat(np.repeat(low, 4, 1), 4, 2).astype(np.uint8)


def test_audit_flags_exact_copies(tmp_path):
  train = _blobs(40, 0)
  novel = _blobs(10, 1)
  copies = train[[3, 17, 29]]
  generated = np.concatenate([novel[:5], copies, novel[5:]])
  out = audit.memorisation_audit(generated, train,
                                 features.PixelExtractor(8),
                                 num_candidates=4, num_pairs_shown=6,
                                 out_dir=str(tmp_path))
  per = out['per_image']
  for g, t in zip((5, 6, 7), (3, 17, 29)):
    assert per['nearest_feature_index'][g] == t
    assert per['feature_distance'][g] == 0.0
    assert per['nearest_ssim_index'][g] == t
    np.testing.assert_allclose(per['ssim'][g], 1.0, atol=1e-5)
  assert out['suspicious_indices'] == [5, 6, 7]
  assert out['num_suspicious'] == 3
  np.testing.assert_allclose(out['suspicious_fraction'], 3 / 13)
  assert out['threshold'] > 0 and out['train_to_train']['min'] > 0
  assert [p['generated'] for p in out['closest_pairs'][:3]] == [5, 6, 7]
  assert out['grid'] == os.path.join(str(tmp_path), audit.GRID_FILE)
  assert os.path.isfile(out['grid'])
  json.dumps(out, allow_nan=False)


def test_audit_of_new_images_from_the_same_distribution():
  train = _blobs(40, 0)
  out = audit.memorisation_audit(_blobs(40, 2), train)
  assert out['extractor']['extractor'] == 'pixels32' and out['grid'] is None
  # New draws are about as far from the training set as training images are
  # from each other: few below the 1st percentile, distributions alike.
  assert out['suspicious_fraction'] <= 0.1
  assert min(out['per_image']['feature_distance']) > 0
  assert 0.8 < out['median_ratio'] < 1.25
  assert out['ks']['pvalue'] > 0.01


def test_nearest_neighbours_leave_one_out():
  x = np.array([[0.], [1.], [3.], [3.]])
  idx, dist = audit.nearest_neighbours(x, x, 1, leave_one_out=True,
                                       batch_size=3)
  np.testing.assert_array_equal(idx[:, 0], [1, 0, 3, 2])
  np.testing.assert_array_equal(dist[:, 0], [1., 1., 0., 0.])
