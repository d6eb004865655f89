"""The training loop and the things it does between steps, each a named piece.

`run_loop` steps until max_steps or a stop signal; after each call of
`StepCaller` (one step, or several inside one compiled loop) it hands the new
global step and the last step's losses to each piece:

  ProgressLog       every log_every_n_steps: the log line (losses, time left,
                    examples/s) and the writer's lease renewed
  TrainSummaries    at the first step and every log_every_n_steps: the
                    minibatch's losses as TensorBoard scalars
  GridWriting       every image_every_n_steps: reconstruction and sample PNGs
  Validation        every eval_every_n_steps: the validation split's -ELBO
  KeptCheckpoints   every keep_checkpoint_every_n_steps and at the end of each
                    learning-rate stage: a checkpoint kept for good in
                    train_dir/kept

A call never runs past the next step at which a piece, the checkpoint saver
or max_steps has work, so each happens exactly at its step whatever the
number of steps per call.
"""

import collections
import os
import time

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import fast_step
from mnist_vae import model
from mnist_vae import training

# Below cluster.PS_STOP_GRACE_SEC, so that the chief saves within it.
SYNC_STEP_TIMEOUT_SEC = 8
KEPT_DIR = 'kept'


class NonFiniteStep(Exception):
  """A step's loss or gradients were not finite; nothing of it was applied.

  Attributes:
    step: the global step that failed (1-based: the one being taken).
    what: 'loss' or 'gradients'.
    kind: 'NaN' or 'Inf' (as far as the check tells).
  """

  def __init__(self, step, what, kind):
    super().__init__('%s %s at step %d' % (what, kind, step))
    self.step, self.what, self.kind = step, what, kind


class StepCaller(object):
  """Runs training steps through training.StepRunner: one call of up to
  steps_per_call steps, the synchronous step's timeout, and non-finite steps
  turned into NonFiniteStep.

  Args:
    runner: a training.StepRunner.
    first_step: the global step the run starts from.
    synchronous: whether each step waits for the other workers' gradients.
    steps_per_call: the most steps one call runs.
  """

  def __init__(self, runner, first_step, synchronous=False, steps_per_call=1):
    self._runner, self._synchronous = runner, synchronous
    self.first_step, self.steps_per_call = first_step, steps_per_call
    self._options = None
    self.local_steps = 0
    self.last_losses = {}

  def run(self, step, steps):
    """Runs `steps` steps after global step `step`; returns the fetched
    values, or None when a synchronous step timed out (to be tried again)."""
    try:
      losses = self._runner.run(step, steps, options=self._options)
    except tf.errors.InvalidArgumentError as e:
      if 'non-finite' not in e.message:
        raise
      what = 'loss' if model.NUMERICS_CHECK_LOSS in e.message else 'gradients'
      raise NonFiniteStep(step + 1, what, 'NaN' if 'NaN' in e.message else 'Inf') from e
    except tf.errors.DeadlineExceededError:
      logging.warning(
          'A synchronous step waited %d s for the other workers\' '
          'gradients; trying again.', SYNC_STEP_TIMEOUT_SEC)
      return None
    stopped_by = fast_step.NON_FINITE[losses.pop('non_finite', 0)]
    if stopped_by:
      raise NonFiniteStep(int(losses['step']) + 1, *stopped_by)
    if self._synchronous and self._options is None:
      # A synchronous step waits for the other workers' gradients, forever
      # once they have stopped (a preempted job's tasks all get SIGTERM), and
      # a signal's handler only runs once it returns. Past the first step
      # (which waits for the others to start) a step gives up after this long.
      self._options = tf.RunOptions(timeout_in_ms=SYNC_STEP_TIMEOUT_SEC * 1000)
    self.local_steps += steps
    self.last_losses = losses
    return losses


# The time left is at the pace of the steps since the log line this many
# lines back (validation, grids and checkpoints included): at the pace since
# the process started, a process stopped for hours (SIGSTOP, a suspended
# job) carried its pause into every later line ("about 70 h left" of 3).
PACE_WINDOW_LINES = 20


class ProgressLog(object):
  """Every `every` steps: the log line and a check of the writer's lease (a
  lease another writer took over stops the run). examples/s leaves out the
  time the other pieces took since the last line (add_side_work)."""

  def __init__(self, every, max_steps, batch_size, first_step, writer_lock):
    self.every, self._max_steps, self._batch_size = every, max_steps, batch_size
    self._writer_lock = writer_lock
    # (time, step) of the start and of the last lines, the oldest first: the
    # newest is the last line's, whose interval examples/s measures.
    self._marks = collections.deque([(time.time(), first_step)], maxlen=PACE_WINDOW_LINES)
    self._side_work_sec = 0.0
    self.throughputs = []

  def add_side_work(self, seconds):
    self._side_work_sec += seconds

  def due(self, previous_step, step):
    return training.crossed(previous_step, step, self.every)

  def __call__(self, session, step, losses):
    del session  # Unused.
    now = time.time()
    last_time, last_step = self._marks[-1]
    examples_per_sec = ((step - last_step) * self._batch_size
                        / max(now - last_time - self._side_work_sec, 1e-9))
    self.throughputs.append(examples_per_sec)
    since_time, since_step = self._marks[0]
    logging.info('%s: %s, %.0f examples/s',
                 training.progress(step, self._max_steps, step - since_step, now - since_time),
                 describe_losses(losses), examples_per_sec)
    self._marks.append((now, step))
    self._side_work_sec = 0.0
    self._writer_lock.check()


def describe_losses(losses):
  """'neg_elbo 126.310 (reconstruction 100.2, kl 26.1)', with the objective
  and KL weight of a weighted run and the learning rate of a schedule."""
  text = 'neg_elbo %.3f (reconstruction %.3f, kl %.3f)' % (
      losses['neg_elbo'], losses['reconstruction'], losses['kl_divergence'])
  if 'kl_weight' in losses:
    text += ', objective %.3f (KL weight %.3g)' % (losses['objective'], losses['kl_weight'])
  elif 'objective' in losses:
    text += ', objective %.3f' % losses['objective']
  if 'learning_rate' in losses:
    text += ', learning rate %.3g' % losses['learning_rate']
  return text


class TrainSummaries(object):
  """The minibatch's losses as TensorBoard scalars, at the first step and
  every `every` steps."""

  def __init__(self, every, summary_writer):
    self.every, self._writer, self._written = every, summary_writer, False

  def due(self, previous_step, step):
    return not self._written or training.crossed(previous_step, step, self.every)

  def __call__(self, session, step, losses):
    del session  # Unused.
    self._written = True
    training.add_scalar_summaries(self._writer, step, 'train', losses)


class GridWriting(object):
  """Every `every` steps: the reconstruction and sample grids (PNGs and image
  summaries)."""

  def __init__(self, every, grid_writer, summary_writer, images_dir):
    self.every, self._grid_writer = every, grid_writer
    self._summary_writer, self._images_dir = summary_writer, images_dir

  def due(self, previous_step, step):
    return training.crossed(previous_step, step, self.every)

  def __call__(self, session, step, losses):
    del losses  # Unused.
    self._grid_writer.write(session, step, self._summary_writer, self._images_dir)


class Validation(object):
  """Every `every` steps: the negative ELBO of the validation split, logged
  and summarised; `last` keeps the latest."""

  def __init__(self, every, evaluator, validation_images, summary_writer):
    self.every, self._evaluator = every, evaluator
    self._images, self._summary_writer = validation_images, summary_writer
    self.last = None

  def due(self, previous_step, step):
    return len(self._images) > 0 and training.crossed(previous_step, step, self.every)

  def __call__(self, session, step, losses):
    del losses  # Unused.
    self.last = dict(self._evaluator.evaluate(session, self._images), step=step)
    training.add_scalar_summaries(self._summary_writer, step, 'validation', self.last)
    logging.info('step %d: validation neg_elbo %.3f', step, self.last['neg_elbo'])


class KeptCheckpoints(object):
  """Checkpoints kept for good in train_dir/kept, which the saver's rotation
  never deletes: at every multiple of `every` (if not 0) and at each of
  `steps` (the ends of the learning-rate stages), so that a reproduction can
  evaluate the model of each epoch or stage."""

  def __init__(self, every, steps, train_dir):
    self.every, self._steps = every or None, sorted(steps)
    self._directory = os.path.join(train_dir, KEPT_DIR)
    self._saver = tf.train.Saver(
        model.model_variables() + [tf.train.get_global_step()],
        max_to_keep=None,
        save_relative_paths=True)

  def next_step(self, step):
    """The first of `steps` after `step`, or None."""
    return next((kept for kept in self._steps if kept > step), None)

  def due(self, previous_step, step):
    return (training.crossed(previous_step, step, self.every)
            or any(previous_step < kept <= step for kept in self._steps))

  def __call__(self, session, step, losses):
    del losses  # Unused.
    tf.io.gfile.makedirs(self._directory)
    path = self._saver.save(
        session,
        os.path.join(self._directory, checkpoints.BASENAME),
        global_step=step,
        write_meta_graph=False,
        write_state=False)
    logging.info('Kept %s', path)


def steps_until_next_event(step, max_steps, steps_per_call, periods, pieces):
  """How many steps the next call may run from `step`: at most
  steps_per_call, and never past max_steps or a multiple of one of `periods`
  (the checkpoint saver's) or of a piece's period (or a stage's end)."""
  limit = min(steps_per_call, max_steps - step)
  for every in list(periods) + [piece.every for piece in pieces]:
    if every:
      limit = min(limit, (step // every + 1) * every - step)
  for piece in pieces:
    next_step = getattr(piece, 'next_step', lambda _: None)(step)
    if next_step is not None:
      limit = min(limit, next_step - step)
  return max(limit, 1)


def run_loop(session, caller, pieces, schedule, stop_signals):
  """Steps until schedule.max_steps, the session's stop or a stop signal,
  handing every piece that is due the new step and the last step's losses.

  Args:
    session: the run's MonitoredSession (the pieces get its raw session).
    caller: a StepCaller, its runner over `session`.
    pieces: the pieces this task runs (the chief runs them all).
    schedule: training.Schedule.
    stop_signals: training.StopSignals.

  Returns:
    The global step reached.

  Raises:
    NonFiniteStep: a step was not finite; nothing of it was applied.
  """
  step = caller.first_step
  progress_log = next((piece for piece in pieces if isinstance(piece, ProgressLog)), None)
  # StopAtStepHook only looks after a step, so a run restored at max_steps
  # would otherwise train one step past it.
  while (step < schedule.max_steps and not session.should_stop() and not stop_signals.received):
    steps = steps_until_next_event(step, schedule.max_steps, caller.steps_per_call,
                                   [schedule.save_checkpoint_steps], pieces)
    losses = caller.run(step, steps)
    if losses is None:
      continue
    previous_step, step = step, int(losses['step'])
    for piece in pieces:
      if piece.due(previous_step, step):
        start = time.time()
        # The raw session: hooks do not fire for the pieces' runs.
        session.run_step_fn(lambda step_context: piece(  # noqa: B023
            step_context.session, step, losses))  # noqa: B023
        if progress_log and piece is not progress_log:
          progress_log.add_side_work(time.time() - start)
  return step


def loop_results(caller, pieces, step):
  """{step, local_steps, last_minibatch, last_validation,
  train_examples_per_sec} of a finished loop, for metrics.json."""
  by_type = {type(piece): piece for piece in pieces}
  validation = by_type.get(Validation)
  progress_log = by_type.get(ProgressLog)
  throughputs = progress_log.throughputs if progress_log else []
  return {
      'step': step,
      'local_steps': caller.local_steps,
      'last_minibatch': {
          key: float(value) for key, value in caller.last_losses.items() if key != 'step'
      },
      'last_validation': validation.last if validation else None,
      'train_examples_per_sec': float(np.median(throughputs)) if throughputs else None,
  }
