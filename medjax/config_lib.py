"""The config schema shared by every experiment.

Every `configs/*.py` starts from `base_config()`, which declares every key medjax
knows. The returned dict is locked, so a typo in a config file or on the command
line (`--config.bach_size=16`) fails at once instead of being silently ignored.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import ml_collections
from ml_collections import config_dict

# Keys that may change between runs in one workdir (resuming with more steps, a
# different logging cadence, another data dir). Any other difference means the
# workdir belongs to another experiment.
RUN_CONTROL_KEYS = frozenset({
    'num_train_steps', 'log_every_steps', 'checkpoint_every_steps',
    'sample_every_steps', 'keep_checkpoints', 'dataset.data_dir',
    'num_sample_images', 'eval_every_steps', 'device_prefetch',
    'pack_state', 'state_kernel_layout',
})

# model.name -> task kind (medjax.trainers.get_task).
MODEL_NAMES = ('dcgan', 'sngan', 'cdcgan', 'stargan', 'srresnet', 'srgan',
               'pix2pix', 'classifier')
GAN_MODELS = ('dcgan', 'sngan', 'cdcgan')
SR_MODELS = ('srresnet', 'srgan', 'pix2pix')  # Restoration tasks.
OPTIMIZERS = ('adam', 'sgd')
DTYPES = ('float32', 'bfloat16', 'float16')


def base_config() -> ml_collections.ConfigDict:
  """Returns the locked default config holding every known key.

  Returns:
    A locked `ConfigDict`; experiment configs change values, never add keys.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_train_steps = 10_000
  c.batch_size = 128  # Global, over all devices and processes.
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.sample_every_steps = 500
  c.keep_checkpoints = 3
  # Batches copied to the devices ahead of the step that uses them (the
  # host-to-device copy then overlaps device work); the data order and the
  # checkpointed data position do not depend on it.
  c.device_prefetch = 2
  # Carry the train state packed into one flat array per dtype
  # (medjax.packing): each step call then passes a few arrays instead of
  # hundreds (SRGAN: 542), saving the host ~2-3 us per array and step, at the
  # price of a slower compile. Same values either way; checkpoints hold the
  # unpacked state.
  c.pack_state = False
  # The layout the loop stores convolution kernels (and their optimizer
  # moments) in: 'hwio' (flax's) or 'ohwi' (output channel first, cuDNN's
  # filter layout with NHWC images: no per-step weight transposes on a GPU).
  # Converted at the step call (medjax.packing); same values either way;
  # checkpoints hold flax's layout.
  c.state_kernel_layout = 'hwio'
  c.num_sample_images = 64  # Images in the periodic sample grid.
  # Validation (tasks that have it, e.g. SR: PSNR/SSIM on sr.eval_split).
  c.eval_every_steps = 1000

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'mni_brain_phantom'
  c.dataset.split = 'train'
  c.dataset.image_size = 64  # Training resolution; images resized on load.
  c.dataset.channels = 1
  c.dataset.data_dir = ''  # '' = TFDS default ($TFDS_DATA_DIR).
  # The embedded phantom: size and counts it is generated with.
  c.dataset.phantom = ml_collections.ConfigDict(
      dict(image_size=256, num_train=2000, num_test=400, seed=0))
  # User-provided datasets (medjax.data.builders.registry): built once from
  # manual_dir into the TFDS data dir at stored_size x stored_size.
  c.dataset.source = ml_collections.ConfigDict(dict(
      manual_dir='', stored_size=512, limit=config_dict.placeholder(int),
      # image_folder / dicom_folder:
      tag=config_dict.placeholder(str), test_fraction=0.2, seed=0,
      # dicom_folder:
      scaling='auto', window=config_dict.placeholder(tuple),
      percentiles=(0.5, 99.5), label_level=config_dict.placeholder(int),
      labels_csv=config_dict.placeholder(str),
      # chexpert: uncertain-label policy 'ignore' | 'ones' | 'zeros'.
      uncertain='ignore', target=config_dict.placeholder(str),
      frontal_only=False))
  # On-device degradation spec (medjax.data.degradations), e.g. 'primary':
  # applied to every training batch at the stored size, then resized (area)
  # to image_size. '' = train on the images as stored.
  c.dataset.degradation = ''
  # Detail filter (medjax.data.detail): drop near-empty slices on load.
  c.dataset.detail_filter = ml_collections.ConfigDict(dict(
      min_score=config_dict.placeholder(float),
      keep_top=config_dict.placeholder(int),
      sigma=1.0))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'dcgan'
  c.model.latent_dim = 100
  c.model.dtype = 'float32'  # Compute dtype; 'bfloat16' for mixed precision.
  c.model.param_dtype = 'float32'
  # Layers in PyTorch terms (kernel, stride, padding), so papers map 1:1.
  c.model.g_features = (512, 256, 128, 64)
  c.model.g_kernels = (4, 4, 4, 4, 4)
  c.model.g_strides = (1, 2, 2, 2, 2)
  c.model.g_paddings = (0, 1, 1, 1, 1)
  c.model.d_features = (64, 128, 256, 512)
  c.model.d_kernels = (4, 4, 4, 4, 4)
  c.model.d_strides = (2, 2, 2, 2, 1)
  c.model.d_paddings = (1, 1, 1, 1, 0)
  c.model.init_std = 0.02
  # Class-conditional models (cdcgan): classes and label-embedding size.
  c.model.num_classes = 0
  c.model.embed_dim = 50
  # SNGAN (Miyato et al. 2018 "standard CNN", 128x128 as in the MedGAN study).
  c.model.sngan = ml_collections.ConfigDict(dict(
      g_features=(512, 512, 512, 256, 128, 64), bottom_width=4,
      d_features=(64, 64, 128, 128, 256, 256, 512),
      d_kernels=(3, 4, 3, 4, 3, 4, 3), d_strides=(1, 2, 1, 2, 1, 2, 1),
      d_paddings=(1, 1, 1, 1, 1, 1, 1), negative_slope=0.2))
  # Super-resolution / restoration (model.name 'srresnet' or 'srgan'):
  # SRResNet generator and SRGAN discriminator (Ledig et al. 2017).
  c.model.sr = ml_collections.ConfigDict(dict(
      num_blocks=16, features=64, scale=4, prelu_per_channel=False,
      d_features=64, d_pool='flatten'))
  # Image classifier (model.name 'classifier'; medjax.models.classifier):
  # 3x3 stem conv (stride stem_stride), residual stages (stride 2 from the
  # second), global average pool, a feature_dim-wide penultimate layer (the
  # features of medjax.metrics.features.ClassifierExtractor), logits over
  # model.num_classes.
  c.model.classifier = ml_collections.ConfigDict(dict(
      stem_features=32, stem_stride=2, stage_features=(32, 64, 128),
      blocks_per_stage=(2, 2, 2), feature_dim=128))
  # Pix2Pix (Isola et al. 2017): U-Net generator, 70x70 PatchGAN.
  c.model.pix2pix = ml_collections.ConfigDict(dict(
      num_downs=8, ngf=64, ndf=64, n_layers=3, norm='batch',
      use_dropout=True))

  # Supervised pairs for restoration, made on device from each training
  # image (after dataset.degradation, if any): HR = a random hr_crop x hr_crop
  # crop (0 = the whole image), LR = lr_degradation(HR).
  c.sr = ml_collections.ConfigDict(dict(
      lr_degradation='x4_bicubic',
      hr_crop=96,
      # SRGAN: start G from this SRResNet run's best (else latest) checkpoint.
      init_from='',
      # Generator loss: content_weight x content loss ('mse' or 'l1' in
      # pixels, or 'vgg': VGG19 features) + adversarial_weight x the
      # non-saturating GAN loss (srgan, pix2pix).
      content_loss='mse',
      content_weight=1.0,
      vgg_layer='conv5_4',
      vgg_after_relu=True,  # The SRGAN paper's VGG54: after the ReLU.
      # Converted torchvision VGG19 (python -m medjax.weights convert
      # --kind=vgg19 ...); 'random_vgg' = random weights, for tests only.
      vgg_weights='',
      vgg_feature_scale=1 / 12.75,  # SRGAN: features rescaled by 1/12.75.
      adversarial_weight=1e-3,
      # Validation on whole images of eval_split (first eval_num_images;
      # 0 = all): PSNR/SSIM on the 0-255 grey scale, crop_border cut off.
      eval_split='test',
      eval_num_images=64,
      crop_border=4,
      best_metric='psnr',  # 'psnr' or 'ssim': which checkpoint is kept best.
      eval_batch_size=16,
  ))

  # StarGAN (Choi et al. 2018; medjax.trainers.stargan): domains are the
  # dataset's classes (model.num_classes); gan.gp_weight and gan.d_steps
  # (n_critic) apply.
  c.stargan = ml_collections.ConfigDict(dict(
      g_conv_dim=64, g_repeat_num=6, d_conv_dim=64, d_repeat_num=6,
      lambda_cls=1.0, lambda_rec=10.0))

  # Options of every GAN (medjax.trainers.gan; docs/training_options.md).
  c.gan = ml_collections.ConfigDict(dict(
      loss='nonsaturating',  # 'nonsaturating' | 'hinge' | 'lsgan' | 'wgan'
      gp_weight=0.0,  # WGAN-GP lambda (10 in the paper); 0 = off.
      r1_gamma=0.0,  # R1 penalty gamma on reals; 0 = off.
      diffaugment='',  # DiffAugment policy, e.g. 'color,translation,cutout'.
      ema_decay=0.0,  # EMA of G's weights for sampling, e.g. 0.999; 0 = off.
      d_steps=1,  # D updates per G update.
      # D's real and fake passes as one call where that is the same
      # computation (BatchNorm-only D, no labels); False: two calls.
      one_d_call=True,
      # Network-free evaluation every eval_every_steps (TensorBoard val/*):
      # SWD (x1e3) of eval_num_samples generated vs as many eval_split
      # images, and MS-SSIM diversity of both. '' = off.
      eval_split='',
      eval_num_samples=256,
      # With pytorch-fid's Inception (python -m medjax.weights convert
      # --kind=inception_fid ...): FID and KID too, every evaluation.
      eval_inception_weights='',
      # A trained medjax classifier run (configs/classifier_brain.py): the
      # domain Frechet distance and KID on its penultimate features
      # (fd_classifier, kd_classifier) join the periodic evaluation.
      eval_classifier_workdir='',
  ))

  # Classifier training (medjax.trainers.classifier): softmax cross-entropy
  # on the dataset's labels, learning rate optimizer.g_learning_rate.
  c.classifier = ml_collections.ConfigDict(dict(
      # On-device augmentation of training batches, comma-separated:
      # 'hflip' (left-right), 'vflip' (up-down), 'translation' (up to 1/8 of
      # the size per axis, black fill). '' = none.
      augment='hflip,translation',
      # Validation every eval_every_steps on this split (accuracy, macro
      # one-vs-rest ROC AUC; the best AUC is kept in best/). '' = none.
      eval_split='test',
      eval_batch_size=64,  # Images per device call (memory only).
  ))

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.optimizer.momentum = 0.9  # sgd only.
  # Step decay: lr x decay_factor every decay_every_steps (0 = constant).
  c.optimizer.decay_every_steps = 0
  c.optimizer.decay_factor = 0.1

  c.lock()
  return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` would load it."""
  spec = importlib.util.spec_from_file_location('medjax_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a config against the schema and for consistent values.

  Args:
    config: The experiment config.

  Raises:
    ValueError: naming every unknown or missing key, or a bad value.
  """
  known = set(flatten(base_config()))
  given = set(flatten(config))
  errors = []
  if unknown := sorted(given - known):
    errors.append(f'unknown config keys: {", ".join(unknown)}')
  if missing := sorted(known - given):
    errors.append(f'missing config keys: {", ".join(missing)}')
  if errors:
    raise ValueError('; '.join(errors) + ' (see medjax/config_lib.py for the '
                     'schema)')
  if config.model.name not in MODEL_NAMES:
    raise ValueError(f'model.name={config.model.name!r}, expected one of '
                     f'{MODEL_NAMES}')
  if config.optimizer.name not in OPTIMIZERS:
    raise ValueError(f'optimizer.name={config.optimizer.name!r}, expected one '
                     f'of {OPTIMIZERS}')
  if config.sr.best_metric not in ('psnr', 'ssim'):
    raise ValueError(f"sr.best_metric={config.sr.best_metric!r}, expected "
                     "'psnr' or 'ssim'")
  if config.sr.content_loss not in ('mse', 'l1', 'vgg'):
    raise ValueError(f"sr.content_loss={config.sr.content_loss!r}, expected "
                     "'mse', 'l1' or 'vgg'")
  for key in ('dtype', 'param_dtype'):
    if config.model[key] not in DTYPES:
      raise ValueError(f'model.{key}={config.model[key]!r}, expected one of '
                       f'{DTYPES}')
  for key in ('num_train_steps', 'batch_size', 'log_every_steps',
              'checkpoint_every_steps', 'sample_every_steps',
              'eval_every_steps'):
    if config[key] <= 0:
      raise ValueError(f'{key} must be positive, got {config[key]}')
  if config.state_kernel_layout not in ('hwio', 'ohwi'):
    raise ValueError(f'state_kernel_layout={config.state_kernel_layout!r}, '
                     "expected 'hwio' or 'ohwi'")
  if config.device_prefetch < 0:
    raise ValueError(f'device_prefetch must be >= 0, got '
                     f'{config.device_prefetch}')


def flatten(config: ml_collections.ConfigDict | dict,
            prefix: str = '') -> dict[str, Any]:
  """Flattens nested config dicts into {'a.b': value}."""
  out = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  """Rebuilds a config saved with `to_json`, checked against the schema."""
  data = json.loads(text)
  config = base_config()
  flat = flatten(data)
  with config.unlocked():
    for key, value in flat.items():
      parent = config
      *path, leaf = key.split('.')
      for part in path:
        if part not in parent:
          raise ValueError(f'saved config has unknown key {key!r}')
        parent = parent[part]
      if leaf not in parent:
        raise ValueError(f'saved config has unknown key {key!r}')
      old = parent[leaf]
      parent[leaf] = tuple(value) if isinstance(old, tuple) else value
  return config


def experiment_differences(saved: ml_collections.ConfigDict,
                           current: ml_collections.ConfigDict) -> list[str]:
  """Lists keys that make `current` a different experiment from `saved`."""
  a, b = flatten(saved), flatten(current)
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key in RUN_CONTROL_KEYS:
      continue
    va, vb = a.get(key), b.get(key)
    if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
      va, vb = list(va), list(vb)
    if va != vb:
      diffs.append(f'{key}: {va!r} -> {vb!r}')
  return diffs
