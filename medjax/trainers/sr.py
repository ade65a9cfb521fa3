"""Restoration tasks: SRResNet (supervised), SRGAN and Pix2Pix (adversarial).

Training pairs are made on device inside the jitted step, from each batch of
stored images (after `dataset.degradation`, if any): HR = a random
`sr.hr_crop` square crop (one per image; 0 = the whole image), LR =
`sr.lr_degradation`(HR) with the same OpenCV-exact degradations as
`medjax.degrade` (`x4_bicubic` for x4 super-resolution, e.g. `box(5)` for
same-size deblurring). Both are scaled to [-1, 1] (the paper feeds LR in
[0, 1]; one range for input and output keeps scale-1 restoration an identity
at initialisation's reach).

* `srresnet`: G minimises the content loss, MSE in pixel space
  (`sr.content_loss='mse'`, the paper's SRResNet-MSE) or VGG19 feature space.
* `srgan`: G minimises `sr.content_weight` x content loss +
  `sr.adversarial_weight` x the adversarial loss of the SRGAN discriminator
  (`gan.loss`, non-saturating BCE by default as in the paper); D the D side
  of that loss on real HR vs G's output. The update is the generic one of
  `medjax.trainers.adversarial`, so every `gan.*` option applies (WGAN-GP,
  R1, DiffAugment of HR and output, G EMA used for validation and
  restoration, `gan.d_steps`). G starts from the SRResNet run named by
  `sr.init_from`.
* `pix2pix` (Isola et al. 2017; scale 1): the same adversarial step with the
  U-Net generator (dropout in training) and the 70x70 PatchGAN, which sees
  the (input, output) pair (DiffAugment transforms both alike); content
  loss L1 with weight 100, adversarial weight 1. At inference the U-Net runs in eval mode (running BatchNorm
  statistics, no dropout), so a restored dataset is deterministic; the paper
  instead keeps dropout and batch statistics at test time.

The content loss of SRGAN (`sr.content_loss='vgg'`) is the MSE between VGG19
feature maps (`sr.vgg_layer`, default conv5_4 after its ReLU, the paper's
VGG54) of output and HR, each rescaled by `sr.vgg_feature_scale` (1/12.75 in
the paper). Grayscale images are repeated to three channels for VGG
(`medjax.models.vgg.to_vgg_input`).

Validation (`evaluate`) runs G in inference mode on whole images of
`sr.eval_split` and reports PSNR and SSIM on the 0-255 grey scale after
rounding to uint8 (what a restored dataset stores), with `sr.crop_border`
pixels cut from each side, next to bicubic upscaling of the same LR.
"""

from typing import Any

from clu import metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from medjax import trainers
from medjax import weights
from medjax.data import degradations
from medjax.metrics import image as image_metrics
from medjax.models import pix2pix
from medjax.models import srresnet
from medjax.models import vgg
from medjax.trainers import adversarial
from medjax.trainers.gan import normalize, to_uint8

PyTree = Any
RANDOM_VGG = 'random_vgg'


@flax.struct.dataclass
class SRState:
  """Generator-only training state (SRResNet)."""
  step: jax.Array
  g_params: PyTree
  g_stats: PyTree
  g_opt: PyTree


@flax.struct.dataclass
class SRMetrics(metrics.Collection):
  g_loss: metrics.Average.from_output('g_loss')
  content_loss: metrics.Average.from_output('content_loss')


def random_crops(images: jax.Array, size: int, rng: jax.Array) -> jax.Array:
  """One uniformly placed size x size crop per image (B, H, W, C)."""
  b, h, w, c = images.shape
  if size > min(h, w):
    raise ValueError(f'sr.hr_crop={size} exceeds the {h}x{w} images')
  ky, kx = jax.random.split(rng)
  ys = jax.random.randint(ky, (b,), 0, h - size + 1)
  xs = jax.random.randint(kx, (b,), 0, w - size + 1)
  return jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(
      im, (y, x, 0), (size, size, c)))(images, ys, xs)


def upscale(lr: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
  """Interpolation baseline: uint8 LR -> uint8 at `size` (OpenCV rules)."""
  if lr.shape[1:3] == tuple(size):
    return lr
  return degradations.resize(lr, size, method)


class SRTask:
  """SRResNet or SRGAN training on pairs made on device.

  Args:
    config: the experiment config (`medjax.config_lib`), model.name 'srresnet'
      or 'srgan'.
    inference: build for restoring/evaluating only (VGG19 is not loaded).
  """

  def __init__(self, config: ml_collections.ConfigDict,
               inference: bool = False):
    m, s = config.model, config.sr
    self.config = config
    self.adversarial = m.name in ('srgan', 'pix2pix')
    self.paired_d = m.name == 'pix2pix'  # D sees (input, output) pairs.
    self.scale = m.sr.scale
    self.channels = config.dataset.channels
    self.hr_crop = s.hr_crop
    self.crop_border = s.crop_border
    self.eval_split = s.eval_split
    self.eval_num_images = s.eval_num_images
    self.eval_batch_size = s.eval_batch_size
    self.best_metric = s.best_metric
    self.visual_columns = 4
    self.num_visual_images = min(4, config.num_sample_images)
    dtype, param_dtype = jnp.dtype(m.dtype), jnp.dtype(m.param_dtype)
    if self.hr_crop and self.hr_crop % self.scale:
      raise ValueError(f'sr.hr_crop={self.hr_crop} must be divisible by '
                       f'model.sr.scale={self.scale}')
    self.degrade = degradations.get(s.lr_degradation)
    self._check_degradation(config)
    if self.paired_d:
      if self.scale != 1:
        raise ValueError('pix2pix restores at the same size: set '
                         f'model.sr.scale=1 (got {self.scale})')
      p = m.pix2pix
      self.generator = pix2pix.UNetGenerator(
          num_downs=p.num_downs, ngf=p.ngf, channels_in=self.channels,
          channels_out=self.channels, norm=p.norm, use_dropout=p.use_dropout,
          dtype=dtype, param_dtype=param_dtype)
      self.discriminator = pix2pix.PatchDiscriminator(
          ndf=p.ndf, n_layers=p.n_layers, norm=p.norm, dtype=dtype,
          param_dtype=param_dtype)
    else:
      self.generator = srresnet.SRResNet(
          num_blocks=m.sr.num_blocks, features=m.sr.features,
          scale=self.scale, channels=self.channels,
          prelu_per_channel=m.sr.prelu_per_channel, dtype=dtype,
          param_dtype=param_dtype)
      if self.adversarial:
        self.discriminator = srresnet.SRGANDiscriminator(
            features=m.sr.d_features, pool=m.sr.d_pool, dtype=dtype,
            param_dtype=param_dtype)
    o = config.optimizer
    self.g_tx = trainers.make_optimizer(o, o.g_learning_rate)
    if self.adversarial:
      self.adv = adversarial.Adversarial.from_config(
          config, self.g_tx, trainers.make_optimizer(o, o.d_learning_rate),
          adversarial_weight=s.adversarial_weight)
      self.adv_metrics = self.adv.metrics(
          g_side=('content_loss', 'adversarial_loss'))
    self.content = s.content_loss
    self.content_weight = s.content_weight
    self.vgg_scale = s.vgg_feature_scale
    self._vgg_params = None
    if self.content == 'vgg' and not inference:
      self.vgg = vgg.VGG19Features(last_layer=s.vgg_layer,
                                   after_relu=s.vgg_after_relu, dtype=dtype)
      if s.vgg_weights == RANDOM_VGG:
        self._vgg_params = self.vgg.init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
      else:
        # Fails now, with the file to get and the command to convert it.
        self._vgg_params = weights.load('vgg19', s.vgg_weights or None)
    self.init_from = s.init_from

  def _check_degradation(self, config: ml_collections.ConfigDict) -> None:
    size = self.hr_crop or config.dataset.image_size
    out = jax.eval_shape(
        self.degrade, jax.ShapeDtypeStruct((1, size, size, self.channels),
                                           jnp.uint8), jax.random.key(0))
    want = size // self.scale
    if out.shape[1:3] != (want, want):
      raise ValueError(
          f'sr.lr_degradation={config.sr.lr_degradation!r} turns {size}x{size}'
          f' HR images into {out.shape[1]}x{out.shape[2]}, but model.sr.scale='
          f'{self.scale} needs {want}x{want}')

  # --- State -----------------------------------------------------------------

  def consts(self) -> PyTree:
    return {'vgg': self._vgg_params} if self._vgg_params is not None else {}

  def init(self, rng: jax.Array):
    """Fresh parameters and optimizer states."""
    g_rng, d_rng = jax.random.split(rng)
    # The U-Net needs a side divisible by 2**num_downs.
    g_size = (self.hr_crop or self.config.dataset.image_size
              if self.paired_d else 16)
    g_vars = self.generator.init(
        g_rng, jnp.zeros((1, g_size, g_size, self.channels)), train=False)
    if not self.adversarial:
      return SRState(step=jnp.zeros((), jnp.int32),
                     g_params=g_vars['params'], g_stats=g_vars['batch_stats'],
                     g_opt=self.g_tx.init(g_vars['params']))
    # The paper's flatten head: the dense layer's size depends on the crop.
    d_size = self.hr_crop or self.config.dataset.image_size
    x = jnp.zeros((1, d_size, d_size, self.channels))
    d_vars = self.discriminator.init(
        d_rng, *((x, x) if self.paired_d else (x,)), train=False)
    return self.adv.init_state(g_vars, d_vars)

  def with_generator(self, state, g_params: PyTree, g_stats: PyTree):
    """`state` with G's weights replaced (SRGAN started from SRResNet).

    The optimizer state (and a G EMA) is re-initialised: Adam moments of
    another loss would only mislead the first steps.
    """
    if self.adversarial:
      return self.adv.with_generator(state, g_params, g_stats)
    return state.replace(g_params=g_params, g_stats=g_stats,
                         g_opt=self.g_tx.init(g_params))

  # --- Pairs and losses ------------------------------------------------------

  def pairs(self, images: jax.Array, rng: jax.Array, crop: bool = True
            ) -> tuple[jax.Array, jax.Array]:
    """uint8 images -> (LR, HR) uint8 (random crops when training)."""
    crop_rng, deg_rng = jax.random.split(rng)
    hr = images
    if crop and self.hr_crop:
      hr = random_crops(images, self.hr_crop, crop_rng)
    return self.degrade(hr, deg_rng), hr

  def content_loss(self, sr: jax.Array, hr: jax.Array,
                   consts: PyTree) -> jax.Array:
    """MSE or L1 in pixels ([-1, 1]), or MSE of rescaled VGG19 features."""
    if self.content == 'mse':
      return jnp.mean(jnp.square(sr - hr))
    if self.content == 'l1':
      return jnp.mean(jnp.abs(sr - hr))
    apply = lambda x: self.vgg.apply(
        {'params': consts['vgg']}, vgg.to_vgg_input(x)).astype(jnp.float32)
    f_sr = apply(sr) * self.vgg_scale
    f_hr = jax.lax.stop_gradient(apply(hr)) * self.vgg_scale
    return jnp.mean(jnp.square(f_sr - f_hr))

  def train_step(self, state, batch: dict[str, jax.Array], rng: jax.Array,
                 consts: PyTree = None):
    """One G update (SRResNet), or one D then one G update (SRGAN).

    Args:
      state: `SRState` or `GANState`.
      batch: {'image': uint8 (B, H, W, C)}, the originals.
      rng: this step's key (crops, random degradations).
      consts: `self.consts()`.

    Returns:
      The new state and this step's metrics.
    """
    consts = consts if consts is not None else self.consts()
    pair_rng, dropout_rng = jax.random.split(rng)
    # Derived, not split: pairs and dropout keep the key streams SRResNet
    # runs had before the adversarial step was shared.
    adv_rng = jax.random.fold_in(rng, 1)
    lr_u8, hr_u8 = self.pairs(batch['image'], pair_rng)
    lr, hr = normalize(lr_u8), normalize(hr_u8)

    def g_forward(g_params):
      sr, upd = self.generator.apply(
          {'params': g_params, 'batch_stats': state.g_stats}, lr, train=True,
          mutable=['batch_stats'], rngs={'dropout': dropout_rng})
      return sr, upd['batch_stats']

    if not self.adversarial:
      def loss_fn(g_params):
        sr, g_stats = g_forward(g_params)
        content = self.content_loss(sr, hr, consts)
        return self.content_weight * content, (g_stats, content)

      (loss, (g_stats, content)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.g_params)
      updates, g_opt = self.g_tx.update(grads, state.g_opt, state.g_params)
      new = SRState(step=state.step + 1,
                    g_params=optax.apply_updates(state.g_params, updates),
                    g_stats=g_stats, g_opt=g_opt)
      return new, SRMetrics.single_from_model_output(g_loss=loss,
                                                     content_loss=content)

    def d_apply(d_params, d_stats, x, paired):
      logits, upd = self.discriminator.apply(
          {'params': d_params, 'batch_stats': d_stats},
          *((paired,) if self.paired_d else ()), x, train=True,
          mutable=['batch_stats'])
      return (logits, None), upd['batch_stats']

    def g_extra(sr, aux, g_params):
      del aux, g_params
      content = self.content_loss(sr, hr, consts)
      return self.content_weight * content, {'content_loss': content}

    new, outputs = self.adv.update(
        state, real=hr, g_forward=g_forward, d_apply=d_apply, rng=adv_rng,
        paired=lr if self.paired_d else None, g_extra=g_extra,
        one_d_call=True)
    return new, self.adv_metrics.single_from_model_output(**outputs)

  # --- Inference, validation, panels -----------------------------------------

  def restore(self, g_params: PyTree, g_stats: PyTree,
              lr: jax.Array) -> jax.Array:
    """uint8 LR (B, h, w, C) -> uint8 restored (B, scale*h, scale*w, C)."""
    sr = self.generator.apply({'params': g_params, 'batch_stats': g_stats},
                              normalize(lr), train=False)
    return to_uint8(sr)

  def eval_pairs(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Deterministic (LR, HR) of whole images (fixed key for noisy specs)."""
    return self.pairs(images, jax.random.key(0), crop=False)

  def _eval_batch(self, g_params, g_stats, images):
    lr, hr = self.eval_pairs(images)
    out = self.restore(g_params, g_stats, lr)
    bicubic = upscale(lr, hr.shape[1:3], 'bicubic')
    cb = self.crop_border
    return {'psnr': image_metrics.psnr(out, hr, crop_border=cb),
            'ssim': image_metrics.ssim(out, hr, crop_border=cb),
            'bicubic_psnr': image_metrics.psnr(bicubic, hr, crop_border=cb),
            'bicubic_ssim': image_metrics.ssim(bicubic, hr, crop_border=cb)}

  def evaluate(self, state, images: np.ndarray) -> dict[str, float]:
    """Mean PSNR/SSIM of G and of bicubic on whole validation images.

    Args:
      state: the train state.
      images: uint8 (N, H, W, C) originals (already transformed like
        training images).

    Returns:
      {'psnr', 'ssim', 'bicubic_psnr', 'bicubic_ssim'}: means over images.
    """
    if self.eval_num_images:
      images = images[:self.eval_num_images]
    if not hasattr(self, '_eval_jit'):
      self._eval_jit = jax.jit(self._eval_batch)
    values = {}
    for i in range(0, len(images), self.eval_batch_size):
      out = self._eval_jit(adversarial.sampling_params(state), state.g_stats,
                           images[i:i + self.eval_batch_size])
      for k, v in out.items():
        values.setdefault(k, []).append(np.asarray(v))
    return {k: float(np.mean(np.concatenate(v))) for k, v in values.items()}

  def visual_inputs(self, rng: jax.Array, eval_images=None) -> jax.Array:
    """The first few validation images (whole), fixed for the run."""
    del rng
    if eval_images is None:
      raise ValueError('SR panels need validation images')
    return jnp.asarray(eval_images[:self.num_visual_images])

  def visuals(self, state, images: jax.Array) -> dict[str, jax.Array]:
    """Rows of LR (nearest, to HR size) | bicubic | output | HR."""
    lr, hr = self.eval_pairs(images)
    size = hr.shape[1:3]
    out = self.restore(adversarial.sampling_params(state), state.g_stats, lr)
    panels = jnp.stack([upscale(lr, size, 'nearest'),
                        upscale(lr, size, 'bicubic'), out, hr], axis=1)
    return {'lr_bicubic_output_hr': panels.reshape((-1,) + hr.shape[1:])}
