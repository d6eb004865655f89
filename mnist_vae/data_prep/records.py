"""The TFRecord layout this project writes and reads: one home for its names.

A prepared data directory holds one file per split and `dataset_info.json`:

  train.tfrecords       training images after the first validation_size
  validation.tfrecords  the first validation_size training images
  test.tfrecords        the 10,000 test images
  dataset_info.json     dataset, validation_size, counts; written last

Each record is a tf.train.Example in TensorFlow's classic MNIST schema: int64
`height`, `width`, `depth`, `label` and bytes `image_raw` (784 uint8 pixels,
row-major).
"""

import os

import tensorflow as tf

from mnist_vae import files

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE

# Feature keys of the classic schema.
IMAGE_KEY = 'image_raw'
LABEL_KEY = 'label'
SHAPE_KEYS = ('height', 'width', 'depth')

SPLITS = ('train', 'validation', 'test')
INFO_FILE = 'dataset_info.json'

# What each label means, by the `dataset` dataset_info.json names.
CLASS_NAMES = {
    'mnist':
        tuple(str(digit) for digit in range(10)),
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                      'Sneaker', 'Bag', 'Ankle boot'),
}


def split_path(data_dir, split):
  """The TFRecord file of `split` (one of SPLITS) in `data_dir`."""
  if split not in SPLITS:
    raise ValueError('Unknown split %r; expected one of %s' % (split, ', '.join(SPLITS)))
  return os.path.join(data_dir, split + '.tfrecords')


def read_info(data_dir):
  """The parsed dataset_info.json of `data_dir`, or None when it has none."""
  path = os.path.join(data_dir, INFO_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return files.read_json(path)


def class_names(data_dir):
  """The names of the labels of `data_dir`'s dataset (MNIST's digits when it
  has no dataset_info.json)."""
  info = read_info(data_dir) or {}
  return CLASS_NAMES[info.get('dataset', 'mnist')]


def splits_exist(data_dir):
  """True when all three split files are in `data_dir`."""
  return all(tf.io.gfile.exists(split_path(data_dir, split)) for split in SPLITS)


def parse_features():
  """The feature spec `tf.io.parse_example` needs to read images and labels."""
  return {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
