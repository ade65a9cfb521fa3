"""StarGAN (Choi et al. 2018): one generator translating between domains.

Domains are the dataset's classes (e.g. tumour types; `model.num_classes`).
Per call, as the paper and its reference code:

* D (critic + domain classifier) update on a fresh batch:
  L_D = -E[D_src(x)] + E[D_src(G(x, c'))] + lambda_cls L_cls(D_cls(x), c)
        + lambda_gp GP,
  with c the image's domain, c' a random target domain (a permutation of the
  batch's labels, as the reference), GP the WGAN-GP penalty on interpolates;
* every `gan.d_steps`-th call (n_critic, 5 in the paper) a G update:
  L_G = -E[D_src(G(x, c'))] + lambda_cls L_cls(D_cls(G(x, c')), c')
        + lambda_rec ||x - G(G(x, c'), c)||_1.

Defaults: lambda_cls 1, lambda_rec 10, lambda_gp 10 (`stargan.*` and
`gan.gp_weight`), Adam 1e-4 (0.5, 0.999). The critic loss is the WGAN one;
`gan.loss` does not apply. Image panel: each row is a validation image then
its translation to every domain.
"""

from typing import Any

from clu import metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from medjax import losses
from medjax import trainers
from medjax.models import stargan
from medjax.trainers.gan import GLossAverage, normalize, to_uint8

PyTree = Any


@flax.struct.dataclass
class StarGANState:
  step: jax.Array
  g_params: PyTree
  g_opt: PyTree
  d_params: PyTree
  d_opt: PyTree


@flax.struct.dataclass
class StarGANMetrics(metrics.Collection):
  d_loss: metrics.Average.from_output('d_loss')
  d_cls: metrics.Average.from_output('d_cls')  # L_cls on real images.
  gp: metrics.Average.from_output('gp')
  g_loss: GLossAverage


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
    self.g_tx = trainers.make_optimizer(o, o.g_learning_rate)
    self.d_tx = trainers.make_optimizer(o, o.d_learning_rate)
    self.lambda_cls, self.lambda_rec = s.lambda_cls, s.lambda_rec
    self.lambda_gp = config.gan.gp_weight
    self.d_steps = config.gan.d_steps
    self.num_visual_images = min(4, config.num_sample_images)
    self.visual_columns = self.num_classes + 1

  def consts(self) -> PyTree:
    return {}

  def check_data(self, labels, label_names) -> None:
    n = max(len(label_names), int(labels.max()) + 1)
    if n > self.num_classes:
      raise ValueError(f'the dataset has {n} classes ({label_names}) but '
                       f'model.num_classes is {self.num_classes}')

  def init(self, rng: jax.Array) -> StarGANState:
    g_rng, d_rng = jax.random.split(rng)
    x = jnp.zeros((1, self.size, self.size, self.channels))
    c = jnp.zeros((1, self.num_classes))
    g = self.generator.init(g_rng, x, c)['params']
    d = self.discriminator.init(d_rng, x)['params']
    return StarGANState(step=jnp.zeros((), jnp.int32), g_params=g,
                        g_opt=self.g_tx.init(g), d_params=d,
                        d_opt=self.d_tx.init(d))

  def _onehot(self, labels: jax.Array) -> jax.Array:
    return jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)

  def translate(self, g_params: PyTree, x: jax.Array,
                labels: jax.Array) -> jax.Array:
    """Images in [-1, 1] translated to the domains `labels` (B,)."""
    return self.generator.apply({'params': g_params}, x,
                                self._onehot(labels))

  def train_step(self, state: StarGANState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None):
    """One D update, and a G update on every `gan.d_steps`-th call.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C), 'label': (B,) domains}.
      rng: this step's key (target domains, penalty interpolation).
      consts: unused.

    Returns:
      The new state and this step's `StarGANMetrics`.
    """
    del consts
    x = normalize(batch['image'])
    c_org = batch['label'].astype(jnp.int32)
    perm_rng, gp_rng = jax.random.split(rng)
    c_trg = c_org[jax.random.permutation(perm_rng, c_org.shape[0])]
    apply_d = lambda p, img: self.discriminator.apply({'params': p}, img)
    fake = jax.lax.stop_gradient(
        self.translate(state.g_params, x, c_trg))

    def d_loss_fn(d_params):
      src_real, cls_real = apply_d(d_params, x)
      src_fake, _ = apply_d(d_params, fake)
      d_cls = stargan.domain_classification_loss(cls_real, c_org)
      gp = losses.wgan_gp(lambda img: apply_d(d_params, img)[0], x, fake,
                          gp_rng, 1.0)
      loss = (losses.wgan_d_loss(src_real, src_fake)
              + self.lambda_cls * d_cls + self.lambda_gp * gp)
      return loss, (d_cls, gp)

    (d_loss, (d_cls, gp)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_update(_):
      def g_loss_fn(g_params):
        fake = self.translate(g_params, x, c_trg)
        src, cls = apply_d(d_params, fake)
        rec = self.translate(g_params, fake, c_org)
        return (losses.wgan_g_loss(src)
                + self.lambda_cls * stargan.domain_classification_loss(
                    cls, c_trg)
                + self.lambda_rec * stargan.reconstruction_loss(x, rec))

      g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
      g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt,
                                          state.g_params)
      return optax.apply_updates(state.g_params, g_updates), g_opt, g_loss

    def no_g_update(_):
      return state.g_params, state.g_opt, jnp.zeros((), jnp.float32)

    g_updated = (state.step % self.d_steps) == (self.d_steps - 1)
    g_params, g_opt, g_loss = jax.lax.cond(g_updated, g_update, no_g_update,
                                           None)
    new = StarGANState(step=state.step + 1, g_params=g_params, g_opt=g_opt,
                       d_params=d_params, d_opt=d_opt)
    return new, StarGANMetrics.single_from_model_output(
        d_loss=d_loss, d_cls=d_cls, gp=gp, g_loss=g_loss,
        g_updated=g_updated)

  def visual_inputs(self, rng: jax.Array, eval_images=None):
    """The first few images of `visual_split`, fixed for the run."""
    del rng
    if eval_images is None:
      raise ValueError('StarGAN panels need images')
    return jnp.asarray(eval_images[:self.num_visual_images])

  def visuals(self, state: StarGANState, images: jax.Array):
    """Rows: input | translation to domain 0 | ... | domain K-1."""
    x = normalize(images)
    cols = [images] + [
        to_uint8(self.translate(state.g_params, x, jnp.full(
            (x.shape[0],), k, jnp.int32))) for k in range(self.num_classes)]
    panels = jnp.stack(cols, axis=1)
    return {'domains': panels.reshape((-1,) + images.shape[1:])}
