"""Files that appear only when complete: written under a temporary name
(`<path>.tmp`), then renamed, through tf.io.gfile (so on any filesystem it
knows). A reader never sees half a file under its real name; a write cut
short leaves only the `.tmp`."""

import contextlib
import json

import tensorflow as tf


@contextlib.contextmanager
def partial_path(path):
  """Yields the temporary name to write `path` under; renames it on success."""
  partial = path + '.tmp'
  yield partial
  tf.io.gfile.rename(partial, path, overwrite=True)


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
