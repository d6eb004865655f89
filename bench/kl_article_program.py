"""The KL article's program: the witness that configs/kl_article.flags is
measured against.

It does what the article's program does (the Keras "Variational
AutoEncoder" example, keras-io examples/generative/vae.py, with a beta), step
for step, in Keras 3: the example's encoder ('same' stride-2 convolutions of
32 and 64, a dense layer of 16, dense z_mean and z_log_var of a 2-d z, z
sampled in the encoder) and decoder (a dense 7x7x64 layer, transposed
convolutions of 64 and 32, a last one of 1 with a sigmoid), a custom
train_step minimizing the mean binary cross-entropy times 784 plus
beta * -0.5 * mean(1 + log_var - mean^2 - exp(log_var)) (the means over the
batch and z's dimensions), RMSprop with Keras' defaults, `fit` in batches of
128 of grey-level Fashion-MNIST images. What differs: it trains on the 60,000
training images (the article adds the 10,000 test images; --train_on_test
does too), reads the IDX files of --mnist_dir, and after training scores the
test images: the reconstruction term (the cross-entropy summed over pixels)
and the KL summed over z, in nats per image, one z per image.

  python bench/kl_article_program.py --mnist_dir /usr/share/datasets/fashion-mnist \\
      --beta 10 --epochs 20 --json article_beta10.json
"""

import argparse
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

from cvae_tutorial_program import read_idx_images  # bench/, beside this script.


class Sampling(tf.keras.layers.Layer):
  """z = mean + exp(log_var / 2) * noise."""

  def call(self, inputs):
    z_mean, z_log_var = inputs
    return z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean))


def make_encoder(latent_dim=2):
  inputs = tf.keras.Input(shape=(28, 28, 1))
  x = tf.keras.layers.Conv2D(32, 3, activation='relu', strides=2, padding='same')(inputs)
  x = tf.keras.layers.Conv2D(64, 3, activation='relu', strides=2, padding='same')(x)
  x = tf.keras.layers.Flatten()(x)
  x = tf.keras.layers.Dense(16, activation='relu')(x)
  z_mean = tf.keras.layers.Dense(latent_dim, name='z_mean')(x)
  z_log_var = tf.keras.layers.Dense(latent_dim, name='z_log_var')(x)
  return tf.keras.Model(inputs, [z_mean, z_log_var, Sampling()([z_mean, z_log_var])])


def make_decoder(latent_dim=2):
  inputs = tf.keras.Input(shape=(latent_dim,))
  x = tf.keras.layers.Dense(7 * 7 * 64, activation='relu')(inputs)
  x = tf.keras.layers.Reshape((7, 7, 64))(x)
  x = tf.keras.layers.Conv2DTranspose(64, 3, activation='relu', strides=2, padding='same')(x)
  x = tf.keras.layers.Conv2DTranspose(32, 3, activation='relu', strides=2, padding='same')(x)
  outputs = tf.keras.layers.Conv2DTranspose(1, 3, activation='sigmoid', padding='same')(x)
  return tf.keras.Model(inputs, outputs)


class ArticleVAE(tf.keras.Model):
  """The example's VAE with the article's beta and its mean-based loss."""

  def __init__(self, beta):
    super().__init__()
    self.beta = beta
    self.encoder, self.decoder = make_encoder(), make_decoder()
    names = ('loss', 'reconstruction_loss', 'kl_loss')
    self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in names}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def train_step(self, data):
    with tf.GradientTape() as tape:
      z_mean, z_log_var, z = self.encoder(data)
      reconstruction = self.decoder(z)
      reconstruction_loss = 28 * 28 * tf.reduce_mean(
          tf.keras.losses.binary_crossentropy(data, reconstruction))
      kl_loss = -0.5 * tf.reduce_mean(1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
      loss = reconstruction_loss + self.beta * kl_loss
    gradients = tape.gradient(loss, self.trainable_weights)
    self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
    for name, value in (('loss', loss), ('reconstruction_loss', reconstruction_loss), ('kl_loss',
                                                                                       kl_loss)):
      self.trackers[name].update_state(value)
    return {name: tracker.result() for name, tracker in self.trackers.items()}


def figures(vae, images):
  """Per image, in nats: the cross-entropy summed over pixels and the KL
  summed over z (one z per image), and the -ELBO; means over `images`."""
  reconstruction, kl = [], []
  for begin in range(0, len(images), 1000):
    batch = images[begin:begin + 1000]
    z_mean, z_log_var, z = vae.encoder(batch)
    decoded = vae.decoder(z)
    reconstruction.append(
        tf.reduce_sum(tf.keras.losses.binary_crossentropy(batch, decoded), axis=(1, 2)).numpy())
    kl.append(
        tf.reduce_sum(-0.5 * (1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var)),
                      axis=1).numpy())
  reconstruction, kl = np.concatenate(reconstruction), np.concatenate(kl)
  return {
      'reconstruction': float(reconstruction.mean()),
      'kl_divergence': float(kl.mean()),
      'neg_elbo': float((reconstruction + kl).mean())
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      '--mnist_dir', required=True, help='The four IDX files of Fashion-MNIST (or MNIST).')
  parser.add_argument('--beta', type=float, default=10.0)
  parser.add_argument('--epochs', type=int, default=100)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--train_on_test',
      action='store_true',
      help='Train on the test images too, as the article does.')
  parser.add_argument('--json', help='Write the figures here.')
  parser.add_argument(
      '--threads', type=int, default=0, help='Threads in and between ops (0: TensorFlow picks).')
  args = parser.parse_args()
  tf.keras.utils.set_random_seed(args.seed)
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  scale = lambda images: np.expand_dims(images, -1).astype('float32') / 255  # noqa: E731
  train = scale(read_idx_images(args.mnist_dir, 'train-images-idx3-ubyte'))
  test = scale(read_idx_images(args.mnist_dir, 't10k-images-idx3-ubyte'))
  vae = ArticleVAE(args.beta)
  vae.compile(optimizer=tf.keras.optimizers.RMSprop())
  start = time.time()
  history = vae.fit(
      np.concatenate([train, test]) if args.train_on_test else train,
      epochs=args.epochs,
      batch_size=128,
      verbose=2)
  train_seconds = time.time() - start
  result = {
      'program': 'keras-io examples/generative/vae.py with beta',
      'beta': args.beta,
      'epochs': args.epochs,
      'seed': args.seed,
      'train_on_test': args.train_on_test,
      'final_epoch': {
          name: float(values[-1]) for name, values in history.history.items()
      },
      # The final weights' loss terms over the training images, as
      # `evaluate.py --split train` gives the preset's.
      'train': figures(vae, train),
      'test': figures(vae, test),
      'train_seconds': train_seconds,
      'train_examples_per_sec': len(train) * args.epochs / train_seconds
  }
  print(json.dumps(result['test']))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
