"""The last stage of the data flow: pictures of what the model does.

Grids are uint8 numpy arrays; `write_png` encodes one with Pillow and writes it
through a temporary name, so a reader never sees half a PNG. `GridWriter`
decodes fixed test images and fixed prior draws during training and writes
them as PNGs and TensorBoard image summaries.
"""

import io
import os

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from mnist_vae import files
from mnist_vae import model
from mnist_vae.data_prep.records import IMAGE_SIDE

NUM_GRID_IMAGES = 100
# Prior draws for samples_step_*.png come from this fixed seed, not --seed, so
# grids of different runs and of a resumed run show the same z.
SAMPLE_GRID_SEED = 20
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
  grid = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad), PAD_VALUE, np.uint8)
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
  """uint8 [h, w] (greyscale) or [h, w, 3] (RGB) -> PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format='PNG')
  return buffer.getvalue()


def write_png(path, grid, scale=1):
  """Writes `grid` as a PNG at `path` atomically, each pixel a square of
  scale x scale; returns the PNG bytes."""
  if scale > 1:
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  png = encode_png(grid)
  files.write(path, png)
  return png


class GridWriter(object):
  """Reconstructions of fixed test images and decodings of fixed prior draws,
  built in the training graph over its variables."""

  def __init__(self, fixed_images, network):
    """
    Args:
      fixed_images: float32 [NUM_GRID_IMAGES, 784], the first test images.
      network: architectures.Network of the graph's variables.
    """
    self._fixed_images = fixed_images
    self._prior_draws = np.random.RandomState(SAMPLE_GRID_SEED).standard_normal(
        (NUM_GRID_IMAGES, network.latent_dim)).astype(np.float32)
    # Fed, not constants: constants would copy them into every .meta file.
    self._images = tf.placeholder(tf.float32, fixed_images.shape)
    self._z = tf.placeholder(tf.float32, self._prior_draws.shape)
    # Reconstructions decode the posterior mean: no sampling noise, so the
    # grid changes only when the weights do.
    z_mean, _ = model.encode(self._images, network)
    self._reconstructions = model.probabilities(model.decode(z_mean, network))
    self._samples = model.probabilities(model.decode(self._z, network))

  def write_inputs(self, images_dir):
    """Writes the fixed test images as images_dir/inputs.png, once."""
    path = os.path.join(images_dir, 'inputs.png')
    if not tf.io.gfile.exists(path):
      write_png(path, sample_grid(self._fixed_images))

  def write(self, session, step, summary_writer, images_dir):
    """Writes reconstructions_step_N.png and samples_step_N.png into
    images_dir, and both as image summaries at `step`."""
    reconstructions, samples = session.run([self._reconstructions, self._samples],
                                           feed_dict={
                                               self._images: self._fixed_images,
                                               self._z: self._prior_draws
                                           })
    grids = {
        'reconstructions': reconstruction_grid(self._fixed_images, reconstructions),
        'samples': sample_grid(samples),
    }
    summary = tf.Summary()
    for name, grid in grids.items():
      png = write_png(os.path.join(images_dir, '%s_step_%06d.png' % (name, step)), grid)
      summary.value.add(
          tag='images/%s' % name,
          image=tf.Summary.Image(
              height=grid.shape[0], width=grid.shape[1], colorspace=1, encoded_image_string=png))
    summary_writer.add_summary(summary, step)
