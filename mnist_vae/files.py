"""Files that appear only when complete: written under a temporary name
(`<path>.tmp`), then renamed, through tf.io.gfile (so on any filesystem it
knows). A reader never sees half a file under its real name; a write cut
short leaves only the `.tmp`."""

import contextlib
import errno
import fcntl
import json
import os
import re

import tensorflow as tf

NO_SPACE = 'No space left on device'


class OutputError(ValueError):
  """An output cannot be written where a flag says; the message names the
  flag, the path and why."""


def make_dirs(directory, flag):
  """Creates `directory` (and its parents) for the output of `flag`, or raises
  OutputError naming them."""
  try:
    tf.io.gfile.makedirs(directory)
  except tf.errors.OpError as e:
    raise OutputError('Cannot create %s %s: %s' % (flag, directory, e.message)) from e


def make_parent_dirs(path, flag):
  """make_dirs for the directory of the file `path`."""
  if os.path.dirname(path):
    make_dirs(os.path.dirname(path), flag)


def disk_full_path(error):
  """The file a write was making when `error` (any exception) says the
  device is full, or None for every other error. TensorFlow's message names
  the file it was writing; Python's OSError carries it as filename."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return error.filename or '?'
  message = getattr(error, 'message', None) or str(error)
  if NO_SPACE not in message:
    return None
  match = re.search(r'(\S+?)[;:,]? *' + NO_SPACE, message)
  return match.group(1) if match else '?'


@contextlib.contextmanager
def partial_path(path):
  """Yields the temporary name to write `path` under; renames it on success,
  deletes it when the write fails (a full disk keeps no half file)."""
  partial = path + '.tmp'
  try:
    yield partial
    tf.io.gfile.rename(partial, path, overwrite=True)
  except BaseException:
    try:
      tf.io.gfile.remove(partial)
    except tf.errors.OpError:
      pass  # Never made.
    raise


def write(path, content):
  """Writes `content` (bytes or str) to `path` atomically."""
  with partial_path(path) as partial:
    with tf.io.gfile.GFile(partial, 'wb' if isinstance(content, bytes) else 'w') as f:
      f.write(content)


def read_json(path):
  """The parsed JSON file at `path` (tf.io.gfile's errors if it is missing)."""
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def write_json(path, content):
  """Writes `content` as indented JSON to `path` atomically."""
  write(path, json.dumps(content, indent=2, sort_keys=True))


def is_local(path):
  """True for paths that an OS file lock covers (no scheme, or file://)."""
  return '://' not in path or path.startswith('file://')


@contextlib.contextmanager
def exclusive_lock(directory):
  """Holds an OS file lock on `directory` itself (created if missing; no
  file is added to it) for the block, waiting for any other process that
  holds it. A lock is an open file descriptor, so it goes through os, not
  tf.io.gfile; on a remote path (gs://, where no lock exists) the block runs
  unlocked."""
  if not is_local(directory):
    yield
    return
  tf.io.gfile.makedirs(directory)
  fd = os.open(directory.replace('file://', '', 1), os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # Releases the lock.
