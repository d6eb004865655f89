"""Cluster jobs: membership parsing, and real clusters of processes on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from mnist_vae import cluster
from conftest import REPO_ROOT, run_python, start_python, wait_for_log
from mnist_vae.data_prep import convert_to_records

PS = ['127.0.0.1:2222']
WORKERS = ['127.0.0.1:2223', '127.0.0.1:2224']


def test_tf_config_and_flags_give_the_same_cluster():
  for index in range(2):
    from_flags = cluster.role_from_flags(','.join(PS), ','.join(WORKERS), 'worker', index)
    from_tf_config = cluster.role_from_tf_config(json.dumps({
        'cluster': {'ps': PS, 'worker': WORKERS},
        'task': {'type': 'worker', 'index': index}}))
    assert from_flags == from_tf_config
    assert from_flags.is_chief == (index == 0)
    assert from_flags.worker_index == index and from_flags.num_workers == 2
  assert cluster.role_from_flags(','.join(PS), ','.join(WORKERS), 'ps', 0).worker_index is None


def test_tf_config_with_a_chief_task():
  spec = {'chief': ['127.0.0.1:1'], 'worker': WORKERS, 'ps': PS}
  chief = cluster.role_from_tf_config(json.dumps({'cluster': spec,
                                                  'task': {'type': 'chief', 'index': 0}}))
  worker = cluster.role_from_tf_config(json.dumps({'cluster': spec,
                                                   'task': {'type': 'worker', 'index': 1}}))
  assert chief.is_chief and chief.worker_index == 0 and chief.num_workers == 3
  assert not worker.is_chief and worker.worker_index == 2
  assert cluster.device_of(worker) == '/job:worker/task:1'


def test_no_cluster_means_single_process():
  assert cluster.resolve_role(None, '', '', '', 0) is None
  assert cluster.resolve_role(json.dumps({'task': {}}), '', '', '', 0) is None


@pytest.mark.parametrize('config, message', [
    ('{not json', 'TF_CONFIG is not valid JSON'),
    (json.dumps({'cluster': {'worker': WORKERS}, 'task': {'type': 'worker'}}), 'has no ps task'),
    (json.dumps({'cluster': {'worker': WORKERS, 'ps': PS},
                 'task': {'type': 'worker', 'index': 5}}), 'Task index 5 is out of range'),
    (json.dumps({'cluster': {'worker': WORKERS, 'ps': PS},
                 'task': {'type': 'evaluator'}}), "is a 'evaluator'"),
])
def test_bad_cluster_descriptions(config, message):
  with pytest.raises(cluster.ClusterError, match=message):
    cluster.role_from_tf_config(config)


SMALL = ['--hidden_units', '64', '--latent_dim', '8', '--batch_size', '32',
         '--optimizer', 'adam', '--validation_size', '200', '--log_every_n_steps', '20',
         '--image_every_n_steps', '40', '--eval_every_n_steps', '40',
         '--save_checkpoint_steps', '20', '--eval_batch_size', '200']


@pytest.fixture
def data_dir(small_mnist_records):
  return small_mnist_records


def _launch(data_dir, train_dir, extra=(), timeout=240):
  command = ['bash', os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'),
             '--num_ps', '1', '--num_workers', '2', '--', '--data_dir', data_dir,
             '--train_dir', str(train_dir)] + SMALL + list(extra)
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _local_steps(log):
  return {int(worker): int(steps) for worker, steps in
          re.findall(r'Worker (\d) ran (\d+) local steps', log)}


@pytest.mark.parametrize('mode', ['async', 'sync'])
def test_local_cluster_trains_and_exits_cleanly(data_dir, tmp_path, mode):
  extra = ['--max_steps', '120'] + (['--sync_replicas'] if mode == 'sync' else [])
  result = _launch(data_dir, tmp_path / 'train', extra)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-5000:]
  for name in ('ps0', 'worker0', 'worker1'):
    assert '[launcher] %s exited with status 0' % name in log
  steps = _local_steps(log)
  assert set(steps) == {0, 1} and min(steps.values()) > 0, steps
  if mode == 'async':
    # Both workers advanced the one shared global step.
    assert sum(steps.values()) >= 120
  train_dir = str(tmp_path / 'train')
  assert tf.train.latest_checkpoint(train_dir).endswith('-120') or \
      int(tf.train.load_variable(tf.train.latest_checkpoint(train_dir), 'global_step')) >= 120
  # Named after the global step at which the chief passed step 40 and 80.
  samples = [name for name in os.listdir(os.path.join(train_dir, 'images'))
             if name.startswith('samples_step_')]
  assert len(samples) >= 3, samples
  with open(os.path.join(train_dir, 'metrics.json')) as f:
    assert json.load(f)['test']['num_examples'] == 200
  assert 'Parameter server 0: worker 1 is done' in log or \
      'Parameter server 0: worker 0 is done (2 of 2)' in log


def _ports(count):
  import socket
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_killed_worker_and_chief_rejoin_and_the_job_finishes(data_dir, tmp_path):
  ps_port, chief_port, worker_port = _ports(3)
  base = ['train.py', '--ps_hosts', '127.0.0.1:%d' % ps_port, '--worker_hosts',
          '127.0.0.1:%d,127.0.0.1:%d' % (chief_port, worker_port), '--data_dir', data_dir,
          '--train_dir', str(tmp_path / 'train'), '--max_steps', '600'] + SMALL
  logs = {name: str(tmp_path / name) for name in ('ps', 'chief', 'worker', 'worker2', 'chief2')}
  processes = {}
  try:
    processes['ps'] = start_python(base + ['--job_name', 'ps'], logs['ps'])
    processes['chief'] = start_python(base + ['--job_name', 'worker', '--task_index', '0'], logs['chief'])
    processes['worker'] = start_python(base + ['--job_name', 'worker', '--task_index', '1'], logs['worker'])
    wait_for_log(processes['worker'], logs['worker'], 'step 100:', timeout=120)
    processes['worker'].send_signal(signal.SIGKILL)
    processes['worker'].wait()
    processes['worker2'] = start_python(base + ['--job_name', 'worker', '--task_index', '1'], logs['worker2'])
    # The restarted worker rejoins and trains.
    wait_for_log(processes['worker2'], logs['worker2'], 'neg_elbo', timeout=120)
    wait_for_log(processes['chief'], logs['chief'], 'step 300:', timeout=120)
    processes['chief'].send_signal(signal.SIGKILL)
    processes['chief'].wait()
    saved = int(tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / 'train')),
                                       'global_step'))
    processes['chief2'] = start_python(base + ['--job_name', 'worker', '--task_index', '0'], logs['chief2'])
    for name in ('chief2', 'worker2', 'ps'):
      assert processes[name].wait(timeout=240) == 0, open(logs[name]).read()[-3000:]
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
  chief2_log = open(logs['chief2']).read()
  assert 'Resuming from' in chief2_log and '(step %d)' % saved in chief2_log
  with open(tmp_path / 'train' / 'metrics.json') as f:
    assert json.load(f)['step'] >= 600


def test_pai_flags_are_accepted(small_idx_dir, tmp_path):
  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  result = run_python(['train.py', '--buckets', data, '--checkpointDir', str(tmp_path / 'ckpt'),
                       '--tables', 'odps://project/tables/x', '--outputs=odps://y',
                       '--max_steps', '10', '--batch_size', '10', '--hidden_units', '16',
                       '--latent_dim', '2'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Ignoring arguments this program does not use: --tables odps://project/tables/x --outputs=odps://y' in result.stderr
  assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-10')


def test_training_into_ram_filesystem(small_idx_dir, tmp_path):
  from mnist_vae import train
  data = 'ram://vae_test/data'
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  metrics = train.run_training(train_dir='ram://vae_test/train', data_dir=data,
                               batch_size=10, max_steps=6, hidden_units=16, latent_dim=2,
                               image_every_n_steps=3, eval_every_n_steps=3,
                               log_every_n_steps=3)
  assert metrics['step'] == 6
  assert tf.train.latest_checkpoint('ram://vae_test/train').endswith('-6')
  images = tf.io.gfile.listdir('ram://vae_test/train/images')
  assert 'samples_step_000006.png' in images and 'reconstructions_step_000003.png' in images
  assert tf.io.gfile.exists('ram://vae_test/train/metrics.json')
  assert not os.path.exists('ram:')


def test_launcher_ctrl_c_stops_everything_and_keeps_a_checkpoint(data_dir, tmp_path):
  log_path = str(tmp_path / 'log')
  command = ['bash', os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'),
             '--num_ps', '1', '--num_workers', '2', '--', '--data_dir', data_dir,
             '--train_dir', str(tmp_path / 'train'), '--max_steps', '100000'] + SMALL
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2')
  with open(log_path, 'w') as log:
    launcher = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
  try:
    wait_for_log(launcher, log_path, 'step 200:', timeout=120)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=60) == 130
  finally:
    if launcher.poll() is None:
      launcher.kill()
  log = open(log_path).read()
  assert '[launcher] interrupted: stopping all processes' in log
  # The chief stopped at a step boundary and saved it, the ps still up.
  assert 'Stopped by SIGTERM' in log
  step = int(tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / 'train')),
                                    'global_step'))
  assert step >= 200
  leftover = subprocess.run(['pgrep', '-f', str(tmp_path / 'train')], capture_output=True)
  assert leftover.stdout == b'', 'processes left running: %r' % leftover.stdout
