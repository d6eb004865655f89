"""The training loop's pieces, each alone, and the loop over a real graph and
MonitoredSession: every piece at its exact step, whatever the steps per call."""

import os
import re
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import fast_step
from mnist_vae import model
from mnist_vae import run_dir
from mnist_vae import training
from mnist_vae import training_loop


class _Recorder(object):
  """A piece that records the steps it ran at (every `every` steps)."""

  def __init__(self, every):
    self.every, self.steps = every, []

  def due(self, previous_step, step):
    return training.crossed(previous_step, step, self.every)

  def __call__(self, session, step, losses):
    assert losses['step'] == step
    self.steps.append(step)


def _counting_graph(max_steps_per_call):
  """A real graph whose 'step' adds the steps it is fed to the global step,
  and fetches a loss that is the step itself (float)."""
  graph = tf.Graph()
  with graph.as_default():
    global_step = tf.train.get_or_create_global_step()
    steps_to_run = tf.placeholder_with_default(tf.constant(1), [])
    with tf.control_dependencies([tf.debugging.assert_less_equal(steps_to_run,
                                                                 max_steps_per_call)]):
      update = global_step.assign_add(tf.cast(steps_to_run, tf.int64))
    with tf.control_dependencies([update]):
      step = global_step.read_value()
    fetches = {
        'step': step,
        'neg_elbo': tf.cast(step, tf.float32),
        'reconstruction': tf.constant(0.0),
        'kl_divergence': tf.constant(0.0)
    }
  return graph, fetches, steps_to_run


@pytest.mark.parametrize('steps_per_call', [1, 7, 1000])
def test_the_loop_hands_each_piece_its_exact_steps(steps_per_call, tmp_path):
  graph, fetches, steps_to_run = _counting_graph(steps_per_call)
  schedule = training.Schedule(max_steps=95, save_checkpoint_steps=40)
  pieces = [_Recorder(10), _Recorder(25)]
  with graph.as_default():
    with tf.train.MonitoredSession(hooks=[tf.train.StopAtStepHook(
        last_step=schedule.max_steps)]) as session:
      runner = training.StepRunner(
          session, fetches, schedule, through_hooks_always=False, steps_to_run=steps_to_run)
      caller = training_loop.StepCaller(runner, 0, steps_per_call=steps_per_call)
      with training.StopSignals() as stop_signals:
        step = training_loop.run_loop(session, caller, pieces, schedule, stop_signals)
  assert step == 95 and caller.local_steps == 95
  assert pieces[0].steps == list(range(10, 91, 10))
  assert pieces[1].steps == [25, 50, 75]


def test_a_call_never_runs_past_a_pieces_step_or_a_checkpoint():
  pieces = [_Recorder(30), training_loop.KeptCheckpoints.__new__(training_loop.KeptCheckpoints)]
  pieces[1].every, pieces[1]._steps = None, [44, 100]  # A stage's ends.
  until = lambda step: training_loop.steps_until_next_event(  # noqa: E731
      step, 120, 50, [40], pieces)
  assert until(0) == 30  # The recorder at 30.
  assert until(30) == 10  # The checkpoint saver at 40.
  assert until(40) == 4  # The stage's end at 44.
  assert until(44) == 16  # The recorder at 60.
  assert until(100) == 20  # max_steps.
  assert until(119) == 1


class _CountingLease(object):
  """A writer's lease that counts the renewals ProgressLog asks for."""

  def __init__(self):
    self.checks = 0

  def check(self):
    self.checks += 1


def test_progress_log_leaves_the_side_work_out_and_renews_the_lease(caplog):
  lease = _CountingLease()
  log = training_loop.ProgressLog(100, 1000, batch_size=10, first_step=0, writer_lock=lease)
  started, _ = log._marks[0]
  log._marks[0] = (started - 2.0, 0)  # Two seconds ago, one of them side work.
  log.add_side_work(1.0)
  with caplog.at_level('INFO'):
    log(None, 100, {
        'neg_elbo': 1.0,
        'reconstruction': 0.5,
        'kl_divergence': 0.5,
        'learning_rate': 1e-4
    })
  lines = [record.getMessage() for record in caplog.records]
  assert lease.checks == 1
  assert 900 < log.throughputs[0] < 1100  # 1,000 examples in about a second.
  assert 'step 100 of 1000 (10%)' in lines[0] and 'learning rate 0.0001' in lines[0]


def test_train_summaries_come_at_the_first_step_then_every_n(tmp_path):
  with tf.Graph().as_default():
    writer = tf.summary.FileWriter(str(tmp_path))
    summaries = training_loop.TrainSummaries(50, writer)
    assert summaries.due(0, 1)
    summaries(None, 1, {'neg_elbo': 3.0, 'reconstruction': 2.0, 'kl_divergence': 1.0})
    assert not summaries.due(1, 2) and summaries.due(49, 50)
    writer.close()
  events = [
      event for path in tf.io.gfile.glob(str(tmp_path / 'events.*'))
      for event in tf.train.summary_iterator(path)
  ]
  tags = {value.tag for event in events for value in event.summary.value}
  assert tags == {'train/neg_elbo', 'train/reconstruction', 'train/kl_divergence'}


def test_validation_runs_only_with_images_and_keeps_the_last(tmp_path):
  network = architectures.network('mlp', 8, 2)
  images = (np.random.RandomState(0).rand(30, 784) < 0.3).astype(np.float32)
  with tf.Graph().as_default():
    evaluator = training_loop.training.evaluation.Evaluator(
        network, batch_size=10, aggregate_draws=0)
    writer = tf.summary.FileWriter(str(tmp_path))
    empty = training_loop.Validation(10, evaluator, np.zeros([0, 784]), writer)
    validation = training_loop.Validation(10, evaluator, images, writer)
    assert not empty.due(0, 10) and validation.due(0, 10) and not validation.due(1, 9)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      validation(session, 10, {})
  assert validation.last['step'] == 10 and validation.last['num_examples'] == 30
  assert np.isfinite(validation.last['neg_elbo'])


def test_kept_checkpoints_stay_at_their_steps(tmp_path):
  network = architectures.network('mlp', 8, 2)
  with tf.Graph().as_default():
    model.create_variables(network)
    global_step = tf.train.get_or_create_global_step()
    keeper = training_loop.KeptCheckpoints(20, [35], str(tmp_path))
    assert keeper.due(19, 20) and keeper.due(30, 35) and not keeper.due(21, 34)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      for step in (20, 35):
        session.run(global_step.assign(step))
        keeper(session, step, {})
  kept = checkpoints.in_directory(os.path.join(str(tmp_path), training_loop.KEPT_DIR))
  assert [checkpoints.step_of(path) for path in kept] == [20, 35]
  assert checkpoints.network(kept[0]) == network


def test_the_caller_turns_a_non_finite_step_into_one_error():
  network = architectures.network('iwae_mlp', 8, 2)
  blocks = (np.random.RandomState(0).rand(3, 4, 784) < 0.3).astype(np.float32)
  blocks[1, 0, 0] = np.inf
  with tf.Graph().as_default():
    loop = fast_step.compiled_training_loop(
        tf.constant(blocks), network, training.make_optimizer('adam', 1e-3))
    with tf.train.MonitoredSession() as session:
      runner = training.StepRunner(
          session,
          loop.fetches,
          training.Schedule(),
          through_hooks_always=False,
          steps_to_run=loop.steps_to_run)
      caller = training_loop.StepCaller(runner, 0, steps_per_call=3)
      with pytest.raises(training_loop.NonFiniteStep) as raised:
        caller.run(0, 3)
  assert (raised.value.step, raised.value.what) == (2, 'loss')


def test_losses_are_described_with_what_the_run_has():
  losses = {'neg_elbo': 100.0, 'reconstruction': 90.0, 'kl_divergence': 10.0}
  assert training_loop.describe_losses(losses) == (
      'neg_elbo 100.000 (reconstruction 90.000, kl 10.000)')
  assert ', objective 95.000 (KL weight 0.5)' in training_loop.describe_losses(
      dict(losses, objective=95.0, kl_weight=0.5))
  assert training_loop.describe_losses(dict(losses, objective=99.0)).endswith(', objective 99.000')


def test_a_runs_config_tells_its_settings(tmp_path):
  (tmp_path / run_dir.CONFIG_FILE).write_text('{"binarize": "dynamic", "data_dir": "d"}')
  assert run_dir.trained_setting(str(tmp_path), 'binarize', 'none') == 'dynamic'
  assert run_dir.trained_setting(str(tmp_path / 'nothing'), 'binarize', 'none') == 'none'
  (tmp_path / run_dir.CONFIG_FILE).write_text('{not json')
  with pytest.raises(run_dir.ConfigError, match='pass --data_dir'):
    run_dir.trained_setting(str(tmp_path), 'data_dir', 'data/mnist')


def test_the_time_left_forgets_a_pause_after_a_window_of_lines(caplog):
  log = training_loop.ProgressLog(
      100, 10000, batch_size=10, first_step=0, writer_lock=_CountingLease())
  now = time.time()
  # Stopped for a day after the start, then 100 steps a second for 19 lines.
  log._marks.clear()
  log._marks.extend([(now - 86400 - 19, 0)] + [(now - 19 + i, 100 * (i + 1)) for i in range(19)])
  losses = {'neg_elbo': 1.0, 'reconstruction': 0.5, 'kl_divergence': 0.5}
  with caplog.at_level('INFO'):
    log(None, 2000, losses)  # The day is still inside the window.
    log(None, 2100, losses)  # It has left: 2,000 steps in 19 s.
  lines = [record.getMessage() for record in caplog.records]
  assert re.search(r'about \d+ h \d\d min left', lines[0]), lines[0]
  # 7,900 steps at 2,000 per 19 s: 75 s.
  assert 'about 1 min 1' in lines[1], lines[1]
