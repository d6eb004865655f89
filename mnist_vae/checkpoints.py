"""What a checkpoint of this project holds, read without building a graph."""

import collections
import os
import re
import time

from absl import logging
from google.protobuf import text_format
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import model


class CheckpointError(ValueError):
  """A checkpoint is missing, unreadable, or of another model; the message
  names it and says what is wrong."""


def variable_shapes(checkpoint):
  """{variable name: shape} of `checkpoint`; CheckpointError when unreadable."""
  try:
    return dict(tf.train.list_variables(checkpoint))
  except (tf.errors.OpError, ValueError) as e:
    message = getattr(e, 'message', str(e)).splitlines()[0]
    raise CheckpointError('Cannot read checkpoint %s: %s' % (checkpoint, message)) from e


def network(checkpoint):
  """The architectures.Network of the VAE saved in `checkpoint`: the one whose
  variable names and shapes it holds."""
  try:
    return architectures.from_variables(variable_shapes(checkpoint), checkpoint)
  except architectures.ArchitectureError as e:
    raise CheckpointError(str(e)) from e


# The saver's file-name prefix in a run directory: model.ckpt-<global step>.
BASENAME = 'model.ckpt'
_STEP_IN_NAME = re.compile(r'-(\d+)$')

# Run directories whose `checkpoint` file was found naming another place
# (a moved or copied run), so that each is reported once per process.
_RELOCATED_REPORTED = set()

Found = collections.namedtuple(
    'Found',
    [
        'checkpoint',  # path of the newest readable checkpoint, or None.
        'step',  # its global step (0 without one).
        'skipped',  # [(path, why)] of newer checkpoints that do not read.
    ])


def in_directory(train_dir):
  """Paths of the checkpoints in train_dir, oldest (lowest step) first.

  Found by their index files, not by the `checkpoint` file: that one names
  absolute paths when the run was written with an absolute --train_dir (or
  before the saver wrote relative ones), which no longer exist once the
  directory is moved or copied; and a checkpoint whose save was cut short
  before the `checkpoint` file was updated is complete all the same.
  """
  _report_relocation(train_dir)
  try:
    index_files = tf.io.gfile.glob(os.path.join(train_dir, '*.index'))
  except tf.errors.NotFoundError:
    return []
  prefixes = [index_file[:-len('.index')] for index_file in index_files]
  return sorted(prefixes, key=lambda prefix: (_step_in_name(prefix), prefix))


def _report_relocation(train_dir):
  """Logs once when train_dir's `checkpoint` file names another directory."""
  if train_dir in _RELOCATED_REPORTED:
    return
  try:
    state = tf.train.get_checkpoint_state(train_dir)
  except (tf.errors.OpError, ValueError, text_format.ParseError):
    state = None  # Unparsable: in_directory does not need it.
  if state is None or not state.model_checkpoint_path:
    return
  named_dir = os.path.dirname(state.model_checkpoint_path)
  if named_dir and os.path.normpath(named_dir) != os.path.normpath(train_dir):
    _RELOCATED_REPORTED.add(train_dir)
    logging.info(
        '%s names checkpoints in %s (the run was moved or copied): '
        'using the checkpoints found in %s.', os.path.join(train_dir, 'checkpoint'), named_dir,
        train_dir)


def unreadable_reason(checkpoint):
  """Why `checkpoint` does not read completely (every variable read, not only
  its index: a truncated or corrupted data file shows only then), or None when
  it does."""
  try:
    reader = tf.train.load_checkpoint(checkpoint)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  # The reader raises IndexError for a short data file, OpError for a bad
  # checksum, ValueError for a missing or unparsable index.
  except (tf.errors.OpError, ValueError, IndexError) as e:
    message = getattr(e, 'message', None) or str(e) or type(e).__name__
    return message.strip().splitlines()[0]
  return None


def newest_readable(train_dir):
  """The newest checkpoint in train_dir that reads completely.

  Returns:
    Found; Found(None, 0, []) when train_dir holds no checkpoint.

  Raises:
    CheckpointError: train_dir holds checkpoints and none of them reads; the
      message lists each with what is wrong.
  """
  skipped = []
  for checkpoint in reversed(in_directory(train_dir)):
    reason = unreadable_reason(checkpoint)
    if reason is None:
      return Found(checkpoint, step_of(checkpoint), skipped)
    skipped.append((checkpoint, reason))
  if skipped:
    raise CheckpointError('No readable checkpoint in %s; tried %s' %
                          (train_dir, '; '.join('%s (%s)' % pair for pair in skipped)))
  return Found(None, 0, [])


def log_skipped(skipped, what_happens='its files are left as they are'):
  """Warns about each damaged checkpoint that newest_readable passed over."""
  for checkpoint, reason in skipped:
    logging.warning('Skipped checkpoint %s, which does not read completely '
                    '(%s); %s.', checkpoint, reason, what_happens)


def readable(train_dir=None, checkpoint=None):
  """The checkpoint a reader (evaluate, export, generate, report) uses: the
  given `checkpoint`, which must read completely, or the newest readable one
  in train_dir (damaged newer ones are skipped with a warning).

  Raises:
    CheckpointError: the given checkpoint does not read, or train_dir holds
      no readable checkpoint (the message says which were tried).
  """
  if checkpoint:
    reason = unreadable_reason(checkpoint)
    if reason:
      raise CheckpointError('Cannot read checkpoint %s: %s' % (checkpoint, reason))
    return checkpoint
  found = newest_readable(train_dir)
  if found.checkpoint is None:
    raise CheckpointError('No checkpoint in %s (no %s-N.index file)' %
                          (train_dir, os.path.join(train_dir, BASENAME)))
  log_skipped(found.skipped)
  return found.checkpoint


def each_new(train_dir, timeout_sec, poll_sec=1.0):
  """Yields each new checkpoint of train_dir that reads completely, as
  training writes them (when several appeared since the last look, the
  newest), until timeout_sec pass without one. Takes no lock: a reader beside
  the writer."""
  last_step, warned = -1, set()
  deadline = time.time() + timeout_sec
  while time.time() < deadline:
    newer = [
        checkpoint for checkpoint in in_directory(train_dir)
        if _step_in_name(checkpoint) > last_step
    ]
    for checkpoint in reversed(newer):
      reason = unreadable_reason(checkpoint)
      if reason is None:
        last_step = _step_in_name(checkpoint)
        yield checkpoint
        deadline = time.time() + timeout_sec
        break
      if checkpoint not in warned:
        warned.add(checkpoint)
        log_skipped([(checkpoint, reason)])
    else:
      time.sleep(poll_sec)


def _step_in_name(checkpoint):
  """N of a checkpoint named PREFIX-N (as the saver names them); -1 for a
  name without a step, taken as older than any other."""
  match = _STEP_IN_NAME.search(os.path.basename(checkpoint))
  return int(match.group(1)) if match else -1


def step_of(checkpoint):
  """The global step saved in `checkpoint` (for a checkpoint without one, not
  of this project, the step in its name, or 0)."""
  try:
    return int(tf.train.load_variable(checkpoint, 'global_step'))
  except tf.errors.NotFoundError:
    return max(_step_in_name(checkpoint), 0)


def restore(session, checkpoint, saver=None):
  """Restores `checkpoint` into the model variables of session's graph (or
  with `saver`, built in that graph over other variables).

  Raises:
    CheckpointError: it cannot be read (missing, deleted, damaged).
  """
  with session.graph.as_default():  # Restoring builds ops in the graph.
    saver = saver or tf.train.Saver(model.model_variables())
    try:
      saver.restore(session, checkpoint)
    except (tf.errors.OpError, ValueError) as e:
      message = getattr(e, 'message', str(e)).splitlines()[0]
      raise CheckpointError('Cannot restore checkpoint %s: %s' % (checkpoint, message)) from e


def check_matches(checkpoint, variables, optimizer_name, requested_network):
  """Raises CheckpointError unless `checkpoint` restores into `variables`,
  naming every setting in which the run differs from the checkpoint at once,
  with both values.

  Args:
    checkpoint: path of the checkpoint to resume.
    variables: the graph's global variables (model, global step and the
      optimizer's slots).
    optimizer_name: the --optimizer the graph was built with.
    requested_network: the architectures.Network the flags ask for.
  """
  saved = variable_shapes(checkpoint)
  differences = []
  trained_with = trained_optimizer(saved)
  if trained_with != optimizer_name:
    differences.append('--optimizer=%s (the checkpoint\'s: %s)' % (optimizer_name, trained_with))
  try:
    saved_network = architectures.from_variables(saved, checkpoint)
  except architectures.ArchitectureError:
    saved_network = None
  if saved_network is not None:
    for field in architectures.RECORD_FIELDS:
      if getattr(saved_network, field) != getattr(requested_network, field):
        differences.append(
            '--%s=%s (the checkpoint\'s: %s)' %
            (field, getattr(requested_network, field), getattr(saved_network, field)))
  if differences:
    raise CheckpointError('Checkpoint %s was trained with other settings: %s. Resume with the '
                          'checkpoint\'s settings, or use another --train_dir.' %
                          (checkpoint, '; '.join(differences)))
  for variable in variables:
    name = variable.op.name
    if name not in saved:
      raise CheckpointError('Checkpoint %s has no variable %s: it was not '
                            'written by this model. Use another --train_dir.' % (checkpoint, name))
    if saved[name] != variable.shape.as_list():
      raise CheckpointError('Checkpoint %s holds %s with shape %s, where this run '
                            'needs %s. Use another --train_dir.' %
                            (checkpoint, name, saved[name], variable.shape.as_list()))


# Variable-name endings of each optimizer's state (slots and accumulators).
_OPTIMIZER_STATE = {
    'adam': ('/Adam', '/Adam_1', 'beta1_power', 'beta2_power'),
    'adagrad': ('/Adagrad',),
    'rmsprop_keras': ('/RMSPropKeras', '/RMSPropKeras_1'),
    'rmsprop': ('/RMSProp', '/RMSProp_1'),
    'momentum': ('/Momentum',),
}


def trained_optimizer(saved_shapes):
  """The name (training.OPTIMIZERS) of the optimizer whose state a checkpoint's
  variables hold; 'sgd' when they hold none."""
  for name, endings in _OPTIMIZER_STATE.items():
    if any(variable.endswith(ending) for variable in saved_shapes for ending in endings):
      return name
  return 'sgd'
