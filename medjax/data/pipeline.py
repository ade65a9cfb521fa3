"""Host input pipeline: TFDS data source -> memory -> grain batches -> devices.

The datasets medjax targets are small (thousands of images), so a split is read
once through `tfds.data_source`, decoded and resized into one uint8 array in
host memory. Batches are index slices of an endless stream of seeded
per-epoch permutations (`EpochBatches`, one numpy permutation per epoch; a
batch may span two epochs); grain maps each to one fancy-index gather from
that array and reads ahead. The grain iterator state is a single integer,
saved with every checkpoint, so a resumed run sees exactly the batches an
uninterrupted run would.

Why not grain's `MapDataset.shuffle`: it computes every index with its own
`index_shuffle` call in Python (50-150 us each on a 2-core CPU), capping the
loader near 12,000-20,000 images/s whatever their size; one permutation per
epoch runs at hundreds of thousands (bench/pipeline.py, bench/NOTES.md).

Multi-host: every process computes the same global index batch and keeps its
own contiguous slice, so the data order is independent of the process count.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import dataclasses
import os
import queue
import threading
from typing import Any, Callable

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from medjax.data import detail
from medjax.data import phantom
from medjax.data.builders import mni_brain_phantom
from medjax.data.builders import registry

PHANTOM = 'mni_brain_phantom'
# `load` reads chunks of up to this many records, and of at most
# _READ_CHUNK_BYTES of decoded images (stored or resized, the larger), two
# chunks a thread in flight: 512 MB beside the split at 16 threads.
_READ_CHUNK = 256
_READ_CHUNK_BYTES = 16 * 2**20
# Threads that read, decode and resize a split in `load`. TFDS's zlib
# decompression and PIL's resize release the GIL, so the per-image work
# (0.7 ms at 256 px on a 2-core EPYC) overlaps; record parsing holds it, which
# caps the gain (bench/NOTES.md, 2026-12-07).
READ_THREADS = min(16, os.cpu_count() or 1)
# grain read options of `make_iterator`: one worker thread gathering batches,
# two batches buffered ahead. The gather is cheap and a large buffer of big
# images would only cost memory; bench/pipeline.py reports and sweeps them.
NUM_THREADS = 1
PREFETCH_BUFFER_SIZE = 2


class EpochBatches:
  """Random-access index batches of the stream perm_0 | perm_1 | ...

  perm_e is a permutation of range(n) drawn from numpy's default generator
  seeded with (seed, e), so every epoch visits each image once, the order
  differs between epochs and seeds, and batch k depends on (n, batch, seed,
  k) only: a grain source that resumes from an integer position.

  Args:
    n: images in the split.
    batch_size: indices per batch.
    seed: the shuffle seed.
  """

  def __init__(self, n: int, batch_size: int, seed: int):
    self.n, self.batch_size, self.seed = n, batch_size, seed
    self._cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return 2**40  # Endless in practice; grain needs a length.

  def permutation(self, epoch: int) -> np.ndarray:
    """perm_epoch (the last few are cached: batches walk forward)."""
    perm = self._cache.get(epoch)
    if perm is None:
      if len(self._cache) >= 4:
        self._cache.pop(min(self._cache))
      perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      self._cache[epoch] = perm
    return perm

  def __getitem__(self, k: int) -> np.ndarray:
    start = int(k) * self.batch_size
    first, last = start // self.n, (start + self.batch_size - 1) // self.n
    offset = start - first * self.n
    if first == last:
      return self.permutation(first)[offset:offset + self.batch_size]
    stream = np.concatenate([self.permutation(e)
                             for e in range(first, last + 1)])
    return stream[offset:offset + self.batch_size]


@dataclasses.dataclass(frozen=True)
class InMemoryData:
  """A decoded split: images uint8 (N, H, W, C), labels int32 (N,)."""
  images: np.ndarray
  labels: np.ndarray
  label_names: tuple[str, ...]
  description: str


def data_source(dataset: ml_collections.ConfigDict, split: str):
  """The TFDS random-access source of a split.

  The phantom is generated, and a registry dataset (`brain_tumor_mri`,
  `image_folder`, `dicom_folder`, `chexpert`) built from
  `dataset.source.manual_dir`, on first use; any other name must be a TFDS
  dataset already prepared in array_record format (e.g. one written by
  `medjax.degrade`).

  Args:
    dataset: the `config.dataset` block.
    split: a TFDS split name ('train', 'test', 'train[:10%]').

  Returns:
    (source, builder): a `tfds.data_source` and its builder.
  """
  data_dir = dataset.data_dir or None
  if dataset.name == PHANTOM:
    p = dataset.phantom
    builder = mni_brain_phantom.prepare(
        data_dir, phantom.PhantomParams(
            image_size=p.image_size, num_train=p.num_train,
            num_test=p.num_test, seed=p.seed))
  elif dataset.name in registry.NAMES:
    src = dataset.source
    options = {k: (tuple(src[k]) if isinstance(src[k], list) else src[k])
               for k in registry.default_options(dataset.name)}
    builder = registry.prepare(
        dataset.name, data_dir=data_dir, manual_dir=src.manual_dir or None,
        image_size=src.stored_size, channels=dataset.channels,
        limit=src.limit, **options)
  else:
    try:
      builder = tfds.builder(dataset.name, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for unknown names.
      raise ValueError(
          f'dataset.name={dataset.name!r} is not a TFDS dataset medjax can '
          f'find: {e}') from e
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'dataset {dataset.name!r} is not prepared in {builder.data_dir}; '
          'prepare it first (array_record format) or set dataset.data_dir')
  return builder.as_data_source(split=split), builder


def load(dataset: ml_collections.ConfigDict, split: str | None = None,
         resize: bool = True) -> InMemoryData:
  """Reads a whole split into memory.

  Args:
    dataset: the `config.dataset` block.
    split: defaults to `dataset.split`.
    resize: resize to `dataset.image_size`; if False, keep the stored size
      (used before on-device degradations, which start from the originals).

  Returns:
    The decoded split.
  """
  split = split or dataset.split
  source, builder = data_source(dataset, split)
  n = len(source)
  if n == 0:
    raise ValueError(f'{dataset.name}/{split} is empty')
  channels = dataset.channels
  size = dataset.image_size
  stored = builder.info.features['image'].shape
  if not resize:
    if stored[0] is None or stored[0] != stored[1]:
      raise ValueError(f'{dataset.name} stores images of shape {stored}, not '
                       'one square size; it cannot be read unresized')
    size = stored[0]
  need = n * size * size * channels
  available = _available_memory_bytes()
  if available is not None and need > available:
    # Caught before reading: the OS would kill the process minutes in.
    raise MemoryError(
        f'{dataset.name}/{split} needs {need / 2**30:.1f} GiB of host memory '
        f'({n} images at {size}x{size}x{channels}, uint8), but only '
        f'{available / 2**30:.1f} GiB is available. Lower '
        'dataset.image_size, or prepare fewer images (dataset.source.limit '
        'for your own folders).')
  images = np.empty((n, size, size, channels), np.uint8)
  labels = np.zeros((n,), np.int32)
  # Datasets derived by medjax (degrade, restore) store each image's position
  # in their source as 'index'; reading in that order keeps image i of a
  # derived dataset paired with image i of its source.
  by_index = 'index' in builder.info.features
  seen = np.zeros((n,), bool)
  logging.info('Reading %d images of %s/%s into memory at %dx%d.', n,
               dataset.name, split, size, size)
  # A record holds the stored image until it is resized.
  record_bytes = size * size * channels
  if all(isinstance(d, int) for d in stored):
    record_bytes = max(record_bytes, int(np.prod(stored)))
  chunk_size = max(1, min(_READ_CHUNK, _READ_CHUNK_BYTES // record_bytes))

  def read(start):
    idx = list(range(start, min(n, start + chunk_size)))
    chunk = np.empty((len(idx), size, size, channels), np.uint8)
    where = np.empty((len(idx),), np.int64)
    label = np.zeros((len(idx),), np.int32)
    for k, (i, record) in enumerate(zip(idx, source.__getitems__(idx))):
      where[k] = int(record['index']) if by_index else i
      chunk[k] = _prepare_image(record['image'], size, channels)
      label[k] = record.get('label', 0)
    return where, chunk, label

  starts = list(range(0, n, chunk_size))
  threads = min(READ_THREADS, len(starts))
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    # At most two chunks a thread in flight (see _READ_CHUNK_BYTES).
    pending = collections.deque(
        pool.submit(read, s) for s in starts[:2 * threads])
    for s in starts[2 * threads:] + [None] * len(pending):
      where, chunk, label = pending.popleft().result()
      if s is not None:
        pending.append(pool.submit(read, s))
      for j in where:
        if not 0 <= j < n or seen[j]:
          raise ValueError(f'{dataset.name}/{split}: bad or repeated index {j}')
        seen[j] = True
      images[where] = chunk
      labels[where] = label
  f = dataset.detail_filter
  if f.min_score is not None or f.keep_top is not None:
    keep, _ = detail.filter_images(images, f'{dataset.name}/{split}',
                                   min_score=f.min_score, keep_top=f.keep_top,
                                   sigma=f.sigma)
    if not len(keep):
      raise ValueError(f'the detail filter kept no image of {dataset.name}/'
                       f'{split}; lower dataset.detail_filter.min_score')
    # Moved down in place, a block at a time (keep is sorted, so no block
    # overwrites a row a later one reads): `images[keep]` would hold the
    # split twice at its peak. The result is a view of the first rows.
    for k in range(0, len(keep), _READ_CHUNK):
      block = keep[k:k + _READ_CHUNK]
      images[k:k + len(block)] = images[block]
    images, labels = images[:len(keep)], labels[keep]
  features = builder.info.features
  names = (tuple(features['label'].names)
           if 'label' in features and hasattr(features['label'], 'names')
           else ())
  return InMemoryData(images=images, labels=labels, label_names=names,
                      description=builder.info.description)


def _available_memory_bytes() -> int | None:
  """Memory the OS can still give this process (Linux's MemAvailable, page
  cache included), or None where it does not say. A container's cgroup limit
  is not read: its usage counts reclaimable cache, which would make the
  check refuse loads that fit."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _prepare_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
  """Resizes (antialiased bilinear) and fixes channels of one uint8 image."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] != channels:
    if channels == 1 and image.shape[-1] in (3, 4):
      image = np.asarray(Image.fromarray(image[..., :3]).convert('L'))[..., None]
    elif channels == 3 and image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    else:
      raise ValueError(f'cannot turn a {image.shape[-1]}-channel image into '
                       f'{channels} channels')
  if image.shape[:2] != (size, size):
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    image = np.asarray(pil.resize((size, size), Image.BILINEAR))
    image = image.reshape(size, size, channels)
  return image


def make_iterator(data: InMemoryData, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  num_threads: int | None = None,
                  prefetch_buffer_size: int | None = None
                  ) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's batch slices.

  Args:
    data: the split in memory.
    global_batch_size: batch over all processes; must divide by process_count.
    seed: shuffle seed; the order is reshuffled each epoch.
    process_index, process_count: this process and how many there are.
    num_threads, prefetch_buffer_size: grain read options; None for
      `NUM_THREADS` and `PREFETCH_BUFFER_SIZE`.

  Returns:
    A grain iterator of {'image': uint8 (B/P, H, W, C), 'label': int32 (B/P,)}
    with `get_state`/`set_state`.
  """
  if global_batch_size % process_count:
    raise ValueError(f'batch_size={global_batch_size} must be divisible by '
                     f'the process count {process_count}')
  n = len(data.images)
  if global_batch_size > n:
    raise ValueError(f'batch_size={global_batch_size} exceeds the '
                     f'{n} images of the split')
  per = global_batch_size // process_count
  lo = process_index * per
  ds = grain.MapDataset.source(
      EpochBatches(n, global_batch_size, seed)).map(
          lambda idx: {'image': data.images[idx[lo:lo + per]],
                       'label': data.labels[idx[lo:lo + per]]})
  options = grain.ReadOptions(
      num_threads=NUM_THREADS if num_threads is None else num_threads,
      prefetch_buffer_size=(PREFETCH_BUFFER_SIZE if prefetch_buffer_size is None
                            else prefetch_buffer_size))
  return iter(ds.to_iter_dataset(read_options=options))


def to_global(batch: dict[str, np.ndarray],
              sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles each process's slice into global arrays sharded on 'data'."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


class DevicePrefetch(grain.DatasetIterator):
  """Puts the next `size` batches on the devices ahead of the consumer.

  A background thread reads the host iterator and puts each batch on the
  devices, at most `size` batches ahead of the one returned, so that neither
  the host work nor the host-to-device copy delays the step that uses the
  batch. This matters when the loop is host-bound: on an H200 the SRGAN step
  at batch 16 took the host as long to launch as the device to run, so 0.85
  ms of per-step feed in the loop's own thread made the step 20% slower
  (docs/benchmarks.md). The checkpointed state (`get_state`) is the position
  after the batches handed out, not after those read ahead, so a resumed
  run sees exactly the batches an uninterrupted one would. An error of the
  host iterator or of `put` (StopIteration included) is raised by the
  `next` call that would have returned that batch, and by every later one.

  Args:
    parent: the host iterator (`make_iterator`).
    put: host batch -> device batch (e.g. `to_global` with the data
      sharding); called once per batch, `size` batches ahead, on the
      background thread.
    size: batches kept on the devices ahead of the one returned; 0 reads and
      puts each batch when it is asked for, on the caller's thread.
  """

  def __init__(self, parent: grain.DatasetIterator,
               put: Callable[[dict[str, np.ndarray]], dict[str, Any]],
               size: int):
    super().__init__(parent)
    if size < 0:
      raise ValueError(f'device prefetch size must be >= 0, got {size}')
    self._put, self._size = put, size
    self._state = copy.deepcopy(parent.get_state())
    self._worker = None  # Started by the first `next`.

  def _fill(self, ready: queue.SimpleQueue, slots: threading.Semaphore,
            stop: threading.Event) -> None:
    """The background thread: (batch, position after it) or the error."""
    while True:
      while not slots.acquire(timeout=0.1):
        if stop.is_set():
          return
      if stop.is_set():
        return
      try:
        batch = self._put(next(self._parent))
        ready.put((batch, copy.deepcopy(self._parent.get_state())))
      except BaseException as e:  # pylint: disable=broad-except
        ready.put(e)
        return

  def __next__(self) -> dict[str, Any]:
    if not self._size:
      batch = self._put(next(self._parent))
      self._state = copy.deepcopy(self._parent.get_state())
      return batch
    if self._worker is None:
      self._ready = queue.SimpleQueue()
      self._slots = threading.Semaphore(self._size)
      self._stop = threading.Event()
      self._worker = threading.Thread(
          target=self._fill, args=(self._ready, self._slots, self._stop),
          name='DevicePrefetch', daemon=True)
      self._worker.start()
    item = self._ready.get()
    if isinstance(item, BaseException):
      self._ready.put(item)  # Raised again by every later call.
      raise item
    self._slots.release()
    batch, self._state = item
    return batch

  def _stop_worker(self) -> None:
    """Stops the background thread (a later `next` starts a new one); the
    batches read ahead are dropped, the position is kept."""
    if getattr(self, '_worker', None) is not None:
      self._stop.set()
      self._worker.join()
      self._worker = None
      self._parent.set_state(copy.deepcopy(self._state))

  def close(self) -> None:
    """Stops the background thread, then closes the pipeline (grain)."""
    self._stop_worker()
    super().close()

  def get_state(self) -> dict[str, Any]:
    return copy.deepcopy(self._state)

  def set_state(self, state: dict[str, Any]) -> None:
    self._stop_worker()
    self._parent.set_state(state)
    self._state = copy.deepcopy(state)
