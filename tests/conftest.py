"""Fixtures and hooks only; what the tests share lives in helpers.py."""

import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# The suite compiles the same XLA computations (the training step of the
# same small networks, the likelihood) in hundreds of processes: TensorFlow's
# persistent compilation cache, one directory for the session, shared by the
# xdist workers and every process a test starts (they inherit the
# environment), saves each process but the first its compilation. An entry is
# used only for the very same computation (TensorFlow compares the whole
# HLO), so the numbers are those of a fresh compilation. Set before
# TensorFlow is imported, which reads TF_XLA_FLAGS once.
_XLA_CACHE_FLAG = '--tf_xla_persistent_cache_directory'
_xla_cache_made_here = None
if _XLA_CACHE_FLAG not in os.environ.get('TF_XLA_FLAGS', ''):
  _xla_cache_made_here = tempfile.mkdtemp(prefix='mnist_vae_tests_xla_cache_')
  os.environ['TF_XLA_FLAGS'] = (
      '%s %s=%s' %
      (os.environ.get('TF_XLA_FLAGS', ''), _XLA_CACHE_FLAG, _xla_cache_made_here)).strip()

import numpy as np
import pytest

import helpers
from mnist_vae.data_prep import idx


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'large: starts processes, a cluster or a server; left out of the '
      'quick tier (pytest -m "not large")')


# The files whose tests take longest (wall seconds of the whole file, from a
# profile of the suite), handed to the xdist workers first: with
# `--dist loadfile` a long file started last keeps one worker busy after the
# others are done. Files not named here follow in their collected order.
_LONGEST_FILES_FIRST = ('test_docs.py', 'test_bench.py', 'test_flag_bounds.py',
                        'test_architectures.py', 'test_kl_study.py', 'test_reproduce.py',
                        'test_launchers.py', 'test_train.py', 'test_cluster.py', 'test_export.py',
                        'test_reliability.py', 'test_evaluate.py', 'test_run_dir.py',
                        'test_fast_step.py')


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
  """Orders the files longest first; the order within a file (shuffled by
  pytest-randomly, when installed) stays as it is (the sort is stable)."""
  rank = {name: index for index, name in enumerate(_LONGEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
  if _xla_cache_made_here:
    shutil.rmtree(_xla_cache_made_here, ignore_errors=True)


def pytest_runtest_setup(item):
  """Lets only tests marked `large` start processes and servers (their
  fixtures included, which are set up after this)."""
  helpers.set_large_test(item.get_closest_marker('large') is not None)


@pytest.fixture(autouse=True)
def kill_started_processes():
  """Kills every process a test started when it ends."""
  yield
  helpers.kill_started_processes()


@pytest.fixture
def small_idx_dir(tmp_path):
  """IDX files of 60 training and 20 test images, each carrying its index."""
  return helpers.write_idx_dir(tmp_path / 'idx', helpers.indexed_images(60),
                               np.arange(60, dtype=np.uint8) % 10,
                               helpers.indexed_images(20, offset=1000),
                               np.arange(20, dtype=np.uint8) % 10)


@pytest.fixture(scope='session')
def mnist_dir():
  """The real MNIST files; CI must have them, a developer may not."""
  if not os.path.exists(os.path.join(helpers.SHARED_MNIST, idx.TRAIN_IMAGES + '.gz')):
    if os.environ.get('CI'):
      pytest.fail('Real MNIST files not found in %s (CI must have them)' % helpers.SHARED_MNIST)
    pytest.skip('Real MNIST files not found in %s (set MNIST_DIR)' % helpers.SHARED_MNIST)
  return helpers.SHARED_MNIST


@pytest.fixture(scope='session')
def fashion_mnist_dir():
  """Debian's Fashion-MNIST files; CI installs them (.ci/run)."""
  if not os.path.exists(os.path.join(helpers.FASHION_MNIST, 't10k-images-idx3-ubyte.gz')):
    if os.environ.get('CI'):
      pytest.fail('%s missing: .ci/run installs dataset-fashion-mnist' % helpers.FASHION_MNIST)
    pytest.skip('Debian package dataset-fashion-mnist not installed')
  return helpers.FASHION_MNIST


@pytest.fixture(scope='session')
def small_mnist_records(mnist_dir, tmp_path_factory):
  """TFRecords of the first 1,800 / 200 / 200 real MNIST images."""
  from mnist_vae.data_prep import convert_to_records
  root = tmp_path_factory.mktemp('small_mnist')
  records = str(root / 'records')
  convert_to_records.convert(
      helpers.small_mnist_dir(mnist_dir, root / 'idx'), records, validation_size=200)
  return records


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
        'CI: %d tests that need the real MNIST files were skipped: %s' %
        (len(_skipped_needing_real_data), ', '.join(_skipped_needing_real_data)))
    session.exitstatus = 1
