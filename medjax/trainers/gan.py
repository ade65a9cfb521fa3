"""The adversarial task: state, init, the pure train step, and sampling.

One generic step for every unconditional or class-conditional GAN (DCGAN,
SNGAN, conditional DCGAN), parameterised by the models and `config.gan`:

* per call, one D update; G is updated on every `gan.d_steps`-th call (1: one
  D step then one G step, as Radford et al. and the PyTorch DCGAN example);
* G runs once in train mode; D sees the real and the (stopped) fake batch in
  two passes, is updated, and the G gradient flows through the *updated* D
  into G by the saved VJP of that same G forward (no second G pass);
* adversarial loss `gan.loss` (nonsaturating, hinge, lsgan, wgan), optional
  WGAN-GP (`gan.gp_weight`) and R1 (`gan.r1_gamma`) penalties on D,
  DiffAugment (`gan.diffaugment`) of real and fake before every D pass (D and
  G steps), and an EMA of G's weights (`gan.ema_decay`) used for samples and
  evaluation. G and D learning rates are separate (TTUR: set them apart).

See docs/training_options.md for the formulas and defaults.
"""


from typing import Any

from clu import metrics
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from medjax import augment
from medjax import ema
from medjax import losses
from medjax import trainers
from medjax.models import cdcgan
from medjax.models import dcgan
from medjax.models import sngan

PyTree = Any


@flax.struct.dataclass
class GANState:
  """Everything that changes during training; a pure pytree of arrays."""
  step: jax.Array
  g_params: PyTree
  g_stats: PyTree
  g_opt: PyTree
  d_params: PyTree
  d_stats: PyTree
  d_opt: PyTree
  # EMA of g_params (gan.ema_decay > 0), else None; used for sampling.
  g_ema: PyTree = None


@flax.struct.dataclass
class GLossAverage(metrics.Average):
  """Mean G loss over the calls that updated G (gan.d_steps > 1 skips some)."""

  @classmethod
  def from_model_output(cls, g_loss, g_updated, **_):
    return super().from_model_output(jnp.reshape(g_loss, (1,)),
                                     mask=jnp.reshape(g_updated, (1,)))


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  d_loss: metrics.Average.from_output('d_loss')
  g_loss: GLossAverage
  d_real: metrics.Average.from_output('d_real')  # Mean D(x).
  d_fake: metrics.Average.from_output('d_fake')  # Mean D(G(z)) before D step.


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
    self.g_tx = trainers.make_optimizer(o, o.g_learning_rate)
    self.d_tx = trainers.make_optimizer(o, o.d_learning_rate)
    self.num_visual_images = config.num_sample_images
    g = config.gan
    self.d_loss_fn, self.g_loss_fn = losses.get_adversarial(g.loss)
    augment.parse_policy(g.diffaugment)  # Fails early on a typo.
    self.diffaugment = g.diffaugment
    self.gp_weight, self.r1_gamma = g.gp_weight, g.r1_gamma
    self.ema_decay, self.d_steps = g.ema_decay, g.d_steps
    if g.d_steps < 1:
      raise ValueError(f'gan.d_steps must be >= 1, got {g.d_steps}')
    if not 0.0 <= g.ema_decay < 1.0:
      raise ValueError(f'gan.ema_decay must be in [0, 1), got {g.ema_decay}')
    self.eval_split = g.eval_split or None
    self.eval_num_samples = g.eval_num_samples
    self._inception = None
    if g.eval_inception_weights:
      from medjax.metrics import features  # pylint: disable=g-import-not-at-top
      # Loaded now: a wrong path fails at set-up with the file to get.
      self._inception = features.InceptionExtractor(g.eval_inception_weights)
    self._real_features = None

  # Generators have no "best" checkpoint: lower SWD is not better samples.
  best_metric = None
  visual_columns = None

  def consts(self) -> PyTree:
    return {}

  def check_data(self, labels, label_names) -> None:
    """Conditional models: the dataset's classes must fit num_classes."""
    if self.conditional:
      n = max(len(label_names), int(labels.max()) + 1)
      if n > self.num_classes:
        raise ValueError(f'the dataset has {n} classes ({label_names}) but '
                         f'model.num_classes is {self.num_classes}')

  def init(self, rng: jax.Array) -> GANState:
    """Fresh parameters and optimizer states."""
    g_rng, d_rng = jax.random.split(rng)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    x = jnp.zeros((1,) + self.image_shape, jnp.float32)
    y = (jnp.zeros((1,), jnp.int32),) if self.conditional else ()
    g_vars = self.generator.init(g_rng, z, *y, train=False)
    d_vars = self.discriminator.init(d_rng, x, *y, train=False)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars['params'], g_stats=g_vars.get('batch_stats', {}),
        g_opt=self.g_tx.init(g_vars['params']),
        d_params=d_vars['params'], d_stats=d_vars.get('batch_stats', {}),
        d_opt=self.d_tx.init(d_vars['params']),
        g_ema=g_vars['params'] if self.ema_decay else None)

  def sample_latents(self, rng: jax.Array, num: int) -> jax.Array:
    return jax.random.normal(rng, (num, self.latent_dim), jnp.float32)

  def sample_labels(self, num: int) -> jax.Array:
    """Class-balanced labels 0, 1, ..., K-1, 0, 1, ... (conditional only)."""
    return jnp.arange(num, dtype=jnp.int32) % max(self.num_classes, 1)

  def _augment(self, images: jax.Array, rng: jax.Array) -> jax.Array:
    if not self.diffaugment:
      return images
    return augment.diff_augment(images, rng, self.diffaugment)

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None
                 ) -> tuple[GANState, TrainMetrics]:
    """One D update, then a G update on every `gan.d_steps`-th call.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C)} (+ 'label' (B,) if conditional).
      rng: this step's key (latents, augmentation, penalties).
      consts: unused.

    Returns:
      The new state and this step's `TrainMetrics` (g_loss averages the
      calls that updated G).
    """
    del consts
    real = normalize(batch['image'])
    z_rng, aug_rng, gp_rng = jax.random.split(rng, 3)
    z = self.sample_latents(z_rng, real.shape[0])
    y = (batch['label'].astype(jnp.int32),) if self.conditional else ()
    apply_d = self.discriminator.apply

    def g_forward(g_params):
      fake, upd = self.generator.apply(
          {'params': g_params, 'batch_stats': state.g_stats}, z, *y,
          train=True, mutable=['batch_stats'])
      return fake, upd['batch_stats']

    fake, g_vjp, g_stats = jax.vjp(g_forward, state.g_params, has_aux=True)
    k_real, k_fake, k_g = jax.random.split(aug_rng, 3)

    def d_apply(d_params, d_stats, x):
      logits, upd = apply_d({'params': d_params, 'batch_stats': d_stats}, x,
                            *y, train=True, mutable=['batch_stats'])
      return logits, upd.get('batch_stats', {})

    def d_loss_fn(d_params):
      real_logits, d_stats = d_apply(d_params, state.d_stats,
                                     self._augment(real, k_real))
      fake_logits, d_stats = d_apply(
          d_params, d_stats,
          self._augment(jax.lax.stop_gradient(fake), k_fake))
      loss = self.d_loss_fn(real_logits, fake_logits)
      # Penalties see D in train mode; their batch-statistics updates are
      # dropped (they are not part of the D pass the loss defines).
      d_fn = lambda x: d_apply(d_params, d_stats, x)[0]
      if self.gp_weight:
        loss += losses.wgan_gp(d_fn, real, fake, gp_rng, self.gp_weight)
      if self.r1_gamma:
        loss += losses.r1_penalty(d_fn, real, self.r1_gamma)
      return loss, (d_stats, real_logits, fake_logits)

    (d_loss, (d_stats, real_logits, fake_logits)), d_grads = (
        jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params))
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_update(_):
      def g_loss_fn(fake):
        logits, stats = d_apply(d_params, d_stats, self._augment(fake, k_g))
        return self.g_loss_fn(logits), stats

      (g_loss, new_d_stats), d_fake_grad = jax.value_and_grad(
          g_loss_fn, has_aux=True)(fake)
      (g_grads,) = g_vjp(d_fake_grad)
      g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt,
                                          state.g_params)
      g_params = optax.apply_updates(state.g_params, g_updates)
      g_ema = state.g_ema
      if self.ema_decay:
        g_ema = ema.ema_update(state.g_ema, g_params, self.ema_decay)
      return g_params, g_opt, g_ema, new_d_stats, g_loss

    def no_g_update(_):
      return (state.g_params, state.g_opt, state.g_ema, d_stats,
              jnp.zeros((), jnp.float32))

    g_updated = (state.step % self.d_steps) == (self.d_steps - 1)
    if self.d_steps == 1:
      g_params, g_opt, g_ema, d_stats, g_loss = g_update(None)
    else:
      # G steps every d_steps-th call (the critic gets d_steps updates per G
      # update, each on a fresh batch, as WGAN-GP and StarGAN train).
      g_params, g_opt, g_ema, d_stats, g_loss = jax.lax.cond(
          g_updated, g_update, no_g_update, None)

    new_state = GANState(
        step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
        d_params=d_params, d_stats=d_stats, d_opt=d_opt, g_ema=g_ema)
    step_metrics = TrainMetrics.single_from_model_output(
        d_loss=d_loss, g_loss=g_loss, g_updated=g_updated,
        d_real=nn.sigmoid(real_logits).mean(),
        d_fake=nn.sigmoid(fake_logits).mean())
    return new_state, step_metrics

  def sampling_params(self, state: GANState) -> PyTree:
    """G's weights used for samples: the EMA when enabled."""
    return state.g_ema if state.g_ema is not None else state.g_params

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
      mean over subsets) on pytorch-fid's features. With few samples they are
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
    if self._inception is not None:
      from medjax.metrics import distribution  # pylint: disable=g-import-not-at-top
      if self._real_features is None:  # The real images never change.
        self._real_features = self._inception(real)
      fake_features = self._inception(fake)
      out['fid'] = distribution.fid_from_features(self._real_features,
                                                  fake_features)
      out['kid'] = distribution.kid(self._real_features, fake_features)[0]
    return out

  def visual_inputs(self, rng: jax.Array, eval_images=None) -> jax.Array:
    """Fixed latents of the sample grid (labels cycle through classes)."""
    del eval_images
    return self.sample_latents(rng, self.num_visual_images)

  def visuals(self, state: GANState, z: jax.Array) -> dict[str, jax.Array]:
    return {'samples': to_uint8(self.generate(
        self.sampling_params(state), state.g_stats, z))}
