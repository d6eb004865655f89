"""The optimizers training.py builds: each steps, each name is its class."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
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
    train_op, global_step = model.training(
        terms.neg_elbo, training.make_optimizer(optimizer, learning_rate))
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      before = session.run(terms.neg_elbo)
      for _ in range(20):
        session.run(train_op)
      after, step = session.run([terms.neg_elbo, global_step])
  assert step == 20
  assert after < before


@pytest.mark.parametrize('name, optimizer_class', [
    ('sgd', tf.train.GradientDescentOptimizer), ('adam', tf.train.AdamOptimizer),
    ('adagrad', tf.train.AdagradOptimizer), ('rmsprop', tf.train.RMSPropOptimizer),
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
