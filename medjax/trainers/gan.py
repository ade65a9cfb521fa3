"""The adversarial task: state, init, the pure train step, and sampling.

One D step then one G step per call, as in Radford et al. and the PyTorch DCGAN
example: G runs once in train mode; D sees the real and the (stopped) fake batch
in two passes, is updated, and the G gradient flows through the *updated* D into
G by the saved VJP of that same G forward (no second G pass).
"""


from typing import Any

from clu import metrics
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from medjax import losses
from medjax import trainers
from medjax.models import dcgan

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


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  d_loss: metrics.Average.from_output('d_loss')
  g_loss: metrics.Average.from_output('g_loss')
  d_real: metrics.Average.from_output('d_real')  # Mean D(x).
  d_fake: metrics.Average.from_output('d_fake')  # Mean D(G(z)) before D step.


def normalize(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: jax.Array) -> jax.Array:
  """float [-1, 1] -> uint8 [0, 255], rounded."""
  return jnp.round((jnp.clip(images, -1, 1) + 1) * 127.5).astype(jnp.uint8)


class GANTask:
  """Models, optimizers and pure functions of an unconditional GAN.

  Args:
    config: the experiment config (`medjax.config_lib`).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    m = config.model
    dtype, param_dtype = jnp.dtype(m.dtype), jnp.dtype(m.param_dtype)
    self.latent_dim = m.latent_dim
    self.image_shape = (config.dataset.image_size, config.dataset.image_size,
                        config.dataset.channels)
    out = dcgan.conv_out_size(1, m.g_kernels, m.g_strides, m.g_paddings,
                              transpose=True)
    if out != config.dataset.image_size:
      raise ValueError(
          f'the generator layers (model.g_kernels/g_strides/g_paddings) make '
          f'{out}x{out} images but dataset.image_size is '
          f'{config.dataset.image_size}')
    d_out = dcgan.conv_out_size(config.dataset.image_size, m.d_kernels,
                                m.d_strides, m.d_paddings, transpose=False)
    if d_out != 1:
      raise ValueError(
          f'the discriminator layers (model.d_kernels/d_strides/d_paddings) '
          f'reduce {config.dataset.image_size}px to {d_out}x{d_out}, not 1x1')
    self.generator = dcgan.Generator(
        features=tuple(m.g_features), kernels=tuple(m.g_kernels),
        strides=tuple(m.g_strides), paddings=tuple(m.g_paddings),
        channels=config.dataset.channels, init_std=m.init_std, dtype=dtype,
        param_dtype=param_dtype)
    self.discriminator = dcgan.Discriminator(
        features=tuple(m.d_features), kernels=tuple(m.d_kernels),
        strides=tuple(m.d_strides), paddings=tuple(m.d_paddings),
        init_std=m.init_std, dtype=dtype, param_dtype=param_dtype)
    o = config.optimizer
    self.g_tx = trainers.make_optimizer(o, o.g_learning_rate)
    self.d_tx = trainers.make_optimizer(o, o.d_learning_rate)
    self.num_visual_images = config.num_sample_images

  # No validation metric yet for unconditional GANs (see medjax.metrics).
  eval_split = None
  best_metric = None
  visual_columns = None

  def consts(self) -> PyTree:
    return {}

  def init(self, rng: jax.Array) -> GANState:
    """Fresh parameters and optimizer states."""
    g_rng, d_rng = jax.random.split(rng)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    g_vars = self.generator.init(g_rng, z, train=False)
    d_vars = self.discriminator.init(
        d_rng, jnp.zeros((1,) + self.image_shape, jnp.float32), train=False)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars['params'], g_stats=g_vars['batch_stats'],
        g_opt=self.g_tx.init(g_vars['params']),
        d_params=d_vars['params'], d_stats=d_vars['batch_stats'],
        d_opt=self.d_tx.init(d_vars['params']))

  def sample_latents(self, rng: jax.Array, num: int) -> jax.Array:
    return jax.random.normal(rng, (num, self.latent_dim), jnp.float32)

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 rng: jax.Array, consts: PyTree = None
                 ) -> tuple[GANState, TrainMetrics]:
    """One D update then one G update.

    Args:
      state: the current state.
      batch: {'image': uint8 (B, H, W, C)}.
      rng: this step's key (only used for the latents).
      consts: unused.

    Returns:
      The new state and this step's `TrainMetrics`.
    """
    real = normalize(batch['image'])
    z = self.sample_latents(rng, real.shape[0])
    apply_d = self.discriminator.apply

    def g_forward(g_params):
      fake, upd = self.generator.apply(
          {'params': g_params, 'batch_stats': state.g_stats}, z, train=True,
          mutable=['batch_stats'])
      return fake, upd['batch_stats']

    fake, g_vjp, g_stats = jax.vjp(g_forward, state.g_params, has_aux=True)

    def d_loss_fn(d_params):
      real_logits, upd = apply_d(
          {'params': d_params, 'batch_stats': state.d_stats}, real,
          train=True, mutable=['batch_stats'])
      fake_logits, upd = apply_d(
          {'params': d_params, 'batch_stats': upd['batch_stats']},
          jax.lax.stop_gradient(fake), train=True, mutable=['batch_stats'])
      loss = losses.nonsaturating_d_loss(real_logits, fake_logits)
      return loss, (upd['batch_stats'], real_logits, fake_logits)

    (d_loss, (d_stats, real_logits, fake_logits)), d_grads = (
        jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params))
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(fake):
      logits, upd = apply_d({'params': d_params, 'batch_stats': d_stats}, fake,
                            train=True, mutable=['batch_stats'])
      return losses.nonsaturating_g_loss(logits), upd['batch_stats']

    (g_loss, d_stats), d_fake_grad = jax.value_and_grad(
        g_loss_fn, has_aux=True)(fake)
    del consts
    (g_grads,) = g_vjp(d_fake_grad)
    g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = GANState(
        step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
        d_params=d_params, d_stats=d_stats, d_opt=d_opt)
    step_metrics = TrainMetrics.single_from_model_output(
        d_loss=d_loss, g_loss=g_loss,
        d_real=nn.sigmoid(real_logits).mean(),
        d_fake=nn.sigmoid(fake_logits).mean())
    return new_state, step_metrics

  def generate(self, g_params: PyTree, g_stats: PyTree,
               z: jax.Array) -> jax.Array:
    """Images in [-1, 1] from latents, BatchNorm in inference mode."""
    return self.generator.apply({'params': g_params, 'batch_stats': g_stats},
                                z, train=False)

  def visual_inputs(self, rng: jax.Array, eval_images=None) -> jax.Array:
    """Fixed latents of the sample grid."""
    del eval_images
    return self.sample_latents(rng, self.num_visual_images)

  def visuals(self, state: GANState, z: jax.Array) -> dict[str, jax.Array]:
    return {'samples': to_uint8(self.generate(state.g_params, state.g_stats,
                                              z))}
