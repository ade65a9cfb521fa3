"""Tasks: what `medjax.train` trains, one file per kind.

A task is built from the config and provides pure functions the loop jits:

  init(rng) -> state                     fresh parameters and optimizer states
  consts() -> pytree                     frozen arrays the step reads (e.g.
                                         VGG19 for a content loss), passed to
                                         the jitted step as an argument rather
                                         than baked into it as constants
  train_step(state, batch, rng, consts) -> (state, clu metrics)
  visual_inputs(rng, eval_images) -> pytree   fixed inputs of the image panels
  visuals(state, inputs) -> {name: uint8 (N, H, W, C)}, with `visual_columns`
  check_data(labels, label_names)        optional: the training data fit
  eval_split: str | None                 split for `evaluate`, or None
  evaluate(state, images) -> {name: float}   validation on whole images;
                                         with `eval_needs_labels` (optional,
                                         the classifier) train.py passes
                                         `labels=` to it and visual_inputs
  best_metric: str | None                the `evaluate` key (higher better)
                                         that picks the kept best checkpoint
"""

import ml_collections
import optax

from medjax import config_lib


def get_task(config: ml_collections.ConfigDict, inference: bool = False):
  """The task for `config.model.name`.

  Args:
    config: the experiment config.
    inference: only restoring/evaluating: skip what training alone needs
      (e.g. VGG19 weights of a content loss).
  """
  # Imported here: each task pulls in its models.
  if config.model.name in config_lib.GAN_MODELS:
    from medjax.trainers import gan  # pylint: disable=g-import-not-at-top
    return gan.GANTask(config)
  if config.model.name == 'stargan':
    from medjax.trainers import stargan  # pylint: disable=g-import-not-at-top
    return stargan.StarGANTask(config)
  if config.model.name == 'classifier':
    from medjax.trainers import classifier  # pylint: disable=g-import-not-at-top
    return classifier.ClassifierTask(config)
  if config.model.name in config_lib.SR_MODELS:
    from medjax.trainers import sr  # pylint: disable=g-import-not-at-top
    return sr.SRTask(config, inference=inference)
  raise ValueError(f'model.name={config.model.name!r}, expected one of '
                   f'{config_lib.MODEL_NAMES}')


def make_optimizer(o: ml_collections.ConfigDict,
                   learning_rate: float) -> optax.GradientTransformation:
  """Adam or SGD with momentum, with an optional staircase step decay.

  Args:
    o: the `config.optimizer` block.
    learning_rate: the initial learning rate.

  Returns:
    The optax transformation.
  """
  lr = learning_rate
  if o.decay_every_steps:
    lr = optax.exponential_decay(learning_rate, o.decay_every_steps,
                                 o.decay_factor, staircase=True)
  if o.name == 'adam':
    return optax.adam(lr, b1=o.b1, b2=o.b2)
  if o.name == 'sgd':
    return optax.sgd(lr, momentum=o.momentum or None)
  raise ValueError(f'optimizer.name={o.name!r}; expected "adam" or "sgd"')


def check_num_classes(labels, label_names, num_classes: int) -> int:
  """The dataset's class count; ValueError if it exceeds `num_classes`.

  Args:
    labels: the training labels (int array).
    label_names: the dataset's class names (may be empty).
    num_classes: `model.num_classes`.

  Returns:
    The number of classes: the larger of len(label_names) and max label + 1.
  """
  n = max(len(label_names), int(labels.max()) + 1)
  if n > num_classes:
    raise ValueError(f'the dataset has {n} classes ({label_names}) but '
                     f'model.num_classes is {num_classes}')
  return n
