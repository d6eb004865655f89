"""Stage 5 of the data flow: image grids as PNG files.

Grids are uint8 numpy arrays; `write_png` encodes one with Pillow and writes it
through a temporary name, so a reader never sees half a PNG.
"""

import io

import numpy as np
from PIL import Image

import atomic_files

IMAGE_SIDE = 28
PAD = 2
PAD_VALUE = 128  # Mid grey: visible against both black background and white ink.


def to_uint8(images):
  """float [n, 784] in [0, 1] -> uint8 [n, 28, 28]."""
  pixels = np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0
  return np.rint(pixels).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def tile(tiles, columns, pad=PAD):
  """Lays out uint8 [n, h, w] tiles in rows of `columns`, `pad` pixels apart.

  Returns:
    uint8 [rows * (h + pad) - pad, columns * (w + pad) - pad], rows = ceil(n / columns).
  """
  count, height, width = tiles.shape
  rows = -(-count // columns)
  grid = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad),
                 PAD_VALUE, np.uint8)
  for i, image in enumerate(tiles):
    top = (i // columns) * (height + pad)
    left = (i % columns) * (width + pad)
    grid[top:top + height, left:left + width] = image
  return grid


def sample_grid(images, columns=10):
  """Decoder outputs float [n, 784] -> one uint8 grid, `columns` per row."""
  return tile(to_uint8(images), columns)


def reconstruction_grid(inputs, reconstructions, columns=10):
  """Each input beside its reconstruction, `columns` pairs per row.

  A pair is input | 1-pixel divider | reconstruction (28 x 57); pairs are
  2 * PAD apart so they read as pairs. 100 images, 10 columns: 316 x 606.
  """
  inputs, reconstructions = to_uint8(inputs), to_uint8(reconstructions)
  divider = np.full(inputs.shape[:2] + (1,), PAD_VALUE, np.uint8)
  pairs = np.concatenate([inputs, divider, reconstructions], axis=2)
  return tile(pairs, columns, pad=2 * PAD)


def encode_png(grid):
  """uint8 [h, w] -> PNG bytes (8-bit greyscale)."""
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format='PNG')
  return buffer.getvalue()


def write_png(path, grid):
  """Writes `grid` as a PNG at `path` atomically; returns the PNG bytes."""
  png = encode_png(grid)
  atomic_files.write(path, png)
  return png
