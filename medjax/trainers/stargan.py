"""StarGAN (Choi et al. 2018): one generator translating between domains.

Domains are the dataset's classes (e.g. tumour types; `model.num_classes`).
Trained with the generic adversarial update (`medjax.trainers.adversarial`);
with the paper's settings (`gan.loss='wgan'`, `gan.gp_weight=10`,
`gan.d_steps=5`, as configs/stargan_brain.py sets them) per call:

* D (critic + domain classifier) update on a fresh batch:
  L_D = -E[D_src(x)] + E[D_src(G(x, c'))] + lambda_cls L_cls(D_cls(x), c)
        + lambda_gp GP,
  with c the image's domain, c' a random target domain (a permutation of the
  batch's labels, as the reference), GP the WGAN-GP penalty on interpolates;
* every `gan.d_steps`-th call (n_critic) a G update:
  L_G = -E[D_src(G(x, c'))] + lambda_cls L_cls(D_cls(G(x, c')), c')
        + lambda_rec ||x - G(G(x, c'), c)||_1.

Defaults: lambda_cls 1, lambda_rec 10 (`stargan.*`), Adam 1e-4 (0.5,
0.999). The other `gan.*` options (another `gan.loss`, R1, DiffAugment, G
EMA for the panels) apply as to every GAN. Image panel: each row is a
validation image then its translation to every domain.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from medjax import trainers
from medjax.models import stargan
from medjax.trainers import adversarial
from medjax.trainers.adversarial import GANState
from medjax.trainers.gan import normalize, to_uint8

PyTree = Any


class StarGANTask:
  """Models, optimizers and the pure train step of StarGAN.

  Args:
    config: the experiment config (model.name 'stargan').
    inference: unused.
  """

  eval_split = None
  visual_split = 'test'  # Images the domain panels translate.
  best_metric = None

  def __init__(self, config: ml_collections.ConfigDict,
               inference: bool = False):
    del inference
    m, s = config.model, config.stargan
    self.num_classes = m.num_classes
    if self.num_classes < 2:
      raise ValueError('model.num_classes must be >= 2 for stargan (the '
                       f'domains), got {self.num_classes}')
    self.size = config.dataset.image_size
    self.channels = config.dataset.channels
    dtype, param_dtype = jnp.dtype(m.dtype), jnp.dtype(m.param_dtype)
    self.generator = stargan.Generator(
        conv_dim=s.g_conv_dim, c_dim=self.num_classes,
        repeat_num=s.g_repeat_num, channels=self.channels, dtype=dtype,
        param_dtype=param_dtype)
    if self.size % 2**s.d_repeat_num:
      raise ValueError(f'dataset.image_size={self.size} must be divisible by '
                       f'2**stargan.d_repeat_num={2**s.d_repeat_num}')
    self.discriminator = stargan.Discriminator(
        image_size=self.size, conv_dim=s.d_conv_dim, c_dim=self.num_classes,
        repeat_num=s.d_repeat_num, dtype=dtype, param_dtype=param_dtype)
    o = config.optimizer
    self.adversarial = adversarial.Adversarial.from_config(
        config, trainers.make_optimizer(o, o.g_learning_rate),
        trainers.make_optimizer(o, o.d_learning_rate))
    # d_cls: L_cls on real images; g_cls, g_rec: G's domain and cycle terms.
    self.metrics = self.adversarial.metrics(
        d_side=('d_cls',), g_side=('g_cls', 'g_rec'),
        probabilities=config.gan.loss != 'wgan')
    self.lambda_cls, self.lambda_rec = s.lambda_cls, s.lambda_rec
    self.num_visual_images = min(4, config.num_sample_images)
    self.visual_columns = self.num_classes + 1

  def consts(self) -> PyTree:
    return {}

  def check_data(self, labels, label_names) -> None:
    trainers.check_num_classes(labels, label_names, self.num_classes)

  def init(self, rng: jax.Array) -> GANState:
    g_rng, d_rng = jax.random.split(rng)
    x = jnp.zeros((1, self.size, self.size, self.channels))
    c = jnp.zeros((1, self.num_classes))
    return self.adversarial.init_state(self.generator.init(g_rng, x, c),
                                       self.discriminator.init(d_rng, x))

  def sampling_params(self, state: GANState) -> PyTree:
    """G's weights for panels: the EMA when enabled."""
    return adversarial.sampling_params(state)

  def _onehot(self, labels: jax.Array) -> jax.Array:
    return jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)

  def translate(self, g_params: PyTree, x: jax.Array,
                labels: jax.Array) -> jax.Array:
    """Images in [-1, 1] translated to the domains `labels` (B,)."""
    return self.generator.apply({'params': g_params}, x,
                                self._onehot(labels))

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None):
    """One D update, and a G update on every `gan.d_steps`-th call.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C), 'label': (B,) domains}.
      rng: this step's key (target domains, augmentation, penalty).
      consts: unused.

    Returns:
      The new state and this step's `self.metrics`.
    """
    del consts
    x = normalize(batch['image'])
    c_org = batch['label'].astype(jnp.int32)
    perm_rng, rng = jax.random.split(rng)
    c_trg = c_org[jax.random.permutation(perm_rng, c_org.shape[0])]

    def g_forward(g_params):
      return self.translate(g_params, x, c_trg), {}

    def d_apply(d_params, d_stats, img, paired):
      del paired
      return self.discriminator.apply({'params': d_params}, img), d_stats

    def d_extra(cls_real, cls_fake):
      del cls_fake
      d_cls = stargan.domain_classification_loss(cls_real, c_org)
      return self.lambda_cls * d_cls, {'d_cls': d_cls}

    def g_extra(fake, cls_fake, g_params):
      g_cls = stargan.domain_classification_loss(cls_fake, c_trg)
      # Through G twice: the direct gradient w.r.t. g_params is added.
      g_rec = stargan.reconstruction_loss(
          x, self.translate(g_params, fake, c_org))
      return (self.lambda_cls * g_cls + self.lambda_rec * g_rec,
              {'g_cls': g_cls, 'g_rec': g_rec})

    new, outputs = self.adversarial.update(
        state, real=x, g_forward=g_forward, d_apply=d_apply, rng=rng,
        d_extra=d_extra, g_extra=g_extra)
    return new, self.metrics.single_from_model_output(**outputs)

  def visual_inputs(self, rng: jax.Array, eval_images=None):
    """The first few images of `visual_split`, fixed for the run."""
    del rng
    if eval_images is None:
      raise ValueError('StarGAN panels need images')
    return jnp.asarray(eval_images[:self.num_visual_images])

  def visuals(self, state: GANState, images: jax.Array):
    """Rows: input | translation to domain 0 | ... | domain K-1."""
    x = normalize(images)
    cols = [images] + [
        to_uint8(self.translate(self.sampling_params(state), x, jnp.full(
            (x.shape[0],), k, jnp.int32))) for k in range(self.num_classes)]
    panels = jnp.stack(cols, axis=1)
    return {'domains': panels.reshape((-1,) + images.shape[1:])}
