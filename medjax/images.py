"""Host-side image helpers: grids and PNG files."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, ncols: int | None = None,
              pad: int = 2) -> np.ndarray:
  """Tiles uint8 images (N, H, W, C) into one (H', W', C) image.

  Args:
    images: uint8 batch.
    ncols: columns; default the ceiling of sqrt(N).
    pad: black pixels between tiles.

  Returns:
    The grid, uint8.
  """
  images = np.asarray(images)
  n, h, w, c = images.shape
  ncols = ncols or math.ceil(math.sqrt(n))
  nrows = math.ceil(n / ncols)
  grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c),
                  np.uint8)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = img
  return grid


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an (H, W, C) image, uint8 or float in [0, 1]."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
      buf, format='PNG')
  return buf.getvalue()


def save_png(image: np.ndarray, path: str) -> None:
  """Writes an (H, W, C) image atomically (temp file, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    f.write(encode_png(image))
  os.replace(tmp, path)
