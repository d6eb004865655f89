"""The fastest plain TF2 program for this VAE we could write: the peer that
train.py must not be slower than.

No Keras anywhere in the step: one `tf.function` holds a whole step (or
several, `steps_per_call`), the batch is gathered in the graph from the
training images kept in memory as uint8, the encoder's mean and stddev layers
are one 500x40 product then split, dropout is `tf.nn.dropout`, and Adam is the
fused `ResourceApplyAdam` kernel per variable (one op per variable, against
the several of Keras 3's Adam). The loss is the original formula.

Run as a program it is a whole process a user could write, timed by
bench/throughput.py like train.py:

  python bench/fast_tf2_peer.py --mnist_dir ../shared/mnist --steps 2000
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

import peer_data  # bench/peer_data.py, beside this script.


def make_layers(rng, sizes):
  """{name: (weights, biases)} variables for {name: (fan_in, fan_out)},
  initialised as the original (truncated normal, stddev sqrt(2.6 / fan_in))."""
  layers = {}
  for name, (fan_in, fan_out) in sizes.items():
    weights = np.clip(rng.standard_normal((fan_in, fan_out)), -2, 2)
    layers[name] = (tf.Variable(weights * np.sqrt(2.6 / fan_in),
                                dtype=tf.float32), tf.Variable(tf.zeros([fan_out])))
  return layers


def original_neg_elbo(x, logits, mean, stddev):
  """The original script's loss: the batch mean of -(log p(x | z) - KL)."""
  y = tf.clip_by_value(tf.sigmoid(logits), 1e-8, 1 - 1e-8)
  log_likelihood = tf.reduce_sum(x * tf.math.log(1e-8 + y) + (1 - x) * tf.math.log(1e-8 + 1 - y), 1)
  kl = 0.5 * tf.reduce_sum(stddev**2 + mean**2 - tf.math.log(1e-8 + stddev**2) - 1, 1)
  return -tf.reduce_mean(log_likelihood - kl)


def make_step(train_images_uint8,
              batch_size=128,
              hidden_units=500,
              latent_dim=20,
              keep_prob=0.9,
              learning_rate=1e-3,
              seed=0,
              steps_per_call=1):
  """Returns step(): runs `steps_per_call` Adam steps, returns the last loss.

  Args:
    train_images_uint8: numpy uint8 [num_examples, 784].
  """
  tf.random.set_seed(seed)
  rng = np.random.RandomState(seed)
  # A variable, not a constant: the data is copied in once, not into a graph.
  data = tf.Variable(train_images_uint8, trainable=False)
  layers = make_layers(
      rng, {
          'enc1': (784, hidden_units),
          'enc2': (hidden_units, hidden_units),
          'mean_stddev': (hidden_units, 2 * latent_dim),
          'dec1': (latent_dim, hidden_units),
          'dec2': (hidden_units, hidden_units),
          'out': (hidden_units, 784)
      })
  variables = [v for pair in layers.values() for v in pair]
  slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
  iteration = tf.Variable(0.0)
  beta1, beta2, epsilon = 0.9, 0.999, 1e-8
  rate = 1.0 - keep_prob
  num_examples = train_images_uint8.shape[0]

  def dense(x, name):
    weights, biases = layers[name]
    return tf.nn.bias_add(tf.matmul(x, weights), biases)

  def one_step():
    index = tf.random.uniform([batch_size], 0, num_examples, tf.int32)
    x = tf.cast(tf.gather(data, index), tf.float32) * (1.0 / 255.0)
    with tf.GradientTape() as tape:
      h = tf.nn.dropout(tf.nn.elu(dense(x, 'enc1')), rate)
      h = tf.nn.dropout(tf.tanh(dense(h, 'enc2')), rate)
      mean, pre_stddev = tf.split(dense(h, 'mean_stddev'), 2, axis=1)
      stddev = 1e-6 + tf.nn.softplus(pre_stddev)
      z = mean + stddev * tf.random.normal(tf.shape(mean))
      h = tf.nn.dropout(tf.tanh(dense(z, 'dec1')), rate)
      h = tf.nn.dropout(tf.nn.elu(dense(h, 'dec2')), rate)
      loss = original_neg_elbo(x, dense(h, 'out'), mean, stddev)
    gradients = tape.gradient(loss, variables)
    t = iteration.assign_add(1.0)
    for variable, (m, v), gradient in zip(variables, slots, gradients):
      tf.raw_ops.ResourceApplyAdam(
          var=variable.handle,
          m=m.handle,
          v=v.handle,
          beta1_power=tf.pow(beta1, t),
          beta2_power=tf.pow(beta2, t),
          lr=learning_rate,
          beta1=beta1,
          beta2=beta2,
          epsilon=epsilon,
          grad=gradient)
    return loss

  @tf.function
  def step():
    loss = tf.constant(0.0)
    for _ in tf.range(steps_per_call):
      loss = one_step()
    return loss

  return step


if __name__ == '__main__':
  peer_data.run_as_program(make_step, __doc__.splitlines()[0])
