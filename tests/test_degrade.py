"""`medjax.degrade`: a degraded copy as a new TFDS dataset; training on one."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax import degrade
from medjax import train
from medjax.data import degradations
from medjax.data import pipeline
from tests.conftest import REPO, tiny_config


def test_degraded_copy_is_a_readable_dataset_with_its_recipe(data_dir):
  source = tiny_config(data_dir).dataset
  builder = degrade.degrade_dataset(source, 'x4_bicubic', 'phantom_x4_test')
  assert builder.info.metadata['preset'] == 'x4_bicubic'
  assert builder.info.metadata['source'] == 'mni_brain_phantom'
  reread = tfds.builder('phantom_x4_test', data_dir=data_dir)
  assert set(reread.info.splits) == {'train', 'test'}
  copy = tiny_config(data_dir, **{'dataset.name': 'phantom_x4_test',
                                  'dataset.image_size': 8}).dataset
  got = pipeline.load(copy, 'train')
  orig = pipeline.load(source, 'train', resize=False)
  assert got.images.shape == (24, 8, 8, 1)  # 32 // 4.
  assert got.label_names == orig.label_names
  # Each record is its source image (by 'index'), degraded exactly as the
  # function does it, with its label.
  want = np.asarray(degradations.get('x4_bicubic')(orig.images))
  written = reread.as_data_source('train')
  records = written.__getitems__(list(range(len(written))))
  assert sorted(r['index'] for r in records) == list(range(24))
  for r in records:
    np.testing.assert_array_equal(r['image'], want[r['index']])
    assert r['label'] == orig.labels[r['index']]
  with pytest.raises(FileExistsError):
    degrade.degrade_dataset(source, 'x4_bicubic', 'phantom_x4_test')


def test_random_presets_are_seeded_per_image(data_dir):
  source = tiny_config(data_dir).dataset
  a = degrade.degrade_dataset(source, 'rician(0.05)', 'phantom_noise_a',
                              splits=['test'], seed=1, batch_size=3)
  b = degrade.degrade_dataset(source, 'rician(0.05)', 'phantom_noise_b',
                              splits=['test'], seed=1, batch_size=8)
  read = lambda name: pipeline.load(tiny_config(
      data_dir, **{'dataset.name': name, 'dataset.image_size': 32}).dataset,
                                    'test').images
  np.testing.assert_array_equal(read('phantom_noise_a'),
                                read('phantom_noise_b'))
  del a, b


def test_cli_and_training_on_a_degradation(data_dir, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'medjax.degrade',
       '--config=configs/dcgan_brain.py', '--preset=x4_bicubic',
       '--name=phantom_x4_cli', '--splits=test',
       f'--config.dataset.data_dir={data_dir}',
       '--config.dataset.phantom.image_size=32',
       '--config.dataset.phantom.num_train=24',
       '--config.dataset.phantom.num_test=8'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert tfds.builder('phantom_x4_cli', data_dir=data_dir).info.splits[
      'test'].num_examples == 8
  # Degrading every training batch on device, then resizing to 16.
  state = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=2,
                  **{'dataset.degradation': 'x4_bicubic'}),
      str(tmp_path / 'run'))
  assert int(state.step) == 2
