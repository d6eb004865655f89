"""The run directory (--train_dir) as one writer keeps it: a lock held for the
writer's whole life, the leftovers of writes cut short cleared, damaged
checkpoints moved out of the way of new saves.

What a lock guarantees depends on the kind of path:

  local and NFS paths   an OS file lock (flock) on TRAIN_DIR/writer.lock. The
                        kernel (or the NFS server) drops it when its holder
                        ends, however it ends, kill -9 included: a crash never
                        leaves the directory locked.
  gs://, s3://, hdfs:// and other tf.io.gfile paths
                        no lock exists there, so a lease: TRAIN_DIR/
                        writer.lease names the holder and a heartbeat that
                        the holder refreshes every LEASE_STALE_SEC / 4. A
                        second writer is refused while the heartbeat is
                        younger than LEASE_STALE_SEC, and takes the lease
                        over (with a warning) once it is older: a holder
                        killed outright blocks its directory that long. Two
                        writers starting within the same moment may both
                        write the lease; the one that finds the other's name
                        in it at its next heartbeat stops.

Readers (evaluate.py, export.py, generate.py, the report) take no lock; they
learn how a run was trained from the files it writes (`trained_setting`).
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

from mnist_vae import checkpoints
from mnist_vae import files

LOCK_FILE = 'writer.lock'
LEASE_FILE = 'writer.lease'
LEASE_STALE_SEC = 300
# Where train.py moves a damaged checkpoint's files, whose names its own
# saves would otherwise reuse.
DAMAGED_SUBDIR = 'damaged'
# Names of files that a write cut short leaves behind: files.write's
# `<name>.tmp`, TensorFlow's `checkpoint.tmp<hex>` (atomic_write_string_to_file)
# and the saver's `<checkpoint>.data-....tempstate<n>`.
PARTIAL_FILE_PATTERNS = ('*.tmp', '*.tmp[0-9a-f]*', '*.tempstate*')


class RunDirBusyError(RuntimeError):
  """Another live process writes the run directory; the message names it."""


def _holder():
  return {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'since': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'),
      'token': uuid.uuid4().hex
  }


def _describe(holder):
  return 'pid %s on host %s (since %s)' % (holder.get('pid', '?'), holder.get(
      'host', '?'), holder.get('since', '?'))


def _busy_error(train_dir, holder, what):
  return RunDirBusyError('--train_dir %s is being written by another training process: %s, %s. '
                         'Wait for it to end or stop it (its checkpoints are resumed from when '
                         'you re-run), or pass another --train_dir.' %
                         (train_dir, _describe(holder), what))


class WriterLock(object):
  """Held by the one process that writes a run directory; a context manager.

  Raises RunDirBusyError on entry when another process holds it.
  """

  def __init__(self, train_dir, lease_stale_sec=LEASE_STALE_SEC):
    self.train_dir = train_dir
    self._lease_stale_sec = lease_stale_sec
    self._holder = _holder()
    self._lock_fd = None
    self._heartbeat = None
    self._stop_heartbeat = threading.Event()
    self.lost_to = None  # The holder that took a lease from under us.

  def __enter__(self):
    if files.is_local(self.train_dir):
      self._lock()
    else:
      self._take_lease()
    return self

  def __exit__(self, *exc_info):
    if self._lock_fd is not None:
      os.close(self._lock_fd)  # Closing drops the lock.
      self._lock_fd = None
    if self._heartbeat:
      self._stop_heartbeat.set()
      self._heartbeat.join()
      self._heartbeat = None
      if self.lost_to is None:
        try:
          tf.io.gfile.remove(self._lease_path)
        except tf.errors.OpError:
          pass  # Gone or unreachable: it goes stale by itself.

  def check(self):
    """Raises RunDirBusyError once another writer has taken our lease."""
    if self.lost_to is not None:
      raise _busy_error(
          self.train_dir, self.lost_to, 'took over this run\'s lease (%s) while it trained; '
          'stopped without saving more' % self._lease_path)

  # An OS lock needs an OS file descriptor, which tf.io.gfile does not give:
  # local paths only, by files.is_local. Unbuffered, so that a full disk fails the
  # write itself, naming the file, and never a later close.
  def _lock(self):
    path = os.path.join(self.train_dir.replace('file://', '', 1), LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      content = os.read(fd, 4096)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      try:
        holder = json.loads(content or b'{}')
      except ValueError:
        holder = {}
      raise _busy_error(self.train_dir, holder, 'which holds the lock on %s' % path) from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(self._holder).encode(), 0)
    except OSError as e:
      os.close(fd)
      raise OSError(e.errno, e.strerror, path) from e  # Name the file.
    self._lock_fd = fd

  @property
  def _lease_path(self):
    return os.path.join(self.train_dir, LEASE_FILE)

  def _read_lease(self):
    try:
      return files.read_json(self._lease_path)
    except tf.errors.NotFoundError:
      return None
    except ValueError:
      return {}  # Cut short: as good as stale, its heartbeat is unknown.

  def _take_lease(self):
    lease = self._read_lease()
    if lease:
      age = time.time() - lease.get('heartbeat', 0)
      if age < self._lease_stale_sec:
        raise _busy_error(
            self.train_dir, lease, 'whose lease %s was renewed %.0f s ago (a lease is taken over '
            'after %d s without renewal)' % (self._lease_path, age, self._lease_stale_sec))
      logging.warning(
          'Taking over the lease %s of %s: its last heartbeat is '
          '%.0f s old (stale after %d s).', self._lease_path, _describe(lease), age,
          self._lease_stale_sec)
    self._renew()
    self._heartbeat = threading.Thread(
        target=self._keep_renewing, daemon=True, name='lease-heartbeat')
    self._heartbeat.start()

  def _renew(self):
    files.write_json(self._lease_path, dict(self._holder, heartbeat=time.time()))

  def _keep_renewing(self):
    while not self._stop_heartbeat.wait(self._lease_stale_sec / 4):
      try:
        lease = self._read_lease()
        if lease and lease.get('token') != self._holder['token']:
          self.lost_to = lease
          logging.error('%s now names %s: another writer took this run '
                        'directory over.', self._lease_path, _describe(lease))
          return
        self._renew()
      except tf.errors.OpError as e:
        logging.warning('Could not renew the lease %s: %s', self._lease_path, e.message)


def remove_partial_files(train_dir):
  """Deletes what writes cut short (a kill, a full disk) left in train_dir
  and its images/: never a complete file, whose names these patterns do not
  match. Only the lock holder calls this."""
  removed = []
  for directory in (train_dir, os.path.join(train_dir, 'images')):
    for pattern in PARTIAL_FILE_PATTERNS:
      try:
        paths = tf.io.gfile.glob(os.path.join(directory, pattern))
      except tf.errors.NotFoundError:
        continue
      for path in paths:
        try:
          tf.io.gfile.remove(path)
          removed.append(path)
        except tf.errors.OpError:
          pass  # Already gone.
  if removed:
    logging.info('Removed %d partial file(s) of writes cut short: %s', len(removed),
                 ', '.join(sorted(removed)))
  return removed


def set_damaged_aside(train_dir, skipped):
  """Moves the files of each damaged checkpoint (checkpoints.newest_readable's
  `skipped`) into TRAIN_DIR/damaged/, untouched, so that the resumed run's
  saves of the same steps do not overwrite them; warns about each."""
  target_dir = os.path.join(train_dir, DAMAGED_SUBDIR)
  if skipped:
    tf.io.gfile.makedirs(target_dir)
  for checkpoint, reason in skipped:
    for path in tf.io.gfile.glob(checkpoint + '.*'):
      target = os.path.join(target_dir, os.path.basename(path))
      if tf.io.gfile.exists(target):  # Damaged twice at one step.
        target += '.%d' % int(time.time())
      tf.io.gfile.rename(path, target)
    checkpoints.log_skipped([(checkpoint, reason)],
                            'resuming from an older one. Its files are kept, unchanged, in %s'
                            % target_dir)


class NoLock(contextlib.nullcontext):
  """What a process that does not write the run directory (a cluster's
  non-chief worker) holds instead of a WriterLock."""

  def check(self):
    pass


# Files train.py writes in a run directory that record its configuration:
# config.json from the start of training, metrics.json at its end (older runs
# have only the latter).
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.json'
CONFIG_FILES = (CONFIG_FILE, METRICS_FILE)
DEFAULT_DATA_DIR = 'data/mnist'


class ConfigError(ValueError):
  """A run's configuration file does not parse."""


def trained_setting(train_dir, flag, default):
  """The value of train.py's --`flag` the run in train_dir was trained with
  (as its config.json or metrics.json records it), or `default`: evaluating
  a binarized model on grey levels, or a model of Fashion-MNIST on MNIST,
  gives numbers that look plausible and mean nothing.

  Raises:
    ConfigError: the file is not valid JSON (the message names the flag to
      pass instead).
  """
  for name in CONFIG_FILES:
    path = os.path.join(train_dir, name)
    try:
      with tf.io.gfile.GFile(path) as f:
        content = json.loads(f.read())
    except tf.errors.NotFoundError:
      continue
    except ValueError as e:
      raise ConfigError('%s is not valid JSON (%s): pass --%s' % (path, e, flag)) from e
    value = content.get('config', content).get(flag) or default
    logging.info('Using --%s=%s, as %s says.', flag, value, path)
    return value
  logging.info('No %s in %s: using --%s=%s.', ' or '.join(CONFIG_FILES), train_dir, flag, default)
  return default
