"""What every entry point does the same way: strict flags, one-line errors.

- An unknown flag, on the command line or in a --flagfile, is an error that
  names it and the closest defined flag (absl's "Did you mean"), never a
  silent fallback to a default.
- An error whose message is the whole story is logged on one line (the
  traceback with --verbosity=1) and the program exits with status 1; so is
  a full disk, named with the file being written.
"""

import sys
import threading

from absl import app
from absl import flags
from absl import logging
import tensorflow.compat.v1 as tf

from mnist_vae import files
from mnist_vae import settings

FLAGS = flags.FLAGS
# Upper bounds the entry points' flags share, so that every number a flag
# takes is bounded (tests/test_flag_bounds.py runs each at its bound).
# Seeds reach some ops as int32 values.
MAX_SEED = 2**31 - 1
# Steps, and step intervals: a trillion is far beyond any run.
MAX_STEPS = 10**12
# Examples per batch.
MAX_BATCH = 10**6
MAX_THREADS = 1024


def define_thread_flags(flag_values=FLAGS):
  """--intra_op_threads and --inter_op_threads (settings.Threads), the same
  for every entry point that runs a session."""
  flags.DEFINE_integer(
      'intra_op_threads',
      settings.default(settings.Threads, 'intra_op_threads'),
      lower_bound=0,
      upper_bound=MAX_THREADS,
      flag_values=flag_values,
      help='Threads inside one op; 0 = TensorFlow picks.')
  flags.DEFINE_integer(
      'inter_op_threads',
      settings.default(settings.Threads, 'inter_op_threads'),
      lower_bound=0,
      upper_bound=MAX_THREADS,
      flag_values=flag_values,
      help='Ops run in parallel; 0 = TensorFlow picks.')


def _show_flags_in_short_help(module_name):
  """--helpshort lists the flags of the program's main module, which absl
  takes to be sys.argv[0]; the flags here are defined in `module_name`
  (the entry point behind train.py, vae-train, ...), and the shared ones
  (define_thread_flags) here, so list both there too."""
  for flag in (FLAGS.get_key_flags_for_module(module_name)
               + FLAGS.get_key_flags_for_module(__name__)):
    FLAGS.register_flag_by_module(sys.argv[0], flag)
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as error:
    sys.stderr.write('FATAL Flags parsing error: %s\nPass --helpshort or '
                     '--helpfull to see help on flags.\n' % error)
    sys.exit(1)


def _quiet_disk_full_in_threads(args, default=threading.excepthook):
  """A writer thread (TensorBoard's event logger) that meets a full disk
  would print a traceback; its writer raises the same error in the thread
  that writes next, which reports it in one line."""
  if files.disk_full_path(args.exc_value) is None:
    default(args)


def run(main, define_flags, module_name, expected_errors, settings_types=(), other_flags=None):
  """Defines the flags, checks them against the entry point's settings,
  parses them strictly and runs main(), an entry point's body, which returns
  its exit status.

  Args:
    main: the entry point's function of no arguments; it reads the flags.
    define_flags: defines them.
    module_name: the module defining them (for --helpshort).
    expected_errors: exception types whose message is the whole story: one
      line, exit status 1 (the traceback with --verbosity=1).
    settings_types, other_flags: the settings its flags fill, and {flag: what
      it is for} of those that fill none (settings.check); other_flags None
      skips the check.
  """
  before = set(FLAGS)
  define_flags()
  if other_flags is not None:
    settings.check(module_name, set(FLAGS) - before, settings_types, other_flags)
  _show_flags_in_short_help(module_name)
  threading.excepthook = _quiet_disk_full_in_threads

  def guarded_main(argv):
    if argv[1:]:  # A flag without its --, a path in the wrong place.
      raise app.UsageError('Unexpected arguments (every input is a --flag): %s'
                           % ' '.join(argv[1:]))
    # TensorFlow's logger has a handler of its own; absl's already prints.
    tf.get_logger().handlers.clear()
    try:
      return main()
    except expected_errors + (files.OutputError,) as e:
      logging.error('%s', e, exc_info=logging.level_debug())
      return 1
    except Exception as e:  # pylint: disable=broad-except
      # Whichever writer met a full disk (a PNG, an event file, a JSON, a
      # TFRecord, a SavedModel), the cause is the whole story.
      path = files.disk_full_path(e)
      if path is None:
        raise
      logging.error(
          '%s writing %s. Free space and re-run the same command.',
          files.NO_SPACE,
          path,
          exc_info=logging.level_debug())
      return 1

  app.run(guarded_main, flags_parser=_parse_flags)
