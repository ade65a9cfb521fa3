"""DiffAugment (Zhao et al. 2020), differentiable augmentations for GANs.

Zhao, Liu, Lin, Zhu and Han, *Differentiable Augmentation for Data-Efficient
GAN Training*, NeurIPS 2020. The same random augmentation T is applied to the
real and the generated images whenever D sees them (in both the D and the G
step); because T is differentiable with respect to the image, G's gradient
flows through it. Ranges follow the authors' `DiffAugment_pytorch.py`:

* 'color': brightness x + U(-0.5, 0.5); saturation (x - mean_c) * U(0, 2) +
  mean_c about the per-pixel channel mean; contrast (x - mean) * U(0.5, 1.5) +
  mean about the per-image mean (all channels and pixels). The official code
  applies saturation to every image; on one channel it is the identity
  (x == mean_c), so it is skipped there.
* 'translation': shift by an integer in [-r, r] pixels per axis, r =
  int(size / 8 + 0.5), filling with zeros.
* 'cutout': zero a square of side int(size / 2 + 0.5) whose centre is uniform
  over the image (as in the official code: [0, size] for an even side, [0,
  size - 1] for an odd one); the part outside the image is clipped.

Images are NHWC floats in [-1, 1] (the medjax convention; the official code
also works on [-1, 1]), so "zero" is mid-grey. Every image in the batch gets
its own draw; ops are applied in the policy's order (the order within 'color'
is brightness, saturation, contrast). Everything is jit-able; shapes and the
policy are static.
"""

from typing import Callable

import jax
import jax.numpy as jnp

DEFAULT_POLICY = 'color,translation,cutout'


def _per_image(rng: jax.Array, x: jax.Array, low: float,
               high: float) -> jax.Array:
  """U(low, high), one value per image, broadcastable to NHWC."""
  return jax.random.uniform(rng, (x.shape[0], 1, 1, 1), x.dtype, low, high)


def rand_brightness(x: jax.Array, rng: jax.Array) -> jax.Array:
  """Adds U(-0.5, 0.5) per image."""
  return x + _per_image(rng, x, -0.5, 0.5)


def rand_saturation(x: jax.Array, rng: jax.Array) -> jax.Array:
  """Scales the deviation from the per-pixel channel mean by U(0, 2).

  The identity for one channel, where it is skipped (no draw is made).
  """
  if x.shape[-1] == 1:
    return x
  mean = x.mean(axis=-1, keepdims=True)
  return (x - mean) * _per_image(rng, x, 0.0, 2.0) + mean


def rand_contrast(x: jax.Array, rng: jax.Array) -> jax.Array:
  """Scales the deviation from the per-image mean by U(0.5, 1.5)."""
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) * _per_image(rng, x, 0.5, 1.5) + mean


def translate(x: jax.Array, shift_y: jax.Array,
              shift_x: jax.Array) -> jax.Array:
  """out[b, i, j] = x[b, i + shift_y[b], j + shift_x[b]], zero outside.

  Args:
    x: (B, H, W, C) images.
    shift_y: (B,) integer shifts along H.
    shift_x: (B,) integer shifts along W.

  Returns:
    The shifted images, same shape and dtype.
  """
  _, h, w, _ = x.shape
  rows = jnp.arange(h)[None, :] + shift_y[:, None]  # (B, H)
  cols = jnp.arange(w)[None, :] + shift_x[:, None]  # (B, W)
  valid = (((rows >= 0) & (rows < h))[:, :, None]
           & ((cols >= 0) & (cols < w))[:, None, :])
  # A gather with clipped indices, then zero where the source is outside.
  out = jax.vmap(lambda img, r, c: img[r][:, c])(
      x, jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1))
  return jnp.where(valid[..., None], out, jnp.zeros((), x.dtype))


def rand_translation(x: jax.Array, rng: jax.Array,
                     ratio: float = 0.125) -> jax.Array:
  """Shifts each image by U{-r..r} pixels per axis, r = int(size*ratio+0.5)."""
  b, h, w, _ = x.shape
  ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(rng)
  return translate(x, jax.random.randint(ky, (b,), -ry, ry + 1),
                   jax.random.randint(kx, (b,), -rx, rx + 1))


def cutout(x: jax.Array, center_y: jax.Array, center_x: jax.Array,
           size_y: int, size_x: int) -> jax.Array:
  """Zeroes rows [cy - sy//2, cy - sy//2 + sy) x cols likewise, clipped.

  Args:
    x: (B, H, W, C) images.
    center_y: (B,) integer centres along H.
    center_x: (B,) integer centres along W.
    size_y: side of the square along H.
    size_x: side along W.

  Returns:
    The images with the (clipped) rectangle set to zero.
  """
  _, h, w, _ = x.shape
  top = (center_y - size_y // 2)[:, None]
  left = (center_x - size_x // 2)[:, None]
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_rows = (rows >= top) & (rows < top + size_y)
  in_cols = (cols >= left) & (cols < left + size_x)
  mask = in_rows[:, :, None] & in_cols[:, None, :]
  return jnp.where(mask[..., None], jnp.zeros((), x.dtype), x)


def rand_cutout(x: jax.Array, rng: jax.Array,
                ratio: float = 0.5) -> jax.Array:
  """Zeroes one square of side int(size*ratio+0.5) per image."""
  b, h, w, _ = x.shape
  sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(rng)
  # The official code's range: centre in [0, size + (1 - side % 2)).
  cy = jax.random.randint(ky, (b,), 0, h + (1 - sy % 2))
  cx = jax.random.randint(kx, (b,), 0, w + (1 - sx % 2))
  return cutout(x, cy, cx, sy, sx)


AUGMENT_FNS: dict[str, tuple[Callable[[jax.Array, jax.Array], jax.Array],
                             ...]] = {
    'color': (rand_brightness, rand_saturation, rand_contrast),
    'translation': (rand_translation,),
    'cutout': (rand_cutout,),
}


def parse_ops(spec: str, known, what: str = 'DiffAugment op'
              ) -> tuple[str, ...]:
  """'color,translation' -> ('color', 'translation'); '' -> ().

  Args:
    spec: comma-separated op names.
    known: the valid names (a mapping or sequence).
    what: what an op is, for the error message.

  Raises:
    ValueError: for an unknown op name.
  """
  names = tuple(p.strip() for p in spec.split(',') if p.strip())
  for name in names:
    if name not in known:
      raise ValueError(f'unknown {what} {name!r} in {spec!r}; choose from '
                       f'{", ".join(known)}')
  return names


def parse_policy(policy: str) -> tuple[str, ...]:
  """The DiffAugment ops of `policy` (`parse_ops` over `AUGMENT_FNS`)."""
  return parse_ops(policy, AUGMENT_FNS)


def diff_augment(images: jax.Array, rng: jax.Array,
                 policy: str = DEFAULT_POLICY) -> jax.Array:
  """Applies the DiffAugment `policy` to a batch, one draw per image.

  Use the same call (fresh `rng` each time) on real and fake images before
  every D evaluation, in both the D and the G step.

  Args:
    images: (B, H, W, C) float images in [-1, 1].
    rng: key; the result is a deterministic function of it.
    policy: comma-separated ops from 'color', 'translation', 'cutout'
      (static); '' returns `images` unchanged.

  Returns:
    The augmented images, same shape and dtype; differentiable with respect
    to `images`. Values may leave [-1, 1] (as in the official code).
  """
  if images.ndim != 4:
    raise ValueError(f'expected NHWC images, got shape {images.shape}')
  fns = [f for name in parse_policy(policy) for f in AUGMENT_FNS[name]]
  # An independent key for every op in the expanded list.
  for i, fn in enumerate(fns):
    images = fn(images, jax.random.fold_in(rng, i))
  return images
