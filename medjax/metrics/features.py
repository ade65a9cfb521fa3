"""Feature extractors for distribution metrics and the memorisation audit.

An extractor maps uint8 NHWC images to (N, D) float32 features, batched, and
describes itself for metric cards:

  * `name`: 'inception_fid' (pytorch-fid's InceptionV3 with weights loaded
    from a file), 'inception_random_TEST_ONLY' (random weights, for tests),
    'pixels<S>' (area-downsampled pixels), 'classifier:<dataset>:<run>' (the
    penultimate layer of a trained medjax classifier run, a domain feature
    space);
  * `weights_sha256`: hash of the weights the features came from, or None;
  * `resize`: how images are resized before the features;
  * `is_fid_reference`: True only for pytorch-fid's Inception loaded from
    weights; a Frechet distance is called "FID" only then (`medjax.metrics.
    card.metric_label`), so classifier features give 'FD_classifier:...'.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from PIL import Image

from medjax import weights


class Extractor:
  """Interface: `name`, `weights_sha256`, `resize`, `is_fid_reference` and
  `__call__(uint8 (N, H, W, C)) -> (N, D) float32`."""

  name: str = ''
  weights_sha256: str | None = None
  resize: str = ''
  is_fid_reference: bool = False

  def __call__(self, images) -> np.ndarray:
    raise NotImplementedError

  def describe(self) -> dict:
    """What a card records about the extractor."""
    return {'extractor': self.name, 'weights_sha256': self.weights_sha256,
            'resize': self.resize, 'fid_reference': self.is_fid_reference}


def _weights_hash(path: str) -> str:
  """sha256 of the original PyTorch file when known, else of the file used.

  `medjax.weights convert` records the source file's hash in weights.json, so
  a converted directory reports the same hash as the .pth it came from.
  """
  if os.path.isdir(path):
    info = os.path.join(path, weights.INFO_FILE)
    if os.path.isfile(info):
      with open(info) as f:
        digest = json.load(f).get('source_sha256')
      if digest:
        return digest
    path = os.path.join(path, weights.PARAMS_FILE)
  return weights.sha256(path)


def random_inception_params(seed: int = 0) -> dict:
  """Random InceptionV3 params with O(1) activations (tests only).

  He-scaled kernels and BatchNorm statistics near (0, 1), as the fake
  checkpoints of tests/test_inception.py: fast to build (no `init` trace) and
  the features spread, unlike a default `init` whose pool_3 outputs are ~1e-4.
  """
  from medjax.models import inception  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sd = {}
  for prefix, (_, cin, cout, (kh, kw), _, _) in inception.conv_specs():
    std = np.sqrt(2.0 / (cin * kh * kw))
    sd[f'{prefix}.conv.weight'] = (
        rng.standard_normal((cout, cin, kh, kw), np.float32) * std)
    sd[f'{prefix}.bn.weight'] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f'{prefix}.bn.bias'] = (0.1 * rng.standard_normal(cout)).astype(
        np.float32)
    sd[f'{prefix}.bn.running_mean'] = (
        0.1 * rng.standard_normal(cout)).astype(np.float32)
    sd[f'{prefix}.bn.running_var'] = rng.uniform(0.5, 1.5, cout).astype(
        np.float32)
  return inception.convert_inception(sd)


class InceptionExtractor(Extractor):
  """pool_3 features (2048-d) of pytorch-fid's InceptionV3.

  Images are resized bilinearly to 299x299 as pytorch-fid does, grayscale
  repeated to RGB (`medjax.models.inception.preprocess`).
  """

  resize = ('bilinear to 299x299 (pytorch-fid, align_corners=False), '
            'grayscale repeated to RGB, [-1, 1]')

  def __init__(self, weights_path: str | None, batch_size: int = 50):
    """Loads the weights.

    Args:
      weights_path: a directory written by `python -m medjax.weights convert
        --kind=inception_fid`, its params.msgpack, or the .pth file.
      batch_size: images per device call.

    Raises:
      FileNotFoundError: no weights there; the message says what to get.
    """
    weights.require('inception_fid', weights_path)
    self.params = weights.load('inception_fid', weights_path)
    self.weights_sha256 = _weights_hash(weights_path)
    self.name = 'inception_fid'
    self.is_fid_reference = True
    self.batch_size = batch_size

  @classmethod
  def random(cls, seed: int = 0, batch_size: int = 50) -> InceptionExtractor:
    """TEST ONLY: the network with random weights. Its Frechet distances are
    not FID and are labelled 'FD_inception_random_TEST_ONLY'."""
    self = cls.__new__(cls)
    self.params = random_inception_params(seed)
    self.weights_sha256 = None
    self.name = 'inception_random_TEST_ONLY'
    self.is_fid_reference = False
    self.batch_size = batch_size
    return self

  def __call__(self, images) -> np.ndarray:
    from medjax.models import inception  # pylint: disable=g-import-not-at-top
    return inception.fid_features(self.params, images, self.batch_size)


class PixelExtractor(Extractor):
  """Pixels in [0, 1], area-downsampled to at most `size` x `size`, flat.

  Network-free: the memorisation audit's default when no Inception weights
  exist. Smaller images are kept at their size (no upsampling: it would add
  no information). Distances in this space measure pixel-level copying, not
  perceptual similarity.
  """

  def __init__(self, size: int = 32):
    self.size = size
    self.name = f'pixels{size}'
    self.resize = (f'area (box) downsampling to {size}x{size} when larger; '
                   'values / 255')

  def __call__(self, images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4:
      raise ValueError(f'Expected NHWC images, got shape {x.shape}.')
    n, h, w, c = x.shape
    if h > self.size or w > self.size:
      if h % self.size == 0 and w % self.size == 0:
        # Exact area average over blocks.
        x = x.astype(np.float32).reshape(n, self.size, h // self.size,
                                         self.size, w // self.size,
                                         c).mean(axis=(2, 4))
      else:
        x = np.stack([np.stack(
            [np.asarray(Image.fromarray(img[..., ch].astype(np.float32),
                                        mode='F').resize(
                                            (self.size, self.size),
                                            Image.Resampling.BOX))
             for ch in range(c)], axis=-1) for img in x])
    return (x.astype(np.float32) / 255.0).reshape(n, -1)


def params_sha256(tree) -> str:
  """sha256 of a pytree of arrays, independent of dict insertion order.

  Hashes, for every leaf in sorted path order, its path, dtype, shape and
  bytes (native order: little-endian on every platform JAX runs on).
  """
  import jax  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  h = hashlib.sha256()
  for path, leaf in sorted(
      ((jax.tree_util.keystr(p), leaf) for p, leaf in leaves),
      key=lambda kv: kv[0]):
    a = np.asarray(leaf)
    h.update(f'{path}|{a.dtype.str}|{a.shape}|'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


class ClassifierExtractor(Extractor):
  """Penultimate features of a trained medjax classifier run.

  The `feature_dim`-wide layer before the logits (after its ReLU) of
  `medjax.models.classifier.Classifier`, BatchNorm in inference mode: a
  feature space learnt on the medical dataset itself, for a "domain" Frechet
  distance. Its Frechet distance is labelled 'FD_classifier:...' and must not
  be compared with FIDs (or with distances from another classifier run:
  `weights_sha256` identifies the weights).

  Images are brought to the classifier's input as its training images were
  (`medjax.data.pipeline`): channels converted (RGB -> L, or L repeated),
  antialiased bilinear resize (PIL) to the run's `dataset.image_size` when
  the size differs, then scaled to [-1, 1]. A `dataset.degradation` the
  classifier was trained with is not applied.
  """

  def __init__(self, workdir: str, checkpoint: str | int = 'best',
               batch_size: int = 64):
    """Restores the run.

    Args:
      workdir: a classifier training run (`model.name` 'classifier').
      checkpoint: 'best' (the best-validation checkpoint, else the latest),
        'latest', or a step number.
      batch_size: images per device call.

    Raises:
      ValueError: the run is not a classifier.
      FileNotFoundError: no run or no checkpoint there.
    """
    from medjax import train  # pylint: disable=g-import-not-at-top
    config = train.load_config(workdir)
    if config.model.name != 'classifier':
      raise ValueError(f'{workdir} is a {config.model.name!r} run, not a '
                       'classifier (model.name="classifier")')
    _, self.task, self.state, step, kind = train.restore_checkpoint(
        workdir, checkpoint)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    self.step = int(step)
    self.checkpoint = kind
    self.dataset = config.dataset.name
    self.image_size = config.dataset.image_size
    self.channels = config.dataset.channels
    self.batch_size = batch_size
    self.feature_dim = config.model.classifier.feature_dim
    run = os.path.basename(os.path.normpath(workdir))
    self.name = f'classifier:{self.dataset}:{run}'
    self.weights_sha256 = params_sha256(self.task.variables(self.state))
    self.is_fid_reference = False
    self.resize = (
        f'antialiased bilinear (PIL) to {self.image_size}x{self.image_size} '
        f'when the size differs, {self.channels} channel(s) (RGB -> L or L '
        'repeated), [-1, 1], as the classifier\'s training images')

  def describe(self) -> dict:
    return {**super().describe(), 'workdir': self.workdir,
            'step': self.step, 'checkpoint': self.checkpoint,
            'dataset': self.dataset, 'feature_dim': self.feature_dim}

  def _prepare(self, images: np.ndarray) -> np.ndarray:
    from medjax.data import pipeline  # pylint: disable=g-import-not-at-top
    x = np.asarray(images)
    if x.ndim != 4:
      raise ValueError(f'Expected NHWC images, got shape {x.shape}.')
    if x.dtype != np.uint8:
      raise ValueError(f'Expected uint8 images, got {x.dtype}.')
    if x.shape[1:] == (self.image_size, self.image_size, self.channels):
      return x
    # The pipeline's own resize and channel conversion of training images.
    prepare = pipeline._prepare_image  # pylint: disable=protected-access
    return np.stack([prepare(img, self.image_size, self.channels)
                     for img in x])

  def __call__(self, images) -> np.ndarray:
    x = self._prepare(images)
    _, feats = self.task.predict(self.state, x, self.batch_size)
    return feats.astype(np.float32)
