"""DiffAugment: shapes, gradients, determinism, translation and cutout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import augment


def _images(c=1, b=4, h=16, w=16):
  return jax.random.uniform(jax.random.key(0), (b, h, w, c), jnp.float32,
                            -1.0, 1.0)


@pytest.mark.parametrize('c', [1, 3])
def test_shapes_dtype_determinism_and_gradient(c):
  x = _images(c)
  aug = jax.jit(augment.diff_augment, static_argnames='policy')
  y = aug(x, jax.random.key(1))
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_array_equal(y, aug(x, jax.random.key(1)))
  assert not np.array_equal(y, aug(x, jax.random.key(2)))
  g = jax.grad(lambda x: (aug(x, jax.random.key(1)) ** 2).sum())(x)
  assert np.abs(np.asarray(g)).sum() > 0 and np.all(np.isfinite(g))
  # bfloat16 stays bfloat16.
  assert aug(x.astype(jnp.bfloat16), jax.random.key(1)).dtype == jnp.bfloat16


def test_empty_policy_is_identity_and_unknown_op_rejected():
  x = _images()
  assert augment.diff_augment(x, jax.random.key(0), '') is x
  with pytest.raises(ValueError, match='unknown DiffAugment op'):
    augment.diff_augment(x, jax.random.key(0), 'color,flip')


def test_one_draw_per_image():
  # Identical images get different augmentations.
  x = jnp.broadcast_to(_images(b=1), (4, 16, 16, 1))
  y = np.asarray(augment.diff_augment(x, jax.random.key(3), 'color'))
  assert len({y[i].tobytes() for i in range(4)}) == 4


def test_color_ranges():
  x = _images(c=3, b=256)
  mean = lambda a: np.asarray(a).mean(axis=(1, 2, 3))
  shift = mean(augment.rand_brightness(x, jax.random.key(0))) - mean(x)
  assert -0.5 <= shift.min() < -0.4 and 0.4 < shift.max() <= 0.5
  # Contrast keeps each image's mean and scales the deviation by U(0.5, 1.5).
  y = augment.rand_contrast(x, jax.random.key(0))
  np.testing.assert_allclose(mean(y), mean(x), atol=1e-5)
  ratio = np.asarray(y - y.mean((1, 2, 3), keepdims=True))[:, 0, 0, 0] / (
      np.asarray(x - x.mean((1, 2, 3), keepdims=True))[:, 0, 0, 0])
  assert 0.5 <= ratio.min() < 0.6 and 1.4 < ratio.max() <= 1.5
  # Saturation keeps the channel mean; it is the identity on one channel.
  y = augment.rand_saturation(x, jax.random.key(0))
  np.testing.assert_allclose(y.mean(-1), x.mean(-1), atol=1e-5)
  gray = _images(c=1)
  assert augment.rand_saturation(gray, jax.random.key(0)) is gray


def test_translate_moves_content_with_zero_fill():
  x = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1) + 1.0
  y = np.asarray(augment.translate(x, jnp.array([2, -1]), jnp.array([-3, 0])))
  x = np.asarray(x)
  # out[i, j] = x[i + dy, j + dx].
  assert y[0, 1, 5, 0] == x[0, 3, 2, 0]
  assert y[1, 4, 4, 0] == x[1, 3, 4, 0]
  np.testing.assert_array_equal(y[0, 6:], 0)  # rows 6, 7 <- 8, 9: outside.
  np.testing.assert_array_equal(y[0, :, :3], 0)
  np.testing.assert_array_equal(y[1, 0], 0)
  np.testing.assert_array_equal(y[0, :6, 3:], x[0, 2:, :5])


def test_rand_translation_is_an_integer_shift_within_range():
  x = jnp.ones((64, 16, 16, 1))
  y = np.asarray(augment.rand_translation(x, jax.random.key(0)))
  # Ones shifted by (dy, dx) leave |dy| zero rows and |dx| zero columns.
  zero_rows = (y[..., 0] == 0).all(axis=2).sum(1)
  zero_cols = (y[..., 0] == 0).all(axis=1).sum(1)
  assert zero_rows.max() == 2 and zero_cols.max() == 2  # r = int(16/8 + .5).
  assert np.all((y == 0) | (y == 1))
  assert (y == 1).sum() == ((16 - zero_rows) * (16 - zero_cols)).sum()


def test_cutout_zeroes_a_square_of_the_right_size():
  x = jnp.ones((3, 16, 16, 2))
  y = np.asarray(augment.cutout(x, jnp.array([8, 0, 15]),
                                jnp.array([8, 3, 15]), 8, 8))
  np.testing.assert_array_equal(y[0, 4:12, 4:12], 0)
  assert (y[0] == 0).sum() == 8 * 8 * 2
  np.testing.assert_array_equal(y[1, 0:4, 0:7], 0)  # Clipped at the border.
  assert (y[1] == 0).sum() == 4 * 7 * 2
  assert (y[2] == 0).sum() == 5 * 5 * 2  # Rows and columns 11..15.
  # Random cutout: one zero rectangle per image, at most 8x8 (ratio 1/2),
  # exactly 8x8 unless it touches the border.
  y = np.asarray(augment.rand_cutout(jnp.ones((32, 16, 16, 1)),
                                     jax.random.key(0)))[..., 0]
  full = 0
  for img in y:
    rows, cols = np.nonzero(img == 0)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert (img[r0:r1, c0:c1] == 0).all() and (img == 0).sum() == (
        (r1 - r0) * (c1 - c0))
    assert r1 - r0 <= 8 and c1 - c0 <= 8
    assert r1 - r0 == 8 or r0 == 0 or r1 == 16
    full += (r1 - r0, c1 - c0) == (8, 8)
  assert full > 0
