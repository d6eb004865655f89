"""The second comparison peer: the same VAE as a Keras 3 model trained by `fit`.

The way the Keras VAE example writes it: a `keras.Model` whose `train_step`
runs the encoder, one reparameterized draw, the decoder and the original loss
under a `GradientTape`, Dense layers with the original initialisation and
dropout, Adam, and `fit` over an in-memory `tf.data` pipeline. Keras compiles
the step as it chooses by default (`jit_compile="auto"`). It exists only so
that bench/throughput.py can measure this project against it in the same run.
"""

import keras
import numpy as np
import tensorflow as tf


class KerasVae(keras.Model):

  def __init__(self, hidden_units, latent_dim, keep_prob, pixels):
    super().__init__()
    initializer = keras.initializers.VarianceScaling(
        scale=2.6, mode='fan_in', distribution='truncated_normal')

    def dense(units, activation=None):
      return keras.layers.Dense(units, activation=activation, kernel_initializer=initializer)

    rate = 1.0 - keep_prob
    self.encoder = [
        dense(hidden_units, 'elu'),
        keras.layers.Dropout(rate),
        dense(hidden_units, 'tanh'),
        keras.layers.Dropout(rate)
    ]
    self.mean, self.stddev = dense(latent_dim), dense(latent_dim)
    self.decoder = [
        dense(hidden_units, 'tanh'),
        keras.layers.Dropout(rate),
        dense(hidden_units, 'elu'),
        keras.layers.Dropout(rate),
        dense(pixels)
    ]

  def call(self, x, training=False):
    h = x
    for layer in self.encoder:
      h = layer(h, training=training)
    mean = self.mean(h)
    stddev = 1e-6 + tf.nn.softplus(self.stddev(h))
    h = mean + stddev * tf.random.normal(tf.shape(mean))
    for layer in self.decoder:
      h = layer(h, training=training)
    return mean, stddev, h

  def train_step(self, x):
    with tf.GradientTape() as tape:
      mean, stddev, logits = self(x, training=True)
      y = tf.clip_by_value(tf.sigmoid(logits), 1e-8, 1 - 1e-8)
      log_likelihood = tf.reduce_sum(
          x * tf.math.log(1e-8 + y) + (1 - x) * tf.math.log(1e-8 + 1 - y), 1)
      kl = 0.5 * tf.reduce_sum(stddev**2 + mean**2 - tf.math.log(1e-8 + stddev**2) - 1, 1)
      loss = -tf.reduce_mean(log_likelihood - kl)
    gradients = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return {'loss': loss}


def make_peer_fit(train_images_uint8,
                  batch_size=128,
                  hidden_units=500,
                  latent_dim=20,
                  keep_prob=0.9,
                  learning_rate=1e-3,
                  seed=0):
  """Returns fit(steps): trains the Keras peer `steps` steps with Adam.

  Args:
    train_images_uint8: numpy uint8 [num_examples, 784].
  """
  keras.utils.set_random_seed(seed)
  pixels = train_images_uint8.shape[1]
  dataset = (
      tf.data.Dataset.from_tensor_slices(train_images_uint8).shuffle(
          len(train_images_uint8), seed=seed).repeat().batch(
              batch_size,
              drop_remainder=True).map(lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(
                  tf.data.AUTOTUNE))
  vae = KerasVae(hidden_units, latent_dim, keep_prob, pixels)
  vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
  vae(np.zeros((1, pixels), np.float32))

  def fit(steps):
    vae.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

  return fit
