"""TensorBoard event files without TensorFlow, the grid and the progress line."""

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from medjax import images
from medjax import writers


@pytest.mark.skipif(writers.tensorflow_available(),
                    reason='TensorFlow present: clu writes the events')
def test_event_files_are_readable_by_tensorboard(tmp_path):
  w = writers.create_default_writer(str(tmp_path))
  w.write_hparams({'lr': 2e-4, 'model': 'dcgan', 'features': (1, 2)})
  w.write_scalars(3, {'d_loss': 0.5, 'g_loss': np.float32(2.0)})
  w.write_scalars(4, {'d_loss': 0.25})
  grid = images.make_grid(np.full((4, 8, 8, 1), 200, np.uint8))
  w.write_images(4, {'samples': grid})
  w.write_texts(4, {'note': 'phantom'})
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={
      event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0})
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars('d_loss')] == [(3, 0.5),
                                                               (4, 0.25)]
  (img,) = acc.Images('samples')
  assert (img.step, img.height, img.width) == (4, grid.shape[0], grid.shape[1])
  assert img.encoded_image_string.startswith(b'\x89PNG')


@pytest.mark.skipif(writers.tensorflow_available(),
                    reason='TensorFlow present: clu writes the events')
def test_just_logging_writes_no_files(tmp_path):
  w = writers.create_default_writer(str(tmp_path / 'logs'), just_logging=True)
  w.write_scalars(1, {'a': 1.0})
  w.close()
  assert not (tmp_path / 'logs').exists() or not list(
      (tmp_path / 'logs').iterdir())


def test_grid_layout():
  imgs = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3, 1)
  grid = images.make_grid(imgs, pad=1)
  assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)  # 3 columns, 2 rows.
  np.testing.assert_array_equal(grid[1:3, 1:4], imgs[0])
  np.testing.assert_array_equal(grid[4:6, 5:8], imgs[4])


def test_progress_line_has_rate_eta_and_losses():
  p = writers.ReportProgress(num_train_steps=100)
  assert 'warming up' in p(1, {'d_loss': 1.0})
  p.start(1)
  line = p(11, {'d_loss': 0.5, 'g_loss': 2.0})
  assert line.startswith('step 11/100 | ')
  assert 'steps/s' in line and 'ETA ' in line
  assert 'd_loss 0.5000' in line and 'g_loss 2.0000' in line
  assert writers.format_seconds(3725) == '1h02m05s'
