"""Tests for medjax.metrics.diversity (MS-SSIM diversity)."""

import numpy as np
import pytest

from medjax.metrics import diversity
from medjax.metrics import image


def test_num_scales_and_weights():
  assert diversity.num_scales_for(161, 200) == 5
  assert diversity.num_scales_for(160, 160) == 4
  assert diversity.num_scales_for(64, 64) == 3
  assert diversity.num_scales_for(11, 11) == 1
  with pytest.raises(ValueError, match='at least 11x11'):
    diversity.num_scales_for(10, 32)
  np.testing.assert_allclose(diversity.scale_weights(5),
                             image.MS_SSIM_WEIGHTS, rtol=1e-6)
  w3 = diversity.scale_weights(3)
  np.testing.assert_allclose(w3.sum(), 1.0, rtol=1e-6)  # 5 sum to 1.0001
  np.testing.assert_allclose(
      w3, np.array(image.MS_SSIM_WEIGHTS[:3]) / sum(image.MS_SSIM_WEIGHTS[:3]),
      rtol=1e-6)


def test_five_scales_equal_ms_ssim():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (2, 161, 165, 1), dtype=np.uint8)
  b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
  np.testing.assert_allclose(diversity.ms_ssim_scales(a, b),
                             image.ms_ssim(a, b), rtol=1e-6)
  # One scale is plain SSIM (same window, 'valid' mean).
  np.testing.assert_allclose(diversity.ms_ssim_scales(a, b, num_scales=1),
                             image.ssim(a, b), rtol=1e-5)
  with pytest.raises(ValueError, match='num_scales'):
    diversity.ms_ssim_scales(a[:, :64, :64], b[:, :64, :64], num_scales=4)


def test_identical_images_score_one():
  x = np.random.default_rng(1).uniform(-1, 1, (1, 48, 48, 3))
  same = np.repeat(x, 6, axis=0).astype(np.float32)
  got = diversity.pairwise_ms_ssim(same, num_pairs=20, data_range=2.0)
  np.testing.assert_allclose(got.mean, 1.0, rtol=1e-5)
  assert got.num_pairs == 20 and got.num_scales == 3


def test_noise_is_diverse_and_seeded():
  rng = np.random.default_rng(2)
  noise = rng.uniform(-1, 1, (10, 48, 48, 1)).astype(np.float32)
  smooth = np.sin(np.linspace(0, 3, 48))[None, :, None, None] * np.ones(
      (10, 48, 48, 1))
  smooth = (smooth + rng.normal(0, 0.05, smooth.shape)).astype(np.float32)
  out = diversity.ms_ssim_diversity(noise, smooth, num_pairs=30,
                                    data_range=2.0, seed=7)
  assert out['generated'].mean < 0.1
  assert out['real'].mean > 0.5
  again = diversity.ms_ssim_diversity(noise, num_pairs=30, data_range=2.0,
                                      seed=7, batch_size=7)
  assert set(again) == {'generated'}
  np.testing.assert_allclose(again['generated'].mean, out['generated'].mean,
                             rtol=1e-6)
  other = diversity.pairwise_ms_ssim(noise, num_pairs=30, data_range=2.0,
                                     seed=8)
  assert other.mean != out['generated'].mean


def test_pairs_are_distinct():
  pairs = diversity.random_pairs(3, 500, seed=0)
  assert np.all(pairs[:, 0] != pairs[:, 1])
  assert set(map(tuple, pairs)) == {(i, j) for i in range(3) for j in range(3)
                                    if i != j}
  with pytest.raises(ValueError, match='at least 2'):
    diversity.random_pairs(1, 5)
