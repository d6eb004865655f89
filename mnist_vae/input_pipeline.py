"""Stage 2 of the data flow: TFRecords -> batches of images for the graph.

The chain is small named steps: `parse_batch` (serialized Examples -> uint8
pixels) -> `normalize` (uint8 -> float32 in [0, 1]), wrapped by
`train_dataset` (shuffled, repeated, for training) and `eval_dataset` (file
order, every example exactly once). Both yield float32 [batch, 784].
"""

import numpy as np
import tensorflow as tf

from mnist_vae.data_prep import records
from mnist_vae.data_prep.records import IMAGE_PIXELS

# none: grey levels (the original's); static: one fixed Bernoulli sample per
# image; dynamic: a new sample each time training uses an image; threshold:
# 1 where the grey level is above 0.5 (TensorFlow's CVAE tutorial's).
BINARIZE_MODES = ('none', 'static', 'dynamic', 'threshold')
# The modes whose binary image of an example never changes: stored so.
_FIXED_MODES = ('static', 'threshold')
# The modes evaluated on a binary sample of the images (binarize_static), of
# which binary_sample chooses one.
SAMPLED_MODES = ('static', 'dynamic')


class RecordsError(ValueError):
  """A TFRecord file is missing, empty, corrupt, or of another schema."""


def parse_batch(serialized):
  """Parses a batch of serialized Examples (classic MNIST schema).

  Whole batches are parsed at once: one op for the batch, not one per record.

  Args:
    serialized: string [batch].

  Returns:
    images: uint8 [batch, 784].
    labels: int64 [batch].
  """
  features = tf.io.parse_example(serialized, records.parse_features())
  images = tf.io.decode_raw(features[records.IMAGE_KEY], tf.uint8)
  images = tf.reshape(images, [-1, IMAGE_PIXELS])
  return images, features[records.LABEL_KEY]


def normalize(images):
  """uint8 [batch, 784] in [0, 255] -> float32 [batch, 784] in [0, 1]."""
  return tf.cast(images, tf.float32) * (1.0 / 255.0)


def binarize_static(images, serialized, binary_sample=0):
  """One fixed Bernoulli(pixel) sample per image: the same binary image in
  every epoch, in evaluation and in every process, because each image's draws
  are seeded by a hash of its serialized record.

  Args:
    images: float32 [batch, 784] in [0, 1].
    serialized: string [batch], the records the images came from.
    binary_sample: which fixed sample, >= 0: 0 is the one training and
      evaluation use unless told otherwise; each other number draws another,
      as fixed (for measuring how much a figure depends on the draw).

  Returns:
    float32 [batch, 784] in {0, 1}.
  """
  seeds = tf.strings.to_hash_bucket_fast(serialized, 2**62)
  uniforms = tf.map_fn(
      lambda seed: tf.random.stateless_uniform([IMAGE_PIXELS],
                                               tf.stack([seed, seed // 3 + binary_sample])),
      seeds,
      fn_output_signature=tf.float32)
  return tf.cast(uniforms < images, tf.float32)


def binarize_dynamic(images, seed):
  """A fresh Bernoulli(pixel) sample each time: float32 [batch, 784] in {0, 1}."""
  return tf.cast(tf.random.uniform(tf.shape(images), seed=seed) < images, tf.float32)


def _check_binarize(binarize):
  if binarize not in BINARIZE_MODES:
    raise ValueError('binarize must be one of %s, not %r' % (BINARIZE_MODES, binarize))


def binarize_threshold(images):
  """1 where the pixel is above 0.5: float32 [batch, 784] in {0, 1}."""
  return tf.cast(images > 0.5, tf.float32)


def _evaluation_images_fn(binarize, binary_sample=0):
  """serialized [batch] -> float32 [batch, 784] as evaluation sees them: grey
  levels for 'none', the thresholded image for 'threshold', the static sample
  (binary_sample: which; see binarize_static) for 'static' and 'dynamic' (so
  that results are reproducible)."""
  _check_binarize(binarize)
  if binary_sample and binarize not in SAMPLED_MODES:
    raise ValueError('binary_sample=%d chooses a binary sample, but binarize=%r draws none' %
                     (binary_sample, binarize))

  def images_of(serialized):
    images = normalize(parse_batch(serialized)[0])
    if binarize == 'none':
      return images
    if binarize == 'threshold':
      return binarize_threshold(images)
    return binarize_static(images, serialized, binary_sample)

  return images_of


def train_dataset(path,
                  batch_size,
                  seed,
                  shuffle_buffer_size,
                  num_shards=1,
                  shard_index=0,
                  binarize='none'):
  """Endless, shuffled training batches.

  Args:
    path: a TFRecord file (or list of files).
    batch_size: examples per batch; the last partial batch of the data is
      never emitted, because batches run across epoch boundaries.
    seed: shuffle seed; the order is reshuffled every epoch.
    shuffle_buffer_size: examples held for shuffling; at least the number of
      examples gives a uniform shuffle of the whole set each epoch.
    num_shards, shard_index: read only every num_shards-th example, starting
      at shard_index (each worker of a cluster reads its own part).
    binarize: one of BINARIZE_MODES.

  Returns:
    A tf.data.Dataset of float32 [batch_size, 784].
  """
  _check_binarize(binarize)

  # Decoded once and kept in memory as one uint8 tensor (43 MB for MNIST);
  # only the example indices are shuffled, and each batch is one gather.
  # Shuffling 55,000 single examples and batching them again cost the
  # pipeline's thread more than a step's share of a core.
  #
  # The order is the one a shuffle of the examples themselves draws: a
  # shuffle's choices depend on its seed and buffer size, never on the
  # elements, so shuffling indices 0..n-1 picks the same permutation that
  # shuffling the n examples with the same seed did (test_input_pipeline
  # checks the batches against that example-level shuffle).
  def batches_of(pixels):  # uint8 [num_examples, 784] -> endless batches.
    return train_indices(
        tf.shape(pixels, out_type=tf.int64)[0], batch_size, seed,
        shuffle_buffer_size).map(lambda batch_indices: tf.gather(pixels, batch_indices))

  dataset = _decoded_pixels(path, num_shards, shard_index,
                            binarize).batch(2**31 - 1).flat_map(batches_of)
  if binarize in _FIXED_MODES:  # Already 0 or 1.
    dataset = dataset.map(lambda pixels: tf.cast(pixels, tf.float32))
  elif binarize == 'dynamic':
    dataset = dataset.map(lambda pixels: binarize_dynamic(normalize(pixels), seed))
  else:
    dataset = dataset.map(normalize)
  return dataset.prefetch(2).with_options(_quiet_options())


def train_indices(num_examples, batch_size, seed, shuffle_buffer_size):
  """train_dataset's order: endless int64 [batch_size] batches of example
  indices, reshuffled every epoch."""
  indices = tf.data.Dataset.range(num_examples)
  indices = indices.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
  return indices.repeat().batch(batch_size, drop_remainder=True)


def read_split_pixels(path, binarize='none'):
  """Every image of `path` as train_dataset stores it before making images:
  uint8 [n, 784], grey levels 0..255, or the binary image's 0 and 1 for
  'static' and 'threshold'."""
  batches = [pixels.numpy() for pixels in _decoded_pixels(path, 1, 0, binarize).batch(2**31 - 1)]
  return batches[0] if batches else np.zeros([0, IMAGE_PIXELS], np.uint8)


def images_from_pixels(pixels, binarize, uniforms=None):
  """train_dataset's images from pixels as read_split_pixels stores them:
  float32 [..., 784] from uint8 [..., 784]; for 'dynamic', `uniforms`
  (float32 in [0, 1), pixels' shape) draw the binary sample."""
  images = tf.cast(pixels, tf.float32)
  if binarize in _FIXED_MODES:  # Already 0 or 1.
    return images
  images = normalize(images)
  if binarize == 'dynamic':
    images = tf.cast(uniforms < images, tf.float32)
  return images


def _decoded_pixels(path, num_shards, shard_index, binarize):
  """Each training example's pixels, uint8 [784]: grey levels, or its fixed
  binary image (0 or 1) with binarize 'static' or 'threshold'."""
  dataset = tf.data.TFRecordDataset(path)
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)

  def decode(serialized):
    if binarize in _FIXED_MODES:
      return tf.cast(_evaluation_images_fn(binarize)(serialized), tf.uint8)
    return parse_batch(serialized)[0]

  return dataset.batch(1024).map(decode).unbatch()


def _quiet_options():
  """One pipeline thread and no autotuning: parsing a batch takes a small
  fraction of a step, and on a 2-core machine extra pipeline threads and the
  autotuner only take cycles from the matrix multiplies."""
  options = tf.data.Options()
  options.autotune.enabled = False
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return options


def eval_dataset(path, batch_size, binarize='none'):
  """Every example of `path` exactly once, in file order.

  Args:
    path: a TFRecord file name; may be a string tensor (a placeholder lets
      one iterator serve every split).
    batch_size: examples per batch; the last batch may be smaller.
    binarize: 'none', or either binarized mode, which evaluates on the static
      sample so that results are reproducible.

  Returns:
    A tf.data.Dataset of (batch_index: int64 [], images: float32 [<=batch, 784]);
    the index lets evaluation derive per-batch noise seeds, so its result does
    not depend on how often it has run.
  """
  dataset = tf.data.TFRecordDataset(path).batch(batch_size)
  dataset = dataset.map(_evaluation_images_fn(binarize), num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.enumerate().prefetch(tf.data.AUTOTUNE)


def read_split_images(path, binarize='none', binary_sample=0):
  """Every image of `path`, in order: float32 [n, 784] (n may be 0; as
  evaluation sees them, binary_sample choosing the static sample)."""
  images_of = _evaluation_images_fn(binarize, binary_sample)
  batches = [images.numpy() for images in tf.data.TFRecordDataset(path).batch(10000).map(images_of)]
  return (np.concatenate(batches) if batches else np.zeros([0, IMAGE_PIXELS], np.float32))


def read_split_labels(path):
  """Every label of `path`, in order: int64 [n]."""
  batches = [
      labels.numpy() for labels in tf.data.TFRecordDataset(path).batch(10000).map(
          lambda serialized: parse_batch(serialized)[1])
  ]
  return np.concatenate(batches) if batches else np.zeros([0], np.int64)


def inspect_records(path, allow_empty=False):
  """Checks that `path` is a readable TFRecord file of 28x28x1 MNIST Examples.

  An empty file is an error unless allow_empty (a validation split made with
  --validation_size=0).

  Reads every record's framing (catching truncation and CRC errors) and parses
  the first one fully.

  Returns:
    The number of records.

  Raises:
    RecordsError: naming the file and what is wrong with it.
  """
  if not tf.io.gfile.exists(path):
    raise RecordsError('%s does not exist' % path)
  try:
    first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    count = int(
        tf.data.TFRecordDataset(path).batch(8192).reduce(
            tf.constant(0, tf.int64),
            lambda total, batch: total + tf.size(batch, out_type=tf.int64)))
  except tf.errors.OpError as e:
    raise RecordsError('%s is not a readable TFRecord file (truncated or '
                       'corrupt): %s' % (path, e.message.splitlines()[0])) from e
  if first is None:
    if allow_empty:
      return 0
    raise RecordsError('%s holds no records' % path)
  try:
    example = tf.train.Example.FromString(first.numpy())
  except Exception as e:  # protobuf's DecodeError has no stable import path.
    raise RecordsError('%s does not hold tf.train.Example records: %s' % (path, e)) from e
  feature = example.features.feature
  missing = [key for key in (records.IMAGE_KEY, records.LABEL_KEY) if key not in feature]
  if missing:
    raise RecordsError('%s is not in the MNIST schema: its records lack %s '
                       '(have %s)' % (path, ', '.join(missing), ', '.join(sorted(feature))))
  image_bytes = feature[records.IMAGE_KEY].bytes_list.value
  if len(image_bytes) != 1 or len(image_bytes[0]) != IMAGE_PIXELS:
    raise RecordsError('%s holds images of %d bytes; this model needs 28x28x1 = %d' %
                       (path, len(image_bytes[0]) if image_bytes else 0, IMAGE_PIXELS))
  return count
