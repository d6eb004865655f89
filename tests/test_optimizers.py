"""The optimizers training.py builds: each steps, each name is its class."""

import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import learning_rates
from mnist_vae import model
from mnist_vae import training


@pytest.mark.parametrize('optimizer', training.OPTIMIZERS)
def test_each_optimizer_steps_and_lowers_the_loss(optimizer):
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(16, 784) > 0.7, tf.float32)
    noise = tf.zeros([16, 4])
    network = architectures.network('mlp', 32, 4)
    terms = model.loss(images, model.inference(images, network, noise=noise), network)
    learning_rate = {'sgd': 1e-3, 'momentum': 1e-3}.get(optimizer, 1e-2)
    train_op, global_step = model.training(terms.neg_elbo,
                                           training.make_optimizer(optimizer, learning_rate))
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      before = session.run(terms.neg_elbo)
      for _ in range(20):
        session.run(train_op)
      after, step = session.run([terms.neg_elbo, global_step])
  assert step == 20
  assert after < before


@pytest.mark.parametrize('name, optimizer_class', [('sgd', tf.train.GradientDescentOptimizer),
                                                   ('adam', tf.train.AdamOptimizer),
                                                   ('adagrad', tf.train.AdagradOptimizer),
                                                   ('rmsprop', tf.train.RMSPropOptimizer),
                                                   ('momentum', tf.train.MomentumOptimizer)])
def test_each_optimizer_name_gives_its_class(name, optimizer_class):
  optimizer = training.make_optimizer(name, 0.25)
  assert type(optimizer) is optimizer_class
  assert getattr(optimizer, '_lr', getattr(optimizer, '_learning_rate', None)) == 0.25
  if name == 'momentum':
    assert optimizer._momentum == 0.9


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'"):
    training.make_optimizer('lbfgs', 0.1)


def test_a_schedule_parses_into_stages_and_their_ends():
  stages = learning_rates.parse('1:1e-3, 3:7.2e-4,9:5.2e-4')
  assert stages == [(1, 1e-3), (3, 7.2e-4), (9, 5.2e-4)]
  assert learning_rates.stage_ends(stages, 'epochs', 2980) == [2980, 11920, 38740]
  assert learning_rates.stage_ends(stages, 'steps', 2980) == [1, 4, 13]


@pytest.mark.parametrize('text, message', [('', "'' is not LENGTH:RATE"),
                                           ('3', "'3' is not LENGTH:RATE"),
                                           ('3:x', "'3:x' is not LENGTH:RATE"),
                                           ('0:1e-3', 'stage 1 has length 0'),
                                           ('2:1e-3,4:-1', 'stage 2 has rate -1.0'),
                                           ('2:nan', 'stage 1 has rate nan'),
                                           ('2:inf', 'stage 1 has rate inf')])
def test_a_schedule_that_does_not_parse_is_named(text, message):
  with pytest.raises(learning_rates.ScheduleError, match=re.escape(message)):
    learning_rates.parse(text)


def test_an_epoch_shorter_than_a_batch_has_no_steps():
  with pytest.raises(learning_rates.ScheduleError, match='shorter than one batch'):
    learning_rates.stage_ends([learning_rates.Stage(1, 0.1)], 'epochs', 0)


def test_each_step_takes_its_stages_rate():
  stages = learning_rates.parse('2:0.5,3:0.25,1:0.125')
  ends = learning_rates.stage_ends(stages, 'steps', 1)
  with tf.Graph().as_default():
    step = tf.placeholder(tf.int64, [])
    rate = learning_rates.rate_at(step, stages, ends)
    with tf.Session() as session:
      rates = [session.run(rate, {step: value}) for value in range(8)]
  assert rates == [0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125]


def test_keras_rmsprop_starts_its_mean_squares_at_zero():
  """One step from zero: ms = 0.1 g^2, so the step is lr g / sqrt(0.1 g^2 +
  1e-7), about 3.16 lr, where TF1's RMSProp (from one) steps about lr g."""
  with tf.Graph().as_default():
    variable = tf.Variable([0.0, 0.0])
    loss = tf.reduce_sum(variable * tf.constant([2.0, -0.5]))
    keras_step = training.make_optimizer('rmsprop_keras', 0.01).minimize(loss)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      session.run(keras_step)
      moved = session.run(variable)
  expected = [-0.01 * 2.0 / np.sqrt(0.1 * 4.0 + 1e-7), 0.01 * 0.5 / np.sqrt(0.1 * 0.25 + 1e-7)]
  np.testing.assert_allclose(moved, expected, rtol=1e-5)
