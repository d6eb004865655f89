"""IDX -> TFRecords: bytes round trip, classic schema, real MNIST counts, idempotence."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import indexed_images
from helpers import run_python
from helpers import start_process
from helpers import write_idx_dir
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import idx
from mnist_vae.data_prep import records as record_files

# The classic convert_to_records.py schema, as its readers parse it.
CLASSIC_FEATURES = {
    'height': tf.io.FixedLenFeature([], tf.int64),
    'width': tf.io.FixedLenFeature([], tf.int64),
    'depth': tf.io.FixedLenFeature([], tf.int64),
    'label': tf.io.FixedLenFeature([], tf.int64),
    'image_raw': tf.io.FixedLenFeature([], tf.string),
}
# Published MNIST label counts, digits 0..9.
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def read_records(path):
  """Parses a TFRecord file with the classic schema into numpy arrays."""
  images, labels = [], []
  dataset = tf.data.TFRecordDataset(path).batch(10000).map(
      lambda records: tf.io.parse_example(records, CLASSIC_FEATURES))
  for batch in dataset:
    assert set(batch['height'].numpy()) == {28}
    assert set(batch['width'].numpy()) == {28}
    assert set(batch['depth'].numpy()) == {1}
    images.extend(np.frombuffer(raw, np.uint8) for raw in batch['image_raw'].numpy())
    labels.extend(batch['label'].numpy())
  return np.array(images).reshape(-1, 28, 28), np.array(labels)


def test_round_trip_bytes_equal(small_idx_dir, tmp_path):
  out = str(tmp_path / 'records')
  info = convert_to_records.convert(small_idx_dir, out, validation_size=15)
  assert info['num_examples'] == {'train': 45, 'validation': 15, 'test': 20}
  train_images, train_labels = idx.read_split(
      idx.find_idx_file(small_idx_dir, idx.TRAIN_IMAGES),
      idx.find_idx_file(small_idx_dir, idx.TRAIN_LABELS))
  images, labels = read_records(os.path.join(out, 'validation.tfrecords'))
  np.testing.assert_array_equal(images, train_images[:15])
  np.testing.assert_array_equal(labels, train_labels[:15])
  images, labels = read_records(os.path.join(out, 'train.tfrecords'))
  np.testing.assert_array_equal(images, train_images[15:])
  np.testing.assert_array_equal(labels, train_labels[15:])
  images, _ = read_records(os.path.join(out, 'test.tfrecords'))
  np.testing.assert_array_equal(images, indexed_images(20, offset=1000))
  assert sorted(os.listdir(out)) == [
      'dataset_info.json', 'test.tfrecords', 'train.tfrecords', 'validation.tfrecords'
  ]


def test_uncompressed_input(tmp_path):
  raw = write_idx_dir(
      tmp_path / 'raw',
      indexed_images(12),
      np.zeros(12, np.uint8),
      indexed_images(3),
      np.ones(3, np.uint8),
      compress=False)
  info = convert_to_records.convert(raw, str(tmp_path / 'out'), validation_size=2)
  assert info['num_examples'] == {'train': 10, 'validation': 2, 'test': 3}
  assert info['source_files'][idx.TEST_LABELS] == idx.TEST_LABELS


def test_rerun_is_a_no_op_and_overwrite_redoes(small_idx_dir, tmp_path):
  out = str(tmp_path / 'records')
  convert_to_records.convert(small_idx_dir, out, validation_size=10)
  train_path = os.path.join(out, 'train.tfrecords')
  os.utime(train_path, (1, 1))
  convert_to_records.convert(small_idx_dir, out, validation_size=10)
  assert os.path.getmtime(train_path) == 1
  convert_to_records.convert(small_idx_dir, out, validation_size=10, overwrite=True)
  assert os.path.getmtime(train_path) > 1


def test_other_settings_on_existing_output_are_refused(small_idx_dir, tmp_path):
  out = str(tmp_path / 'records')
  convert_to_records.convert(small_idx_dir, out, validation_size=10)
  with pytest.raises(
      convert_to_records.ConversionError, match='made with --validation_size=10, asked for 20'):
    convert_to_records.convert(small_idx_dir, out, validation_size=20)
  with pytest.raises(
      convert_to_records.ConversionError,
      match='made with --dataset=mnist, asked for fashion_mnist'):
    convert_to_records.convert(small_idx_dir, out, validation_size=10, dataset='fashion_mnist')


def _split_bytes(out):
  return {
      split: open(record_files.split_path(out, split), 'rb').read() for split in record_files.SPLITS
  }


def test_overwrite_cut_short_between_two_splits_is_redone_not_mixed(small_idx_dir, tmp_path,
                                                                    monkeypatch):
  out = str(tmp_path / 'records')
  convert_to_records.convert(small_idx_dir, out, validation_size=10)
  old = _split_bytes(out)
  moved = []

  def fail_on_second_split(source, destination):
    if moved:
      raise OSError('injected failure while moving %s' % source)
    moved.append(destination)
    tf.io.gfile.rename(source, destination, overwrite=True)

  monkeypatch.setattr(convert_to_records, '_move_into_place', fail_on_second_split)
  with pytest.raises(OSError, match='injected failure'):
    convert_to_records.convert(small_idx_dir, out, validation_size=20, overwrite=True)
  # The train split is new, the others old: the directory must not pass as
  # complete, and a run that needs it converts again.
  assert _split_bytes(out)['train'] != old['train']
  assert not convert_to_records.tfrecords_exist(out)
  monkeypatch.undo()
  info = convert_to_records.prepare(out, mnist_dir=small_idx_dir, validation_size=20)
  assert info['num_examples']['validation'] == 20
  assert convert_to_records.tfrecords_exist(out)
  assert sorted(os.listdir(out)) == sorted(
      [os.path.basename(record_files.split_path(out, split)) for split in record_files.SPLITS]
      + [record_files.INFO_FILE])


def test_conversion_failing_while_writing_leaves_old_output_intact(small_idx_dir, tmp_path,
                                                                   monkeypatch):
  out = str(tmp_path / 'records')
  convert_to_records.convert(small_idx_dir, out, validation_size=10)
  old = _split_bytes(out)
  real_write = convert_to_records._write_records
  written = []

  def fail_on_second_split(images, labels, path):
    if written:
      raise OSError('injected failure while writing %s' % path)
    written.append(path)
    real_write(images, labels, path)

  monkeypatch.setattr(convert_to_records, '_write_records', fail_on_second_split)
  with pytest.raises(OSError, match='injected failure'):
    convert_to_records.convert(small_idx_dir, out, validation_size=20, overwrite=True)
  assert _split_bytes(out) == old
  assert convert_to_records.tfrecords_exist(out)
  assert record_files.read_info(out)['validation_size'] == 10


def test_validation_size_must_fit(small_idx_dir, tmp_path):
  with pytest.raises(convert_to_records.ConversionError, match=r'\[0, 60\)'):
    convert_to_records.convert(small_idx_dir, str(tmp_path / 'o'), validation_size=60)


def test_failed_conversion_leaves_no_output(small_idx_dir, tmp_path):
  os.remove(os.path.join(small_idx_dir, idx.TEST_IMAGES + '.gz'))
  out = tmp_path / 'records'
  with pytest.raises(idx.IdxError, match='t10k-images-idx3-ubyte'):
    convert_to_records.convert(small_idx_dir, str(out), validation_size=5)
  assert not out.exists() or not os.listdir(out)


def test_prepare_without_sources_says_how_to_supply_them(tmp_path):
  with pytest.raises(
      convert_to_records.ConversionError, match='pass --mnist_dir DIR .* or --download'):
    convert_to_records.prepare(str(tmp_path / 'empty'))


def test_full_mnist_conversion(mnist_dir, tmp_path):
  out = str(tmp_path / 'mnist')
  info = convert_to_records.convert(mnist_dir, out)
  assert info['num_examples'] == {'train': 55000, 'validation': 5000, 'test': 10000}
  train_images, train_labels = read_records(os.path.join(out, 'train.tfrecords'))
  valid_images, valid_labels = read_records(os.path.join(out, 'validation.tfrecords'))
  test_images, test_labels = read_records(os.path.join(out, 'test.tfrecords'))
  assert (len(train_images), len(valid_images), len(test_images)) == (55000, 5000, 10000)
  np.testing.assert_array_equal(
      np.bincount(np.concatenate([valid_labels, train_labels]), minlength=10),
      MNIST_TRAIN_LABEL_COUNTS)
  np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), MNIST_TEST_LABEL_COUNTS)
  # The validation split is the *first* 5,000 training images, as in the
  # classic script: MNIST's first training label is a 5, its first test one a 7.
  assert valid_labels[0] == 5 and test_labels[0] == 7
  reference, _ = idx.read_split(
      idx.find_idx_file(mnist_dir, idx.TRAIN_IMAGES),
      idx.find_idx_file(mnist_dir, idx.TRAIN_LABELS))
  np.testing.assert_array_equal(valid_images, reference[:5000])
  np.testing.assert_array_equal(train_images, reference[5000:])


@pytest.mark.large
def test_command_line_converts_and_reruns(mnist_dir, tmp_path):
  out = str(tmp_path / 'records')
  first = run_python([
      '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir, '--output_dir', out
  ])
  assert first.returncode == 0, first.stderr
  with open(os.path.join(out, 'dataset_info.json')) as f:
    assert json.load(f)['num_examples']['train'] == 55000
  second = run_python([
      '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir, '--output_dir', out
  ])
  assert second.returncode == 0
  assert 'exist already and were made with these settings: using them as they are' in second.stderr


@pytest.mark.large
def test_command_line_bad_input_is_one_line_and_nonzero(tmp_path):
  bad = tmp_path / 'idx'
  bad.mkdir()
  for name in idx.STANDARD_FILES:
    (bad / name).write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x00')
  result = run_python([
      '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir',
      str(bad), '--output_dir',
      str(tmp_path / 'out')
  ])
  assert result.returncode == 1
  assert 'Invalid magic number 2049 in MNIST file' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists() or not os.listdir(tmp_path / 'out')


def test_fashion_mnist_conversion(tmp_path, fashion_mnist_dir):
  info = convert_to_records.convert(
      fashion_mnist_dir, str(tmp_path / 'fashion'), dataset='fashion_mnist')
  assert info['dataset'] == 'fashion_mnist'
  assert info['num_examples'] == {'train': 55000, 'validation': 5000, 'test': 10000}
  _, test_labels = read_records(str(tmp_path / 'fashion' / 'test.tfrecords'))
  # Fashion-MNIST's test set is balanced: 1,000 of each of the 10 classes.
  np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)


@pytest.mark.large
def test_processes_converting_into_one_directory_at_once_take_turns(mnist_dir, tmp_path):
  """Three conversions started together into the same directory (as three
  seeds of one preset do): each ends well, one converts, the others use its
  TFRecords, which read whole."""
  output_dir = tmp_path / 'records'
  processes = [
      start_process([
          sys.executable, '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir,
          '--output_dir',
          str(output_dir)
      ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True) for _ in range(3)
  ]
  logs = [process.communicate(timeout=120)[0] for process in processes]
  assert [process.returncode for process in processes] == [0, 0, 0], logs
  assert sum('exist already' in log for log in logs) >= 1, logs
  assert not (output_dir / convert_to_records.STAGING_DIR).exists()
  assert convert_to_records.tfrecords_exist(str(output_dir))
  _, labels = read_records(str(output_dir / 'train.tfrecords'))
  assert len(labels) == 55000
