"""Host pipeline: in-memory split, seeded epochs, checkpointable position."""

import sys
import threading
import time
import types

import jax
import numpy as np
import pytest

from medjax import checkpointing
from medjax.data import pipeline
from tests.conftest import tiny_config


def _fake(n=10, size=4):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, size, size, 1), np.uint8)
  return pipeline.InMemoryData(images=images, labels=np.arange(n) % 4,
                               label_names=('a', 'b', 'c', 'd'),
                               description='fake')


def _ids(batch):
  return batch['image'][:, 0, 0, 0].tolist()


def test_load_phantom_split(data_dir):
  dataset = tiny_config(data_dir).dataset
  data = pipeline.load(dataset)
  assert data.images.shape == (24, 16, 16, 1)
  assert data.images.dtype == np.uint8
  assert data.label_names == ('glioma', 'meningioma', 'notumor', 'pituitary')
  assert set(data.labels.tolist()) <= {0, 1, 2, 3}
  assert 'phantom' in data.description.lower()
  test = pipeline.load(dataset, 'test')
  assert test.images.shape == (8, 16, 16, 1)


def test_load_reads_chunks_on_threads_into_the_same_array(data_dir,
                                                          monkeypatch):
  dataset = tiny_config(data_dir).dataset
  one = pipeline.load(dataset)
  monkeypatch.setattr(pipeline, '_READ_CHUNK', 5)  # 24 images: 5 chunks
  monkeypatch.setattr(pipeline, 'READ_THREADS', 3)
  many = pipeline.load(dataset)
  np.testing.assert_array_equal(many.images, one.images)
  np.testing.assert_array_equal(many.labels, one.labels)


class _IndexedSource:
  """A derived dataset's records, stored out of order with their 'index'."""

  def __init__(self, order):
    self.order = order
    self.reads = []

  def __len__(self):
    return len(self.order)

  def __getitems__(self, keys):
    self.reads.append(len(keys))
    return [{'image': np.full((4, 4, 1), self.order[k], np.uint8),
             'index': self.order[k], 'label': self.order[k] % 2}
            for k in keys]


def _load_indexed(monkeypatch, order, source=None):
  builder = types.SimpleNamespace(info=types.SimpleNamespace(
      features={'image': types.SimpleNamespace(shape=(4, 4, 1)), 'index': None},
      description='derived'))
  source = source or _IndexedSource(order)
  monkeypatch.setattr(pipeline, 'data_source',
                      lambda dataset, split: (source, builder))
  monkeypatch.setattr(pipeline, '_READ_CHUNK', 3)
  monkeypatch.setattr(pipeline, 'READ_THREADS', 2)
  dataset = tiny_config('unused').dataset
  dataset.image_size = 4
  return pipeline.load(dataset)


def test_load_puts_each_record_at_its_index(monkeypatch):
  order = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]
  source = _IndexedSource(order)
  data = _load_indexed(monkeypatch, order, source)
  assert data.images[:, 0, 0, 0].tolist() == list(range(10))
  assert data.labels.tolist() == [i % 2 for i in range(10)]
  assert sorted(source.reads) == [1, 3, 3, 3]


def test_load_chunks_hold_a_bounded_number_of_bytes(monkeypatch):
  monkeypatch.setattr(pipeline, '_READ_CHUNK_BYTES', 2 * 16 + 15)  # 4x4x1
  source = _IndexedSource(list(range(5)))
  data = _load_indexed(monkeypatch, None, source)
  assert data.images[:, 0, 0, 0].tolist() == list(range(5))
  assert sorted(source.reads) == [1, 2, 2]


@pytest.mark.parametrize('order', [[0, 1, 2, 3, 1], [0, 1, 2, 3, 5]])
def test_load_rejects_a_repeated_or_missing_index(monkeypatch, order):
  with pytest.raises(ValueError, match='bad or repeated index'):
    _load_indexed(monkeypatch, order)


def test_a_split_larger_than_free_memory_is_refused_before_reading(
    data_dir, monkeypatch):
  dataset = tiny_config(data_dir).dataset
  pipeline.load(dataset)  # Prepared; 24 images of 16x16 need 6,144 bytes.
  monkeypatch.setattr(pipeline, '_available_memory_bytes', lambda: 6143)
  with pytest.raises(MemoryError, match=r'24 images at 16x16x1.*image_size'):
    pipeline.load(dataset)
  monkeypatch.setattr(pipeline, '_available_memory_bytes', lambda: 6144)
  assert pipeline.load(dataset).images.nbytes == 6144
  monkeypatch.setattr(pipeline, '_available_memory_bytes', lambda: None)
  assert pipeline.load(dataset).images.nbytes == 6144


def test_available_memory_is_read_from_the_os():
  available = pipeline._available_memory_bytes()  # pylint: disable=protected-access
  if sys.platform == 'linux':
    assert available is not None and available > 2**20


def test_unknown_dataset_is_a_clear_error(data_dir):
  dataset = tiny_config(data_dir).dataset
  dataset.name = 'no_such_dataset'
  with pytest.raises(ValueError, match='no_such_dataset'):
    pipeline.load(dataset)


def test_every_epoch_is_a_fresh_permutation():
  it = pipeline.make_iterator(_fake(10), 5, seed=0)
  epochs = [sorted(_ids(next(it)) + _ids(next(it))) for _ in range(3)]
  assert all(e == list(range(10)) for e in epochs)
  it = pipeline.make_iterator(_fake(10), 10, seed=0)
  assert _ids(next(it)) != _ids(next(it))  # Reshuffled each epoch.


def test_batches_spanning_epochs_keep_each_epoch_a_permutation():
  it = pipeline.make_iterator(_fake(10), 4, seed=2)
  stream = sum((_ids(next(it)) for _ in range(10)), [])  # 4 epochs.
  for e in range(4):
    assert sorted(stream[10 * e:10 * e + 10]) == list(range(10))
  assert stream[:10] != stream[10:20]
  # Batch k is a pure function of (n, batch, seed, k), cache or not.
  fresh = pipeline.EpochBatches(10, 4, seed=2)
  np.testing.assert_array_equal(fresh[7], stream[28:32])


def test_seed_determinism_and_restore():
  a = pipeline.make_iterator(_fake(), 4, seed=3)
  first = [_ids(next(a)) for _ in range(3)]
  state = a.get_state()
  rest = [_ids(next(a)) for _ in range(4)]
  b = pipeline.make_iterator(_fake(), 4, seed=3)
  assert [_ids(next(b)) for _ in range(3)] == first
  c = pipeline.make_iterator(_fake(), 4, seed=3)
  c.set_state(state)
  assert [_ids(next(c)) for _ in range(4)] == rest
  d = pipeline.make_iterator(_fake(), 4, seed=4)
  assert [_ids(next(d)) for _ in range(3)] != first


def test_process_slices_make_the_global_batch():
  whole = pipeline.make_iterator(_fake(12), 6, seed=1)
  parts = [pipeline.make_iterator(_fake(12), 6, seed=1, process_index=p,
                                  process_count=3) for p in range(3)]
  for _ in range(4):
    assert _ids(next(whole)) == sum((_ids(next(p)) for p in parts), [])


def test_bad_batch_sizes():
  with pytest.raises(ValueError, match='divisible'):
    pipeline.make_iterator(_fake(12), 6, seed=0, process_count=4)
  with pytest.raises(ValueError, match='exceeds'):
    pipeline.make_iterator(_fake(4), 8, seed=0)


def _prefetched(size, puts=None, **kw):
  def put(batch):
    if puts is not None:
      puts.append(_ids(batch))
    return {k: jax.device_put(v) for k, v in batch.items()}
  return pipeline.DevicePrefetch(
      pipeline.make_iterator(_fake(), 4, seed=3, **kw), put, size)


@pytest.mark.parametrize('size', [0, 2])
def test_device_prefetch_keeps_the_order_and_the_consumer_position(
    size, tmp_path):
  plain = pipeline.make_iterator(_fake(), 4, seed=3)
  expected = [_ids(next(plain)) for _ in range(7)]
  puts = []
  it = _prefetched(size, puts)
  got = [_ids(jax.device_get(next(it))) for _ in range(3)]
  assert got == expected[:3]
  # `size` batches go on the device ahead (on the background thread), and
  # no more.
  deadline = time.monotonic() + 30
  while len(puts) < 3 + size and time.monotonic() < deadline:
    time.sleep(0.01)
  time.sleep(0.2)
  assert len(puts) == 3 + size
  # The saved position is after the batches handed out, not those read
  # ahead: a resumed run continues with batch 4, as an uninterrupted one.
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ckpt'))
  ckpt.save(3, {'x': jax.numpy.zeros(2)}, it)
  ckpt.wait()
  assert [_ids(jax.device_get(next(it))) for _ in range(4)] == expected[3:]
  resumed = _prefetched(size)
  ckpt.restore(3, {'x': jax.ShapeDtypeStruct((2,), jax.numpy.float32)},
               resumed)
  ckpt.close()
  assert [_ids(jax.device_get(next(resumed))) for _ in range(4)] == (
      expected[3:])


def test_device_prefetch_size_must_not_be_negative():
  with pytest.raises(ValueError, match='>= 0'):
    _prefetched(-1)


def test_device_prefetch_reads_on_a_thread_and_raises_its_errors():
  """With size > 0 the host iterator and `put` run on a background thread;
  their errors reach the consumer at the batch they concern; stopping the
  thread keeps the consumer's position; `close` ends the pipeline."""
  threads = set()

  def put(batch):
    threads.add(threading.current_thread().name)
    if _ids(batch) == failing[0]:
      raise RuntimeError('bad batch')
    return batch
  plain = pipeline.make_iterator(_fake(), 4, seed=3)
  expected = [_ids(next(plain)) for _ in range(6)]
  failing = [None]
  it = pipeline.DevicePrefetch(pipeline.make_iterator(_fake(), 4, seed=3),
                               put, 2)
  assert _ids(next(it)) == expected[0]
  assert threads == {'DevicePrefetch'}
  it._stop_worker()  # pylint: disable=protected-access
  assert [_ids(next(it)) for _ in range(2)] == expected[1:3]
  it._stop_worker()  # pylint: disable=protected-access
  failing[0] = expected[4]
  assert _ids(next(it)) == expected[3]
  for _ in range(2):  # The failing batch's call, and every later one.
    with pytest.raises(RuntimeError, match='bad batch'):
      next(it)
  it.close()
  assert it._worker is None  # pylint: disable=protected-access
