"""Image classification: a small ResNet trained on the dataset's labels.

The network is `medjax.models.classifier.Classifier` (`model.classifier.*`,
`model.num_classes` outputs). Per step: the batch is scaled to [-1, 1],
augmented on device (`classifier.augment`: random left-right / up-down flips,
random translation with black fill), and one optimizer step minimises the
mean softmax cross-entropy against `batch['label']` (learning rate
`optimizer.g_learning_rate`). BatchNorm uses batch statistics in training,
running averages in evaluation.

Validation (`evaluate`, every `eval_every_steps`) classifies every image of
`classifier.eval_split` (un-augmented) and reports accuracy, macro one-vs-
rest ROC AUC (`medjax.metrics.classification`) and the mean cross-entropy;
the best AUC's checkpoint is kept in `best/`. The image panel shows the first
validation images, each with a band below it: the upper half marks the true
class (white segment k of K), the lower half the predicted probability of
each class (segment brightness = probability).

A trained run provides domain features for generative metrics:
`medjax.metrics.features.ClassifierExtractor(workdir)` (penultimate layer).
"""

from typing import Any

from clu import metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from medjax import augment as augment_lib
from medjax import trainers
from medjax.metrics import classification
from medjax.models import classifier as classifier_lib

PyTree = Any
AUGMENT_OPS = ('hflip', 'vflip', 'translation')


def normalize(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1] (as `medjax.trainers.gan`)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


@flax.struct.dataclass
class ClassifierState:
  """Everything that changes during training; a pure pytree of arrays."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt: PyTree


@flax.struct.dataclass
class ClassifierMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')  # Mean cross-entropy.
  accuracy: metrics.Accuracy  # On the augmented training batches.


def parse_augment(spec: str) -> tuple[str, ...]:
  """'hflip,translation' -> ('hflip', 'translation'); '' -> ().

  Raises:
    ValueError: for an unknown op.
  """
  return augment_lib.parse_ops(spec, AUGMENT_OPS, 'classifier.augment op')


def augment(images: jax.Array, rng: jax.Array, ops: tuple[str, ...]
            ) -> jax.Array:
  """Random flips / translation of [-1, 1] images, one draw per image.

  Args:
    images: (B, H, W, C) floats in [-1, 1].
    rng: key.
    ops: from `AUGMENT_OPS`, applied in this order.

  Returns:
    The augmented images (same shape); a flip happens with probability 1/2;
    a translation shifts by U{-r..r} pixels per axis, r = round(size / 8),
    filling with -1 (black, the background of MR images).
  """
  b = images.shape[0]
  for op, key in zip(ops, jax.random.split(rng, max(len(ops), 1))):
    if op in ('hflip', 'vflip'):
      flip = jax.random.bernoulli(key, 0.5, (b, 1, 1, 1))
      axis = 2 if op == 'hflip' else 1
      images = jnp.where(flip, jnp.flip(images, axis), images)
    elif op == 'translation':
      # DiffAugment's shift fills with 0; shifting x + 1 fills with -1.
      images = augment_lib.rand_translation(images + 1.0, key) - 1.0
  return images


def build_model(config: ml_collections.ConfigDict
                ) -> classifier_lib.Classifier:
  """The classifier of `config.model`."""
  m = config.model
  c = m.classifier
  if m.num_classes < 2:
    raise ValueError('model.num_classes must be >= 2 for the classifier, got '
                     f'{m.num_classes}')
  return classifier_lib.Classifier(
      num_classes=m.num_classes, stem_features=c.stem_features,
      stem_stride=c.stem_stride,
      stage_features=tuple(c.stage_features),
      blocks_per_stage=tuple(c.blocks_per_stage),
      feature_dim=c.feature_dim, dtype=jnp.dtype(m.dtype),
      param_dtype=jnp.dtype(m.param_dtype))


class ClassifierTask:
  """Model, optimizer and pure functions of classifier training.

  Args:
    config: the experiment config (model.name 'classifier').
    inference: unused.
  """

  best_metric = 'auc'

  def __init__(self, config: ml_collections.ConfigDict,
               inference: bool = False):
    del inference
    self.config = config
    self.model = build_model(config)
    self.num_classes = config.model.num_classes
    size = config.dataset.image_size
    self.image_shape = (size, size, config.dataset.channels)
    self.tx = trainers.make_optimizer(config.optimizer,
                                      config.optimizer.g_learning_rate)
    c = config.classifier
    self.augment_ops = parse_augment(c.augment)  # Fails early on a typo.
    self.eval_split = c.eval_split or None
    self.eval_needs_labels = True  # train.py passes evaluate() the labels.
    self.eval_batch_size = c.eval_batch_size
    self.num_visual_images = min(16, config.num_sample_images)
    self.visual_columns = min(8, self.num_visual_images)
    self._apply = jax.jit(
        lambda v, x: self.model.apply(v, normalize(x), train=False,
                                      return_features=True))

  def consts(self) -> PyTree:
    return {}

  def check_data(self, labels, label_names) -> None:
    """The dataset must have at least 2 classes and at most num_classes."""
    n = trainers.check_num_classes(labels, label_names, self.num_classes)
    if n < 2:
      raise ValueError('the dataset has a single class (or no labels): '
                       'nothing to classify')

  def init(self, rng: jax.Array) -> ClassifierState:
    """Fresh parameters, BatchNorm statistics and optimizer state."""
    x = jnp.zeros((1,) + self.image_shape, jnp.float32)
    variables = self.model.init(rng, x, train=False)
    return ClassifierState(step=jnp.zeros((), jnp.int32),
                           params=variables['params'],
                           batch_stats=variables['batch_stats'],
                           opt=self.tx.init(variables['params']))

  def train_step(self, state: ClassifierState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None
                 ) -> tuple[ClassifierState, ClassifierMetrics]:
    """One optimizer step on the mean softmax cross-entropy.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C), 'label': int (B,)}.
      rng: this step's key (augmentation).
      consts: unused.

    Returns:
      The new state and this step's `ClassifierMetrics`.
    """
    del consts
    x = augment(normalize(batch['image']), rng, self.augment_ops)
    labels = batch['label'].astype(jnp.int32)

    def loss_fn(params):
      logits, upd = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x,
          train=True, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
      return loss, (logits, upd['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt = self.tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = ClassifierState(step=state.step + 1, params=params,
                                batch_stats=batch_stats, opt=opt)
    return new_state, ClassifierMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=labels)

  def variables(self, state: ClassifierState) -> PyTree:
    return {'params': state.params, 'batch_stats': state.batch_stats}

  def predict(self, state: ClassifierState, images,
              batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and penultimate features of uint8 images.

    Args:
      state: a train state.
      images: uint8 (N, H, W, C) at the run's image size.
      batch_size: images per device call; default `classifier.
        eval_batch_size`.

    Returns:
      (probabilities (N, K) float32, features (N, feature_dim) float32), on
      the host; BatchNorm in inference mode.
    """
    bs = batch_size or self.eval_batch_size
    variables = self.variables(state)
    probs, feats = [], []
    for i in range(0, len(images), bs):
      logits, f = self._apply(variables, images[i:i + bs])
      probs.append(np.asarray(jax.nn.softmax(logits, axis=-1)))
      feats.append(np.asarray(f))
    return np.concatenate(probs), np.concatenate(feats)

  def evaluate(self, state: ClassifierState, images,
               labels) -> dict[str, float]:
    """Accuracy, macro one-vs-rest ROC AUC and cross-entropy on `images`.

    Args:
      state: the train state.
      images: uint8 images of `eval_split` (all of them, in order).
      labels: their labels (`train.py` reads them with the images, since
        the task sets `eval_needs_labels`).

    Returns:
      {'accuracy', 'auc' (macro over classes present), 'loss'}.
    """
    labels = np.asarray(labels)
    if len(labels) != len(images):
      raise ValueError(f'{len(images)} validation images but {len(labels)} '
                       'labels')
    probs, _ = self.predict(state, images)
    p_true = probs[np.arange(len(labels)), labels]
    return {'accuracy': classification.accuracy(probs, labels),
            'auc': classification.macro_ovr_auc(probs, labels),
            'loss': float(-np.log(np.maximum(p_true, 1e-12)).mean())}

  def visual_inputs(self, rng: jax.Array, eval_images=None,
                    labels=None) -> PyTree:
    """The first validation images and their labels (none without a split)."""
    del rng
    if eval_images is None:
      return {}
    n = min(self.num_visual_images, len(eval_images))
    return {'image': jnp.asarray(eval_images[:n]),
            'label': jnp.asarray(np.asarray(labels)[:n], jnp.int32)}

  def visuals(self, state: ClassifierState, inputs: PyTree
              ) -> dict[str, jax.Array]:
    """'predictions': each image over a band of true class / probabilities."""
    if not inputs:
      return {}
    images, labels = inputs['image'], inputs['label']
    logits = self.model.apply(self.variables(state), normalize(images),
                              train=False)
    probs = jax.nn.softmax(logits, axis=-1)
    b, h, w, c = images.shape
    k = self.num_classes
    half = max(2, h // 16)
    seg = jnp.minimum(jnp.arange(w) * k // w, k - 1)  # column -> class
    truth = (seg[None, :] == labels[:, None]).astype(jnp.float32)  # (B, W)
    pred = jnp.take_along_axis(probs, jnp.broadcast_to(seg, (b, w)), axis=1)
    band = jnp.concatenate([
        jnp.broadcast_to(truth[:, None, :], (b, half, w)),
        jnp.broadcast_to(pred[:, None, :], (b, half, w))], axis=1)
    band = jnp.round(band * 255).astype(jnp.uint8)[..., None]
    band = jnp.broadcast_to(band, (b, 2 * half, w, c))
    return {'predictions': jnp.concatenate([images, band], axis=1)}
