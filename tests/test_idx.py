"""Strict IDX validation: every malformed file is rejected with its name."""

import gzip
import os

import numpy as np
import pytest

from mnist_vae.data_prep import idx


def _write(path, data):
  with open(path, 'wb') as f:
    f.write(data)
  return str(path)


def test_round_trip_of_images_and_labels(tmp_path):
  images = np.random.RandomState(0).randint(0, 256, (7, 28, 28)).astype(np.uint8)
  labels = np.array([0, 1, 2, 3, 4, 5, 9], np.uint8)
  images_path = _write(tmp_path / 'i.gz', gzip.compress(idx.encode_images(images)))
  labels_path = _write(tmp_path / 'l', idx.encode_labels(labels))
  got_images, got_labels = idx.read_split(images_path, labels_path)
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


def test_wrong_magic_is_named(tmp_path):
  data = idx.encode_labels(np.zeros(3, np.uint8))
  path = _write(tmp_path / 'images', data)
  with pytest.raises(
      idx.IdxError, match=r'Invalid magic number 2049 in MNIST '
      r'file .*images \(expected 2051\)'):
    idx.parse_images(idx.read_idx_bytes(path), path)


def test_wrong_image_size(tmp_path):
  header = np.array([idx.IMAGES_MAGIC, 2, 32, 32], '>i4').tobytes()
  path = _write(tmp_path / 'big', header + bytes(2 * 32 * 32))
  with pytest.raises(idx.IdxError, match='holds 32x32 images, expected 28x28'):
    idx.parse_images(idx.read_idx_bytes(path), path)


@pytest.mark.parametrize('delta', [-1, +5])
def test_byte_count_must_match_header(tmp_path, delta):
  data = idx.encode_images(np.zeros((3, 28, 28), np.uint8))
  data = data[:delta] if delta < 0 else data + bytes(delta)
  path = _write(tmp_path / 'images', data)
  with pytest.raises(
      idx.IdxError, match=r'has %d bytes but its header 3x28x28 '
      r'promises 2368' % len(data)):
    idx.parse_images(idx.read_idx_bytes(path), path)


def test_header_too_short(tmp_path):
  path = _write(tmp_path / 'labels', b'\x00\x00\x08')
  with pytest.raises(idx.IdxError, match='too short'):
    idx.parse_labels(idx.read_idx_bytes(path), path)


def test_label_out_of_range(tmp_path):
  path = _write(tmp_path / 'labels', idx.encode_labels(np.array([1, 12], np.uint8)))
  with pytest.raises(idx.IdxError, match='label 12, outside'):
    idx.parse_labels(idx.read_idx_bytes(path), path)


def test_image_and_label_counts_must_agree(tmp_path):
  images_path = _write(tmp_path / 'i', idx.encode_images(np.zeros((4, 28, 28), np.uint8)))
  labels_path = _write(tmp_path / 'l', idx.encode_labels(np.zeros(3, np.uint8)))
  with pytest.raises(idx.IdxError, match=r'has 4 images but .*l has 3 labels'):
    idx.read_split(images_path, labels_path)


def test_truncated_gzip(tmp_path):
  data = gzip.compress(idx.encode_images(np.zeros((50, 28, 28), np.uint8)))
  path = _write(tmp_path / 'train.gz', data[:len(data) // 2])
  with pytest.raises(
      idx.IdxError,
      match=r'Invalid gzip data in MNIST file '
      r'.*train\.gz \(truncated or corrupt\)'):
    idx.read_idx_bytes(path)


def test_corrupt_gzip(tmp_path):
  data = bytearray(gzip.compress(idx.encode_labels(np.arange(200, dtype=np.uint8) % 10)))
  data[20:30] = b'\xff' * 10
  path = _write(tmp_path / 'labels.gz', bytes(data))
  with pytest.raises(idx.IdxError, match='truncated or corrupt'):
    idx.read_idx_bytes(path)


def test_missing_file_lists_expected_names(tmp_path):
  with pytest.raises(idx.IdxError, match='t10k-labels-idx1-ubyte'):
    idx.find_idx_file(str(tmp_path), idx.TEST_LABELS)


def test_finds_uncompressed_and_prefers_gzip(tmp_path):
  _write(tmp_path / idx.TEST_LABELS, b'')
  assert idx.find_idx_file(str(tmp_path), idx.TEST_LABELS).endswith(idx.TEST_LABELS)
  _write(tmp_path / (idx.TEST_LABELS + '.gz'), b'')
  assert idx.find_idx_file(str(tmp_path), idx.TEST_LABELS).endswith('.gz')
  assert os.path.basename(idx.find_idx_file(str(tmp_path) + '/', idx.TEST_LABELS)) \
      == idx.TEST_LABELS + '.gz'
