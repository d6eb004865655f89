"""The one evaluator: negative ELBO and importance-weighted NLL of a split.

train.py (validation during training, the final metrics) and evaluate.py both
use `Evaluator`, so a checkpoint has one number per metric whichever program
computes it. With dropout off, for every example x of the split:

  reconstruction = -mean_s log p(x | z_s), s = 1..num_samples draws of z
  kl_divergence  = KL(q(z | x) || p(z)), in closed form
  neg_elbo       = reconstruction + kl_divergence
  mutual_information + marginal_kl = kl_divergence, and prior_fit_kl: the
                   aggregate posterior q(z) against p(z) (aggregate_posterior.py)
  iw_nll         = -log mean_k w_k, k = 1..iw_samples (Burda et al. 2015,
                   eq. 8), w_k = p(x, z_k) / q(z_k | x): an upper bound on
                   -log p(x) that tightens as iw_samples grows

The draws of z for an example depend only on (seed, the example's index in
the split): the same checkpoint and seed give the same figures whatever the
batch size, the chunk size or the program.
"""

import time

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import aggregate_posterior
from mnist_vae import fast_step
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae.data_prep import records
from mnist_vae.data_prep.records import IMAGE_PIXELS

# evaluate.py's default --seed; train.py evaluates with it, so that its
# metrics.json and a default evaluate.py run agree.
DEFAULT_SEED = 0
# A k=1000 evaluation of the test set takes minutes: say how far it is.
PROGRESS_EVERY_SEC = 30

ELBO_DRAWS, IMPORTANCE_DRAWS = 0, 1  # Separate streams per example.
# At most this many ELBO draws are kept for re-use (float32: 16 MB; a
# 10,000-example split with one draw of a 20-d z is 200,000).
KEPT_DRAWS_LIMIT = 2**22


class EvaluationError(RuntimeError):
  """A checkpoint or the data cannot be evaluated; the message says why."""


def split_images(data_dir, split, binarize, binary_sample=0):
  """Every image of a split as evaluation sees it (binary_sample: which
  static sample, see input_pipeline.binarize_static): float32 [n, 784];
  EvaluationError if it holds none."""
  path = records.split_path(data_dir, split)
  input_pipeline.inspect_records(path, allow_empty=True)
  images = input_pipeline.read_split_images(path, binarize, binary_sample)
  if not len(images):
    raise EvaluationError(
        '%s holds no examples: these TFRecords were made with --validation_size=0, so '
        'there is no %s split to evaluate.' % (path, split))
  return images


def keyed_normal_draws(seed, example_indices, purpose, count, latent_dim):
  """Standard normal draws of z's noise, keyed by example (in the graph).

  Args:
    seed: int64 [] (tensor or int), >= 0.
    example_indices: int64 [n], each example's index in its split.
    purpose: 0 for the ELBO's draws, 1 for the importance samples: separate
      streams of the same example.
    count: draws per example (int or int32 [] tensor).
    latent_dim: size of z.

  Returns:
    float32 [count, n, latent_dim]; example i's column depends on (seed,
    purpose, example_indices[i]) only, whatever else is in the batch.
  """
  key = tf.cast(seed, tf.int64) * 2 + purpose
  per_example = tf.map_fn(
      lambda index: tf.random.stateless_normal(
          tf.stack([count, latent_dim]), seed=tf.stack([key, index])),
      tf.cast(example_indices, tf.int64),
      fn_output_signature=tf.float32)
  return tf.transpose(per_example, [1, 0, 2])


# The per-example metrics whose means are a split's figures.
SCALARS = ('neg_elbo', 'reconstruction', 'kl_divergence', 'iw_nll')
# The aggregate posterior's figures (scalars of the results, TensorBoard).
AGGREGATE_SCALARS = ('mutual_information', 'marginal_kl', 'prior_fit_kl')
# Burda et al. (2015, section 5.2): a latent dimension is active when its
# posterior mean varies over the data by more than this (variance).
ACTIVE_UNIT_VARIANCE = 0.01


def summarize_latents(z_mean, kl_per_dimension):
  """How the latent space is used over a split.

  Args:
    z_mean: float [n, latent_dim], the posterior means.
    kl_per_dimension: float [n, latent_dim].

  Returns:
    {'active_units': number of dimensions d with Var_x(E_q[z_d]) > 0.01,
     'kl_per_dimension': list of the mean KL of each dimension}.
  """
  return {
      'active_units': int(np.sum(np.var(z_mean, axis=0) > ACTIVE_UNIT_VARIANCE)),
      'kl_per_dimension': [float(v) for v in np.mean(kl_per_dimension, axis=0)],
  }


class Evaluator(object):
  """The evaluation ops, built over the model variables of the current graph
  (new ones, or a training graph's: variables are shared by name)."""

  def __init__(self,
               network,
               num_samples=1,
               iw_samples=0,
               iw_chunk=100,
               batch_size=100,
               seed=DEFAULT_SEED,
               matmul_dtype=tf.float32,
               aggregate_draws=1):
    """
    Args:
      network: architectures.Network.
      num_samples: draws of z per example for the reconstruction term.
      iw_samples: importance samples per example for iw_nll; 0 skips it.
      iw_chunk: importance samples decoded at once (bounds memory).
      batch_size: examples per run (does not change results).
      seed: seed of the draws, >= 0.
      matmul_dtype: tf.float32, or tf.bfloat16 for every multiply of the
        evaluation's dense layers (model.LayerOps); float32 everywhere else.
      aggregate_draws: z draws per example for the mutual information
        (aggregate_posterior.decompose_kl); 0 skips it.
    """
    self.network, self.aggregate_draws = network, aggregate_draws
    self.num_samples, self.iw_samples = num_samples, iw_samples
    self.iw_chunk, self.batch_size, self.seed = iw_chunk, batch_size, seed
    with tf.name_scope('evaluation'):
      self._images = tf.placeholder(tf.float32, [None, IMAGE_PIXELS], 'images')
      # The index in the split of the batch's first image.
      self._first_index = tf.placeholder(tf.int64, [], 'first_index')
      indices = self._first_index + tf.range(tf.shape(self._images, out_type=tf.int64)[0])
      z_mean, z_stddev = model.encode(self._images, network, matmul_dtype=matmul_dtype)
      # The reconstruction term's draws, made in the graph the first time a
      # batch is evaluated and fed back after that (`per_example`).
      self._elbo_draws = keyed_normal_draws(seed, indices, ELBO_DRAWS, num_samples,
                                            network.latent_dim)
      self._fed_elbo_draws = tf.placeholder_with_default(self._elbo_draws,
                                                         [num_samples, None, network.latent_dim])
      self._kept_elbo_draws = {}
      log_likelihood = model.log_likelihood_of_draws(self._images, z_mean, z_stddev,
                                                     self._fed_elbo_draws, network, matmul_dtype)
      kl_per_dimension = model.gaussian_kl_per_dimension(z_mean, z_stddev, network)
      self._per_example_terms = {
          'reconstruction': -tf.reduce_mean(log_likelihood, axis=0),
          'kl_divergence': tf.reduce_sum(kl_per_dimension, axis=1),
          'kl_per_dimension': kl_per_dimension,
          'z_mean': z_mean,
          'z_stddev': z_stddev,
      }
      if iw_samples:
        self._per_example_terms['iw_nll'] = -self._log_mean_weight(z_mean, z_stddev, indices,
                                                                   matmul_dtype)

  def _log_mean_weight(self, z_mean, z_stddev, indices, matmul_dtype):
    """log mean_k w_k per image of the batch, float64 [n].

    The draws are made once per batch; a loop in the graph decodes them
    iw_chunk at a time (bounding memory), with no round trip through NumPy.
    """
    draws = keyed_normal_draws(self.seed, indices, IMPORTANCE_DRAWS, self.iw_samples,
                               self.network.latent_dim)
    num_chunks = -(-self.iw_samples // self.iw_chunk)

    def decode_chunk(chunk, log_weights):
      noise = draws[chunk * self.iw_chunk:(chunk + 1) * self.iw_chunk]
      # The likelihood as one XLA computation, where the draws make the work.
      return chunk + 1, log_weights.write(
          chunk,
          model.log_importance_weights(self._images, z_mean, z_stddev, noise,
                                       self.network, matmul_dtype,
                                       fast_step.compiled_log_likelihood(self.network)))

    # One chunk at a time: its decoder multiplies use both cores already,
    # and several in flight would multiply the memory.
    _, log_weights = tf.while_loop(
        lambda chunk, _: chunk < num_chunks,
        decode_chunk,
        [tf.constant(0), tf.TensorArray(tf.float32, num_chunks, infer_shape=False)],
        parallel_iterations=1)
    log_weights = tf.cast(log_weights.concat(), tf.float64)
    return (tf.reduce_logsumexp(log_weights, axis=0)
            - tf.math.log(tf.cast(self.iw_samples, tf.float64)))

  def per_example(self, session, images):
    """Every metric for each image: {name: float64 [n]}, and the posteriors
    `z_mean`, `z_stddev` and `kl_per_dimension`, float64 [n, latent_dim].

    Args:
      session: a session holding the model's weights.
      images: float32 [n, 784] in [0, 1], the whole split, in order (an
        image's position is its index for the draws).
    """
    start = last_progress = time.time()
    columns = {key: [] for key in self._per_example_terms}
    for begin in range(0, len(images), self.batch_size):
      if begin and time.time() - last_progress >= PROGRESS_EVERY_SEC:
        last_progress = time.time()
        logging.info('%d of %d examples, about %.0f s left.', begin, len(images),
                     (last_progress - start) * (len(images) - begin) / begin)
      batch = images[begin:begin + self.batch_size]
      feed = {self._images: batch, self._first_index: begin}
      # The draws depend on the seed and the examples' indices only: training
      # validates the same split every few thousand steps, and making the
      # draws (one small op per example) anew each time would cost much of it.
      kept = self._kept_elbo_draws.get((begin, len(batch)))
      if kept is None:
        terms, draws = session.run([self._per_example_terms, self._elbo_draws], feed)
        if self._keeps_draws(len(batch)):
          self._kept_elbo_draws[begin, len(batch)] = draws
      else:
        feed[self._fed_elbo_draws] = kept
        terms = session.run(self._per_example_terms, feed)
      for key, values in terms.items():
        columns[key].append(values.astype(np.float64))
    result = {key: np.concatenate(values) for key, values in columns.items()}
    result['neg_elbo'] = result['reconstruction'] + result['kl_divergence']
    return result

  def _keeps_draws(self, batch_size):
    """Whether the draws of one more batch of `batch_size` fit in what
    per_example keeps (KEPT_DRAWS_LIMIT numbers)."""
    kept = sum(draws.size for draws in self._kept_elbo_draws.values())
    return (kept + self.num_samples * batch_size * self.network.latent_dim <= KEPT_DRAWS_LIMIT)

  def evaluate(self, session, images):
    """The split's figures: summarize(per_example(session, images))."""
    if not len(images):
      raise ValueError('No examples to evaluate')
    return self.summarize(self.per_example(session, images))

  def summarize(self, columns):
    """per_example()'s arrays -> {neg_elbo, reconstruction, kl_divergence,
    [iw_nll,] num_examples, num_samples, iw_samples, seed, kl_per_dimension
    (list), active_units} (means over the examples) and the aggregate
    posterior's figures (aggregate_posterior.summarize)."""
    result = {key: float(np.mean(columns[key])) for key in SCALARS if key in columns}
    result.update(summarize_latents(columns['z_mean'], columns['kl_per_dimension']))
    result.update(
        aggregate_posterior.summarize(columns['z_mean'], columns['z_stddev'],
                                      result['kl_divergence'], self.aggregate_draws, self.seed))
    result.update(
        num_examples=len(columns['neg_elbo']),
        num_samples=self.num_samples,
        iw_samples=self.iw_samples,
        seed=self.seed)
    return result
