"""The training images for the peers run as processes: the first 55,000 of
MNIST's train-images file, uint8 [55000, 784] (train.py's training split with
its default --validation_size=5000). Plain numpy, so that a JAX peer's process
does not import TensorFlow."""

import argparse
import gzip
import os
import time

import numpy as np

NUM_TRAIN = 55000


def read_train_images(mnist_dir):
  """From train-images-idx3-ubyte.gz, or the file uncompressed."""
  path = os.path.join(mnist_dir, 'train-images-idx3-ubyte')
  opener = open
  if os.path.exists(path + '.gz'):
    path, opener = path + '.gz', gzip.open
  with opener(path, 'rb') as f:
    pixels = np.frombuffer(f.read(), np.uint8, offset=16)
  return pixels.reshape(-1, 784)[:NUM_TRAIN]


def run_as_program(make_step, description):
  """A peer's command line: trains --steps steps of make_step's step on the
  images of --mnist_dir and prints the last loss and the seconds taken."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument(
      '--mnist_dir', required=True, help='Directory of the MNIST IDX files (gzip or not).')
  parser.add_argument('--steps', type=int, required=True, help='Training steps.')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument(
      '--steps_per_call', type=int, default=1, help='Steps per call of the compiled step.')
  parser.add_argument(
      '--network',
      default='mlp',
      help='mlp (the original) or iwae_mlp (the IWAE paper\'s), '
      'where the peer has both.')
  args = parser.parse_args()
  if args.steps % args.steps_per_call:
    parser.error('--steps must be a multiple of --steps_per_call')
  extra = {} if args.network == 'mlp' else {'network': args.network}
  step = make_step(
      read_train_images(args.mnist_dir),
      args.batch_size,
      steps_per_call=args.steps_per_call,
      **extra)
  start = time.perf_counter()
  for _ in range(args.steps // args.steps_per_call):
    loss = step()
  print('loss %.3f after %d steps, %.1f s' % (float(loss), args.steps, time.perf_counter() - start))
