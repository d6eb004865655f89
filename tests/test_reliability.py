"""Fault injection with real processes and real files: signals, kill -9, NaN, bad input."""

import glob
import gzip
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import checkpoint_step
from helpers import run_python
from helpers import start_python
from helpers import wait_for
from mnist_vae import checkpoints
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import idx

FAST = [
    '--hidden_units', '64', '--latent_dim', '8', '--batch_size', '64', '--optimizer', 'adam',
    '--validation_size', '200', '--log_every_n_steps', '25', '--save_checkpoint_steps', '25',
    '--image_every_n_steps', '0', '--eval_every_n_steps', '0', '--eval_batch_size', '200'
]


@pytest.fixture
def data_dir(small_mnist_records):
  return small_mnist_records


def _train_args(data_dir, train_dir, *extra):
  return ['train.py', '--data_dir', data_dir, '--train_dir', str(train_dir)] + FAST + list(extra)


def _logged_losses(log):
  pattern = r'step (\d+)[^:]*: neg_elbo ([\d.]+)'
  return {int(step): float(loss) for step, loss in re.findall(pattern, log)}


def _checkpoint_step(train_dir):
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  return checkpoint and int(tf.train.load_variable(checkpoint, 'global_step'))


def _all_finite(checkpoint):
  return all(
      np.isfinite(tf.train.load_variable(checkpoint, name)).all()
      for name, _ in tf.train.list_variables(checkpoint))


@pytest.mark.large
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint_and_metrics_then_exits(data_dir, tmp_path, signum):
  log_path = str(tmp_path / 'log')
  process = start_python(
      _train_args(data_dir, tmp_path / 'train', '--max_steps', '100000'), log_path)
  wait_for(lambda: checkpoint_step(tmp_path / 'train') >= 75, 'checkpoint at step 75', [process])
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


def _test_neg_elbo(train_dir):
  with open(train_dir / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['step'] == KILLED_RUN_STEPS
  return metrics['test']['neg_elbo']


KILLED_RUN_STEPS = 1000
NUM_KILLS = 6


@pytest.mark.large
def test_kill_9_at_random_moments_then_resume(data_dir, tmp_path):
  """SIGKILL at random moments of one run (start-up, training, inside the
  saves that come every step), the same command re-run after each: the
  run reaches max_steps, every checkpoint kept reads whole after every kill,
  and it ends where an uninterrupted run ends."""
  rng = np.random.RandomState(2026)
  train_dir = tmp_path / 'train'
  command = _train_args(data_dir, train_dir, '--max_steps', str(KILLED_RUN_STEPS),
                        '--save_checkpoint_steps', '1')
  kills = inside_a_save = 0
  for attempt in range(NUM_KILLS):
    log_path = tmp_path / ('log%d' % attempt)
    process = start_python(command, str(log_path))
    if rng.rand() < 0.25:  # Anywhere in start-up: flags, data, graph, restore.
      time.sleep(rng.uniform(0.2, 6.0))
    else:  # Once it trains: most of the time goes into saves.
      wait_for(
          lambda path=log_path: 'Create CheckpointSaverHook' in path.read_text(),
          'the session starting', [process])
      time.sleep(rng.uniform(0.1, 1.5))
    if process.poll() is not None:
      break  # It finished first.
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kills += 1
    inside_a_save += bool(glob.glob(str(train_dir / '*tempstate*')))
    for checkpoint in checkpoints.in_directory(str(train_dir)):
      assert checkpoints.unreadable_reason(checkpoint) is None, (attempt, checkpoint)
  final = run_python(command)
  assert final.returncode == 0, final.stderr[-3000:]
  assert _checkpoint_step(train_dir) == KILLED_RUN_STEPS
  assert 'Traceback' not in final.stderr
  assert not glob.glob(str(train_dir / '*tempstate*'))  # Cleared on resuming.
  uninterrupted = run_python(
      _train_args(data_dir, tmp_path / 'uninterrupted', '--max_steps', str(KILLED_RUN_STEPS)))
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
  killed_loss = _test_neg_elbo(train_dir)
  reference = _test_neg_elbo(tmp_path / 'uninterrupted')
  print('survived %d kills (%d inside a save); test neg_elbo %.2f, uninterrupted '
        '%.2f' % (kills, inside_a_save, killed_loss, reference))
  assert kills == NUM_KILLS
  # Resumed runs reshuffle from their step: seed noise, not a lost update.
  assert abs(killed_loss - reference) < 0.03 * reference


@pytest.mark.large
def test_divergence_stops_and_keeps_last_checkpoint(data_dir, tmp_path):
  train_dir = tmp_path / 'train'
  result = run_python(
      _train_args(data_dir, train_dir, '--max_steps', '500', '--optimizer', 'sgd',
                  '--learning_rate', '1e4', '--save_checkpoint_steps', '1'))
  assert result.returncode == 1
  match = re.search(
      r'The (loss|gradients) became (NaN|Inf) at step (\d+); the '
      r'update was not applied. Likely cause: the learning rate '
      r'\(10000\) is too high', result.stderr)
  assert match, result.stderr
  failed_step = int(match.group(3))
  assert 'Traceback' not in result.stderr
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  assert _checkpoint_step(train_dir) == failed_step - 1
  assert _all_finite(checkpoint)
  assert not os.path.exists(train_dir / 'metrics.json')


@pytest.mark.large
def test_verbosity_shows_the_traceback(tmp_path):
  result = run_python([
      'train.py', '--data_dir',
      str(tmp_path / 'none'), '--train_dir',
      str(tmp_path / 't'), '--verbosity=1'
  ])
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


@pytest.mark.large
@pytest.mark.parametrize('damage',
                         ['truncated gzip', 'wrong magic', 'count mismatch', 'swapped files'])
def test_bad_idx_files(small_idx_dir, tmp_path, damage):
  message = _corrupt_idx(small_idx_dir, damage)
  data = tmp_path / 'data'
  result = run_python([
      'train.py', '--mnist_dir', small_idx_dir, '--data_dir',
      str(data), '--train_dir',
      str(tmp_path / 't'), '--validation_size', '10'
  ])
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
      writer.write(
          tf.train.Example(
              features=tf.train.Features(feature={
                  'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'png'])),
              })).SerializeToString())
    return 'is not in the MNIST schema'
  if damage == 'other image size':
    with tf.io.TFRecordWriter(train) as writer:
      writer.write(
          tf.train.Example(
              features=tf.train.Features(
                  feature={
                      'image_raw':
                          tf.train.Feature(
                              bytes_list=tf.train.BytesList(value=[bytes(32 * 32 * 3)])),
                      'label':
                          tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
                  })).SerializeToString())
    return 'holds images of 3072 bytes; this model needs 28x28x1 = 784'
  if damage == 'missing':
    os.remove(os.path.join(data, 'test.tfrecords'))
    os.remove(os.path.join(data, 'dataset_info.json'))
    return 'No TFRecords in %s' % data
  raise ValueError(damage)


@pytest.mark.large
@pytest.mark.parametrize('damage', ['crc', 'empty', 'other schema', 'other image size', 'missing'])
def test_bad_tfrecords(small_idx_dir, tmp_path, damage):
  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  message = _damage_records(data, damage)
  result = run_python(['train.py', '--data_dir', data, '--train_dir', str(tmp_path / 't')])
  assert result.returncode == 1
  assert message in result.stderr and 'tfrecords' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 't').exists()


@pytest.mark.parametrize('flags, message', [
    (['--latent_dim=0'], 'flag --latent_dim=0: 0 is not an integer in the range [1, 1000]'),
    (['--max_steps=-5'], 'flag --max_steps=-5: -5 is not an integer in the range [0, '),
    (['--keep_prob=0'], '--keep_prob must be in (0, 1]'),
    (['--batch_size=500'], '--batch_size=500 is larger than the 50 examples of'),
    (['--learning_rate=-1'], 'flag --learning_rate=-1: -1.0 is not a number in the range [0.0, '),
])
@pytest.mark.large
def test_out_of_range_flags(small_idx_dir, tmp_path, flags, message):
  result = run_python([
      'train.py', '--mnist_dir', small_idx_dir, '--data_dir',
      str(tmp_path / 'data'), '--validation_size', '10', '--train_dir',
      str(tmp_path / 't')
  ] + flags)
  assert result.returncode == 1
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.large
def test_unwritable_train_dir(small_idx_dir, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  result = run_python([
      'train.py', '--mnist_dir', small_idx_dir, '--data_dir',
      str(tmp_path / 'data'), '--validation_size', '10', '--batch_size', '10', '--train_dir',
      str(blocker / 'train')
  ])
  assert result.returncode == 1
  assert 'Cannot create --train_dir %s' % (blocker / 'train') in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.large
def test_kill_9_during_conversion_leaves_nothing_that_looks_complete(mnist_dir, tmp_path):
  out = tmp_path / 'records'
  rng = np.random.RandomState(7)
  for attempt, delay in enumerate(rng.uniform(2.5, 5.0, 3)):
    log_path = str(tmp_path / ('log%d' % attempt))
    process = start_python([
        '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir, '--output_dir',
        str(out), '--overwrite'
    ], log_path)
    # Somewhere in start-up, reading or writing (TensorFlow's import takes ~3 s).
    time.sleep(delay)
    process.kill()
    process.wait()
    expected = {'train.tfrecords': 55000, 'validation.tfrecords': 5000, 'test.tfrecords': 10000}
    for name, count in expected.items():
      if (out / name).exists():
        assert sum(1 for _ in tf.data.TFRecordDataset(str(out / name))) == count
    if (out / 'dataset_info.json').exists():
      assert all((out / name).exists() for name in expected)
  result = run_python([
      '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir, '--output_dir',
      str(out)
  ])
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
