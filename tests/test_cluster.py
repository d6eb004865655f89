"""Cluster jobs: membership parsing, and real clusters of processes on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess

from absl import flags
import pytest
import tensorflow as tf

from helpers import REPO_ROOT
from helpers import checkpoint_step
from helpers import free_ports
from helpers import run_process
from helpers import run_python
from helpers import start_process
from helpers import start_python
from helpers import wait_for
from mnist_vae import cluster
from mnist_vae.data_prep import convert_to_records

PS = ['127.0.0.1:2222']
WORKERS = ['127.0.0.1:2223', '127.0.0.1:2224']


def test_tf_config_and_flags_give_the_same_cluster():
  for index in range(2):
    from_flags = cluster.role_from_flags(','.join(PS), ','.join(WORKERS), 'worker', index)
    from_tf_config = cluster.role_from_tf_config(
        json.dumps({
            'cluster': {
                'ps': PS,
                'worker': WORKERS
            },
            'task': {
                'type': 'worker',
                'index': index
            }
        }))
    assert from_flags == from_tf_config
    assert from_flags.is_chief == (index == 0)
    assert from_flags.worker_index == index and from_flags.num_workers == 2
  assert cluster.role_from_flags(','.join(PS), ','.join(WORKERS), 'ps', 0).worker_index is None


def test_tf_config_with_a_chief_task():
  spec = {'chief': ['127.0.0.1:1'], 'worker': WORKERS, 'ps': PS}
  chief = cluster.role_from_tf_config(
      json.dumps({
          'cluster': spec,
          'task': {
              'type': 'chief',
              'index': 0
          }
      }))
  worker = cluster.role_from_tf_config(
      json.dumps({
          'cluster': spec,
          'task': {
              'type': 'worker',
              'index': 1
          }
      }))
  assert chief.is_chief and chief.worker_index == 0 and chief.num_workers == 3
  assert not worker.is_chief and worker.worker_index == 2
  assert cluster.device_of(worker) == '/job:worker/task:1'


def test_no_cluster_means_single_process():
  assert cluster.resolve_role(None, '', '', '', 0) is None
  assert cluster.resolve_role(json.dumps({'task': {}}), '', '', '', 0) is None


@pytest.mark.parametrize('config, message', [
    ('{not json', 'TF_CONFIG is not valid JSON'),
    (json.dumps({
        'cluster': {
            'worker': WORKERS
        },
        'task': {
            'type': 'worker'
        }
    }), 'has no ps task'),
    (json.dumps({
        'cluster': {
            'worker': WORKERS,
            'ps': PS
        },
        'task': {
            'type': 'worker',
            'index': 5
        }
    }), 'Task index 5 is out of range'),
    (json.dumps({
        'cluster': {
            'worker': WORKERS,
            'ps': PS
        },
        'task': {
            'type': 'evaluator'
        }
    }), "is a 'evaluator'"),
])
def test_bad_cluster_descriptions(config, message):
  with pytest.raises(cluster.ClusterError, match=message):
    cluster.role_from_tf_config(config)


SMALL = [
    '--hidden_units', '64', '--latent_dim', '8', '--batch_size', '32', '--optimizer', 'adam',
    '--validation_size', '200', '--log_every_n_steps', '20', '--image_every_n_steps', '40',
    '--eval_every_n_steps', '40', '--save_checkpoint_steps', '20', '--eval_batch_size', '200'
]


@pytest.fixture
def data_dir(small_mnist_records):
  return small_mnist_records


def _launch(data_dir, train_dir, extra=(), timeout=240):
  command = [
      'bash',
      os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'), '--num_ps', '1', '--num_workers',
      '2', '--', '--data_dir', data_dir, '--train_dir',
      str(train_dir)
  ] + SMALL + list(extra)
  return run_process(command, timeout=timeout)


def _local_steps(log):
  return {
      int(worker): int(steps)
      for worker, steps in re.findall(r'Worker (\d) ran (\d+) local steps', log)
  }


@pytest.mark.large
@pytest.mark.parametrize('mode', ['async', 'sync'])
def test_local_cluster_trains_and_exits_cleanly(data_dir, tmp_path, mode):
  # Synchronous is the default with two workers.
  extra = ['--max_steps', '120'] + (['--nosync_replicas'] if mode == 'async' else [])
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
  else:
    # Each update aggregates one gradient of each worker: about two worker
    # steps per global step (a few more where a stale gradient was dropped).
    assert 2 * 120 - 2 <= sum(steps.values()) <= 2.5 * 120, steps
  train_dir = str(tmp_path / 'train')
  assert tf.train.latest_checkpoint(train_dir).endswith('-120') or \
      int(tf.train.load_variable(tf.train.latest_checkpoint(train_dir), 'global_step')) >= 120
  # Named after the global step at which the chief passed step 40 and 80.
  samples = [
      name for name in os.listdir(os.path.join(train_dir, 'images'))
      if name.startswith('samples_step_')
  ]
  assert len(samples) >= 3, samples
  with open(os.path.join(train_dir, 'metrics.json')) as f:
    assert json.load(f)['test']['num_examples'] == 200
  with open(os.path.join(train_dir, 'config.json')) as f:
    assert json.load(f)['sync_replicas'] == (mode == 'sync')
  assert 'Parameter server 0: worker 1 is done' in log or \
      'Parameter server 0: worker 0 is done (2 of 2)' in log


@pytest.mark.large
def test_killed_worker_and_chief_rejoin_and_the_job_finishes(data_dir, tmp_path):
  ps_port, chief_port, worker_port = free_ports(3)
  base = [
      'train.py', '--ps_hosts',
      '127.0.0.1:%d' % ps_port, '--worker_hosts',
      '127.0.0.1:%d,127.0.0.1:%d' %
      (chief_port, worker_port), '--data_dir', data_dir, '--train_dir',
      str(tmp_path / 'train'), '--max_steps', '600', '--nosync_replicas'
  ] + SMALL
  logs = {name: str(tmp_path / name) for name in ('ps', 'chief', 'worker', 'worker2', 'chief2')}
  processes = {}
  try:
    processes['ps'] = start_python(base + ['--job_name', 'ps'], logs['ps'])
    processes['chief'] = start_python(base + ['--job_name', 'worker', '--task_index', '0'],
                                      logs['chief'])
    processes['worker'] = start_python(base + ['--job_name', 'worker', '--task_index', '1'],
                                       logs['worker'])
    train_dir = tmp_path / 'train'
    wait_for(lambda: checkpoint_step(train_dir) >= 100, 'checkpoint at step 100',
             [processes['chief'], processes['worker']])
    processes['worker'].send_signal(signal.SIGKILL)
    processes['worker'].wait()
    processes['worker2'] = start_python(base + ['--job_name', 'worker', '--task_index', '1'],
                                        logs['worker2'])
    wait_for(lambda: checkpoint_step(train_dir) >= 300, 'checkpoint at step 300',
             [processes['chief'], processes['worker2']])
    processes['chief'].send_signal(signal.SIGKILL)
    processes['chief'].wait()
    saved = int(
        tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / 'train')), 'global_step'))
    processes['chief2'] = start_python(base + ['--job_name', 'worker', '--task_index', '0'],
                                       logs['chief2'])
    for name in ('chief2', 'worker2', 'ps'):
      assert processes[name].wait(timeout=240) == 0, open(logs[name]).read()[-3000:]
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
  chief2_log = open(logs['chief2']).read()
  assert 'Resuming from' in chief2_log and '(step %d)' % saved in chief2_log
  # The restarted worker rejoined and trained.
  rejoined_steps = _local_steps(open(logs['worker2']).read())
  assert rejoined_steps.get(1, 0) > 0, rejoined_steps
  with open(tmp_path / 'train' / 'metrics.json') as f:
    assert json.load(f)['step'] >= 600


@pytest.mark.large
def test_pai_flags_are_accepted(small_idx_dir, tmp_path):
  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  result = run_python([
      'train.py', '--buckets', data, '--checkpointDir',
      str(tmp_path / 'ckpt'), '--tables', 'odps://project/tables/x', '--outputs=odps://y',
      '--max_steps', '10', '--batch_size', '10', '--hidden_units', '16', '--latent_dim', '2'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Launcher flag --tables=odps://project/tables/x accepted' in result.stderr
  assert 'Launcher flag --outputs=odps://y accepted' in result.stderr
  assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-10')


def test_training_into_ram_filesystem(small_idx_dir, tmp_path):
  from mnist_vae import train
  data = 'ram://vae_test/data'
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values([
      'train.py', '--train_dir=ram://vae_test/train', '--data_dir', data, '--validation_size=10',
      '--batch_size=10', '--max_steps=6', '--hidden_units=16', '--latent_dim=2',
      '--image_every_n_steps=3', '--eval_every_n_steps=3', '--log_every_n_steps=3'
  ])
  metrics = train.run_training(**train.settings_from_flags(flag_values))
  assert metrics['step'] == 6
  assert tf.train.latest_checkpoint('ram://vae_test/train').endswith('-6')
  images = tf.io.gfile.listdir('ram://vae_test/train/images')
  assert 'samples_step_000006.png' in images and 'reconstructions_step_000003.png' in images
  assert tf.io.gfile.exists('ram://vae_test/train/metrics.json')
  assert not os.path.exists('ram:')


def _start_endless_job(data_dir, tmp_path, log_path, until_step):
  """The launcher with 1 ps + 2 workers and no end in sight, returned once
  the chief has checkpointed until_step."""
  command = [
      'bash',
      os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'), '--num_ps', '1', '--num_workers',
      '2', '--', '--data_dir', data_dir, '--train_dir',
      str(tmp_path / 'train'), '--max_steps', '100000'
  ] + SMALL
  with open(log_path, 'w') as log:
    launcher = start_process(command, stdout=log, stderr=subprocess.STDOUT)
  wait_for(lambda: checkpoint_step(tmp_path / 'train') >= until_step,
           'checkpoint at step %d' % until_step, [launcher])
  return launcher


@pytest.mark.large
def test_launcher_ctrl_c_stops_everything_and_keeps_a_checkpoint(data_dir, tmp_path):
  log_path = str(tmp_path / 'log')
  launcher = _start_endless_job(data_dir, tmp_path, log_path, 200)
  launcher.send_signal(signal.SIGINT)
  assert launcher.wait(timeout=60) == 130
  log = open(log_path).read()
  assert '[launcher] interrupted: stopping all processes' in log
  # The chief stopped at a step boundary and saved it, the ps still up.
  assert 'Stopped by SIGTERM' in log
  step = int(
      tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / 'train')), 'global_step'))
  assert step >= 200
  leftover = subprocess.run(['pgrep', '-f', str(tmp_path / 'train')], capture_output=True)
  assert leftover.stdout == b'', 'processes left running: %r' % leftover.stdout


@pytest.mark.large
def test_launcher_started_with_sigint_ignored_says_so(tmp_path):
  """bash cannot trap a signal ignored at its start (a background job's
  SIGINT): the launcher must say that Ctrl-C will not reach it."""
  script = os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh')
  ignoring = ("import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "sys.exit(subprocess.run(['bash', sys.argv[1], '--num_ps', 'x']).returncode)")
  result = run_python(['-c', ignoring, script])
  assert result.returncode == 2  # The bad --num_ps, after the warning.
  assert 'started with SIGINT ignored' in result.stderr
  assert 'kill -TERM' in result.stderr
  default = run_process(['bash', script, '--num_ps', 'x'])
  assert default.returncode == 2 and 'SIGINT ignored' not in default.stderr


@pytest.mark.large
def test_launcher_keeps_the_job_off_the_network(data_dir, tmp_path):
  """TensorFlow's servers listen on every interface: the launcher runs them in
  a network namespace of their own, so from outside nothing listens."""
  log_path = tmp_path / 'log'
  launcher = _start_endless_job(data_dir, tmp_path, log_path, 40)
  log = log_path.read_text()
  assert 'network namespace of its own' in log
  ports = re.findall(r'127\.0\.0\.1:(\d+)', log.split('[launcher] ps:')[1].splitlines()[0])
  assert len(ports) == 3
  listening = run_process(['ss', '-ltnH']).stdout
  listening_ports = set(re.findall(r':(\d+)\s', listening))
  assert not listening_ports & set(ports), (ports, listening)
  launcher.send_signal(signal.SIGTERM)
  assert launcher.wait(timeout=60) == 143


@pytest.mark.large
def test_launcher_without_isolation_says_the_ports_are_exposed(data_dir, tmp_path):
  result = run_process([
      'bash',
      os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'), '--no_isolation', '--num_ps', '1',
      '--num_workers', '1', '--', '--data_dir', data_dir, '--train_dir',
      str(tmp_path / 'train'), '--max_steps', '10'
  ] + SMALL)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  assert "--no_isolation: the job's ports are reachable" in result.stderr
  assert 'network namespace of its own' not in result.stdout


@pytest.mark.large
def test_two_parameter_servers_share_the_variables_and_give_the_same_result(data_dir, tmp_path):
  results = {}
  for num_ps in (1, 2):
    command = [
        'bash',
        os.path.join(REPO_ROOT, 'scripts', 'run_local_cluster.sh'), '--num_ps',
        str(num_ps), '--num_workers', '1', '--', '--data_dir', data_dir, '--train_dir',
        str(tmp_path / ('ps%d' % num_ps)), '--max_steps', '60'
    ] + SMALL
    result = run_process(command)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    placement = re.search(r'Variables per parameter server: (.*)\.', log).group(1)
    counts = dict(re.findall(r'/job:ps/task:(\d+): (\d+)', placement))
    assert sorted(counts) == [str(i) for i in range(num_ps)], placement
    assert all(int(count) > 0 for count in counts.values()), placement
    # Balanced by bytes: round robin left one ps 99.8% of them.
    megabytes = [float(mb) for mb in re.findall(r'\(([\d.]+) MB\)', placement)]
    assert len(megabytes) == num_ps, placement
    assert min(megabytes) >= 0.6 * sum(megabytes) / num_ps, placement
    for i in range(num_ps):
      assert '[launcher] ps%d exited with status 0' % i in log
    with open(tmp_path / ('ps%d' % num_ps) / 'metrics.json') as f:
      results[num_ps] = json.load(f)
  # One worker: the same computation, only the variables' homes differ.
  assert results[2]['step'] == results[1]['step'] == 60
  assert results[2]['test']['neg_elbo'] == pytest.approx(results[1]['test']['neg_elbo'], abs=1e-3)


@pytest.mark.parametrize('staleness', [1, 2])
def test_stale_gradient_optimizer_applies_the_gradient_of_steps_before(staleness):
  # loss = |w - x|^2 / 2: the gradient at step t is w_t - x_t, so each update
  # shows which step's weights and batch it was computed from.
  targets = [[3.0, -1.0], [0.5, 2.0], [-2.0, 4.0], [1.0, 1.0], [7.0, -3.0]]
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [2])
    w = tf.compat.v1.get_variable('w', initializer=[1.0, 2.0])
    optimizer = cluster.StaleGradientOptimizer(
        tf.compat.v1.train.GradientDescentOptimizer(0.5), staleness)
    train_op = optimizer.minimize(tf.reduce_sum(tf.square(w - x)) / 2)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      trained = []
      for target in targets:
        session.run(train_op, {x: target})
        trained.append(session.run(w))
  expected, weights, gradients = [], [1.0, 2.0], []
  for target in targets:
    gradients.append([wi - xi for wi, xi in zip(weights, target)])
    applied = (gradients[-1 - staleness] if len(gradients) > staleness else [0.0, 0.0])
    weights = [wi - 0.5 * gi for wi, gi in zip(weights, applied)]
    expected.append(weights)
  assert trained[staleness - 1].tolist() == [1.0, 2.0]  # nothing applied yet
  for got, want in zip(trained, expected):
    assert got.tolist() == pytest.approx(want, abs=1e-6)


@pytest.mark.large
def test_simulated_staleness_is_refused_in_a_cluster(tmp_path):
  result = run_python([
      'train.py', '--train_dir',
      str(tmp_path / 'run'), '--simulated_staleness', '1', '--job_name', 'worker', '--ps_hosts',
      PS[0], '--worker_hosts', WORKERS[0]
  ])
  assert result.returncode == 1
  assert '--simulated_staleness models a cluster in one process' in result.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.large
@pytest.mark.parametrize('architecture', ['iwae_mlp', 'keras_cvae'])
def test_every_architecture_trains_on_a_synchronous_cluster(data_dir, tmp_path, architecture):
  """1 parameter server, 2 synchronous workers: the network described once
  is placed on the servers and trained like the original one."""
  result = _launch(data_dir, tmp_path / 'train', [
      '--architecture', architecture, '--latent_dim', '2', '--keep_prob', '1', '--max_steps', '20'
  ])
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-5000:]
  with open(tmp_path / 'train' / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['config']['architecture'] == architecture and metrics['step'] >= 20
  assert metrics['config']['sync_replicas'] is True
  assert metrics['test']['neg_elbo'] < 1e4  # A finite figure (JSON has no NaN here).
