"""Shared fixtures: real files in temp dirs, the real MNIST files, real processes."""

import gzip
import os
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import pytest

from mnist_vae.data_prep import idx

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.environ.get(
    'MNIST_DIR', os.path.join(REPO_ROOT, os.pardir, 'shared', 'mnist'))


def write_idx_dir(directory, train_images, train_labels, test_images,
                  test_labels, compress=True):
  """Writes the four standard IDX files (gzip when `compress`) into directory."""
  os.makedirs(directory, exist_ok=True)
  contents = {
      idx.TRAIN_IMAGES: idx.encode_images(train_images),
      idx.TRAIN_LABELS: idx.encode_labels(train_labels),
      idx.TEST_IMAGES: idx.encode_images(test_images),
      idx.TEST_LABELS: idx.encode_labels(test_labels),
  }
  for name, data in contents.items():
    if compress:
      with open(os.path.join(directory, name + '.gz'), 'wb') as f:
        f.write(gzip.compress(data))
    else:
      with open(os.path.join(directory, name), 'wb') as f:
        f.write(data)
  return str(directory)


def indexed_images(count, offset=0):
  """uint8 [count, 28, 28] whose first two pixels spell the example's index."""
  rng = np.random.RandomState(count + offset)
  images = rng.randint(0, 256, size=(count, 28, 28)).astype(np.uint8)
  index = np.arange(offset, offset + count)
  images[:, 0, 0] = index % 256
  images[:, 0, 1] = index // 256
  return images


def index_of(flat_images):
  """Inverse of `indexed_images` for float [n, 784] images in [0, 1]."""
  pixels = np.rint(np.asarray(flat_images) * 255.0).astype(np.int64)
  return pixels[:, 0] + 256 * pixels[:, 1]


@pytest.fixture
def small_idx_dir(tmp_path):
  """IDX files of 60 training and 20 test images, each carrying its index."""
  return write_idx_dir(tmp_path / 'idx', indexed_images(60),
                       np.arange(60, dtype=np.uint8) % 10,
                       indexed_images(20, offset=1000),
                       np.arange(20, dtype=np.uint8) % 10)


@pytest.fixture(scope='session')
def mnist_dir():
  """The real MNIST files; CI must have them, a developer may not."""
  if not os.path.exists(os.path.join(SHARED_MNIST,
                                     idx.TRAIN_IMAGES + '.gz')):
    if os.environ.get('CI'):
      pytest.fail('Real MNIST files not found in %s' % SHARED_MNIST)
    pytest.skip('Real MNIST files not found in %s (set MNIST_DIR)' % SHARED_MNIST)
  return SHARED_MNIST


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT)


def run_python(args, timeout=300, cwd=REPO_ROOT):
  """Runs `python ARGS` as a real process; returns the CompletedProcess."""
  return subprocess.run([sys.executable] + list(args), cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def start_python(args, log_path, cwd=REPO_ROOT):
  """Starts `python ARGS` with stderr+stdout to log_path; returns the Popen."""
  log = open(log_path, 'w')
  return subprocess.Popen([sys.executable] + list(args), cwd=cwd, env=_env(),
                          stdout=log, stderr=subprocess.STDOUT)


def wait_for_log(process, log_path, pattern, timeout=120):
  """Waits until log_path contains `pattern`; fails if the process ends first."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    with open(log_path) as f:
      if pattern in f.read():
        return
    if process.poll() is not None:
      raise AssertionError('process ended (%s) before logging %r:\n%s'
                           % (process.returncode, pattern, open(log_path).read()))
    time.sleep(0.05)
  process.kill()
  raise AssertionError('no %r in the log within %d s' % (pattern, timeout))


def small_mnist_dir(mnist_dir, directory, num_train=2000, num_test=200):
  """Writes IDX files holding the first examples of the real MNIST files."""
  train_images, train_labels = idx.read_split(
      idx.find_idx_file(mnist_dir, idx.TRAIN_IMAGES),
      idx.find_idx_file(mnist_dir, idx.TRAIN_LABELS))
  test_images, test_labels = idx.read_split(
      idx.find_idx_file(mnist_dir, idx.TEST_IMAGES),
      idx.find_idx_file(mnist_dir, idx.TEST_LABELS))
  return write_idx_dir(directory, train_images[:num_train],
                       train_labels[:num_train], test_images[:num_test],
                       test_labels[:num_test])


@pytest.fixture(scope='session')
def small_mnist_records(mnist_dir, tmp_path_factory):
  """TFRecords of the first 1,800 / 200 / 200 real MNIST images."""
  from mnist_vae.data_prep import convert_to_records
  root = tmp_path_factory.mktemp('small_mnist')
  records = str(root / 'records')
  convert_to_records.convert(small_mnist_dir(mnist_dir, root / 'idx'), records,
                             validation_size=200)
  return records
