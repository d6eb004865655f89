"""Evaluates checkpoints: negative ELBO and importance-weighted NLL of a split.

Loads a checkpoint written by train.py (the latest by default) and reports,
with dropout off and averaged over every example of the split:

  neg_elbo = reconstruction + kl_divergence, with --num_samples draws of z
             per example for the reconstruction term (the KL is exact);
  iw_nll   = -log p(x) estimated with --iw_samples importance samples
             (Burda et al. 2015), computed --iw_chunk samples at a time so
             memory stays bounded; an upper bound on the true NLL that
             tightens with more samples.

Results are printed and written as JSON. The draws depend only on --seed and
the example's batch, not on the chunk size, so results are reproducible.

Usage:
  python evaluate.py --data_dir data/mnist --train_dir runs/original --split test
  python evaluate.py --data_dir data/mnist --train_dir runs/original --watch
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow loads.

import json
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

import atomic_files
from data_prep import convert_to_records
import input_pipeline
import model

FLAGS = flags.FLAGS


class EvaluationError(RuntimeError):
  """The checkpoint or the data cannot be evaluated; the message says why."""


def define_flags():
  """Defines evaluate.py's flags (its entry point only)."""
  flags.DEFINE_string('data_dir', 'data/mnist',
                      help='Directory with train/validation/test.tfrecords.')
  flags.DEFINE_string('train_dir', None,
                      help='The training run: where its checkpoints are and '
                      'where results are written.')
  flags.DEFINE_string('checkpoint', None,
                      help='A checkpoint path (model.ckpt-N); default: the '
                      'latest in --train_dir.')
  flags.DEFINE_enum('split', 'test', tuple(convert_to_records.SPLIT_FILES),
                    help='Which split to evaluate.')
  flags.DEFINE_integer('num_samples', 1, lower_bound=1,
                       help='Draws of z per example for the ELBO.')
  flags.DEFINE_integer('iw_samples', 1000, lower_bound=0,
                       help='Importance samples per example for -log p(x); '
                       '0 skips it.')
  flags.DEFINE_integer('iw_chunk', 100, lower_bound=1,
                       help='Importance samples decoded at once (memory bound).')
  flags.DEFINE_integer('batch_size', 100, lower_bound=1,
                       help='Examples per batch.')
  flags.DEFINE_integer('seed', 0, help='Seed of the draws of z.')
  flags.DEFINE_enum('binarize', None, input_pipeline.BINARIZE_MODES,
                    help='As the model was trained: none (grey levels) or a '
                    'binarized mode (evaluates on the static binary sample). '
                    'Default: the mode in TRAIN_DIR/metrics.json, else none.')
  flags.DEFINE_string('output', None,
                      help='JSON file for the results; default: '
                      'TRAIN_DIR/eval_<split>_step_<N>.json.')
  flags.DEFINE_boolean('watch', False,
                       help='Keep evaluating each new checkpoint in --train_dir '
                       'as training writes it (an evaluator job beside '
                       'training).')
  flags.DEFINE_integer('watch_timeout_sec', 600, lower_bound=1,
                       help='With --watch: stop after this long without a new '
                       'checkpoint.')
  flags.mark_flag_as_required('train_dir')


def model_size(checkpoint):
  """(hidden_units, latent_dim) of the model saved in `checkpoint`."""
  shapes = dict(tf.train.list_variables(checkpoint))
  try:
    hidden_units, latent_dim = shapes['gaussian_encoder/mean/weights']
  except KeyError:
    raise EvaluationError('%s holds no VAE of this project (no '
                          'gaussian_encoder/mean/weights)' % checkpoint)
  return hidden_units, latent_dim


# A k=1000 evaluation of the test set takes minutes: say how far it is.
PROGRESS_EVERY_SEC = 30


class Evaluator(object):
  """The evaluation graph for one model size, and a session to run it."""

  def __init__(self, hidden_units, latent_dim, num_samples, iw_samples,
               iw_chunk, batch_size, seed):
    self.latent_dim, self.num_samples = latent_dim, num_samples
    self.iw_samples, self.iw_chunk = iw_samples, iw_chunk
    self.batch_size, self.seed = batch_size, seed
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.images = tf.placeholder(tf.float32, [None, input_pipeline.IMAGE_SIZE])
      self.noise = tf.placeholder(tf.float32, [None, None, latent_dim])
      z_mean, z_stddev = model.encode(self.images, hidden_units, latent_dim)
      z = z_mean[None] + z_stddev[None] * self.noise
      logits = model.decode(tf.reshape(z, [-1, latent_dim]), hidden_units,
                            input_pipeline.IMAGE_SIZE)
      num_draws = tf.shape(self.noise)[0]
      log_likelihood = tf.reshape(
          model.bernoulli_log_likelihood(tf.tile(self.images, [num_draws, 1]),
                                         logits), [num_draws, -1])
      self.elbo_terms = {
          'reconstruction': -tf.reduce_mean(log_likelihood, axis=0),
          'kl_divergence': model.gaussian_kl(z_mean, z_stddev),
      }
      self.log_weights = model.log_importance_weights(
          self.images, z_mean, z_stddev, self.noise, hidden_units)
      self.saver = tf.train.Saver()
    self.session = tf.Session(graph=self.graph)

  def _draws(self, batch_index, purpose, count, batch):
    rng = np.random.default_rng([self.seed, batch_index, purpose])
    return rng.standard_normal((count, batch, self.latent_dim), np.float32)

  def evaluate(self, checkpoint, images):
    """Evaluates `checkpoint` on float32 images [n, 784]; returns a dict."""
    start = time.time()
    with self.graph.as_default():  # Restoring builds ops in the graph.
      self.saver.restore(self.session, checkpoint)
    sums = {'reconstruction': 0.0, 'kl_divergence': 0.0, 'iw_nll': 0.0}
    last_progress = start
    for batch_index, begin in enumerate(range(0, len(images), self.batch_size)):
      if begin and time.time() - last_progress >= PROGRESS_EVERY_SEC:
        last_progress = time.time()
        logging.info('%d of %d examples, about %.0f s left.', begin, len(images),
                     (last_progress - start) * (len(images) - begin) / begin)
      batch = images[begin:begin + self.batch_size]
      terms = self.session.run(self.elbo_terms, {
          self.images: batch,
          self.noise: self._draws(batch_index, 0, self.num_samples, len(batch))})
      for key in ('reconstruction', 'kl_divergence'):
        sums[key] += float(np.sum(terms[key], dtype=np.float64))
      if self.iw_samples:
        noise = self._draws(batch_index, 1, self.iw_samples, len(batch))
        log_weights = np.concatenate([
            self.session.run(self.log_weights, {
                self.images: batch, self.noise: noise[k:k + self.iw_chunk]})
            for k in range(0, self.iw_samples, self.iw_chunk)]).astype(np.float64)
        peak = log_weights.max(axis=0)
        log_mean_weight = peak + np.log(np.mean(np.exp(log_weights - peak), axis=0))
        sums['iw_nll'] -= float(np.sum(log_mean_weight))
    count = len(images)
    result = {key: value / count for key, value in sums.items()}
    result['neg_elbo'] = result['reconstruction'] + result['kl_divergence']
    if not self.iw_samples:
      del result['iw_nll']
    result.update(num_examples=count, num_samples=self.num_samples,
                  iw_samples=self.iw_samples, checkpoint=checkpoint,
                  step=int(tf.train.load_variable(checkpoint, 'global_step')),
                  wall_time_sec=time.time() - start)
    return result


def load_split(data_dir, split, binarize='none'):
  """All images of a split: float32 [n, 784] in [0, 1]."""
  path = os.path.join(data_dir, convert_to_records.SPLIT_FILES[split])
  count = input_pipeline.inspect_records(path)
  return input_pipeline.read_first_images(path, count, binarize)


def trained_binarize_mode(train_dir):
  """The --binarize a finished run in train_dir was trained with ('none' when
  it does not say): evaluating a binarized model on grey levels, or the other
  way round, gives numbers that look plausible and mean nothing."""
  path = os.path.join(train_dir, 'metrics.json')
  try:
    with tf.io.gfile.GFile(path) as f:
      mode = json.load(f).get('config', {}).get('binarize', 'none')
  except (tf.errors.NotFoundError, ValueError):
    logging.info('No readable %s: evaluating grey levels (pass --binarize if '
                 'the model was trained binarized).', path)
    return 'none'
  logging.info('Evaluating with --binarize=%s, as %s says.', mode, path)
  return mode


def run_evaluation(*, data_dir, train_dir, checkpoint=None, split='test',
                   num_samples=1, iw_samples=1000, iw_chunk=100, batch_size=100,
                   seed=0, output=None, watch=False, watch_timeout_sec=600,
                   binarize=None):
  """Evaluates one checkpoint (or, with watch, each new one); returns results.
  binarize None means as the run in train_dir was trained."""
  binarize = binarize or trained_binarize_mode(train_dir)
  images = load_split(data_dir, split, binarize)
  if watch:
    checkpoints = tf.train.checkpoints_iterator(train_dir,
                                                timeout=watch_timeout_sec)
  else:
    checkpoint = checkpoint or tf.train.latest_checkpoint(train_dir)
    if not checkpoint:
      raise EvaluationError('No checkpoint in %s' % train_dir)
    checkpoints = [checkpoint]
  evaluator, results = None, []
  for path in checkpoints:
    try:
      if evaluator is None:
        hidden_units, latent_dim = model_size(path)
        evaluator = Evaluator(hidden_units, latent_dim, num_samples, iw_samples,
                              iw_chunk, batch_size, seed)
      result = evaluator.evaluate(path, images)
    except tf.errors.NotFoundError:
      # Training deletes old checkpoints (it keeps five) while we watch.
      logging.warning('%s disappeared before it was evaluated; skipped.', path)
      continue
    result.update(split=split, binarize=binarize)
    logging.info('%s step %d: neg_elbo %.3f (reconstruction %.3f, kl %.3f)%s '
                 'over %d examples', split, result['step'], result['neg_elbo'],
                 result['reconstruction'], result['kl_divergence'],
                 ', iw_nll %.3f (k=%d)' % (result['iw_nll'], iw_samples)
                 if iw_samples else '', result['num_examples'])
    atomic_files.write_json(output or os.path.join(
        train_dir, 'eval_%s_step_%06d.json' % (split, result['step'])), result)
    print(json.dumps(result, sort_keys=True))
    results.append(result)
  return results


def main(argv):
  del argv  # Unused.
  tf.get_logger().handlers.clear()
  try:
    run_evaluation(data_dir=FLAGS.data_dir, train_dir=FLAGS.train_dir,
                   checkpoint=FLAGS.checkpoint, split=FLAGS.split,
                   num_samples=FLAGS.num_samples, iw_samples=FLAGS.iw_samples,
                   iw_chunk=FLAGS.iw_chunk, batch_size=FLAGS.batch_size,
                   seed=FLAGS.seed, output=FLAGS.output, watch=FLAGS.watch,
                   watch_timeout_sec=FLAGS.watch_timeout_sec,
                   binarize=FLAGS.binarize)
  except (EvaluationError, input_pipeline.RecordsError) as e:
    logging.error('%s', e, exc_info=logging.level_debug())
    return 1
  return 0


def run():
  """Console-script entry point."""
  define_flags()
  app.run(main)


if __name__ == '__main__':
  run()
