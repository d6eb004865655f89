"""A trained model to use from Python: `mnist_vae.load(path)`.

  import mnist_vae
  vae = mnist_vae.load('runs/upstream')        # a run, a checkpoint or an export
  z_mean, z_stddev = vae.encode(images)        # images: [n, 28, 28] uint8, ...
  pictures = vae.decode(z_mean)                # float32 [n, 784] in [0, 1]
  log_px = vae.log_likelihood(images, k=1000)  # nats per image

Every method takes and returns NumPy arrays and works in a plain Python
session or a notebook (the model runs in a graph and session of its own).
PATH may be a run directory (its newest readable checkpoint), a checkpoint
(model.ckpt-N) or a SavedModel written by export.py; the network, whichever
architecture, is the one the checkpoint holds.

Images are accepted as [n, 784], [n, 28, 28] or [n, 28, 28, 1]: floats of any
precision in [0, 1], or uint8 pixels in 0..255, which are divided by 255.
Anything else raises a ValueError that names what was received and what is
accepted.
"""

import os
import time

from absl import logging
import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from mnist_vae import aggregate_posterior
from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import evaluation
from mnist_vae import model
from mnist_vae import run_dir
from mnist_vae.data_prep import records

SERVING_TAG = 'serve'
# What the prior samples of `sample` are keyed by, besides their seed (the
# export's `sample` signature draws the same).
SAMPLE_STREAM = 2
_SHAPES = ('[n, 784]', '[n, 28, 28]', '[n, 28, 28, 1]')


class ModelError(RuntimeError):
  """A model cannot be loaded or used; the message says which and why."""


def as_images(images, name='images'):
  """`images` as the model takes them: float32 [n, 784] in [0, 1].

  Args:
    images: [n, 784], [n, 28, 28] or [n, 28, 28, 1]; floats in [0, 1] or
      uint8 in 0..255 (divided by 255).
    name: the argument's name, for the message.

  Raises:
    ValueError: another shape, dtype or range, named with what is accepted.
  """
  array = np.asarray(images)
  shape = array.shape
  if len(shape) < 2 or shape[1:] not in ((784,), (28, 28), (28, 28, 1)):
    raise ValueError('%s: shape %s is not one of %s' % (name, shape, ', '.join(_SHAPES)))
  if array.dtype == np.uint8:
    return (array.reshape(-1, architectures.IMAGE_PIXELS) / np.float32(255)).astype(np.float32)
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError('%s: dtype %s is not accepted: pass floats in [0, 1] or uint8 '
                     'pixels in 0..255' % (name, array.dtype))
  if array.size:
    not_finite = array.size - np.count_nonzero(np.isfinite(array))
    if not_finite:
      raise ValueError('%s: float values must lie in [0, 1]; %d of %d are NaN or infinite' %
                       (name, not_finite, array.size))
    if array.min() < 0.0 or array.max() > 1.0:
      raise ValueError('%s: float values must lie in [0, 1]; these lie in [%s, %s] (uint8 '
                       'pixels in 0..255 are accepted and divided by 255)' %
                       (name, array.min(), array.max()))
  return array.reshape(-1, architectures.IMAGE_PIXELS).astype(np.float32)


def as_latents(z, latent_dim):
  """`z` as float32 [n, latent_dim]; ValueError for another shape or
  non-numbers."""
  array = np.asarray(z)
  if array.ndim != 2 or array.shape[1] != latent_dim:
    raise ValueError('z: shape %s is not [n, %d] (the latent size of this model)' %
                     (array.shape, latent_dim))
  if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
    raise ValueError('z: expected finite numbers, got dtype %s' % array.dtype)
  return array.astype(np.float32)


def _check_count(n, name):
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError('%s: expected a whole number >= 1, got %r' % (name, n))


class _Model(object):
  """What both kinds of model share: the checks of the inputs."""

  latent_dim = None

  def encode(self, images):
    """The posterior q(z | x) of each image: (z_mean, z_stddev), float32
    [n, latent_dim] each."""
    return tuple(self._encode(as_images(images)))

  def decode(self, z):
    """The decoder's Bernoulli means p(x | z) (clipped to [1e-8, 1 - 1e-8]):
    float32 [n, 784]."""
    return self._decode(as_latents(z, self.latent_dim))

  def reconstruct(self, images):
    """Each image decoded from its posterior mean: float32 [n, 784]."""
    return self._decode(self._encode(as_images(images))[0])

  def sample(self, n, seed=0):
    """n images decoded from draws of the prior N(0, I): float32 [n, 784];
    the same seed gives the same images (for a checkpoint and its export)."""
    _check_count(n, 'n')
    return self._decode(self.prior_draws(int(n), int(seed)))

  def prior_draws(self, n, seed):
    """The draws of z that sample(n, seed) decodes: float32 [n, latent_dim]."""
    return self._prior_draws(n, seed)

  def log_likelihood(self, images, k=1000, seed=0):
    """The importance-weighted estimate of log p(x) with k draws of z per
    image (Burda et al. 2015; evaluate.py's NLL, negated), in nats: float64
    [n]. A lower bound that tightens as k grows; k = 1 is the ELBO of one
    draw. Deterministic for a seed and an image's position in `images`."""
    _check_count(k, 'k')
    return self._log_likelihood(as_images(images), int(k), int(seed))


class CheckpointModel(_Model):
  """A checkpoint's model in a graph and session of its own (dropout off)."""

  def __init__(self, checkpoint):
    self.checkpoint = checkpoint
    self.network = checkpoints.network(checkpoint)
    self.latent_dim = self.network.latent_dim
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._images = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
      self._z_mean, self._z_stddev = model.encode(self._images, self.network)
      self._z = tf.placeholder(tf.float32, [None, self.latent_dim])
      self._probabilities = model.probabilities(model.decode(self._z, self.network))
      self._count = tf.placeholder(tf.int32, [])
      self._seed = tf.placeholder(tf.int64, [])
      self._prior_z = tf.random.stateless_normal(
          tf.stack([self._count, self.latent_dim]),
          seed=tf.stack([self._seed, tf.constant(SAMPLE_STREAM, tf.int64)]))
      self._saver = tf.train.Saver(model.model_variables())
      self._session = tf.Session()
    checkpoints.restore(self._session, checkpoint, self._saver)
    self._evaluators = {}

  def _encode(self, pixels):
    return self._session.run([self._z_mean, self._z_stddev], {self._images: pixels})

  def _decode(self, z):
    return self._session.run(self._probabilities, {self._z: z})

  def _prior_draws(self, n, seed):
    return self._session.run(self._prior_z, {self._count: n, self._seed: seed})

  def _log_likelihood(self, pixels, k, seed):
    key = (k, seed)
    if key not in self._evaluators:
      with self._graph.as_default():
        self._evaluators[key] = evaluation.Evaluator(
            self.network, iw_samples=k, seed=seed, aggregate_draws=0, iw_chunk=min(k, 100))
    return -self._evaluators[key].per_example(self._session, pixels)['iw_nll']

  def sample_aggregate(self, num, seed, temperature, data_dir):
    """Decoded draws of the aggregate posterior's fit: float32 [num, 784]."""
    mean, covariance = fitted_aggregate_posterior(self.checkpoint, data_dir)
    return self._decode(aggregate_posterior.sample(mean, covariance, num, seed, temperature))


class ExportedModel(_Model):
  """A SavedModel of export.py, through its signatures, loaded by TensorFlow 2
  (eagerly: no session of its own)."""

  def __init__(self, export_dir):
    try:
      self._signatures = tf2.saved_model.load(export_dir, tags=[SERVING_TAG]).signatures
    except (OSError, RuntimeError, ValueError, tf.errors.OpError) as e:
      raise ModelError('Cannot load a SavedModel from %s: %s' %
                       (export_dir, str(e).splitlines()[0])) from e
    missing = {'encode', 'decode'} - set(self._signatures)
    if missing:
      raise ModelError('%s is not an export of this project (no %s signature)' %
                       (export_dir, ', '.join(sorted(missing))))
    self.latent_dim = int(self._signatures['decode'].structured_input_signature[1]['z'].shape[1])

  def _run(self, signature, outputs, **inputs):
    function = self._signatures[signature]
    specs = function.structured_input_signature[1]
    result = function(**{
        name: tf2.constant(value, specs[name].dtype) for name, value in inputs.items()
    })
    return [result[name].numpy() for name in outputs]

  def _encode(self, pixels):
    return self._run('encode', ['z_mean', 'z_stddev'], images=pixels)

  def _decode(self, z):
    return self._run('decode', ['probabilities'], z=z)[0]

  def _prior_draws(self, n, seed):
    return self._run('sample', ['z'], num_samples=n, seed=seed)[0]

  def _log_likelihood(self, pixels, k, seed):
    return -self._run(
        'log_likelihood', ['nll'], images=pixels, num_samples=k, seed=seed)[0].astype(np.float64)

  def sample_aggregate(self, num, seed, temperature, data_dir):
    """The export's sample_aggregate signature (data_dir is not needed)."""
    del data_dir  # The fit is inside the export.
    if 'sample_aggregate' not in self._signatures:
      raise ModelError('This export has no sample_aggregate signature (its checkpoint had no fit '
                       'of the aggregate posterior): export it again with export.py --data_dir, '
                       'or sample from the prior')
    return self._run(
        'sample_aggregate', ['probabilities'], num_samples=num, seed=seed,
        temperature=temperature)[0]


# Where generated samples' z come from: the prior N(0, I), or the Gaussian
# fitted to the training split's posteriors (the aggregate posterior).
SAMPLE_SOURCES = ('prior', 'aggregate')


def draw_samples(vae, num, seed, temperature=1.0, sample_from='prior', data_dir=None):
  """Decoded draws of z: float32 [num, 784]. Prior draws are sample()'s,
  scaled by temperature; aggregate draws are standard normal draws moved
  and shaped by the fit of q(z) (fitted to data_dir's training split for a
  checkpoint, None: the run's own data; an export carries its fit)."""
  if sample_from == 'aggregate':
    return vae.sample_aggregate(num, seed, temperature, data_dir)
  return vae.decode(temperature * vae.prior_draws(num, seed))


def load(path):
  """The model at `path`: a run directory (its newest readable checkpoint),
  a checkpoint (model.ckpt-N) or a SavedModel directory of export.py.

  Raises:
    ModelError, checkpoints.CheckpointError: nothing usable at `path`; the
      message says what was found.
  """
  if tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    return ExportedModel(path)
  if tf.io.gfile.exists(path + '.index'):
    return CheckpointModel(checkpoints.readable(checkpoint=path))
  if tf.io.gfile.isdir(path):
    return CheckpointModel(checkpoints.readable(train_dir=path))
  raise ModelError('%s is neither a run directory, a checkpoint (no %s.index) nor an '
                   'export (no saved_model.pb)' % (path, path))


def fitted_aggregate_posterior(checkpoint, data_dir=None, binarize=None, batch_size=1000):
  """The moment-matched Gaussian of q(z) over the training split, for
  `checkpoint`: (mean float64 [D], covariance float64 [D, D]).

  Read from aggregate_posterior.fit_path(checkpoint) when it is there;
  otherwise the training split of data_dir (None: the one the run was
  trained on) is encoded (dropout off, binarized as the run was trained,
  binarize None: as its config.json says), and the fit saved there.
  """
  path = aggregate_posterior.fit_path(checkpoint)
  network = checkpoints.network(checkpoint)
  if tf.io.gfile.exists(path):
    try:
      fit = aggregate_posterior.read_fit(path, network.latent_dim)
    except ValueError as e:
      raise ModelError('%s; delete it to fit again' % e) from e
    logging.info('The aggregate posterior\'s fit: %s', path)
    return fit
  start = time.time()
  train_dir = os.path.dirname(checkpoint)
  binarize = binarize or run_dir.trained_setting(train_dir, 'binarize', 'none')
  data_dir = data_dir or run_dir.trained_setting(train_dir, 'data_dir', run_dir.DEFAULT_DATA_DIR)
  images = evaluation.split_images(data_dir, 'train', binarize)
  with tf.Graph().as_default():
    pixels = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
    posterior = model.encode(pixels, network)
    with tf.Session() as session:
      checkpoints.restore(session, checkpoint)
      z_mean, z_stddev = (
          np.concatenate(column)
          for column in zip(*(session.run(posterior, {pixels: images[begin:begin + batch_size]})
                              for begin in range(0, len(images), batch_size))))
  mean, covariance = aggregate_posterior.moments(z_mean, z_stddev)
  aggregate_posterior.write_fit(
      path,
      mean,
      covariance,
      checkpoint=os.path.basename(checkpoint),
      split='train',
      num_examples=len(images),
      binarize=binarize,
      data_dir=data_dir)
  logging.info(
      'Fitted the aggregate posterior to the %d training images in %.1f s (KL '
      '%.3f from N(0, I)); saved to %s', len(images),
      time.time() - start, aggregate_posterior.prior_fit_kl(mean, covariance), path)
  return mean, covariance
