"""Strict reader of the IDX files MNIST and Fashion-MNIST are distributed in.

IDX layout (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic number
(2051 for images, 2049 for labels), one big-endian int32 per dimension, then the
uint8 payload. Files may be gzip-compressed or not.
"""

import gzip
import zlib

import numpy as np
import tensorflow as tf

from mnist_vae.data_prep.records import IMAGE_SIDE

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
NUM_CLASSES = 10

# The four standard file names, without the optional `.gz` suffix.
TRAIN_IMAGES = 'train-images-idx3-ubyte'
TRAIN_LABELS = 'train-labels-idx1-ubyte'
TEST_IMAGES = 't10k-images-idx3-ubyte'
TEST_LABELS = 't10k-labels-idx1-ubyte'
STANDARD_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

_GZIP_SIGNATURE = b'\x1f\x8b'


class IdxError(ValueError):
  """An IDX file is missing, corrupt, or not what MNIST's format says."""


def find_idx_file(directory, name):
  """Returns the path of `name` or `name.gz` in `directory`.

  Raises:
    IdxError: if neither exists.
  """
  for candidate in (name + '.gz', name):
    path = directory.rstrip('/') + '/' + candidate
    if tf.io.gfile.exists(path):
      return path
  raise IdxError('%s/%s(.gz) not found: the directory must hold the four '
                 'standard MNIST files %s' % (directory, name, ', '.join(STANDARD_FILES)))


def read_idx_bytes(path):
  """Returns the uncompressed contents of an IDX file, gzip or not."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    data = f.read()
  if data[:2] != _GZIP_SIGNATURE:
    return data
  try:
    return gzip.decompress(data)
  except (EOFError, OSError, zlib.error) as e:
    raise IdxError('Invalid gzip data in MNIST file %s (truncated or corrupt): '
                   '%s' % (path, e)) from e


def _parse_header(data, path, expected_magic, num_dims):
  header_size = 4 * (1 + num_dims)
  if len(data) >= 4:
    magic = int(np.frombuffer(data, dtype='>i4', count=1)[0])
    if magic != expected_magic:
      raise IdxError('Invalid magic number %d in MNIST file %s (expected %d)' %
                     (magic, path, expected_magic))
  if len(data) < header_size:
    raise IdxError('MNIST file %s is too short (%d bytes) to hold an IDX header' %
                   (path, len(data)))
  dims = np.frombuffer(data, dtype='>i4', count=num_dims, offset=4)
  return [int(d) for d in dims], header_size


def _check_payload_size(data, path, header_size, dims):
  expected = header_size + int(np.prod(dims))
  if len(data) != expected:
    raise IdxError('MNIST file %s has %d bytes but its header %s promises %d' %
                   (path, len(data), 'x'.join(map(str, dims)), expected))


def parse_images(data, path):
  """Parses IDX image bytes into uint8 [num_images, 28, 28]."""
  dims, header_size = _parse_header(data, path, IMAGES_MAGIC, num_dims=3)
  if dims[1:] != [IMAGE_SIDE, IMAGE_SIDE]:
    raise IdxError('MNIST file %s holds %dx%d images, expected %dx%d' %
                   (path, dims[1], dims[2], IMAGE_SIDE, IMAGE_SIDE))
  _check_payload_size(data, path, header_size, dims)
  return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def parse_labels(data, path):
  """Parses IDX label bytes into uint8 [num_labels], each in [0, 10)."""
  dims, header_size = _parse_header(data, path, LABELS_MAGIC, num_dims=1)
  _check_payload_size(data, path, header_size, dims)
  labels = np.frombuffer(data, dtype=np.uint8, offset=header_size)
  if labels.size and labels.max() >= NUM_CLASSES:
    raise IdxError('MNIST file %s has label %d, outside [0, %d)' %
                   (path, labels.max(), NUM_CLASSES))
  return labels


def read_split(images_path, labels_path):
  """Reads and cross-checks one split.

  Returns:
    images: uint8 [num_examples, 28, 28].
    labels: uint8 [num_examples].
  """
  images = parse_images(read_idx_bytes(images_path), images_path)
  labels = parse_labels(read_idx_bytes(labels_path), labels_path)
  if len(images) != len(labels):
    raise IdxError('MNIST files disagree: %s has %d images but %s has %d labels' %
                   (images_path, len(images), labels_path, len(labels)))
  return images, labels


def encode_images(images):
  """Inverse of `parse_images`: uint8 [n, rows, cols] -> IDX bytes."""
  header = np.array([IMAGES_MAGIC] + list(images.shape), dtype='>i4')
  return header.tobytes() + np.ascontiguousarray(images, np.uint8).tobytes()


def encode_labels(labels):
  """Inverse of `parse_labels`: uint8 [n] -> IDX bytes."""
  header = np.array([LABELS_MAGIC, len(labels)], dtype='>i4')
  return header.tobytes() + np.ascontiguousarray(labels, np.uint8).tobytes()
