"""The detail filter: scores, selection rules, and the filter on load."""

import numpy as np
import pytest

from medjax.data import detail
from medjax.data import pipeline
from tests.conftest import tiny_config


def _disc(size, radius):
  yy, xx = np.mgrid[:size, :size] - size / 2
  return ((xx ** 2 + yy ** 2 < radius ** 2) * 200).astype(np.uint8)[..., None]


def test_score_is_the_sum_of_neighbour_differences():
  img = np.zeros((1, 6, 7, 1), np.uint8)
  img[0, :, 3:] = 10  # One vertical edge of height 6 and step 10.
  assert float(detail.detail_score(img, sigma=0)[0]) == pytest.approx(60.0)
  # Channels add up.
  rgb = np.repeat(img, 3, axis=-1)
  assert float(detail.detail_score(rgb, sigma=0)[0]) == pytest.approx(180.0)


def test_small_objects_and_denoised_noise_score_low():
  rng = np.random.default_rng(0)
  big, small = _disc(64, 24), _disc(64, 4)
  noise = rng.normal(0, 3, (64, 64, 1)).clip(0, 255).astype(np.uint8)
  s = detail.scores(np.stack([big, small, noise]), sigma=1.5)
  assert s[0] > 4 * s[1]
  # The Gaussian filter removes most of the noise's "detail".
  raw = detail.scores(noise[None], sigma=0)[0]
  assert s[2] < 0.5 * raw


def test_select_threshold_top_n_and_both():
  s = np.array([5.0, 1.0, 9.0, 3.0, 9.0])
  np.testing.assert_array_equal(detail.select(s, min_score=3.0), [0, 2, 3, 4])
  np.testing.assert_array_equal(detail.select(s, keep_top=2), [2, 4])
  np.testing.assert_array_equal(detail.select(s, min_score=4.0, keep_top=3),
                                [0, 2, 4])
  np.testing.assert_array_equal(detail.select(s), [0, 1, 2, 3, 4])
  with pytest.raises(ValueError):
    detail.select(s, keep_top=-1)


def test_filter_on_load_reports_kept_counts(data_dir, caplog, monkeypatch):
  caplog.set_level('INFO')
  config = tiny_config(data_dir, **{'dataset.detail_filter.keep_top': 10})
  data = pipeline.load(config.dataset)
  assert len(data.images) == len(data.labels) == 10
  assert 'kept 10 of 24 images' in caplog.text
  full = pipeline.load(tiny_config(data_dir).dataset)
  kept_scores = detail.scores(data.images)
  assert kept_scores.min() >= np.sort(detail.scores(full.images))[-10] - 1e-3
  # The kept images and labels, in order, compacted in place in blocks.
  keep = detail.select(detail.scores(full.images), keep_top=10)
  monkeypatch.setattr(pipeline, '_READ_CHUNK', 3)
  blocks = pipeline.load(config.dataset)
  for got in (data, blocks):
    np.testing.assert_array_equal(got.images, full.images[keep])
    np.testing.assert_array_equal(got.labels, full.labels[keep])
  config.dataset.detail_filter.keep_top = None
  config.dataset.detail_filter.min_score = 1e12
  with pytest.raises(ValueError, match='kept no image'):
    pipeline.load(config.dataset)
