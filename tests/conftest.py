"""Shared fixtures: real files in temp dirs, the real MNIST files, real processes."""

import gzip
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import pytest

from mnist_vae import cluster
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
      pytest.fail('Real MNIST files not found in %s (CI must have them)'
                  % SHARED_MNIST)
    pytest.skip('Real MNIST files not found in %s (set MNIST_DIR)' % SHARED_MNIST)
  return SHARED_MNIST


_skipped_needing_real_data = []


def pytest_runtest_logreport(report):
  if report.skipped and 'mnist_dir' in getattr(report, 'fixturenames', ()):
    _skipped_needing_real_data.append(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  outcome.get_result().fixturenames = tuple(item.fixturenames)


def pytest_sessionfinish(session, exitstatus):
  """In CI (CI=true), a test that needs the real MNIST files must run."""
  if os.environ.get('CI') and _skipped_needing_real_data:
    session.config.pluginmanager.get_plugin('terminalreporter').write_line(
        'CI: %d tests that need the real MNIST files were skipped: %s'
        % (len(_skipped_needing_real_data), ', '.join(_skipped_needing_real_data)))
    session.exitstatus = 1


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT,
              PYTHON=sys.executable)


# Every process a test starts; each is killed, with its process group (a
# launcher's children too), when the test ends, pass or fail.
_STARTED = []


def _default_signal_dispositions():
  # A suite started from a background job inherits SIGINT ignored; a test
  # that sends SIGINT needs its child to have the default disposition.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(command, cwd=REPO_ROOT, env=None, **popen_args):
  """Starts `command` in a process group of its own; returns the Popen.
  env: the whole environment (default: this one, quiet TensorFlow, the
  repository on PYTHONPATH)."""
  process = subprocess.Popen(command, cwd=cwd, env=env or _env(),
                             start_new_session=True,
                             preexec_fn=_default_signal_dispositions,
                             **popen_args)
  _STARTED.append(process)
  return process


def _kill_group(process):
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  process.wait()


@pytest.fixture(autouse=True)
def kill_started_processes():
  yield
  while _STARTED:
    _kill_group(_STARTED.pop())


def run_process(command, timeout=300, cwd=REPO_ROOT, env=None):
  """Runs `command` to its end; returns the CompletedProcess. A process still
  running after `timeout` seconds is killed and the test fails."""
  process = start_process(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    _kill_group(process)
    stdout, stderr = process.communicate()
    raise AssertionError('%s still running after %d s; killed. Its output:\n%s'
                         % (' '.join(command), timeout, (stdout + stderr)[-5000:])
                         ) from None
  return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_python(args, timeout=300, cwd=REPO_ROOT):
  """Runs `python ARGS` as a real process; returns the CompletedProcess."""
  return run_process([sys.executable] + list(args), timeout=timeout, cwd=cwd)


def start_python(args, log_path, cwd=REPO_ROOT):
  """Starts `python ARGS` with stderr+stdout to log_path; returns the Popen."""
  with open(log_path, 'w') as log:
    return start_process([sys.executable] + list(args), cwd=cwd, stdout=log,
                         stderr=subprocess.STDOUT)


def wait_for(condition, what, processes=(), timeout=120):
  """Waits until condition() is true; fails if a process in `processes`
  ends first, or after `timeout` seconds."""
  deadline = time.time() + timeout
  while not condition():
    for process in processes:
      if process.poll() is not None:
        raise AssertionError('%s ended (status %s) before %s'
                             % (' '.join(process.args), process.returncode, what))
    if time.time() > deadline:
      raise AssertionError('no %s within %d s' % (what, timeout))
    time.sleep(0.1)


free_ports = cluster.free_local_ports


def checkpoint_step(train_dir):
  """The global step of the newest checkpoint in train_dir (-1: none yet)."""
  import tensorflow as tf
  try:
    checkpoint = tf.train.latest_checkpoint(str(train_dir))
    return (int(tf.train.load_variable(checkpoint, 'global_step'))
            if checkpoint else -1)
  except (tf.errors.OpError, ValueError):
    return -1  # Being written.


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


def direct_mutual_information(z_mean, z_stddev, draws, seed):
  """ELBO surgery's mutual information written out term by term in NumPy,
  with aggregate_posterior.decompose_kl's draws: mean over the draws z_i of
  log q(z_i | x_i) - log mean_j q(z_i | x_j)."""
  n, latent_dim = z_mean.shape
  noise = np.random.default_rng(seed).standard_normal((draws, n, latent_dim))
  terms = []
  for r in range(draws):
    for i in range(n):
      z = z_mean[i] + z_stddev[i] * noise[r, i]
      log_q = np.sum(-0.5 * ((z - z_mean) / z_stddev)**2 - np.log(z_stddev)
                     - 0.5 * np.log(2 * np.pi), axis=1)
      log_aggregate = np.log(np.mean(np.exp(log_q - log_q.max()))) + log_q.max()
      terms.append(log_q[i] - log_aggregate)
  return np.mean(terms)

