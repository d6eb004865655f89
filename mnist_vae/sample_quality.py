"""Sample quality as numbers: a Frechet distance and the digits' shares.

  python sample_quality.py --train_classifier --classifier_dir runs/classifier
  python sample_quality.py --classifier_dir runs/classifier --train_dir runs/upstream

A picture of samples says little about how far they are from the data. As
MNIST papers do, a small digit classifier (classify_digits, trained
here on the training split; its test accuracy is in its classifier.json)
gives each image 128 features and a label:

  frechet_distance  between the Gaussians of the features of --num_samples
                    decoded samples (decoder means) and of the test images
                    (Heusel et al. 2017's FID, with this classifier in place
                    of Inception): 0 for the same distribution;
                    `real_train_frechet_distance` is that of as many training
                    images, the figure real data reaches;
  digit_shares      the share of each digit among the samples as the
                    classifier labels them (the test set's are about 0.1
                    each): a model that drops a digit (mode dropping) shows it
                    here; `least_digit_share` is the smallest.

Both for prior samples (z ~ N(0, I)) and aggregate samples (z from the
Gaussian fitted to the training posteriors; generate.py --sample_from
aggregate), written as TRAIN_DIR/sample_quality_step_<N>.json.

Trained on another dataset's records (Fashion-MNIST's, in scripts/kl_study.sh),
the same classifier learns that dataset's 10 classes; the `digit` names of the
JSON keys then stand for those classes.
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import json
import math
import os
import time

from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import cli
from mnist_vae import evaluation
from mnist_vae import files
from mnist_vae import input_pipeline
from mnist_vae import run_dir
from mnist_vae import settings
from mnist_vae import trained_model
from mnist_vae.data_prep import records

FLAGS = flags.FLAGS
CLASSIFIER_FILE = 'classifier.json'
CLASSIFIER_CHECKPOINT = 'classifier.ckpt'
NUM_DIGITS = 10
# The digit classifier that scores samples, not the VAE.
CLASSIFIER_SCOPE = 'digit_classifier'
CLASSIFIER_LAYERS = (512, 128)


class SampleQualityError(RuntimeError):
  """The classifier or the model cannot be used; the message says why."""


# sample_quality.py's flags, these their defaults.
SampleQualitySettings = collections.namedtuple(
    'SampleQualitySettings', [
        'classifier_dir', 'train_classifier', 'classifier_steps', 'train_dir', 'checkpoint',
        'data_dir', 'sample_from', 'num_samples', 'seed', 'output'
    ],
    defaults=(None, False, 3000, None, None, 'data/mnist', list(trained_model.SAMPLE_SOURCES),
              10000, 0, None))
# Samples scored per source at most: their features and the classifier's pass
# are held in memory at once.
MAX_SAMPLES = 10000


def _default(name):
  return settings.default(SampleQualitySettings, name)


def define_flags(flag_values=flags.FLAGS):
  flags.DEFINE_string(
      'classifier_dir',
      _default('classifier_dir'),
      flag_values=flag_values,
      help='Where the digit classifier is (or, with '
      '--train_classifier, goes).')
  flags.DEFINE_boolean(
      'train_classifier',
      _default('train_classifier'),
      flag_values=flag_values,
      help='Train the classifier into --classifier_dir '
      '(which must not hold one) on --data_dir\'s training '
      'split, and report its test accuracy.')
  flags.DEFINE_integer(
      'classifier_steps',
      _default('classifier_steps'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=10**7,
      help='--train_classifier: Adam steps of 128 images '
      '(3,000 = 7 epochs).')
  flags.DEFINE_string(
      'train_dir',
      _default('train_dir'),
      flag_values=flag_values,
      help='The VAE whose samples are scored (its latest '
      'checkpoint).')
  flags.DEFINE_string(
      'checkpoint',
      _default('checkpoint'),
      flag_values=flag_values,
      help='A checkpoint path instead of the latest in '
      '--train_dir.')
  flags.DEFINE_string(
      'data_dir',
      _default('data_dir'),
      flag_values=flag_values,
      help='TFRecords: the test split is the reference, the '
      'training split trains the classifier and fits the '
      'aggregate posterior.')
  flags.DEFINE_list(
      'sample_from',
      _default('sample_from'),
      flag_values=flag_values,
      help='Which samples to score: prior, aggregate or both.')
  flags.DEFINE_integer(
      'num_samples',
      _default('num_samples'),
      flag_values=flag_values,
      lower_bound=2,
      upper_bound=MAX_SAMPLES,
      help='Samples scored per source (and real training '
      'images for the reference figure).')
  flags.DEFINE_integer(
      'seed',
      _default('seed'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=cli.MAX_SEED,
      help='Seed of the samples and of the classifier.')
  flags.DEFINE_string(
      'output',
      _default('output'),
      flag_values=flag_values,
      help='JSON of the results; default: TRAIN_DIR/'
      'sample_quality_step_<N>.json.')
  flags.mark_flag_as_required('classifier_dir', flag_values=flag_values)


def _split(data_dir, split):
  path = records.split_path(data_dir, split)
  input_pipeline.inspect_records(path)
  return (input_pipeline.read_split_images(path), input_pipeline.read_split_labels(path))


def classify_digits(images):
  """A small MLP digit classifier: 784-512-128-10, ReLU, initialised as the
  VAE's MLP (TF1 contrib's variance scaling).

  Its 128 last hidden units are the feature space of the Frechet distance (as
  the Inception pool features are for FID).

  Args:
    images: float32 [batch, 784] in [0, 1].

  Returns:
    features: float32 [batch, 128]; logits: float32 [batch, 10].
  """
  hidden = images
  with tf.variable_scope(CLASSIFIER_SCOPE, reuse=tf.AUTO_REUSE):
    for layer, units in enumerate(CLASSIFIER_LAYERS + (NUM_DIGITS,)):
      with tf.variable_scope('fc%d' % (layer + 1) if layer < len(CLASSIFIER_LAYERS) else 'logits'):
        fan_in = int(hidden.shape[-1])
        weights = tf.get_variable(
            'weights', [fan_in, units],
            initializer=tf.truncated_normal_initializer(stddev=math.sqrt(2.6 / fan_in)))
        biases = tf.get_variable('biases', [units], initializer=tf.zeros_initializer())
      logits = tf.nn.bias_add(tf.matmul(hidden, weights), biases)
      if layer < len(CLASSIFIER_LAYERS):
        features = hidden = tf.nn.relu(logits)
  return features, logits


def train_classifier(classifier_dir, data_dir, steps=3000, seed=0, batch_size=128):
  """Trains classify_digits on the training split into classifier_dir;
  returns classifier.json's content (with the test accuracy).

  classifier.json is written last: a directory without it holds no usable
  classifier.
  """
  if tf.io.gfile.exists(os.path.join(classifier_dir, CLASSIFIER_FILE)):
    raise SampleQualityError('%s already holds a classifier: choose another '
                             '--classifier_dir, or delete it to train again' % classifier_dir)
  files.make_dirs(classifier_dir, '--classifier_dir')
  train_images, train_labels = _split(data_dir, 'train')
  test_images, test_labels = _split(data_dir, 'test')
  start = time.time()
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    images = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
    labels = tf.placeholder(tf.int64, [None])
    _, logits = classify_digits(images)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.train.AdamOptimizer(1e-3).minimize(loss)
    predictions = tf.argmax(logits, axis=1)
    saver = tf.train.Saver(tf.global_variables(CLASSIFIER_SCOPE + '/'))
    order = np.random.RandomState(seed)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      batches = np.zeros([0], np.int64)
      for step in range(steps):
        if len(batches) < batch_size:  # A new epoch's order.
          batches = np.concatenate([batches, order.permutation(len(train_images))])
        batch, batches = batches[:batch_size], batches[batch_size:]
        _, batch_loss = session.run([train_op, loss], {
            images: train_images[batch],
            labels: train_labels[batch]
        })
        if (step + 1) % 500 == 0:
          logging.info('classifier step %d of %d: loss %.4f', step + 1, steps, batch_loss)
      predicted = np.concatenate([
          session.run(predictions, {images: test_images[begin:begin + 1000]})
          for begin in range(0, len(test_images), 1000)
      ])
      saver.save(
          session,
          os.path.join(classifier_dir, CLASSIFIER_CHECKPOINT),
          write_meta_graph=False,
          write_state=False)
  result = {
      'test_accuracy': float(np.mean(predicted == test_labels)),
      'steps': steps,
      'batch_size': batch_size,
      'seed': seed,
      'layers': [records.IMAGE_PIXELS] + list(CLASSIFIER_LAYERS) + [NUM_DIGITS],
      'train_seconds': time.time() - start
  }
  files.write_json(os.path.join(classifier_dir, CLASSIFIER_FILE), result)
  logging.info('Trained the classifier in %.0f s: test accuracy %.4f; '
               'saved in %s', result['train_seconds'], result['test_accuracy'], classifier_dir)
  return result


class Classifier(object):
  """features() and labels() of a classifier saved by train_classifier."""

  def __init__(self, classifier_dir):
    info_path = os.path.join(classifier_dir, CLASSIFIER_FILE)
    if not tf.io.gfile.exists(info_path):
      raise SampleQualityError('No classifier in %s (no %s): train one with --train_classifier' %
                               (classifier_dir, CLASSIFIER_FILE))
    self.info = files.read_json(info_path)
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._images = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
      self._features, logits = classify_digits(self._images)
      self._labels = tf.argmax(logits, axis=1)
      saver = tf.train.Saver(tf.global_variables(CLASSIFIER_SCOPE + '/'))
      self._session = tf.Session()
      try:
        saver.restore(self._session, os.path.join(classifier_dir, CLASSIFIER_CHECKPOINT))
      except (tf.errors.OpError, ValueError) as e:
        raise SampleQualityError('Cannot restore the classifier in %s: %s' %
                                 (classifier_dir, str(e).splitlines()[0])) from e

  def features_and_labels(self, images, batch_size=1000):
    """float32 [n, 784] -> (float64 [n, 128], int64 [n])."""
    outputs = [
        self._session.run([self._features, self._labels],
                          {self._images: images[begin:begin + batch_size]})
        for begin in range(0, len(images), batch_size)
    ]
    return (np.concatenate([f for f, _ in outputs]).astype(np.float64),
            np.concatenate([l for _, l in outputs]))


def _sqrtm_psd(matrix):
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a, features_b):
  """||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of the
  Gaussians with the features' means and covariances (float [n, d] each)."""
  mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
  cov_a = np.cov(features_a, rowvar=False)
  cov_b = np.cov(features_b, rowvar=False)
  root_a = _sqrtm_psd(cov_a)
  cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)))
  return float(np.sum((mean_a - mean_b)**2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def digit_shares(labels):
  """The share of each digit among `labels` (int [n]): list of 10 floats."""
  return [float(v) for v in np.bincount(labels, minlength=NUM_DIGITS) / max(len(labels), 1)]


def score_samples(vae,
                  classifier,
                  data_dir,
                  sample_from=('prior', 'aggregate'),
                  num_samples=10000,
                  seed=0):
  """The figures of the module docstring for each source in sample_from."""
  test_features, test_labels = classifier.features_and_labels(_split(data_dir, 'test')[0])
  train_images = _split(data_dir, 'train')[0]
  real = train_images[np.random.RandomState(seed).permutation(len(train_images))[:num_samples]]
  result = {
      'classifier_test_accuracy':
          classifier.info['test_accuracy'],
      'num_samples':
          num_samples,
      'seed':
          seed,
      'reference':
          'test',
      'real_train_frechet_distance':
          frechet_distance(classifier.features_and_labels(real)[0], test_features),
      'test_digit_shares':
          digit_shares(test_labels),
  }
  for source in sample_from:
    samples = trained_model.draw_samples(
        vae, num_samples, seed, sample_from=source, data_dir=data_dir)
    features, labels = classifier.features_and_labels(samples)
    shares = digit_shares(labels)
    result[source] = {
        'frechet_distance': frechet_distance(features, test_features),
        'digit_shares': shares,
        'least_digit_share': min(shares),
    }
    logging.info(
        '%s samples: Frechet distance %.2f (real training images: '
        '%.2f); digit shares %s', source, result[source]['frechet_distance'],
        result['real_train_frechet_distance'],
        ' '.join('%d:%.3f' % item for item in enumerate(shares)))
  return result


def main():
  quality = settings.fill(SampleQualitySettings, FLAGS)
  for source in quality.sample_from:
    if source not in trained_model.SAMPLE_SOURCES:
      raise SampleQualityError('--sample_from: %r is not one of %s' %
                               (source, ', '.join(trained_model.SAMPLE_SOURCES)))
  score_a_model = bool(quality.train_dir or quality.checkpoint)
  if not quality.train_classifier and not score_a_model:
    raise SampleQualityError('Pass --train_dir (or --checkpoint) to score a '
                             'model, or --train_classifier')
  if quality.train_classifier:
    train_classifier(quality.classifier_dir, quality.data_dir, quality.classifier_steps,
                     quality.seed)
  if not score_a_model:
    return 0
  checkpoint = checkpoints.readable(quality.train_dir, quality.checkpoint)
  step = checkpoints.step_of(checkpoint)
  output = quality.output or os.path.join(
      os.path.dirname(checkpoint), 'sample_quality_step_%06d.json' % step)
  files.make_parent_dirs(output, '--output')
  result = score_samples(
      trained_model.CheckpointModel(checkpoint), Classifier(quality.classifier_dir),
      quality.data_dir, quality.sample_from, quality.num_samples, quality.seed)
  result.update(checkpoint=checkpoint, step=step)
  files.write_json(output, result)
  logging.info('Wrote %s', output)
  print(json.dumps(result, sort_keys=True))
  return 0


def run():
  """Console-script entry point (vae-sample-quality)."""
  cli.run(main, define_flags, __name__,
          (SampleQualityError, checkpoints.CheckpointError, input_pipeline.RecordsError,
           evaluation.EvaluationError, trained_model.ModelError, run_dir.ConfigError),
          (SampleQualitySettings,), {})


if __name__ == '__main__':
  run()
