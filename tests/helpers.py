"""What the tests share: real data written to temp dirs, real processes started
and cleaned up, the original formulas in NumPy.

Imported by the tests (`from helpers import ...`); conftest.py holds only
fixtures and hooks. A test that starts a process or a server must be marked
`@pytest.mark.large` (the quick tier, `pytest -m "not large"`, leaves those
out): `start_process` and `serve_http` refuse to run in an unmarked test.
"""

import gzip
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import cluster
from mnist_vae import model
from mnist_vae.data_prep import idx

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.environ.get('MNIST_DIR', os.path.join(REPO_ROOT, os.pardir, 'shared', 'mnist'))
# Debian's dataset-fashion-mnist package puts the four IDX files here.
FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
# The original network at its original sizes.
ORIGINAL_NETWORK = architectures.network('mlp', 500, 20)


def write_idx_dir(directory, train_images, train_labels, test_images, test_labels, compress=True):
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


class _Tier(object):
  """Whether the running test may start processes and servers (conftest sets
  it from the test's `large` mark before each test)."""
  large = True


def set_large_test(large):
  _Tier.large = large


def _check_large(what):
  if not _Tier.large:
    raise AssertionError('This test starts %s but is not marked @pytest.mark.large: mark it, so '
                         'that the quick tier (pytest -m "not large") leaves it out.' % what)


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT, PYTHON=sys.executable)


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
  _check_large('a process (%s)' % ' '.join(map(str, command)))
  process = subprocess.Popen(
      command,
      cwd=cwd,
      env=env or _env(),
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


def kill_started_processes():
  """Kills every process start_process started, with its group (conftest
  calls it after each test, pass or fail)."""
  while _STARTED:
    _kill_group(_STARTED.pop())


def serve_http(handler):
  """Starts a threaded HTTP server on 127.0.0.1 with `handler`; returns it
  (the caller shuts it down)."""
  _check_large('an HTTP server')
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def run_process(command, timeout=300, cwd=REPO_ROOT, env=None):
  """Runs `command` to its end; returns the CompletedProcess. A process still
  running after `timeout` seconds is killed and the test fails."""
  process = start_process(
      command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    _kill_group(process)
    stdout, stderr = process.communicate()
    raise AssertionError('%s still running after %d s; killed. Its output:\n%s' %
                         (' '.join(command), timeout, (stdout + stderr)[-5000:])) from None
  return subprocess.CompletedProcess(command, process.returncode, stdout,
                                     without_xla_cache_lines(stderr))


# What TensorFlow logs on a hit of the persistent XLA compilation cache that
# only the tests turn on (conftest.py): it tries the entry as text before
# binary ("Error parsing text-format tensorflow.XlaSerializedCacheEntry"),
# and on an AVX-512 host names tuning features (+prefer-no-gather) as a
# machine mismatch. A user's process never prints these; the tests that
# count a process's error lines must not see them either.
_XLA_CACHE_LINE = re.compile(r'\] (Error parsing text-format tensorflow\.XlaSerializedCacheEntry|'
                             r'Loading XLA:CPU AOT result\.)')


def without_xla_cache_lines(text):
  """text without the lines the tests' XLA compilation cache adds."""
  return ''.join(
      line for line in text.splitlines(keepends=True) if not _XLA_CACHE_LINE.search(line))


def run_python(args, timeout=300, cwd=REPO_ROOT):
  """Runs `python ARGS` as a real process; returns the CompletedProcess."""
  return run_process([sys.executable] + list(args), timeout=timeout, cwd=cwd)


def start_python(args, log_path, cwd=REPO_ROOT):
  """Starts `python ARGS` with stderr+stdout to log_path; returns the Popen."""
  with open(log_path, 'w') as log:
    return start_process(
        [sys.executable] + list(args), cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, what, processes=(), timeout=120):
  """Waits until condition() is true; fails if a process in `processes`
  ends first, or after `timeout` seconds."""
  deadline = time.time() + timeout
  while not condition():
    for process in processes:
      if process.poll() is not None:
        raise AssertionError('%s ended (status %s) before %s' %
                             (' '.join(process.args), process.returncode, what))
    if time.time() > deadline:
      raise AssertionError('no %s within %d s' % (what, timeout))
    time.sleep(0.1)


free_ports = cluster.free_local_ports


def checkpoint_step(train_dir):
  """The global step of the newest checkpoint in train_dir (-1: none yet)."""
  import tensorflow as tf
  try:
    checkpoint = tf.train.latest_checkpoint(str(train_dir))
    return (int(tf.train.load_variable(checkpoint, 'global_step')) if checkpoint else -1)
  except (tf.errors.OpError, ValueError):
    return -1  # Being written.


def small_mnist_dir(mnist_dir, directory, num_train=2000, num_test=200):
  """Writes IDX files holding the first examples of the real MNIST files."""
  train_images, train_labels = idx.read_split(
      idx.find_idx_file(mnist_dir, idx.TRAIN_IMAGES),
      idx.find_idx_file(mnist_dir, idx.TRAIN_LABELS))
  test_images, test_labels = idx.read_split(
      idx.find_idx_file(mnist_dir, idx.TEST_IMAGES), idx.find_idx_file(mnist_dir, idx.TEST_LABELS))
  return write_idx_dir(directory, train_images[:num_train], train_labels[:num_train],
                       test_images[:num_test], test_labels[:num_test])


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
      log_q = np.sum(
          -0.5 * ((z - z_mean) / z_stddev)**2 - np.log(z_stddev) - 0.5 * np.log(2 * np.pi), axis=1)
      log_aggregate = np.log(np.mean(np.exp(log_q - log_q.max()))) + log_q.max()
      terms.append(log_q[i] - log_aggregate)
  return np.mean(terms)


def run_session(fetches):
  """Runs `fetches` in a new session of the default graph, variables initialised."""
  with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    return session.run(fetches)


def original_log_likelihood(images, logits, dtype):
  """The reference script's formula, evaluated in numpy at `dtype`."""
  with np.errstate(all='ignore'):
    x = images.astype(dtype)
    y = (1 / (1 + np.exp(-logits.astype(dtype)))).astype(dtype)
    y = np.clip(y, dtype(1e-8), dtype(1) - dtype(1e-8))
    eps = dtype(1e-8)
    return np.sum(x * np.log(eps + y) + (1 - x) * np.log(eps + 1 - y), axis=-1)


def original_kl(mean, stddev):
  mean, stddev = mean.astype(np.float64), stddev.astype(np.float64)
  return 0.5 * np.sum(stddev**2 + mean**2 - np.log(1e-8 + stddev**2) - 1, axis=1)


def run_in_new_graph(function, *arrays):
  """function(*arrays as float32 constants), built and run in a graph of its own."""
  with tf.Graph().as_default():
    return run_session(function(*[tf.constant(a, tf.float32) for a in arrays]))


def graph_log_likelihood(images, logits):
  """The original network's log p(x | z) as model.py builds it (its clipped
  likelihood, from separate ops)."""
  return model.bernoulli_log_likelihood(images, logits, ORIGINAL_NETWORK)
