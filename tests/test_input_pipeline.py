"""tf.data pipeline: every example once per epoch, reshuffled, seeded; strict record checks."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import index_of
from mnist_vae import input_pipeline
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import records as record_files


@pytest.fixture
def records(small_idx_dir, tmp_path):
  out = str(tmp_path / 'records')
  convert_to_records.convert(small_idx_dir, out, validation_size=12)
  return {split: record_files.split_path(out, split) for split in record_files.SPLITS}


def _train_indices(path, batch_size, seed, num_batches):
  dataset = input_pipeline.train_dataset(path, batch_size, seed=seed, shuffle_buffer_size=1000)
  batches = [batch.numpy() for batch in dataset.take(num_batches)]
  assert all(b.shape == (batch_size, 784) and b.dtype == np.float32 for b in batches)
  return index_of(np.concatenate(batches))


def test_each_epoch_visits_every_example_once(records):
  # 48 training examples (indices 12..59), batches of 8: 6 batches an epoch.
  indices = _train_indices(records['train'], 8, seed=1, num_batches=18)
  epochs = indices.reshape(3, 48)
  for epoch in epochs:
    assert sorted(epoch) == list(range(12, 60))
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled every epoch.
  assert not np.array_equal(epochs[0], np.arange(12, 60))  # Shuffled at all.


def test_same_seed_same_order_other_seed_other_order(records):
  first = _train_indices(records['train'], 8, seed=3, num_batches=6)
  again = _train_indices(records['train'], 8, seed=3, num_batches=6)
  other = _train_indices(records['train'], 8, seed=4, num_batches=6)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize('buffer_size', [48, 10])
def test_batches_are_those_of_a_shuffle_of_the_examples_themselves(records, buffer_size):
  # The pipeline shuffles indices and gathers each batch; the batches must be
  # exactly those of the example-level shuffle it replaced (same seed, same
  # buffer), so that runs of earlier versions are reproduced batch for batch.
  examples = tf.data.TFRecordDataset(
      records['train']).map(lambda serialized: input_pipeline.normalize(
          input_pipeline.parse_batch(serialized[None])[0][0]))
  expected = examples.cache().shuffle(buffer_size, seed=5, reshuffle_each_iteration=True)
  expected = expected.repeat().batch(8, drop_remainder=True).take(20)
  actual = input_pipeline.train_dataset(
      records['train'], 8, seed=5, shuffle_buffer_size=buffer_size).take(20)
  for want, got in zip(expected, actual):
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_sharding_splits_the_examples(records):
  shards = []
  for shard_index in range(2):
    dataset = input_pipeline.train_dataset(
        records['train'], 4, seed=0, shuffle_buffer_size=100, num_shards=2, shard_index=shard_index)
    shards.append(set(index_of(np.concatenate([b.numpy() for b in dataset.take(6)]))))
  assert shards[0].isdisjoint(shards[1])
  assert shards[0] | shards[1] == set(range(12, 60))


def test_pixels_are_scaled_to_unit_interval(records):
  images = input_pipeline.read_split_images(records['test'])[:20]
  assert images.min() >= 0.0 and images.max() <= 1.0
  np.testing.assert_array_equal(index_of(images), np.arange(1000, 1020))


def test_eval_visits_every_example_once_in_order(records):
  batches = list(input_pipeline.eval_dataset(records['train'], 10))
  assert [int(i) for i, _ in batches] == [0, 1, 2, 3, 4]
  assert [len(images) for _, images in batches] == [10, 10, 10, 10, 8]
  np.testing.assert_array_equal(
      index_of(np.concatenate([images for _, images in batches])), np.arange(12, 60))


def test_inspect_counts_records(records):
  assert input_pipeline.inspect_records(records['train']) == 48
  assert input_pipeline.inspect_records(records['validation']) == 12


def _write_examples(path, features_list):
  with tf.io.TFRecordWriter(path) as writer:
    for features in features_list:
      writer.write(
          tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
  return path


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


@pytest.mark.parametrize('damage, message', [
    ('missing', 'does not exist'),
    ('empty', 'holds no records'),
    ('crc', 'not a readable TFRecord file'),
    ('truncated', 'not a readable TFRecord file'),
    ('schema', r'lack image_raw \(have image/encoded, label\)'),
    ('size', 'holds images of 1024 bytes; this model needs 28x28x1 = 784'),
])
def test_inspect_rejects_bad_records(records, tmp_path, damage, message):
  path = str(tmp_path / 'bad.tfrecords')
  if damage == 'empty':
    open(path, 'wb').close()
  elif damage in ('crc', 'truncated'):
    data = bytearray(open(records['train'], 'rb').read())
    if damage == 'crc':
      data[2000] ^= 0xFF
    else:
      data = data[:len(data) - 100]
    open(path, 'wb').write(bytes(data))
  elif damage == 'schema':
    _write_examples(path, [{'image/encoded': _bytes(b'x'), 'label': _int(1)}])
  elif damage == 'size':
    _write_examples(path, [{'image_raw': _bytes(bytes(1024)), 'label': _int(1)}])
  with pytest.raises(input_pipeline.RecordsError, match=message) as error:
    input_pipeline.inspect_records(path)
  assert 'bad.tfrecords' in str(error.value)


def _epochs_by_index(path, binarize, batches):
  dataset = input_pipeline.train_dataset(
      path, 8, seed=1, shuffle_buffer_size=1000, binarize=binarize)
  return np.concatenate([batch.numpy() for batch in dataset.take(batches)])


def test_static_binarization_is_one_fixed_sample_per_image(records):
  grey = input_pipeline.read_split_images(records['train'])[:48]
  first = input_pipeline.read_split_images(records['train'], 'static')[:48]
  assert set(np.unique(first)) <= {0.0, 1.0}
  np.testing.assert_array_equal(first,
                                input_pipeline.read_split_images(records['train'], 'static')[:48])
  # Bernoulli(pixel): the mean of the sample follows the grey levels.
  assert abs(first.mean() - grey.mean()) < 0.01
  # In training, an image binarizes the same way in every epoch, whatever its
  # place in the shuffled batches (its index pixels are binary now, so match
  # the binarized images against the evaluation-order ones).
  trained = _epochs_by_index(records['train'], 'static', 12)  # 2 epochs of 48
  rows = {row.tobytes() for row in first}
  assert all(row.tobytes() in rows for row in trained)


def test_another_binary_sample_is_another_fixed_draw_and_sample_0_is_unchanged(records):
  first = input_pipeline.read_split_images(records['train'], 'static')
  other = input_pipeline.read_split_images(records['train'], 'static', binary_sample=7)
  np.testing.assert_array_equal(
      other, input_pipeline.read_split_images(records['train'], 'static', binary_sample=7))
  assert set(np.unique(other)) <= {0.0, 1.0}
  assert not np.array_equal(first, other)
  grey = input_pipeline.read_split_images(records['train'])
  assert abs(other.mean() - grey.mean()) < 0.01
  with pytest.raises(ValueError, match="binarize='none' draws none"):
    input_pipeline.read_split_images(records['train'], 'none', binary_sample=1)
  # Sample 0 is the sample of every earlier version (and of every
  # metrics.json): each image's uniforms keyed by (h, h // 3), h the hash of
  # its record.
  serialized = [record.numpy() for record in tf.data.TFRecordDataset(records['train'])]
  hashes = tf.strings.to_hash_bucket_fast(serialized, 2**62).numpy()
  for index in (0, 5):
    uniforms = tf.random.stateless_uniform([784], [hashes[index], hashes[index] // 3]).numpy()
    np.testing.assert_array_equal(first[index], (uniforms < grey[index]).astype(np.float32))


def test_dynamic_binarization_draws_anew(records):
  trained = _epochs_by_index(records['train'], 'dynamic', 12)
  assert set(np.unique(trained)) <= {0.0, 1.0}
  static_rows = {
      row.tobytes() for row in input_pipeline.read_split_images(records['train'], 'static')[:48]
  }
  assert sum(row.tobytes() in static_rows for row in trained) < 3


def test_unknown_binarize_mode_is_named():
  with pytest.raises(ValueError, match="binarize must be one of"):
    input_pipeline.train_dataset('x', 8, seed=0, shuffle_buffer_size=10, binarize='otsu')
