"""Unconditional and class-conditional GANs: DCGAN, SNGAN, conditional DCGAN.

Builds the models of `config.model` and trains them with the generic
adversarial update of `medjax.trainers.adversarial` (one D update, a G update
every `gan.d_steps`-th call, `gan.loss`, WGAN-GP/R1, DiffAugment, G EMA). G
is fed N(0, 1) latents (and, conditional, the batch's labels); D sees the
same labels. See docs/training_options.md for the options.
"""


from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax import trainers
from medjax.models import cdcgan
from medjax.models import dcgan
from medjax.models import sngan
from medjax.trainers import adversarial
from medjax.trainers.adversarial import GANState  # pylint: disable=unused-import

PyTree = Any


def normalize(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: jax.Array) -> jax.Array:
  """float [-1, 1] -> uint8 [0, 255], rounded."""
  return jnp.round((jnp.clip(images, -1, 1) + 1) * 127.5).astype(jnp.uint8)


def build_models(config: ml_collections.ConfigDict):
  """(generator, discriminator) of `config.model.name`, sizes checked."""
  m, size = config.model, config.dataset.image_size
  dtype, param_dtype = jnp.dtype(m.dtype), jnp.dtype(m.param_dtype)
  common = dict(init_std=m.init_std, dtype=dtype, param_dtype=param_dtype)
  if m.name == 'sngan':
    s = m.sngan
    out = sngan.generator_output_size(s.bottom_width, s.g_features)
    if out != size:
      raise ValueError(f'the SNGAN generator (model.sngan.bottom_width, '
                       f'g_features) makes {out}x{out} images but '
                       f'dataset.image_size is {size}')
    return (sngan.Generator(features=tuple(s.g_features),
                            bottom_width=s.bottom_width,
                            channels=config.dataset.channels, **common),
            sngan.Discriminator(
                features=tuple(s.d_features), kernels=tuple(s.d_kernels),
                strides=tuple(s.d_strides), paddings=tuple(s.d_paddings),
                negative_slope=s.negative_slope, **common))
  out = dcgan.conv_out_size(1, m.g_kernels, m.g_strides, m.g_paddings,
                            transpose=True)
  if out != size:
    raise ValueError(
        f'the generator layers (model.g_kernels/g_strides/g_paddings) make '
        f'{out}x{out} images but dataset.image_size is {size}')
  d_out = dcgan.conv_out_size(size, m.d_kernels, m.d_strides, m.d_paddings,
                              transpose=False)
  if d_out != 1:
    raise ValueError(
        f'the discriminator layers (model.d_kernels/d_strides/d_paddings) '
        f'reduce {size}px to {d_out}x{d_out}, not 1x1')
  g = dict(features=tuple(m.g_features), kernels=tuple(m.g_kernels),
           strides=tuple(m.g_strides), paddings=tuple(m.g_paddings),
           channels=config.dataset.channels, **common)
  d = dict(features=tuple(m.d_features), kernels=tuple(m.d_kernels),
           strides=tuple(m.d_strides), paddings=tuple(m.d_paddings), **common)
  if m.name == 'cdcgan':
    if m.num_classes < 2:
      raise ValueError('model.num_classes must be >= 2 for cdcgan, got '
                       f'{m.num_classes}')
    return (cdcgan.Generator(num_classes=m.num_classes,
                             embed_dim=m.embed_dim, **g),
            cdcgan.Discriminator(num_classes=m.num_classes, **d))
  return dcgan.Generator(**g), dcgan.Discriminator(**d)


class GANTask:
  """Models, optimizers and pure functions of a GAN (see the module doc).

  Args:
    config: the experiment config (`medjax.config_lib`).
    inference: unused (nothing is loaded for training only).
  """

  def __init__(self, config: ml_collections.ConfigDict,
               inference: bool = False):
    del inference
    m = config.model
    self.latent_dim = m.latent_dim
    self.image_shape = (config.dataset.image_size, config.dataset.image_size,
                        config.dataset.channels)
    self.conditional = m.name == 'cdcgan'
    self.num_classes = m.num_classes if self.conditional else 0
    self.generator, self.discriminator = build_models(config)
    o = config.optimizer
    self.adversarial = adversarial.Adversarial.from_config(
        config, trainers.make_optimizer(o, o.g_learning_rate),
        trainers.make_optimizer(o, o.d_learning_rate))
    # d_loss, g_loss (over calls that updated G), d_real/d_fake: mean
    # sigmoid of D on real and (before the D step) fake, gp/r1 when on.
    self.metrics = self.adversarial.metrics()
    self.num_visual_images = config.num_sample_images
    g = config.gan
    self.eval_split = g.eval_split or None
    self.eval_num_samples = g.eval_num_samples
    # Feature spaces of the periodic distribution metrics: (Frechet key,
    # KID key) -> extractor, loaded now so a wrong path fails at set-up.
    # "FID" only for pytorch-fid's Inception.
    self._extractors = {}
    if g.eval_inception_weights or g.eval_classifier_workdir:
      from medjax.metrics import features  # pylint: disable=g-import-not-at-top
      if g.eval_inception_weights:
        self._extractors[('fid', 'kid')] = features.InceptionExtractor(
            g.eval_inception_weights)
      if g.eval_classifier_workdir:
        self._extractors[('fd_classifier', 'kd_classifier')] = (
            features.ClassifierExtractor(g.eval_classifier_workdir))
    self._real_features = {}  # The real images never change.

  # Generators have no "best" checkpoint: lower SWD is not better samples.
  best_metric = None
  visual_columns = None

  def consts(self) -> PyTree:
    return {}

  def check_data(self, labels, label_names) -> None:
    """Conditional models: the dataset's classes must fit num_classes."""
    if self.conditional:
      trainers.check_num_classes(labels, label_names, self.num_classes)

  def init(self, rng: jax.Array) -> GANState:
    """Fresh parameters and optimizer states."""
    g_rng, d_rng = jax.random.split(rng)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    x = jnp.zeros((1,) + self.image_shape, jnp.float32)
    y = (jnp.zeros((1,), jnp.int32),) if self.conditional else ()
    return self.adversarial.init_state(
        self.generator.init(g_rng, z, *y, train=False),
        self.discriminator.init(d_rng, x, *y, train=False))

  def sample_latents(self, rng: jax.Array, num: int) -> jax.Array:
    return jax.random.normal(rng, (num, self.latent_dim), jnp.float32)

  def sample_labels(self, num: int) -> jax.Array:
    """Class-balanced labels 0, 1, ..., K-1, 0, 1, ... (conditional only)."""
    return jnp.arange(num, dtype=jnp.int32) % max(self.num_classes, 1)

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None
                 ) -> tuple[GANState, Any]:
    """One D update, then a G update on every `gan.d_steps`-th call.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C)} (+ 'label' (B,) if conditional).
      rng: this step's key (latents, augmentation, penalties).
      consts: unused.

    Returns:
      The new state and this step's `self.metrics` (g_loss averages the
      calls that updated G).
    """
    del consts
    real = normalize(batch['image'])
    z_rng, rng = jax.random.split(rng)
    z = self.sample_latents(z_rng, real.shape[0])
    y = (batch['label'].astype(jnp.int32),) if self.conditional else ()

    def g_forward(g_params):
      fake, upd = self.generator.apply(
          {'params': g_params, 'batch_stats': state.g_stats}, z, *y,
          train=True, mutable=['batch_stats'])
      return fake, upd['batch_stats']

    def d_apply(d_params, d_stats, x, paired):
      del paired
      logits, upd = self.discriminator.apply(
          {'params': d_params, 'batch_stats': d_stats}, x, *y, train=True,
          mutable=['batch_stats'])
      return (logits, None), upd.get('batch_stats', {})

    new_state, outputs = self.adversarial.update(
        state, real=real, g_forward=g_forward, d_apply=d_apply, rng=rng,
        one_d_call=not self.conditional)  # Labels index the real batch.
    return new_state, self.metrics.single_from_model_output(**outputs)

  def sampling_params(self, state: GANState) -> PyTree:
    """G's weights used for samples: the EMA when enabled."""
    return adversarial.sampling_params(state)

  def generate(self, g_params: PyTree, g_stats: PyTree, z: jax.Array,
               labels: jax.Array | None = None) -> jax.Array:
    """Images in [-1, 1] from latents (and labels), BatchNorm in inference
    mode."""
    y = ()
    if self.conditional:
      y = (labels if labels is not None
           else self.sample_labels(z.shape[0]),)
    return self.generator.apply({'params': g_params, 'batch_stats': g_stats},
                                z, *y, train=False)

  def evaluate(self, state: GANState, images) -> dict[str, float]:
    """Network-free sample quality: SWD and MS-SSIM diversity.

    Args:
      state: the train state.
      images: uint8 real images of `gan.eval_split`.

    Returns:
      {'swd_x1e3': SWD x 1e3 averaged over pyramid levels (lower = closer
      to the real distribution), 'ms_ssim_diversity' of generated samples
      and 'ms_ssim_diversity_real' of real images (lower = more diverse)};
      with `gan.eval_inception_weights` also 'fid' and 'kid' (clean-fid's
      mean over subsets) on pytorch-fid's features, with
      `gan.eval_classifier_workdir` 'fd_classifier' and 'kd_classifier' on
      that classifier's penultimate features. With few samples they are
      biased upwards: compare runs at equal `gan.eval_num_samples`, and use
      `medjax.evaluate` (cards, CIs) for reported numbers.
    """
    from medjax.metrics import diversity  # pylint: disable=g-import-not-at-top
    from medjax.metrics import swd  # pylint: disable=g-import-not-at-top
    n = min(self.eval_num_samples, len(images))
    real = np.asarray(images[:n])
    if not hasattr(self, '_eval_generate'):
      self._eval_generate = jax.jit(lambda p, s, z: to_uint8(
          self.generate(p, s, z)))
    z = self.sample_latents(jax.random.key(0), n)  # Same latents each time.
    fake = np.concatenate([np.asarray(self._eval_generate(
        self.sampling_params(state), state.g_stats, z[i:i + 64]))
                           for i in range(0, n, 64)])
    div = diversity.ms_ssim_diversity(fake, real, num_pairs=min(500, n * 4))
    out = {'swd_x1e3': swd.sliced_wasserstein(real, fake).average,
           'ms_ssim_diversity': div['generated'].mean,
           'ms_ssim_diversity_real': div['real'].mean}
    if self._extractors:
      from medjax.metrics import distribution  # pylint: disable=g-import-not-at-top
    for (fd_key, kd_key), extractor in self._extractors.items():
      if fd_key not in self._real_features:
        self._real_features[fd_key] = extractor(real)
      real_f, fake_f = self._real_features[fd_key], extractor(fake)
      out[fd_key] = distribution.fid_from_features(real_f, fake_f)
      out[kd_key] = distribution.kid(real_f, fake_f)[0]
    return out

  def visual_inputs(self, rng: jax.Array, eval_images=None) -> jax.Array:
    """Fixed latents of the sample grid (labels cycle through classes)."""
    del eval_images
    return self.sample_latents(rng, self.num_visual_images)

  def visuals(self, state: GANState, z: jax.Array) -> dict[str, jax.Array]:
    return {'samples': to_uint8(self.generate(
        self.sampling_params(state), state.g_stats, z))}
