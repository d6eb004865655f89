"""Fault injection with real processes and real files: signals, kill -9, NaN, bad input."""

import gzip
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import checkpoint_step, run_python, start_python, wait_for
from mnist_vae.data_prep import convert_to_records, idx

FAST = ['--hidden_units', '64', '--latent_dim', '8', '--batch_size', '64',
        '--optimizer', 'adam', '--validation_size', '200', '--log_every_n_steps', '25',
        '--save_checkpoint_steps', '25', '--image_every_n_steps', '0',
        '--eval_every_n_steps', '0', '--eval_batch_size', '200']


@pytest.fixture
def data_dir(small_mnist_records):
  return small_mnist_records


def _train_args(data_dir, train_dir, *extra):
  return ['train.py', '--data_dir', data_dir, '--train_dir', str(train_dir)] + FAST + list(extra)


def _logged_losses(log):
  return {int(step): float(loss) for step, loss in
          re.findall(r'step (\d+): neg_elbo ([\d.]+)', log)}


def _checkpoint_step(train_dir):
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  return checkpoint and int(tf.train.load_variable(checkpoint, 'global_step'))


def _all_finite(checkpoint):
  return all(np.isfinite(tf.train.load_variable(checkpoint, name)).all()
             for name, _ in tf.train.list_variables(checkpoint))


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint_and_metrics_then_exits(data_dir, tmp_path, signum):
  log_path = str(tmp_path / 'log')
  process = start_python(_train_args(data_dir, tmp_path / 'train', '--max_steps',
                                     '100000'), log_path)
  wait_for(lambda: checkpoint_step(tmp_path / 'train') >= 75, 'checkpoint at step 75',
           [process])
  process.send_signal(signum)
  assert process.wait(timeout=60) == 128 + signum
  log = open(log_path).read()
  assert 'Received %s' % signal.Signals(signum).name in log
  # The checkpoint is of the step it stopped at, not of the last multiple of 25.
  stopped_at = _checkpoint_step(tmp_path / 'train')
  assert stopped_at >= max(_logged_losses(log)) >= 50 and stopped_at >= 75
  with open(tmp_path / 'train' / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['interrupted_by'] == signal.Signals(signum).name
  assert metrics['step'] == stopped_at
  assert 'Traceback' not in log


def test_kill_9_at_random_points_then_resume(data_dir, tmp_path):
  rng = np.random.RandomState(2026)
  train_dir = tmp_path / 'train'
  command = _train_args(data_dir, train_dir, '--max_steps', '400')
  losses = {}
  # First a kill during start-up, then kills right after seeded logged steps.
  kill_points = [None] + sorted(rng.choice(np.arange(50, 375, 25), 3, replace=False))
  for attempt, kill_step in enumerate(kill_points):
    log_path = str(tmp_path / ('log%d' % attempt))
    process = start_python(command, log_path)
    if kill_step is None:  # The graph is built; the session starts.
      wait_for(lambda: os.path.exists(train_dir / 'config.json'), 'config.json',
               [process])
    else:
      wait_for(lambda: checkpoint_step(train_dir) >= kill_step,
               'checkpoint at step %d' % kill_step, [process])
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    losses.update(_logged_losses(open(log_path).read()))
    saved_step = _checkpoint_step(train_dir)
    if kill_step is not None:
      # Nothing is lost beyond the last checkpoint, and that one is whole.
      assert kill_step <= saved_step <= kill_step + 25
      assert _all_finite(tf.train.latest_checkpoint(str(train_dir)))
  resumed_from = _checkpoint_step(train_dir)
  log_path = str(tmp_path / 'final')
  process = start_python(command, log_path)
  assert process.wait(timeout=300) == 0, open(log_path).read()
  log = open(log_path).read()
  assert '(step %d)' % resumed_from in log
  resumed = _logged_losses(log)
  assert min(resumed) == resumed_from + 25
  # The resumed run's loss continues from where it was, far below the start.
  last_logged = losses[max(step for step in losses if step <= resumed_from)]
  assert resumed[min(resumed)] < last_logged * 1.15
  assert resumed[min(resumed)] < losses[25] - 30
  assert _checkpoint_step(train_dir) == 400
  with open(train_dir / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['step'] == 400 and metrics['test']['num_examples'] == 200


def test_divergence_stops_and_keeps_last_checkpoint(data_dir, tmp_path):
  train_dir = tmp_path / 'train'
  result = run_python(_train_args(data_dir, train_dir, '--max_steps', '500',
                                  '--optimizer', 'sgd', '--learning_rate', '1e4',
                                  '--save_checkpoint_steps', '1'))
  assert result.returncode == 1
  match = re.search(r'The (loss|gradients) became (NaN|Inf) at step (\d+); the '
                    r'update was not applied. Likely cause: the learning rate '
                    r'\(10000\) is too high', result.stderr)
  assert match, result.stderr
  failed_step = int(match.group(3))
  assert 'Traceback' not in result.stderr
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert _checkpoint_step(train_dir) == failed_step - 1
  assert _all_finite(checkpoint)
  assert not os.path.exists(train_dir / 'metrics.json')


def test_verbosity_shows_the_traceback(tmp_path):
  result = run_python(['train.py', '--data_dir', str(tmp_path / 'none'),
                       '--train_dir', str(tmp_path / 't'), '--verbosity=1'])
  assert result.returncode == 1 and 'Traceback' in result.stderr


def _corrupt_idx(directory, damage):
  images_gz = os.path.join(directory, idx.TRAIN_IMAGES + '.gz')
  if damage == 'truncated gzip':
    data = open(images_gz, 'rb').read()
    open(images_gz, 'wb').write(data[:len(data) // 2])
    return 'Invalid gzip data in MNIST file %s' % images_gz
  if damage == 'wrong magic':
    data = bytearray(gzip.decompress(open(images_gz, 'rb').read()))
    data[3] = 0x01
    open(images_gz, 'wb').write(gzip.compress(bytes(data)))
    return 'Invalid magic number 2049 in MNIST file %s' % images_gz
  if damage == 'count mismatch':
    labels_gz = os.path.join(directory, idx.TRAIN_LABELS + '.gz')
    open(labels_gz, 'wb').write(gzip.compress(idx.encode_labels(np.zeros(59, np.uint8))))
    return 'has 60 images but %s has 59 labels' % labels_gz
  if damage == 'swapped files':
    labels_gz = os.path.join(directory, idx.TRAIN_LABELS + '.gz')
    os.rename(images_gz, images_gz + '.x')
    os.rename(labels_gz, images_gz)
    os.rename(images_gz + '.x', labels_gz)
    return 'Invalid magic number 2049 in MNIST file %s' % images_gz
  raise ValueError(damage)


@pytest.mark.parametrize('damage', ['truncated gzip', 'wrong magic',
                                    'count mismatch', 'swapped files'])
def test_bad_idx_files(small_idx_dir, tmp_path, damage):
  message = _corrupt_idx(small_idx_dir, damage)
  data = tmp_path / 'data'
  result = run_python(['train.py', '--mnist_dir', small_idx_dir, '--data_dir',
                       str(data), '--train_dir', str(tmp_path / 't'),
                       '--validation_size', '10'])
  assert result.returncode == 1
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not data.exists() or not os.listdir(data)


def _damage_records(data, damage):
  train = os.path.join(data, 'train.tfrecords')
  if damage == 'crc':
    raw = bytearray(open(train, 'rb').read())
    raw[5000] ^= 0x55
    open(train, 'wb').write(bytes(raw))
    return 'not a readable TFRecord file'
  if damage == 'empty':
    open(train, 'wb').close()
    return 'holds no records'
  if damage == 'other schema':
    with tf.io.TFRecordWriter(train) as writer:
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'png'])),
      })).SerializeToString())
    return 'is not in the MNIST schema'
  if damage == 'other image size':
    with tf.io.TFRecordWriter(train) as writer:
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(32 * 32 * 3)])),
          'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
      })).SerializeToString())
    return 'holds images of 3072 bytes; this model needs 28x28x1 = 784'
  if damage == 'missing':
    os.remove(os.path.join(data, 'test.tfrecords'))
    os.remove(os.path.join(data, 'dataset_info.json'))
    return 'No TFRecords in %s' % data
  raise ValueError(damage)


@pytest.mark.parametrize('damage', ['crc', 'empty', 'other schema',
                                    'other image size', 'missing'])
def test_bad_tfrecords(small_idx_dir, tmp_path, damage):
  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  message = _damage_records(data, damage)
  result = run_python(['train.py', '--data_dir', data,
                       '--train_dir', str(tmp_path / 't')])
  assert result.returncode == 1
  assert message in result.stderr and 'tfrecords' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 't').exists()


@pytest.mark.parametrize('flags, message', [
    (['--latent_dim=0'], 'flag --latent_dim=0: 0 is not a positive integer'),
    (['--max_steps=-5'], 'flag --max_steps=-5: -5 is not a non-negative integer'),
    (['--keep_prob=0'], '--keep_prob must be in (0, 1]'),
    (['--batch_size=500'], '--batch_size=500 is larger than the 50 examples of'),
    (['--learning_rate=-1'], 'flag --learning_rate=-1: -1.0 is not a non-negative number'),
])
def test_out_of_range_flags(small_idx_dir, tmp_path, flags, message):
  result = run_python(['train.py', '--mnist_dir', small_idx_dir,
                       '--data_dir', str(tmp_path / 'data'), '--validation_size', '10',
                       '--train_dir', str(tmp_path / 't')] + flags)
  assert result.returncode == 1
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def test_unwritable_train_dir(small_idx_dir, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  result = run_python(['train.py', '--mnist_dir', small_idx_dir, '--data_dir',
                       str(tmp_path / 'data'), '--validation_size', '10',
                       '--batch_size', '10', '--train_dir', str(blocker / 'train')])
  assert result.returncode == 1
  assert 'Cannot create --train_dir %s' % (blocker / 'train') in result.stderr
  assert 'Traceback' not in result.stderr


def test_kill_9_during_conversion_leaves_nothing_that_looks_complete(mnist_dir, tmp_path):
  out = tmp_path / 'records'
  rng = np.random.RandomState(7)
  for attempt, delay in enumerate(rng.uniform(2.5, 5.0, 3)):
    log_path = str(tmp_path / ('log%d' % attempt))
    process = start_python(['-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir',
                            mnist_dir, '--output_dir', str(out), '--overwrite'], log_path)
    # Somewhere in start-up, reading or writing (TensorFlow's import takes ~3 s).
    time.sleep(delay)
    process.kill()
    process.wait()
    expected = {'train.tfrecords': 55000, 'validation.tfrecords': 5000,
                'test.tfrecords': 10000}
    for name, count in expected.items():
      if (out / name).exists():
        assert sum(1 for _ in tf.data.TFRecordDataset(str(out / name))) == count
    if (out / 'dataset_info.json').exists():
      assert all((out / name).exists() for name in expected)
  result = run_python(['-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir',
                       mnist_dir, '--output_dir', str(out)])
  assert result.returncode == 0, result.stderr
  info = json.loads((out / 'dataset_info.json').read_text())
  assert info['num_examples'] == {'train': 55000, 'validation': 5000, 'test': 10000}


def test_leftover_partial_outputs_are_redone(small_idx_dir, tmp_path):
  out = tmp_path / 'records'
  convert_to_records.convert(small_idx_dir, str(out), validation_size=10)
  # As a conversion killed while writing leaves it: a split missing, another
  # half-written in the staging directory.
  os.remove(out / 'test.tfrecords')
  (out / convert_to_records.STAGING_DIR).mkdir()
  (out / convert_to_records.STAGING_DIR / 'test.tfrecords').write_bytes(b'half a file')
  info = convert_to_records.convert(small_idx_dir, str(out), validation_size=10)
  assert info['num_examples']['test'] == 20
  assert not (out / convert_to_records.STAGING_DIR).exists()
