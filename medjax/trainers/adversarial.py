"""The one adversarial update every GAN task in medjax trains with.

DCGAN, SNGAN and the conditional DCGAN (`medjax.trainers.gan`), SRGAN and
Pix2Pix (`medjax.trainers.sr`) and StarGAN (`medjax.trainers.stargan`) differ
in their models, their inputs and the extra terms of their losses; the
update is this one function, parameterised by closures and the `gan.*`
options:

* G runs once in train mode (`g_forward`); its VJP is kept.
* D sees the real and the (stopped) fake batch in two passes (one call on
  both, each half with its own BatchNorm statistics, where that is the same
  computation: see `update`), with
  `gan.loss`, optional WGAN-GP (`gan.gp_weight`) and R1 (`gan.r1_gamma`)
  penalties and the task's extra D terms (StarGAN's domain loss), and is
  updated.
* Every `gan.d_steps`-th call, the G loss (`adversarial_weight` x the G side
  of `gan.loss`, plus the task's extra G terms: a content loss, StarGAN's
  domain and cycle losses) is differentiated with respect to the fake batch
  through the *updated* D and pulled back into G by the saved VJP; terms that
  also depend on G's parameters directly (StarGAN's reconstruction
  G(G(x, c'), c)) add their direct gradient. This is the full gradient of the
  G loss, with one G forward pass fewer than recomputing it.
* DiffAugment (`gan.diffaugment`) transforms real and fake before every D
  pass, in the D and the G step; an image that conditions D (Pix2Pix's
  input) gets the same transform as the image it is paired with.
* An EMA of G's weights (`gan.ema_decay`) is updated after each G step and
  used for samples, evaluation and restoration.

See docs/training_options.md for the formulas.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from clu import metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from medjax import augment
from medjax import ema
from medjax import losses
from medjax.models import norm

PyTree = Any
# (d_params, d_stats, x, paired) -> ((logits, aux), new d_stats); `aux` is any
# further D output the extra losses read (StarGAN's domain logits) or None.
DApply = Callable[[PyTree, PyTree, jax.Array, jax.Array | None],
                  tuple[tuple[jax.Array, Any], PyTree]]


@flax.struct.dataclass
class GANState:
  """Everything that changes during adversarial training; a pytree of arrays.

  `g_stats`/`d_stats` hold the models' non-trained collections (BatchNorm
  statistics, spectral-norm vectors), {} for models without any.
  """
  step: jax.Array
  g_params: PyTree
  g_stats: PyTree
  g_opt: PyTree
  d_params: PyTree
  d_stats: PyTree
  d_opt: PyTree
  # EMA of g_params (gan.ema_decay > 0), else None; used for sampling.
  g_ema: PyTree = None


def sampling_params(state) -> PyTree:
  """G's weights for samples, evaluation and restoration: the EMA if kept."""
  g_ema = getattr(state, 'g_ema', None)
  return g_ema if g_ema is not None else state.g_params


def g_side_average(name: str) -> type[metrics.Average]:
  """A mean of `name` over the calls that updated G (`gan.d_steps` > 1 skips
  some; on those the value is a placeholder and must not count)."""

  @flax.struct.dataclass
  class _GSideAverage(metrics.Average):

    @classmethod
    def from_model_output(cls, g_updated, **outputs):
      return super().from_model_output(
          jnp.reshape(outputs[name], (1,)),
          mask=jnp.reshape(g_updated, (1,)))

  _GSideAverage.__name__ = f'GSideAverage_{name}'
  return _GSideAverage


@dataclasses.dataclass(frozen=True)
class Adversarial:
  """The `gan.*` options and both optimizers; `update` is the train step.

  Attributes:
    g_tx: G's optimizer.
    d_tx: D's optimizer.
    loss: `gan.loss` ('nonsaturating', 'hinge', 'lsgan', 'wgan').
    diffaugment: DiffAugment policy, '' = off.
    gp_weight: WGAN-GP lambda, 0 = off.
    r1_gamma: R1 gamma, 0 = off.
    ema_decay: G weight EMA decay, 0 = off.
    d_steps: D updates per G update.
    adversarial_weight: weight of the adversarial term in the G loss.
    merge_d_passes: `gan.one_d_call`: let `update` run D's real and fake
      passes as one call where the task allows it (`one_d_call`); False:
      always two.
  """
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  loss: str = 'nonsaturating'
  diffaugment: str = ''
  gp_weight: float = 0.0
  r1_gamma: float = 0.0
  ema_decay: float = 0.0
  d_steps: int = 1
  adversarial_weight: float = 1.0
  merge_d_passes: bool = True

  def __post_init__(self):
    losses.get_adversarial(self.loss)  # Fail at set-up on a typo.
    augment.parse_policy(self.diffaugment)
    if self.d_steps < 1:
      raise ValueError(f'gan.d_steps must be >= 1, got {self.d_steps}')
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f'gan.ema_decay must be in [0, 1), got '
                       f'{self.ema_decay}')
    for key in ('gp_weight', 'r1_gamma'):
      if getattr(self, key) < 0:
        raise ValueError(f'gan.{key} must be >= 0, got {getattr(self, key)}')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  g_tx: optax.GradientTransformation,
                  d_tx: optax.GradientTransformation,
                  adversarial_weight: float = 1.0) -> Adversarial:
    """The options of `config.gan`."""
    g = config.gan
    return cls(g_tx=g_tx, d_tx=d_tx, loss=g.loss, diffaugment=g.diffaugment,
               gp_weight=g.gp_weight, r1_gamma=g.r1_gamma,
               ema_decay=g.ema_decay, d_steps=g.d_steps,
               adversarial_weight=adversarial_weight,
               merge_d_passes=g.one_d_call)

  def init_state(self, g_vars: PyTree, d_vars: PyTree) -> GANState:
    """A fresh `GANState` from the models' initial variables."""
    return GANState(
        step=jnp.zeros((), jnp.int32), g_params=g_vars['params'],
        g_stats=g_vars.get('batch_stats', {}),
        g_opt=self.g_tx.init(g_vars['params']),
        d_params=d_vars['params'], d_stats=d_vars.get('batch_stats', {}),
        d_opt=self.d_tx.init(d_vars['params']),
        g_ema=g_vars['params'] if self.ema_decay else None)

  def with_generator(self, state: GANState, g_params: PyTree,
                     g_stats: PyTree) -> GANState:
    """`state` with G's weights replaced and G's optimizer (and EMA) reset."""
    return state.replace(
        g_params=g_params, g_stats=g_stats, g_opt=self.g_tx.init(g_params),
        g_ema=g_params if self.ema_decay else None)

  def metrics(self, d_side: tuple[str, ...] = (),
              g_side: tuple[str, ...] = (),
              probabilities: bool = True) -> type[metrics.Collection]:
    """The clu collection of `update`'s outputs.

    Args:
      d_side: names of the task's D-side outputs (every call).
      g_side: names of the task's G-side outputs (averaged over the calls
        that updated G, like g_loss).
      probabilities: include d_real/d_fake (mean sigmoid of D's logits;
        meaningless for a WGAN critic).

    Returns:
      A `metrics.Collection` class: d_loss, g_loss, d_real/d_fake, gp/r1
      when those penalties are on, and the given names.
    """
    fields = {'d_loss': metrics.Average.from_output('d_loss'),
              'g_loss': g_side_average('g_loss')}
    if probabilities:
      fields['d_real'] = metrics.Average.from_output('d_real')
      fields['d_fake'] = metrics.Average.from_output('d_fake')
    penalties = ('gp',) * bool(self.gp_weight) + ('r1',) * bool(self.r1_gamma)
    for name in penalties + tuple(d_side):
      fields[name] = metrics.Average.from_output(name)
    for name in g_side:
      fields[name] = g_side_average(name)
    return metrics.Collection.create(**fields)

  def _augment(self, images, rng):
    if not self.diffaugment or images is None:
      return images
    return augment.diff_augment(images, rng, self.diffaugment)

  def update(
      self, state: GANState, *, real: jax.Array,
      g_forward: Callable[[PyTree], tuple[jax.Array, PyTree]],
      d_apply: DApply, rng: jax.Array, paired: jax.Array | None = None,
      d_extra: Callable[[Any, Any], tuple[jax.Array, dict]] | None = None,
      g_extra: Callable[[jax.Array, Any, PyTree],
                        tuple[jax.Array, dict]] | None = None,
      one_d_call: bool = False,
  ) -> tuple[GANState, dict[str, jax.Array]]:
    """One D update, then a G update on every `d_steps`-th call.

    Args:
      state: the current state.
      real: real images in D's input range.
      g_forward: g_params -> (fake, new g_stats), G in train mode (the
        closure holds G's inputs: latents, labels, LR images, dropout key).
      d_apply: D in train mode, see `DApply` (the closure holds class labels
        D is conditioned on).
      rng: key for augmentation and the WGAN-GP interpolation.
      paired: an image D sees next to real/fake (Pix2Pix's input), or None.
      d_extra: (aux of real, aux of fake) -> (loss added to D's, {name:
        scalar} outputs).
      g_extra: (fake, aux of fake, g_params) -> (loss added to G's, {name:
        scalar} outputs); may depend on g_params directly.
      one_d_call: D may see real and fake as one batch [real; fake] (its
        inputs besides `paired` do not depend on the batch: no class labels)
        inside `norm.batch_groups(2)`, so that each half keeps its own
        BatchNorm statistics and running averages update real then fake, as
        in two calls; each D convolution then launches once, not twice. Done
        only where D's collections are all BatchNorm statistics (not
        spectral-norm vectors, which update per call).

    Returns:
      The new state and the step's outputs for the task's clu metrics:
      d_loss, g_loss, adversarial_loss (G side, unweighted), d_real and
      d_fake (mean sigmoid of D's logits on real and, before the D step,
      fake), g_updated, gp / r1 (the unweighted penalties, when on) and the
      extras' outputs. G-side values are zeros on calls without a G update.
    """
    d_loss_fn, g_loss_fn = losses.get_adversarial(self.loss)
    fake, g_vjp, g_stats = jax.vjp(g_forward, state.g_params, has_aux=True)
    k_real, k_fake, k_g, gp_rng = jax.random.split(rng, 4)

    def d_pass(d_params, d_stats, x, key):
      return d_apply(d_params, d_stats, self._augment(x, key),
                     self._augment(paired, key))

    def two_passes(d_params):
      (real_logits, real_aux), d_stats = d_pass(d_params, state.d_stats, real,
                                                k_real)
      (fake_logits, fake_aux), d_stats = d_pass(
          d_params, d_stats, jax.lax.stop_gradient(fake), k_fake)
      return real_logits, real_aux, fake_logits, fake_aux, d_stats

    def one_call(d_params):
      both = lambda a, b: None if a is None else jnp.concatenate([a, b])
      with norm.batch_groups(2):
        (logits, aux), d_stats = d_apply(
            d_params, state.d_stats,
            both(self._augment(real, k_real),
                 self._augment(jax.lax.stop_gradient(fake), k_fake)),
            both(self._augment(paired, k_real),
                 self._augment(paired, k_fake)))
      n = real.shape[0]
      half = lambda i: jax.tree.map(lambda v: v[i * n:(i + 1) * n], aux)
      return logits[:n], half(0), logits[n:], half(1), d_stats

    merge = self.merge_d_passes and one_d_call and all(
        getattr(path[-1], 'key', None) in ('mean', 'var') for path, _ in
        jax.tree_util.tree_flatten_with_path(state.d_stats)[0])

    def d_objective(d_params):
      real_logits, real_aux, fake_logits, fake_aux, d_stats = (
          one_call if merge else two_passes)(d_params)
      loss = d_loss_fn(real_logits, fake_logits)
      out = {}
      # Penalties see D in train mode, un-augmented; their batch-statistics
      # updates are dropped (they are not part of the D pass the loss
      # defines).
      d_fn = lambda x: d_apply(d_params, d_stats, x, paired)[0][0]
      if self.gp_weight:
        out['gp'] = losses.wgan_gp(d_fn, real, fake, gp_rng, 1.0)
        loss += self.gp_weight * out['gp']
      if self.r1_gamma:
        out['r1'] = losses.r1_penalty(d_fn, real, 2.0)  # E||grad||^2.
        loss += 0.5 * self.r1_gamma * out['r1']
      if d_extra is not None:
        extra, extra_out = d_extra(real_aux, fake_aux)
        loss += extra
        out.update(extra_out)
      return loss, (d_stats, real_logits, fake_logits, out)

    (d_loss, (d_stats, real_logits, fake_logits, d_out)), d_grads = (
        jax.value_and_grad(d_objective, has_aux=True)(state.d_params))
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_update(_):
      def g_objective(fake, g_params):
        (logits, aux), stats = d_pass(d_params, d_stats, fake, k_g)
        adv = g_loss_fn(logits)
        loss = self.adversarial_weight * adv
        out = {'adversarial_loss': adv}
        if g_extra is not None:
          extra, extra_out = g_extra(fake, aux, g_params)
          loss += extra
          out.update(extra_out)
        return loss, (stats, out)

      (g_loss, (new_d_stats, out)), (fake_grad, direct) = jax.value_and_grad(
          g_objective, argnums=(0, 1), has_aux=True)(fake, state.g_params)
      (g_grads,) = g_vjp(fake_grad)
      g_grads = jax.tree.map(jnp.add, g_grads, direct)
      g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt,
                                          state.g_params)
      g_params = optax.apply_updates(state.g_params, g_updates)
      g_ema = state.g_ema
      if self.ema_decay:
        g_ema = ema.ema_update(state.g_ema, g_params, self.ema_decay)
      return g_params, g_opt, g_ema, new_d_stats, dict(out, g_loss=g_loss)

    g_updated = (state.step % self.d_steps) == (self.d_steps - 1)
    if self.d_steps == 1:
      g_params, g_opt, g_ema, d_stats, g_out = g_update(None)
    else:
      # G steps every d_steps-th call (the critic gets d_steps updates per G
      # update, each on a fresh batch, as WGAN-GP and StarGAN train).
      shapes = jax.eval_shape(g_update, None)[-1]

      def no_g_update(_):
        return (state.g_params, state.g_opt, state.g_ema, d_stats,
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))

      g_params, g_opt, g_ema, d_stats, g_out = jax.lax.cond(
          g_updated, g_update, no_g_update, None)

    new_state = GANState(
        step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
        d_params=d_params, d_stats=d_stats, d_opt=d_opt, g_ema=g_ema)
    outputs = dict(d_out, **g_out, d_loss=d_loss, g_updated=g_updated,
                   d_real=jax.nn.sigmoid(real_logits).mean(),
                   d_fake=jax.nn.sigmoid(fake_logits).mean())
    return new_state, outputs
