"""Tests of the MNI152 brain phantom generator and its TFDS builder."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.data import phantom
from medjax.data.builders import mni_brain_phantom

_SIZE = 48
_PARAMS = phantom.PhantomParams(image_size=_SIZE, num_train=24, num_test=8,
                                seed=0)


@pytest.fixture(scope='module')
def train():
  return list(phantom.generate(_PARAMS, 'train'))


def _images(examples):
  return np.stack([e['image'] for e in examples])


def test_deterministic(train):
  again = list(phantom.generate(_PARAMS, 'train'))
  assert len(again) == len(train)
  for a, b in zip(train, again):
    assert a['image'].tobytes() == b['image'].tobytes()
    assert {k: v for k, v in a.items() if k != 'image'} == {
        k: v for k, v in b.items() if k != 'image'}


def test_order_independent(train):
  # Any example can be made alone (sharding) and equals the streamed one.
  for index in (0, 7, 23):
    alone = phantom.make_example(_PARAMS, 'train', index)
    assert alone['image'].tobytes() == train[index]['image'].tobytes()
    assert alone['label'] == train[index]['label']


def test_seed_and_split_change_the_data(train):
  other_seed = phantom.PhantomParams(image_size=_SIZE, num_train=8,
                                     num_test=8, seed=1)
  reseeded = _images(phantom.generate(other_seed, 'train'))
  test = _images(phantom.generate(_PARAMS, 'test'))
  ours = _images(train[:8])
  assert not np.array_equal(ours, reseeded)
  assert not np.array_equal(ours, test)
  # No test image is a copy of a training image.
  flat_train = {e['image'].tobytes() for e in train}
  assert not flat_train & {im.tobytes() for im in test}


def test_shapes_types_ranges(train):
  ids = set()
  for e in train:
    assert e['image'].dtype == np.uint8
    assert e['image'].shape == (_SIZE, _SIZE, 1)
    assert 0 <= e['label'] < len(phantom.CLASSES)
    assert 0 <= e['plane'] < len(phantom.PLANES)
    assert isinstance(e['slice_index'], int) and 0 <= e['slice_index'] < 233
    ids.add(e['id'])
    image = e['image'][..., 0].astype(np.float32)
    assert image.max() > 120  # Tissue is bright...
    assert image[:3, :3].mean() < 30  # ...and the corners are background.
  assert len(ids) == len(train)


def test_balanced_classes_and_all_planes(train):
  counts = collections.Counter(e['label'] for e in train)
  assert counts == {c: len(train) // 4 for c in range(4)}
  assert {e['plane'] for e in train} == set(range(len(phantom.PLANES)))


def test_lesion_is_local_and_visible(train):
  yy, xx = np.mgrid[:_SIZE, :_SIZE]
  for index, e in enumerate(train):
    plain = phantom.make_example(_PARAMS, 'train', index, lesion=False)
    assert plain['label'] == e['label'] and plain['plane'] == e['plane']
    diff = np.abs(e['image'].astype(np.float32)
                  - plain['image'].astype(np.float32))[..., 0]
    if e['label'] == phantom.NOTUMOR:
      assert not diff.any()
      continue
    weights = diff / diff.sum()
    r = np.hypot(yy - (weights * yy).sum(), xx - (weights * xx).sum())
    near, far = diff[r < _SIZE / 4].mean(), diff[r > _SIZE / 2.5].mean()
    name = phantom.CLASSES[e['label']]
    assert near > 4.0, (index, name, near)
    assert far < 0.1, (index, name, far)
    assert (diff > 0).mean() < 0.35, (index, name)


def test_config_names():
  assert mni_brain_phantom.config_for(256, 2000, 400, 0).name == 'default'
  config = mni_brain_phantom.config_for(64, 40, 8, 0)
  assert config.name == 's64_tr40_te8_seed0'
  assert config.params == phantom.PhantomParams(64, 40, 8, 0)


def test_builder_round_trip(tmp_path):
  params = phantom.PhantomParams(image_size=32, num_train=12, num_test=8,
                                 seed=3)
  builder = mni_brain_phantom.prepare(str(tmp_path), params)
  assert builder.is_prepared()
  assert not list(tmp_path.glob('**/incomplete.*'))
  name = 'mni_brain_phantom/s32_tr12_te8_seed3'
  expected = {
      split: {e['id']: e for e in phantom.generate(params, split)}
      for split in phantom.SPLITS}
  for split, num in (('train', 12), ('test', 8)):
    source = tfds.data_source(name, data_dir=str(tmp_path), split=split,
                              download=False)
    assert len(source) == num
    for i in range(num):
      record = source[i]
      assert record['image'].dtype == np.uint8
      assert record['image'].shape == (32, 32, 1)
      assert 0 <= record['label'] < len(phantom.CLASSES)
      # The stored record is the generated example (TFDS shuffles order).
      generated = expected[split][record['id'].decode()]
      np.testing.assert_array_equal(record['image'], generated['image'])
      assert record['label'] == generated['label']
  assert builder.info.features['label'].names == list(phantom.CLASSES)

  # Preparing again reuses the files.
  def stamps():
    return {p: p.stat().st_mtime_ns for p in tmp_path.glob('**/*')
            if p.is_file()}
  before = stamps()
  again = mni_brain_phantom.prepare(str(tmp_path), params)
  assert again.is_prepared()
  assert stamps() == before
