"""The comparison peer: the same VAE written the plain TF2 way.

A `tf.function` training step (SGD or Adam) with `tf.GradientTape`, `tf.nn.dropout` and the
original loss formula, fed from an in-memory uint8 tensor. It exists only so
that bench/throughput.py can measure this project against the straightforward
alternative in the same run.
"""

import numpy as np
import tensorflow as tf

import fast_tf2_peer  # bench/fast_tf2_peer.py, beside this script.


def make_peer_step(train_images_uint8,
                   batch_size=128,
                   hidden_units=500,
                   latent_dim=20,
                   keep_prob=0.9,
                   learning_rate=1e-3,
                   seed=0,
                   optimizer='sgd'):
  """Returns a function running one step of the peer; it returns the loss.

  Args:
    train_images_uint8: numpy uint8 [num_examples, 784].
    optimizer: 'sgd' or 'adam' (Keras 3's optimizers).
  """
  rng = np.random.RandomState(seed)
  data = tf.constant(train_images_uint8)
  layers = fast_tf2_peer.make_layers(
      rng, {
          'enc1': (784, hidden_units),
          'enc2': (hidden_units, hidden_units),
          'mean': (hidden_units, latent_dim),
          'stddev': (hidden_units, latent_dim),
          'dec1': (latent_dim, hidden_units),
          'dec2': (hidden_units, hidden_units),
          'out': (hidden_units, 784)
      })
  variables = [v for pair in layers.values() for v in pair]
  optimizer = {
      'sgd': tf.keras.optimizers.SGD,
      'adam': tf.keras.optimizers.Adam
  }[optimizer](
      learning_rate)
  rate = 1.0 - keep_prob

  def dense(x, name):
    weights, biases = layers[name]
    return tf.matmul(x, weights) + biases

  @tf.function
  def step():
    index = tf.random.uniform([batch_size], 0, data.shape[0], tf.int32)
    x = tf.cast(tf.gather(data, index), tf.float32) / 255.0
    with tf.GradientTape() as tape:
      h = tf.nn.dropout(tf.nn.elu(dense(x, 'enc1')), rate)
      h = tf.nn.dropout(tf.tanh(dense(h, 'enc2')), rate)
      mean = dense(h, 'mean')
      stddev = 1e-6 + tf.nn.softplus(dense(h, 'stddev'))
      z = mean + stddev * tf.random.normal(tf.shape(mean))
      h = tf.nn.dropout(tf.tanh(dense(z, 'dec1')), rate)
      h = tf.nn.dropout(tf.nn.elu(dense(h, 'dec2')), rate)
      loss = fast_tf2_peer.original_neg_elbo(x, dense(h, 'out'), mean, stddev)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return step
