"""TensorFlow's "Convolutional Variational Autoencoder" tutorial as a program:
the witness that configs/cvae_tutorial.flags is measured against.

It does what the tutorial (tensorflow/docs,
site/en/tutorials/generative/cvae.ipynb) does, step for step, in TF2 eager
code with Keras layers: MNIST binarized at 0.5, the tutorial's CVAE (two
stride-2 'valid' convolutions and one dense layer for mean and log-variance
of a 2-d z; a dense 7x7x32 layer and three transposed convolutions back),
Adam at 1e-4, batches of 32 of the 60,000 training images shuffled each
epoch, the single-sample Monte Carlo ELBO (log p(x|z) + log p(z) - log q(z|x))
as the loss, and after each epoch the test set's ELBO as the mean of the
per-batch losses over the 10,000 test images (shuffled, in batches of 32).
What differs: the images are read from --mnist_dir's IDX files instead of
downloaded by tf.keras.datasets, a --seed is set, and it writes JSON.

  python bench/cvae_tutorial_program.py --mnist_dir ../shared/mnist --seed 0 \\
      --json tutorial_seed0.json
"""

import argparse
import gzip
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf


def read_idx_images(mnist_dir, name):
  """uint8 [n, 28, 28] of an IDX images file (gzip or not)."""
  path = os.path.join(mnist_dir, name)
  opener = open
  if os.path.exists(path + '.gz'):
    path, opener = path + '.gz', gzip.open
  with opener(path, 'rb') as f:
    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)


def binarized(images):
  """The tutorial's preprocessing: [n, 28, 28, 1] float32, 1 where > 0.5."""
  scaled = images.reshape((-1, 28, 28, 1)) / 255.0
  return np.where(scaled > 0.5, 1.0, 0.0).astype(np.float32)


class TutorialCVAE(tf.keras.Model):
  """The tutorial's network, its layers as it lists them."""

  def __init__(self, latent_dim):
    super().__init__()
    self.latent_dim = latent_dim
    self.encoder = tf.keras.Sequential([
        tf.keras.layers.InputLayer(shape=(28, 28, 1)),
        tf.keras.layers.Conv2D(32, 3, strides=2, activation='relu'),
        tf.keras.layers.Conv2D(64, 3, strides=2, activation='relu'),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(2 * latent_dim),
    ])
    self.decoder = tf.keras.Sequential([
        tf.keras.layers.InputLayer(shape=(latent_dim,)),
        tf.keras.layers.Dense(7 * 7 * 32, activation='relu'),
        tf.keras.layers.Reshape((7, 7, 32)),
        tf.keras.layers.Conv2DTranspose(64, 3, strides=2, padding='same', activation='relu'),
        tf.keras.layers.Conv2DTranspose(32, 3, strides=2, padding='same', activation='relu'),
        tf.keras.layers.Conv2DTranspose(1, 3, strides=1, padding='same'),
    ])

  def encode(self, x):
    return tf.split(self.encoder(x), 2, axis=1)

  def decode(self, z):
    return self.decoder(z)


def log_normal_density(sample, mean, log_variance):
  return tf.reduce_sum(
      -0.5 * ((sample - mean)**2 * tf.exp(-log_variance) + log_variance + tf.math.log(2.0 * np.pi)),
      axis=1)


def monte_carlo_loss(model, x):
  """-mean(log p(x|z) + log p(z) - log q(z|x)) for one z per image."""
  mean, log_variance = model.encode(x)
  z = tf.random.normal(tf.shape(mean)) * tf.exp(0.5 * log_variance) + mean
  logits = model.decode(z)
  log_likelihood = -tf.reduce_sum(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3])
  return -tf.reduce_mean(log_likelihood + log_normal_density(z, 0.0, 0.0)
                         - log_normal_density(z, mean, log_variance))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--mnist_dir', required=True, help='The four MNIST IDX files.')
  parser.add_argument('--epochs', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', help='Write the per-epoch figures here.')
  parser.add_argument(
      '--threads', type=int, default=0, help='Threads in and between ops (0: TensorFlow picks).')
  parser.add_argument(
      '--steps',
      type=int,
      default=0,
      help='Train this many steps and stop (no test ELBO): the '
      'bench times the program as a whole process.')
  args = parser.parse_args()
  tf.keras.utils.set_random_seed(args.seed)
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  train = binarized(read_idx_images(args.mnist_dir, 'train-images-idx3-ubyte'))
  test = binarized(read_idx_images(args.mnist_dir, 't10k-images-idx3-ubyte'))
  train_batches = tf.data.Dataset.from_tensor_slices(train).shuffle(60000).batch(32)
  test_batches = tf.data.Dataset.from_tensor_slices(test).shuffle(10000).batch(32)
  model = TutorialCVAE(latent_dim=2)
  optimizer = tf.keras.optimizers.Adam(1e-4)

  @tf.function
  def train_step(x):
    with tf.GradientTape() as tape:
      loss = monte_carlo_loss(model, x)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

  if args.steps:
    for x in train_batches.repeat().take(args.steps):
      train_step(x)
    return
  evaluate = tf.function(lambda x: monte_carlo_loss(model, x))
  epochs = []
  start = time.time()
  for epoch in range(1, args.epochs + 1):
    epoch_start = time.time()
    for x in train_batches:
      train_step(x)
    train_seconds = time.time() - epoch_start
    test_elbo = -float(np.mean([evaluate(x).numpy() for x in test_batches]))
    epochs.append({'epoch': epoch, 'test_elbo': test_elbo, 'train_seconds': train_seconds})
    print(
        'Epoch: %d, Test set ELBO: %.4f, time elapse for current epoch: %.1f' %
        (epoch, test_elbo, train_seconds),
        flush=True)
  result = {
      'program': 'tensorflow/docs cvae.ipynb',
      'seed': args.seed,
      'epochs': epochs,
      'train_examples_per_sec': 60000 * args.epochs / sum(e['train_seconds'] for e in epochs),
      'wall_seconds': time.time() - start
  }
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
