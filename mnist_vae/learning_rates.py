"""A learning rate that changes by stages: --learning_rate_schedule.

A schedule is a list of stages, each a length and a rate, written
`LENGTH:RATE,LENGTH:RATE,...`, its lengths in epochs or in steps
(--learning_rate_schedule_unit). The IWAE paper's, for example, is eight
stages of 3^(i-1) epochs at 1e-4 * round(10^(1 - (i-1)/7), 1):

  1:1e-3,3:7.2e-4,9:5.2e-4,27:3.7e-4,81:2.7e-4,243:1.9e-4,729:1.4e-4,2187:1e-4

An epoch is num_train // batch_size steps (the IWAE code's: the last partial
batch of an epoch is not a step). The rate is a function of the global step
alone, so a run resumed after a kill continues where its schedule was.
"""

import collections

import tensorflow.compat.v1 as tf

UNITS = ('epochs', 'steps')

Stage = collections.namedtuple('Stage', ['length', 'rate'])


class ScheduleError(ValueError):
  """The schedule does not parse or has a stage without steps."""


def parse(text, flag='--learning_rate_schedule'):
  """[Stage] of `text` ('LENGTH:RATE,...'); ScheduleError naming `flag`."""
  stages = []
  for item in text.split(','):
    length, separator, rate = item.strip().partition(':')
    try:
      stage = Stage(int(length), float(rate))
    except ValueError:
      stage = None
    if not separator or stage is None:
      raise ScheduleError('%s=%s: %r is not LENGTH:RATE (an integer and a number)' %
                          (flag, text, item.strip()))
    if stage.length < 1:
      raise ScheduleError('%s=%s: stage %d has length %d; each stage needs at '
                          'least 1' % (flag, text, len(stages) + 1, stage.length))
    if not stage.rate >= 0 or stage.rate == float('inf'):
      raise ScheduleError('%s=%s: stage %d has rate %r; rates are finite and >= 0' %
                          (flag, text, len(stages) + 1, stage.rate))
    stages.append(stage)
  return stages


def stage_ends(stages, unit, steps_per_epoch):
  """The global step at which each stage ends: [int], increasing.

  Raises:
    ScheduleError: a stage of epochs has no steps (an epoch shorter than a
      batch).
  """
  per_unit = steps_per_epoch if unit == 'epochs' else 1
  if per_unit < 1:
    raise ScheduleError('An epoch of this training split is shorter than one batch: '
                        'a schedule in epochs has no steps; use '
                        '--learning_rate_schedule_unit=steps')
  ends, total = [], 0
  for stage in stages:
    total += stage.length * per_unit
    ends.append(total)
  return ends


def rate_at(global_step, stages, ends):
  """float32 []: the rate of the stage `global_step` (the step being taken,
  counted from 0) is in; past the last stage, its rate. Plain ops that XLA
  compiles, so that a compiled training loop can compute it."""
  if len(stages) == 1:
    return tf.constant(stages[0].rate, tf.float32)
  passed = tf.reduce_sum(
      tf.cast(tf.cast(global_step, tf.int64) >= tf.constant(ends[:-1], tf.int64), tf.int32))
  return tf.gather(tf.constant([stage.rate for stage in stages], tf.float32), passed)
