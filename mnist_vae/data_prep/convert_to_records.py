"""Converts the MNIST (or Fashion-MNIST) IDX files to TFRecords.

Writes, in --output_dir, the files and schema of TensorFlow's classic
`convert_to_records.py`, so either tool's output feeds the other's readers:

  train.tfrecords       the training images but the validation split's
  validation.tfrecords  the first (or, with --validation_from=last, the
                        last) --validation_size training images
  test.tfrecords        the 10,000 test images

Each record is a tf.train.Example with int64 `height`, `width`, `depth`,
`label` and bytes `image_raw` (the 784 uint8 pixels, row-major). A small
`dataset_info.json` records the counts and the source, and is written last.

Usage:
  python -m data_prep.convert_to_records --mnist_dir DIR --output_dir DIR
  python -m data_prep.convert_to_records --download --output_dir DIR
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import contextlib
import os
import time

from absl import flags
from absl import logging
import tensorflow as tf

from mnist_vae import cli
from mnist_vae import files
from mnist_vae import settings
from mnist_vae.data_prep import download
from mnist_vae.data_prep import idx
from mnist_vae.data_prep import records

DATASETS = tuple(download.CHECKSUMS)
DEFAULT_VALIDATION_SIZE = 5000
# Which training images the validation split takes: the first ones (the
# original's split) or the last ones (the IWAE code's).
VALIDATION_FROM = ('first', 'last')
# While present, the splits beside it are being replaced: the directory is
# incomplete whatever files it holds.
IN_PROGRESS_FILE = '.conversion_in_progress'
STAGING_DIR = '.staging'


class ConversionError(ValueError):
  """The requested conversion contradicts what is already on disk."""


def _write_records(images, labels, path):
  """Writes one split in the classic MNIST schema (see records.py)."""
  # One Example is reused: filling two fields and serializing is about twice
  # as fast as building 70,000 protos from dicts.
  example = tf.train.Example()
  features = example.features.feature
  for key, size in zip(records.SHAPE_KEYS, (images.shape[1], images.shape[2], 1)):
    features[key].int64_list.value.append(size)
  label_value = features[records.LABEL_KEY].int64_list.value
  label_value.append(0)
  image_value = features[records.IMAGE_KEY].bytes_list.value
  image_value.append(b'')
  with tf.io.TFRecordWriter(path) as writer:
    for image, label in zip(images, labels):
      label_value[0] = int(label)
      image_value[0] = image.tobytes()
      writer.write(example.SerializeToString(deterministic=True))


def tfrecords_exist(output_dir):
  """True when `output_dir` holds a complete set of the three splits.

  Complete means: all three files, and no conversion of this project's
  interrupted half-way (its in-progress marker). Files of TensorFlow's classic
  script, which writes no dataset_info.json, count as complete.
  """
  return (records.splits_exist(output_dir)
          and not tf.io.gfile.exists(os.path.join(output_dir, IN_PROGRESS_FILE)))


def check_made_with(data_dir, dataset, validation_size=None, validation_from=None):
  """Raises ConversionError unless the TFRecords in data_dir were made from
  `dataset` with `validation_size` and `validation_from` (None: any), as far
  as their dataset_info.json says (the classic script's files carry none).
  Returns that info, or None."""
  info = records.read_info(data_dir)
  if info is None:
    return None
  made_with = dict(info, validation_from=info.get('validation_from', 'first'))
  mismatches = [
      '--%s=%s, asked for %s' % (name, made_with.get(name), wanted)
      for name, wanted in (('dataset', dataset), ('validation_size', validation_size),
                           ('validation_from', validation_from))
      if wanted is not None and made_with.get(name) != wanted
  ]
  if mismatches:
    raise ConversionError('The TFRecords in %s were made with %s. Pass the settings they were '
                          'made with, use another data directory, or remake them '
                          '(vae-convert-mnist --overwrite).' % (data_dir, '; '.join(mismatches)))
  return info


def _move_into_place(source, destination):
  tf.io.gfile.rename(source, destination, overwrite=True)


def _commit(staging_dir, output_dir):
  """Moves the staged splits, then dataset_info.json, into `output_dir`.

  The marker written first makes the directory read as incomplete until the
  last file is in place, so a conversion cut short between two splits is
  redone, never mixed with the previous one.
  """
  marker = os.path.join(output_dir, IN_PROGRESS_FILE)
  files.write(marker, 'A conversion into this directory did not finish.\n')
  info_path = os.path.join(output_dir, records.INFO_FILE)
  if tf.io.gfile.exists(info_path):
    tf.io.gfile.remove(info_path)
  for name in [os.path.basename(records.split_path('', split)) for split in records.SPLITS
              ] + [records.INFO_FILE]:
    _move_into_place(os.path.join(staging_dir, name), os.path.join(output_dir, name))
  tf.io.gfile.remove(marker)
  tf.io.gfile.rmtree(staging_dir)


def convert(mnist_dir,
            output_dir,
            validation_size=None,
            dataset='mnist',
            overwrite=False,
            validation_from=None):
  """Converts the four IDX files in `mnist_dir` into TFRecords.

  Args:
    mnist_dir: directory holding the four standard IDX files (gzip or not).
    output_dir: where the TFRecords go (created if missing).
    validation_size: how many training images form the validation split;
      None: as existing outputs were made, else DEFAULT_VALIDATION_SIZE.
    validation_from: 'first' or 'last': which training images form it; None:
      as existing outputs were made, else 'first'.
    dataset: 'mnist' or 'fashion_mnist' (recorded in dataset_info.json).
    overwrite: rewrite outputs that already exist.

  Returns:
    The dataset info dict (counts per split, source files, ...).

  Raises:
    idx.IdxError: an input file is missing or invalid.
    ConversionError: outputs exist with other settings and overwrite is off,
      or validation_size does not fit the training set.
  """
  # Several processes started at once on the same data directory (seeds of
  # one preset, say) take turns: the first converts, the others then find
  # its TFRecords below and use them (with overwrite, each remakes them).
  # (Complete TFRecords to be used as they are need no turn: a directory
  # prepared once may be read-only.)
  usable = tfrecords_exist(output_dir) and not overwrite
  with contextlib.nullcontext() if usable else files.exclusive_lock(output_dir):
    return _convert_unlocked(mnist_dir, output_dir, validation_size, dataset, overwrite,
                             validation_from)


def _convert_unlocked(mnist_dir, output_dir, validation_size, dataset, overwrite, validation_from):
  if tfrecords_exist(output_dir) and not overwrite:
    info = check_made_with(output_dir, dataset, validation_size, validation_from)
    logging.info(
        'The TFRecords in %s exist already and were made with these '
        'settings: using them as they are (--overwrite remakes them).', output_dir)
    return info
  if validation_size is None:
    validation_size = DEFAULT_VALIDATION_SIZE
  if validation_from is None:
    validation_from = 'first'
  if validation_from not in VALIDATION_FROM:
    raise ConversionError('--validation_from=%s: expected one of %s' %
                          (validation_from, ', '.join(VALIDATION_FROM)))
  start = time.time()
  paths = {name: idx.find_idx_file(mnist_dir, name) for name in idx.STANDARD_FILES}
  train_images, train_labels = idx.read_split(paths[idx.TRAIN_IMAGES], paths[idx.TRAIN_LABELS])
  test_images, test_labels = idx.read_split(paths[idx.TEST_IMAGES], paths[idx.TEST_LABELS])
  if not 0 <= validation_size < len(train_images):
    raise ConversionError('--validation_size=%d must be in [0, %d), the number of training '
                          'images in %s' % (validation_size, len(train_images), mnist_dir))

  held_out = (
      slice(0, validation_size) if validation_from == 'first' else slice(
          len(train_images) - validation_size, len(train_images)))
  kept = (
      slice(validation_size, None) if validation_from == 'first' else slice(
          0,
          len(train_images) - validation_size))
  splits = {
      'train': (train_images[kept], train_labels[kept]),
      'validation': (train_images[held_out], train_labels[held_out]),
      'test': (test_images, test_labels),
  }
  # Everything is written beside the output first and moved in at the end:
  # a failure on the way leaves the previous contents as they were.
  staging_dir = os.path.join(output_dir, STAGING_DIR)
  if tf.io.gfile.exists(staging_dir):
    tf.io.gfile.rmtree(staging_dir)
  tf.io.gfile.makedirs(staging_dir)
  try:
    for split in records.SPLITS:
      images, labels = splits[split]
      _write_records(images, labels, records.split_path(staging_dir, split))
      logging.info('Wrote %d examples of %s', len(images), records.split_path(output_dir, split))
    info = {
        'dataset': dataset,
        'validation_size': validation_size,
        'validation_from': validation_from,
        'num_examples': {
            split: len(images) for split, (images, _) in splits.items()
        },
        'image_shape': [records.IMAGE_SIDE, records.IMAGE_SIDE, 1],
        'source_files': {
            name: os.path.basename(path) for name, path in paths.items()
        },
    }
    files.write_json(os.path.join(staging_dir, records.INFO_FILE), info)
  except BaseException:
    tf.io.gfile.rmtree(staging_dir)  # A full disk keeps no half split.
    raise
  _commit(staging_dir, output_dir)
  logging.info('Converted %s in %.2f s.', mnist_dir, time.time() - start)
  return info


def prepare(output_dir,
            mnist_dir=None,
            download_idx=False,
            dataset='mnist',
            validation_size=None,
            overwrite=False,
            mirrors=None,
            validation_from=None):
  """Makes sure `output_dir` holds the TFRecords, converting or downloading.

  Args:
    output_dir: where the TFRecords go.
    mnist_dir: directory with the IDX files.
    download_idx: first download (and verify) the IDX files that are not
      already in `mnist_dir` (default for downloads: `output_dir/raw`).
    dataset, validation_size, overwrite, validation_from: as for `convert`.
    mirrors: base URLs overriding the built-in mirror list.

  Returns:
    The dataset info dict, or None when existing TFRecords carry none.

  Raises:
    ConversionError: also when mnist_dir is given and does not exist, even
      if the TFRecords do (a misspelled directory is never ignored).
  """
  if mnist_dir and not download_idx and not tf.io.gfile.isdir(mnist_dir):
    raise ConversionError('--mnist_dir=%s does not exist (or is not a directory)' % mnist_dir)
  if tfrecords_exist(output_dir) and not overwrite:
    return convert(mnist_dir, output_dir, validation_size, dataset, overwrite, validation_from)
  if download_idx:
    mnist_dir = download.download_dataset(dataset, mnist_dir or os.path.join(output_dir, 'raw'),
                                          mirrors)
  if mnist_dir is None:
    raise ConversionError('No TFRecords in %s and no IDX files to make them from: pass '
                          '--mnist_dir DIR (a directory with the four %s files) or --download.' %
                          (output_dir, ', '.join(idx.STANDARD_FILES)))
  return convert(mnist_dir, output_dir, validation_size, dataset, overwrite, validation_from)


FLAGS = flags.FLAGS
# The converter's flags, these their defaults.
ConversionSettings = collections.namedtuple(
    'ConversionSettings', [
        'mnist_dir', 'output_dir', 'dataset', 'download', 'validation_size', 'validation_from',
        'overwrite'
    ],
    defaults=(None, 'data/mnist', 'mnist', False, DEFAULT_VALIDATION_SIZE, 'first', False))


def _default(name):
  return settings.default(ConversionSettings, name)


def define_flags(flag_values=FLAGS):
  flags.DEFINE_string(
      'mnist_dir',
      _default('mnist_dir'),
      flag_values=flag_values,
      help='Directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, '
      't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each gzip or not).')
  flags.DEFINE_string(
      'output_dir',
      _default('output_dir'),
      flag_values=flag_values,
      help='Directory the TFRecords are written to.')
  flags.DEFINE_enum(
      'dataset',
      _default('dataset'),
      DATASETS,
      flag_values=flag_values,
      help='Which dataset the IDX files hold; picks the download '
      'mirrors and checksums.')
  flags.DEFINE_boolean(
      'download',
      _default('download'),
      flag_values=flag_values,
      help='Download the IDX files (into --mnist_dir, or OUTPUT_DIR/raw) from '
      'the public mirrors, verifying their SHA256, if they are not there.')
  flags.DEFINE_integer(
      'validation_size',
      _default('validation_size'),
      lower_bound=0,
      upper_bound=10**6,
      flag_values=flag_values,
      help='Number of training images that form the '
      'validation split.')
  flags.DEFINE_enum(
      'validation_from',
      _default('validation_from'),
      VALIDATION_FROM,
      flag_values=flag_values,
      help='Whether the validation split is the first or the '
      'last --validation_size training images.')
  flags.DEFINE_boolean(
      'overwrite',
      _default('overwrite'),
      flag_values=flag_values,
      help='Rewrite TFRecords that already exist.')


def main():
  conversion = settings.fill(ConversionSettings, FLAGS)
  prepare(
      conversion.output_dir,
      mnist_dir=conversion.mnist_dir,
      download_idx=conversion.download,
      dataset=conversion.dataset,
      validation_size=conversion.validation_size,
      overwrite=conversion.overwrite,
      validation_from=conversion.validation_from)
  return 0


def run():
  """Console-script entry point (vae-convert-mnist)."""
  cli.run(main, define_flags, __name__, (idx.IdxError, ConversionError, download.DownloadError),
          (ConversionSettings,), {})


if __name__ == '__main__':
  run()
