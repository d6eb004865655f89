"""Evaluates checkpoints: negative ELBO and importance-weighted NLL of a split.

Loads a checkpoint written by train.py (the latest by default) and reports,
with dropout off and averaged over every example of the split (see
mnist_vae/evaluation.py, the evaluator train.py uses too):

  neg_elbo = reconstruction + kl_divergence, with --num_samples draws of z
             per example for the reconstruction term (the KL is exact);
  iw_nll   = -log p(x) estimated with --iw_samples importance samples
             (Burda et al. 2015), computed --iw_chunk samples at a time so
             memory stays bounded; an upper bound on the true NLL that
             tightens with more samples;
  the aggregate posterior q(z) against the prior (mnist_vae/
  aggregate_posterior.py): kl_divergence = mutual_information + marginal_kl
  (ELBO surgery, --aggregate_draws draws of z per example, with the Monte
  Carlo standard error), prior_fit_kl and the eigenvalues of q(z)'s
  covariance.

Results are printed and written as JSON. The draws depend only on --seed and
the example's index in the split, so results are reproducible and equal
train.py's metrics.json for the same checkpoint.

Usage:
  python evaluate.py --data_dir data/mnist --train_dir runs/original --split test
  python evaluate.py --data_dir data/mnist --train_dir runs/original --watch
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import json
import os
import socket
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
from mnist_vae import model
from mnist_vae import run_dir
from mnist_vae import settings
from mnist_vae import training
from mnist_vae.data_prep import records

FLAGS = flags.FLAGS

# Images decoded at once by the importance-weighted bound (--iw_chunk x
# --batch_size); each holds 784 logits and a few temporaries of that size.
MAX_DECODED_AT_ONCE = 200000
# The draws of z of a batch are made at once: [draws, batch, latent] floats,
# at most this many bytes.
MAX_DRAWS_BYTES = 2 * 10**9
EvaluationError = evaluation.EvaluationError

# What to evaluate and how: evaluate.py's flags, these their defaults.
EvaluationSettings = collections.namedtuple(
    'EvaluationSettings', [
        'train_dir', 'checkpoint', 'data_dir', 'split', 'binarize', 'num_samples', 'iw_samples',
        'iw_chunk', 'batch_size', 'matmul_precision', 'seed', 'aggregate_draws', 'output',
        'per_example_csv', 'watch', 'watch_timeout_sec', 'binary_sample'
    ],
    defaults=(None, None, None, 'test', None, 1, 1000, 100, 100, 'float32', evaluation.DEFAULT_SEED,
              1, None, None, False, 600, 0))
SETTINGS_TYPES = (EvaluationSettings, settings.Threads)


def _default(name):
  return settings.default(EvaluationSettings, name)


def define_flags(flag_values=flags.FLAGS):
  """Defines evaluate.py's flags (its entry point only)."""
  flags.DEFINE_string(
      'data_dir',
      _default('data_dir'),
      flag_values=flag_values,
      help='Directory with train/validation/test.tfrecords. '
      'Default: the one the run in --train_dir was trained on '
      '(its config.json), else data/mnist.')
  flags.DEFINE_string(
      'train_dir',
      _default('train_dir'),
      flag_values=flag_values,
      help='The training run: where its checkpoints are and '
      'where results are written.')
  flags.DEFINE_string(
      'checkpoint',
      _default('checkpoint'),
      flag_values=flag_values,
      help='A checkpoint path (model.ckpt-N); default: the '
      'latest in --train_dir.')
  flags.DEFINE_enum(
      'split',
      _default('split'),
      records.SPLITS,
      flag_values=flag_values,
      help='Which split to evaluate.')
  flags.DEFINE_integer(
      'num_samples',
      _default('num_samples'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=100000,
      help='Draws of z per example for the ELBO.')
  flags.DEFINE_integer(
      'iw_samples',
      _default('iw_samples'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=10**9,
      help='Importance samples per example for -log p(x); '
      '0 skips it.')
  flags.DEFINE_integer(
      'iw_chunk',
      _default('iw_chunk'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=100000,
      help='Importance samples decoded at once (memory bound; '
      'iw_chunk x batch_size at most %d).' % MAX_DECODED_AT_ONCE)
  flags.DEFINE_integer(
      'batch_size',
      _default('batch_size'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=100000,
      help='Examples per batch (does not change results).')
  flags.DEFINE_enum(
      'matmul_precision',
      _default('matmul_precision'),
      tuple(model.MATMUL_DTYPES),
      flag_values=flag_values,
      help='bfloat16: every multiply of the evaluation in '
      'bfloat16 (float32 accumulation; the rest float32). About '
      '2x faster on CPUs with native bfloat16 (AVX512_BF16, '
      'AMX); figures move by a few hundredths of a nat, and the '
      'output JSON records the precision.')
  flags.DEFINE_integer(
      'seed',
      _default('seed'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=cli.MAX_SEED,
      help='Seed of the draws of z; train.py\'s metrics.json '
      'uses the default.')
  flags.DEFINE_enum(
      'binarize',
      _default('binarize'),
      input_pipeline.BINARIZE_MODES,
      flag_values=flag_values,
      help='As the model was trained: none (grey levels), '
      'threshold, or static or dynamic (both evaluate on the '
      'static binary sample). '
      'Default: the mode TRAIN_DIR/config.json (written when '
      'training starts) records.')
  flags.DEFINE_integer(
      'binary_sample',
      _default('binary_sample'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=cli.MAX_SEED,
      help='Which fixed binary sample of the images a static or '
      'dynamic binarization evaluates: 0 is the one train.py\'s '
      'metrics.json uses, each other number another draw, as '
      'fixed. Evaluating a checkpoint over several shows how '
      'much a figure depends on the draw.')
  flags.DEFINE_integer(
      'aggregate_draws',
      _default('aggregate_draws'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=100,
      help='Draws of z per example for the mutual information '
      'and marginal KL (each draw is scored against every '
      'posterior of the split); 0 skips them.')
  cli.define_thread_flags(flag_values)
  flags.DEFINE_string(
      'output',
      _default('output'),
      flag_values=flag_values,
      help='JSON file for the results; default: '
      'TRAIN_DIR/eval_<split>_step_<N>.json.')
  flags.DEFINE_boolean(
      'watch',
      _default('watch'),
      flag_values=flag_values,
      help='Keep evaluating each new checkpoint in --train_dir '
      'as training writes it (an evaluator job beside '
      'training).')
  flags.DEFINE_integer(
      'watch_timeout_sec',
      _default('watch_timeout_sec'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=10**7,
      help='With --watch: stop after this long without a new '
      'checkpoint.')
  flags.DEFINE_string(
      'per_example_csv',
      _default('per_example_csv'),
      flag_values=flag_values,
      help='Also write one row per example of the split: '
      'index, label, neg_elbo, reconstruction, kl, nll.')
  flags.mark_flag_as_required('train_dir', flag_values=flag_values)


def _check_draws_fit(evaluation_settings, network):
  """EvaluationError unless a batch's draws of z fit in MAX_DRAWS_BYTES."""
  draws = max(evaluation_settings.iw_samples, evaluation_settings.num_samples)
  needed = 4 * draws * evaluation_settings.batch_size * network.latent_dim
  if needed > MAX_DRAWS_BYTES:
    flag = ('--iw_samples' if evaluation_settings.iw_samples >= evaluation_settings.num_samples else
            '--num_samples')
    raise EvaluationError(
        '%s=%d: a batch of %d images (--batch_size) would need %.1f GB for its draws of '
        'z; at most %.1f GB. Lower %s or --batch_size.' %
        (flag, draws, evaluation_settings.batch_size, needed / 1e9, MAX_DRAWS_BYTES / 1e9, flag))


def _checkpoints(train_dir, checkpoint, watch, watch_timeout_sec):
  """The checkpoints to evaluate: the given one, the newest readable, or
  (watch) each new one as it appears."""
  if watch:
    return checkpoints.each_new(train_dir, timeout_sec=watch_timeout_sec)
  return [checkpoints.readable(train_dir, checkpoint)]


def write_per_example_csv(path, labels, columns):
  """One row per example: index, label, neg_elbo, reconstruction, kl, nll."""
  nll = columns.get('iw_nll', np.full(len(labels), np.nan))
  rows = ['index,label,neg_elbo,reconstruction,kl,nll']
  rows += [
      '%d,%d,%.6f,%.6f,%.6f,%.6f' % row for row in zip(
          range(len(labels)), labels, columns['neg_elbo'], columns['reconstruction'],
          columns['kl_divergence'], nll)
  ]
  files.write(path, '\n'.join(rows) + '\n')


def _write_summaries(train_dir, split, step, result):
  """The figures as TensorBoard scalars under TRAIN_DIR/eval_<split>."""
  summary = tf.Summary()
  for key in evaluation.SCALARS + evaluation.AGGREGATE_SCALARS + ('active_units',):
    if key in result:
      summary.value.add(tag='%s/%s' % (split, key), simple_value=result[key])
  for dimension, kl in enumerate(result['kl_per_dimension']):
    summary.value.add(tag='%s/kl_per_dimension/%02d' % (split, dimension), simple_value=kl)
  events_dir = os.path.join(train_dir, 'eval_' + split)
  tf.io.gfile.makedirs(events_dir)
  # An event file is TFRecords of Event protos. Written here rather than by
  # FileWriter, whose C++ writer only logs a file it cannot write (a full
  # disk), so that the error reaches the user.
  now = time.time()
  path = os.path.join(events_dir, 'events.out.tfevents.%d.%s' % (now, socket.gethostname()))
  with files.partial_path(path) as partial:
    with tf.io.TFRecordWriter(partial) as writer:
      writer.write(tf.Event(wall_time=now, file_version='brain.Event:2').SerializeToString())
      writer.write(tf.Event(wall_time=now, step=step, summary=summary).SerializeToString())


def run_evaluation(evaluation_settings, threads=None):
  """Evaluates one checkpoint (or, with watch, each new one) as an
  EvaluationSettings says; returns the results. Its binarize and data_dir
  None mean as the run in train_dir was trained.

  Raises:
    EvaluationError: settings that cannot run (the message names the flag).
    checkpoints.CheckpointError: a checkpoint to evaluate cannot be read (with
      watch, one that training deleted meanwhile is skipped instead).
  """
  (train_dir, checkpoint, data_dir, split, binarize, num_samples, iw_samples, iw_chunk, batch_size,
   matmul_precision, seed, aggregate_draws, output, per_example_csv, watch, watch_timeout_sec,
   binary_sample) = evaluation_settings
  # Checked before the work, not after an hour of importance sampling.
  if iw_samples and min(iw_chunk, iw_samples) * batch_size > MAX_DECODED_AT_ONCE:
    raise EvaluationError('--iw_chunk=%d x --batch_size=%d decodes %d images at once; at most '
                          '%d (about %.1f GB of logits and temporaries). Lower either flag: '
                          'results do not depend on them.' %
                          (iw_chunk, batch_size, min(iw_chunk, iw_samples) * batch_size,
                           MAX_DECODED_AT_ONCE, MAX_DECODED_AT_ONCE * 784 * 4 * 3 / 1e9))
  for path, flag in ((output, '--output'), (per_example_csv, '--per_example_csv')):
    if path:
      files.make_parent_dirs(path, flag)
  binarize = binarize or run_dir.trained_setting(train_dir, 'binarize', 'none')
  data_dir = data_dir or run_dir.trained_setting(train_dir, 'data_dir', run_dir.DEFAULT_DATA_DIR)
  if binary_sample and binarize not in input_pipeline.SAMPLED_MODES:
    raise EvaluationError('--binary_sample=%d chooses a binary sample of the images, but '
                          '--binarize=%s evaluates %s: there is no sample to choose.' %
                          (binary_sample, binarize,
                           'grey levels' if binarize == 'none' else 'the thresholded images'))
  images = evaluation.split_images(data_dir, split, binarize, binary_sample)
  graph, results = None, []
  for path in _checkpoints(train_dir, checkpoint, watch, watch_timeout_sec):
    start = time.time()
    try:
      network = checkpoints.network(path)
      _check_draws_fit(evaluation_settings, network)
      step = checkpoints.step_of(path)
      if graph is None:
        graph = tf.Graph()
        with graph.as_default():
          evaluator = evaluation.Evaluator(
              network,
              num_samples=num_samples,
              iw_samples=iw_samples,
              iw_chunk=iw_chunk,
              batch_size=batch_size,
              seed=seed,
              matmul_dtype=model.MATMUL_DTYPES[matmul_precision],
              aggregate_draws=aggregate_draws)
          saver = tf.train.Saver(model.model_variables())
        session = tf.Session(
            graph=graph, config=training.session_config(threads or settings.Threads()))
      checkpoints.restore(session, path, saver)
    except checkpoints.CheckpointError:
      if not watch:
        raise
      # Training deletes old checkpoints (it keeps five) while we watch.
      logging.warning('%s disappeared before it was evaluated; skipped.', path)
      continue
    columns = evaluator.per_example(session, images)
    result = evaluator.summarize(columns)
    result.update(
        split=split,
        binarize=binarize,
        binary_sample=binary_sample,
        checkpoint=path,
        step=step,
        matmul_precision=matmul_precision,
        wall_time_sec=time.time() - start)
    logging.info(
        '%s step %d: neg_elbo %.3f (reconstruction %.3f, kl %.3f)%s '
        'over %d examples; %d of %d latent units active, KL per '
        'dimension %s', split, step, result['neg_elbo'], result['reconstruction'],
        result['kl_divergence'], ', iw_nll %.3f (k=%d)' %
        (result['iw_nll'], iw_samples) if iw_samples else '', result['num_examples'],
        result['active_units'], network.latent_dim,
        ' '.join('%.2f' % kl for kl in result['kl_per_dimension']))
    if aggregate_draws:
      logging.info(
          '%s step %d: kl %.3f = mutual information %.3f (Monte Carlo '
          'stderr %.3f, %d draws; at most log n = %.3f) + marginal '
          'KL(q(z) || p(z)) %.3f', split, step, result['kl_divergence'],
          result['mutual_information'], result['mutual_information_stderr'],
          result['aggregate_draws'] * result['num_examples'], result['mutual_information_max'],
          result['marginal_kl'])
    logging.info(
        '%s step %d: q(z) as a Gaussian is KL %.3f from N(0, I); '
        'covariance eigenvalues %s', split, step, result['prior_fit_kl'],
        ' '.join('%.2f' % v for v in result['aggregate_covariance_eigenvalues']))
    _write_summaries(train_dir, split, step, result)
    if per_example_csv:
      write_per_example_csv(per_example_csv,
                            input_pipeline.read_split_labels(records.split_path(data_dir, split)),
                            columns)
      logging.info('Wrote %s', per_example_csv)
    files.write_json(
        output or os.path.join(train_dir, 'eval_%s_step_%06d.json' % (split, step)), result)
    print(json.dumps(result, sort_keys=True))
    results.append(result)
  return results


def main():
  run_evaluation(settings.fill(EvaluationSettings, FLAGS), settings.fill(settings.Threads, FLAGS))
  return 0


def run():
  """Console-script entry point (vae-evaluate)."""
  cli.run(main, define_flags, __name__, (EvaluationError, input_pipeline.RecordsError,
                                         checkpoints.CheckpointError, run_dir.ConfigError),
          SETTINGS_TYPES, {})


if __name__ == '__main__':
  run()
