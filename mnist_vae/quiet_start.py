"""TensorFlow imported quickly and without its start-up notices, keeping its
warnings.

Importing TensorFlow 2.21 writes, before anything of the program's own,
`WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR` and informational lines (oneDNN is on, twice; which CPU
instructions the binary uses), whatever TF_CPP_MIN_LOG_LEVEL says: its C++
logger only reads that setting once initialised. The entry points call
`import_tensorflow()` first: unless the user set TF_CPP_MIN_LOG_LEVEL
(then everything is theirs to see), TensorFlow's C++ log is kept at warnings
(level 1), and during the import the process's stderr goes to a temporary
file, from which every line but the informational ones and that notice is
written back to stderr.

Quietly also means two notices of TensorFlow's Python log that a user can do
nothing about are dropped at their source, TensorFlow's logger: the
checkpoint hook's two "Calling checkpoint listeners" lines around each save
(its "Saving checkpoints for N" line stays), the deprecation of
`remove_checkpoint`, which TensorFlow's own Saver calls when it rotates old
checkpoints out, and those of the TF1 classes a cluster job is built of.

Quickly: `import tensorflow` also imports Keras 3 (for its optimizers'
registrations), and with them whatever optional packages Keras and TF Lite
find installed: JAX, matplotlib's pyplot and IPython, about 2 of its 6
seconds here when the bench and test extras are installed. None of this
project's programs needs them through TensorFlow, so they are hidden for
the time of the import and importable as usual afterwards (reporting/ood.py
draws with matplotlib, bench/jax_peer.py runs JAX).
"""

import logging
import os
import re
import sys
import tempfile

WARNINGS_AND_ABOVE = '1'
_INITIALIZE_LOG_NOTICE = 'All log messages before absl::InitializeLog()'
# An absl (or TensorFlow) C++ log line: severity letter, date, time.
_LOG_LINE = re.compile(r'^[IWEF]\d{4} ')


def is_start_up_notice(line, previous_was_notice):
  """True for the lines import_tensorflow() holds back: INFO lines, the
  continuation lines of one, and the InitializeLog notice."""
  if _INITIALIZE_LOG_NOTICE in line:
    return True
  if _LOG_LINE.match(line):
    return line.startswith('I')
  return previous_was_notice  # "To enable the following instructions: ..."


# What Keras and TF Lite import at TensorFlow's import only if installed.
_OPTIONAL_PACKAGES = ('jax', 'matplotlib', 'IPython')

# Messages of TensorFlow's Python logger dropped (see the module docstring).
_DROPPED_MESSAGES = (
    'Calling checkpoint listeners',
    'remove_checkpoint (from tensorflow.python.checkpoint.checkpoint_management) is '
    'deprecated',
    # A cluster's synchronous updates are TF1's SyncReplicasOptimizer and the
    # queue runner it builds, deprecated in favour of TF2's distribution
    # strategies, which the TF1 graphs of this project cannot use.
    'The `SyncReplicaOptimizer` class is deprecated',
    'QueueRunner.__init__ (from tensorflow.python.training.queue_runner_impl) is deprecated',
)


def _keeps(record):
  message = record.getMessage()
  return not any(dropped in message for dropped in _DROPPED_MESSAGES)


def import_tensorflow():
  """Imports TensorFlow (once) as the module docstring says."""
  if 'tensorflow' in sys.modules:
    return
  logging.getLogger('tensorflow').addFilter(_keeps)
  hidden = [name for name in _OPTIONAL_PACKAGES if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # `import name` raises ImportError.
  try:
    _import_quietly()
  finally:
    for name in hidden:
      if sys.modules.get(name, 0) is None:
        del sys.modules[name]


def _import_quietly():
  if 'TF_CPP_MIN_LOG_LEVEL' in os.environ:
    import tensorflow  # noqa: F401 (imported for its side effects, once)
    return
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = WARNINGS_AND_ABOVE
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  # A file descriptor level capture, before TensorFlow (and tf.io.gfile)
  # exists: its C++ code writes to descriptor 2, not to sys.stderr.
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401
    finally:
      os.dup2(saved_stderr, 2)
      os.close(saved_stderr)
      captured.seek(0)
      kept, notice = [], False
      for line in captured.read().decode('utf-8', 'replace').splitlines():
        notice = is_start_up_notice(line, notice)
        if not notice:
          kept.append(line)
      if kept:
        sys.stderr.write('\n'.join(kept) + '\n')
