"""Exports a trained model as a TensorFlow SavedModel with named signatures.

  python export.py --train_dir runs/upstream --export_dir exports/upstream
  saved_model_cli show --dir exports/upstream --all

The SavedModel (tag `serve`, dropout off, the sizes read from the checkpoint)
loads in plain TensorFlow 2 without this project:

  model = tf.saved_model.load('exports/upstream')
  out = model.signatures['reconstruct'](images=tf.zeros([1, 784]))

Signatures (float32 unless said otherwise; N examples, D = latent size):
  encode          images [N, 784] in [0, 1] -> z_mean, z_stddev [N, D]
  decode          z [N, D] -> probabilities (clipped decoder means), logits [N, 784]
  reconstruct     images -> probabilities, decoding the posterior mean (also
                  serving_default)
  sample          num_samples (int32 []), seed (int64 []) -> z [num_samples, D],
                  probabilities; the same seed gives the same samples
  sample_aggregate  num_samples, seed, temperature (float32 []) -> z,
                  probabilities: z from the Gaussian fitted to the training
                  split's posteriors (the aggregate posterior q(z), scaled
                  by temperature about its mean) instead of N(0, I); present
                  when the checkpoint has a saved fit (generate.py
                  --sample_from aggregate, evaluate.fitted_aggregate_posterior)
                  or --data_dir is given to fit one
  log_likelihood  images, num_samples (int32 [], importance samples K), seed
                  (int64 []) -> neg_elbo [N], nll [N]: evaluate.py's
                  quantities per example, with the draws evaluate.py makes
                  for an example at the same index of its split

The export is written beside --export_dir and renamed into place when
complete; an existing export is replaced only with --overwrite, and never
left half-written.
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import os
import time

from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import meta_graph_pb2

from mnist_vae import aggregate_posterior
from mnist_vae import checkpoints
from mnist_vae import cli
from mnist_vae import evaluation
from mnist_vae import files
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae import run_dir
from mnist_vae import settings
from mnist_vae import trained_model
from mnist_vae.data_prep.records import IMAGE_PIXELS

FLAGS = flags.FLAGS
SERVING_TAG = trained_model.SERVING_TAG
# What the SavedModel's signatures refuse: images outside [0, 1].
IMAGES_RANGE_MESSAGE = ('images must lie in [0, 1] (uint8 pixels: divide by 255; '
                        'mnist_vae.load() does it for you)')


class ExportError(RuntimeError):
  """The export cannot be written; the message says why."""


# What to export and where: export.py's flags, these their defaults.
ExportSettings = collections.namedtuple(
    'ExportSettings', ['train_dir', 'checkpoint', 'export_dir', 'data_dir', 'overwrite'],
    defaults=(None, None, None, None, False))


def _default(name):
  return settings.default(ExportSettings, name)


def define_flags(flag_values=flags.FLAGS):
  flags.DEFINE_string(
      'train_dir',
      _default('train_dir'),
      flag_values=flag_values,
      help='The training run whose latest checkpoint is '
      'exported.')
  flags.DEFINE_string(
      'checkpoint',
      _default('checkpoint'),
      flag_values=flag_values,
      help='A checkpoint path (model.ckpt-N) to export instead '
      'of the latest in --train_dir.')
  flags.DEFINE_string(
      'export_dir',
      _default('export_dir'),
      flag_values=flag_values,
      help='Directory the SavedModel is written to.')
  flags.DEFINE_string(
      'data_dir',
      _default('data_dir'),
      flag_values=flag_values,
      help='TFRecords whose training split fits the aggregate '
      'posterior for the sample_aggregate signature, when no '
      'fit is saved beside the checkpoint (it is saved there '
      'then). Without either, the export has no '
      'sample_aggregate.')
  flags.DEFINE_boolean(
      'overwrite',
      _default('overwrite'),
      flag_values=flag_values,
      help='Replace an existing export in --export_dir.')
  flags.mark_flag_as_required('export_dir', flag_values=flag_values)


def _tensor_info(tensors):
  """{name: TensorInfo} of graph tensors (what the deprecated
  build_tensor_info made, written out)."""
  return {
      name:
          meta_graph_pb2.TensorInfo(
              name=tensor.name,
              dtype=tensor.dtype.as_datatype_enum,
              tensor_shape=tensor.shape.as_proto()) for name, tensor in tensors.items()
  }


def _signature(inputs, outputs):
  return meta_graph_pb2.SignatureDef(
      inputs=_tensor_info(inputs),
      outputs=_tensor_info(outputs),
      method_name=tf.saved_model.signature_constants.PREDICT_METHOD_NAME)


def _checked_images(images):
  """`images` once they are known to lie in [0, 1]: a signature refuses
  pixels in 0..255, which it would otherwise encode into codes that mean
  nothing (InvalidArgumentError with IMAGES_RANGE_MESSAGE; NaN fails too)."""
  checks = [
      tf.debugging.assert_greater_equal(images, 0.0, message=IMAGES_RANGE_MESSAGE),
      tf.debugging.assert_less_equal(images, 1.0, message=IMAGES_RANGE_MESSAGE)
  ]
  with tf.control_dependencies(checks):
    return tf.identity(images)


def build_signatures(network, aggregate_fit=None):
  """Builds the serving graph in the current graph; returns {name: SignatureDef}.

  Args:
    network: architectures.Network of the checkpoint.
    aggregate_fit: (mean [D], covariance [D, D]) of the aggregate posterior
      for sample_aggregate, or None to leave it out.
  """
  latent_dim = network.latent_dim
  images = tf.placeholder(tf.float32, [None, IMAGE_PIXELS], 'images')
  images_input, images = images, _checked_images(images)
  z_mean, z_stddev = model.encode(images, network)
  reconstruction = model.probabilities(model.decode(z_mean, network))

  z = tf.placeholder(tf.float32, [None, latent_dim], 'z')
  logits = model.decode(z, network)

  num_samples = tf.placeholder(tf.int32, [], 'num_samples')
  seed = tf.placeholder(tf.int64, [], 'seed')
  prior_z = tf.random.stateless_normal(
      tf.stack([num_samples, latent_dim]),
      seed=tf.stack([seed, tf.constant(trained_model.SAMPLE_STREAM, tf.int64)]))
  prior_samples = model.probabilities(model.decode(prior_z, network))

  # The importance-weighted bound and the ELBO from the same K draws per
  # example, keyed as evaluate.py keys them: by (seed, index in the input).
  indices = tf.range(tf.shape(images, out_type=tf.int64)[0])
  log_weights = model.log_importance_weights(
      images, z_mean, z_stddev,
      evaluation.keyed_normal_draws(seed, indices, evaluation.IMPORTANCE_DRAWS, num_samples,
                                    latent_dim), network)
  # The ELBO uses a stream of its own, as evaluate.py does.
  elbo_log_likelihood = model.log_likelihood_of_draws(
      images, z_mean, z_stddev,
      evaluation.keyed_normal_draws(seed, indices, evaluation.ELBO_DRAWS, num_samples, latent_dim),
      network)
  neg_elbo = (-tf.reduce_mean(elbo_log_likelihood, axis=0)
              + model.gaussian_kl(z_mean, z_stddev, network))
  num_draws = tf.cast(tf.shape(log_weights)[0], tf.float32)
  nll = -(tf.reduce_logsumexp(log_weights, axis=0) - tf.log(num_draws))

  reconstruct = _signature({'images': images_input}, {'probabilities': reconstruction})
  signatures = {}
  if aggregate_fit is not None:
    mean, covariance = aggregate_fit
    temperature = tf.placeholder(tf.float32, [], 'temperature')
    # The prior's draws for the seed, moved and shaped like q(z).
    aggregate_z = mean.astype('float32') + temperature * tf.matmul(
        prior_z, tf.constant(np.linalg.cholesky(covariance).T, tf.float32))
    signatures['sample_aggregate'] = _signature(
        {
            'num_samples': num_samples,
            'seed': seed,
            'temperature': temperature
        }, {
            'z': aggregate_z,
            'probabilities': model.probabilities(model.decode(aggregate_z, network))
        })
  return dict(
      signatures, **{
          'encode':
              _signature({'images': images_input}, {
                  'z_mean': z_mean,
                  'z_stddev': z_stddev
              }),
          'decode':
              _signature({'z': z}, {
                  'probabilities': model.probabilities(logits),
                  'logits': logits
              }),
          'reconstruct':
              reconstruct,
          tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
              reconstruct,
          'sample':
              _signature({
                  'num_samples': num_samples,
                  'seed': seed
              }, {
                  'z': prior_z,
                  'probabilities': prior_samples
              }),
          'log_likelihood':
              _signature({
                  'images': images_input,
                  'num_samples': num_samples,
                  'seed': seed
              }, {
                  'neg_elbo': neg_elbo,
                  'nll': nll
              }),
      })


def export(checkpoint, export_dir, overwrite=False, data_dir=None):
  """Writes the SavedModel of `checkpoint` to export_dir; returns its signatures.

  sample_aggregate is included when the checkpoint has a saved fit of its
  aggregate posterior, or data_dir is given to make one.

  Raises:
    checkpoints.CheckpointError: the checkpoint is unreadable or not a VAE of
      this project.
    ExportError: export_dir exists and overwrite is off.
  """
  network = checkpoints.network(checkpoint)
  if tf.io.gfile.exists(export_dir) and not overwrite:
    raise ExportError('%s already exists: pass --overwrite to replace it, or '
                      'choose another --export_dir' % export_dir)
  files.make_parent_dirs(export_dir.rstrip('/'), '--export_dir')
  aggregate_fit = None
  if data_dir or tf.io.gfile.exists(aggregate_posterior.fit_path(checkpoint)):
    aggregate_fit = trained_model.fitted_aggregate_posterior(checkpoint, data_dir)
  else:
    logging.info(
        'No sample_aggregate signature: %s has no saved fit of its '
        'aggregate posterior; pass --data_dir to fit one.', checkpoint)
  partial = '%s.partial-%d' % (export_dir.rstrip('/'), os.getpid())
  try:
    with tf.Graph().as_default():
      signatures = build_signatures(network, aggregate_fit)
      with tf.Session() as session:
        checkpoints.restore(session, checkpoint)
        builder = tf.saved_model.Builder(partial)
        builder.add_meta_graph_and_variables(
            session, [SERVING_TAG], signature_def_map=signatures, strip_default_attrs=True)
        builder.save()
  except BaseException:
    if tf.io.gfile.exists(partial):  # A full disk keeps no half export.
      tf.io.gfile.rmtree(partial)
    raise
  if tf.io.gfile.exists(export_dir):
    # The old export stays whole until the new one is complete beside it.
    previous = '%s.previous-%d' % (export_dir.rstrip('/'), os.getpid())
    tf.io.gfile.rename(export_dir, previous)
    tf.io.gfile.rename(partial, export_dir)
    tf.io.gfile.rmtree(previous)
  else:
    tf.io.gfile.rename(partial, export_dir)
  return sorted(signatures)


def main():
  export_settings = settings.fill(ExportSettings, FLAGS)
  if not export_settings.checkpoint and not export_settings.train_dir:
    raise ExportError('Pass --train_dir (its latest checkpoint is exported) '
                      'or --checkpoint')
  checkpoint = checkpoints.readable(export_settings.train_dir, export_settings.checkpoint)
  start = time.time()
  names = export(checkpoint, export_settings.export_dir, export_settings.overwrite,
                 export_settings.data_dir)
  logging.info('Exported %s (step %d) to %s in %.1f s; signatures: %s', checkpoint,
               checkpoints.step_of(checkpoint), export_settings.export_dir,
               time.time() - start, ', '.join(names))
  return 0


def run():
  """Console-script entry point (vae-export)."""
  cli.run(main, define_flags, __name__,
          (ExportError, checkpoints.CheckpointError, evaluation.EvaluationError,
           input_pipeline.RecordsError, trained_model.ModelError, run_dir.ConfigError),
          (ExportSettings,), {})


if __name__ == '__main__':
  run()
