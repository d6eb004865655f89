"""The one evaluator: negative ELBO and importance-weighted NLL of a split.

train.py (validation during training, the final metrics) and evaluate.py both
use `Evaluator`, so a checkpoint has one number per metric whichever program
computes it. With dropout off, for every example x of the split:

  reconstruction = -mean_s log p(x | z_s), s = 1..num_samples draws of z
  kl_divergence  = KL(q(z | x) || p(z)), in closed form
  neg_elbo       = reconstruction + kl_divergence
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

from mnist_vae import model
from mnist_vae.data_prep.records import IMAGE_PIXELS

# evaluate.py's default --seed; train.py evaluates with it, so that its
# metrics.json and a default evaluate.py run agree.
DEFAULT_SEED = 0
# A k=1000 evaluation of the test set takes minutes: say how far it is.
PROGRESS_EVERY_SEC = 30

_ELBO_DRAWS, _IMPORTANCE_DRAWS = 0, 1  # Separate streams per example.


def standard_normal_draws(seed, first_index, num_examples, purpose, count,
                          latent_dim):
  """The draws of z's noise for examples first_index .. +num_examples.

  Returns:
    float32 [count, num_examples, latent_dim]; example i's column depends on
    (seed, i, purpose) only.
  """
  return np.stack([
      np.random.default_rng([seed, index, purpose]).standard_normal(
          (count, latent_dim), np.float32)
      for index in range(first_index, first_index + num_examples)], axis=1)


class Evaluator(object):
  """The evaluation ops, built over the model variables of the current graph
  (new ones, or a training graph's: variables are shared by name)."""

  def __init__(self, model_size, num_samples=1, iw_samples=0, iw_chunk=100,
               batch_size=100, seed=DEFAULT_SEED):
    """
    Args:
      model_size: model.ModelSize.
      num_samples: draws of z per example for the reconstruction term.
      iw_samples: importance samples per example for iw_nll; 0 skips it.
      iw_chunk: importance samples decoded at once (bounds memory).
      batch_size: examples per run (does not change results).
      seed: seed of the draws, >= 0.
    """
    self.model_size = model_size
    self.num_samples, self.iw_samples = num_samples, iw_samples
    self.iw_chunk, self.batch_size, self.seed = iw_chunk, batch_size, seed
    with tf.name_scope('evaluation'):
      self._images = tf.placeholder(tf.float32, [None, IMAGE_PIXELS], 'images')
      self._noise = tf.placeholder(tf.float32, [None, None,
                                                model_size.latent_dim], 'noise')
      z_mean, z_stddev = model.encode(self._images, model_size)
      # log w_k with the prior and posterior terms; for the ELBO only its
      # log-likelihood part, averaged over the draws.
      self._log_weights, log_likelihood = model.log_importance_weights(
          self._images, z_mean, z_stddev, self._noise, model_size,
          with_log_likelihood=True)
      self._elbo_terms = {
          'reconstruction': -tf.reduce_mean(log_likelihood, axis=0),
          'kl_divergence': model.gaussian_kl(z_mean, z_stddev),
      }

  def per_example(self, session, images):
    """Every metric for each image: {name: float64 [n]}.

    Args:
      session: a session holding the model's weights.
      images: float32 [n, 784] in [0, 1], the whole split, in order (an
        image's position is its index for the draws).
    """
    start = last_progress = time.time()
    columns = {key: [] for key in ('reconstruction', 'kl_divergence')}
    if self.iw_samples:
      columns['iw_nll'] = []
    for begin in range(0, len(images), self.batch_size):
      if begin and time.time() - last_progress >= PROGRESS_EVERY_SEC:
        last_progress = time.time()
        logging.info('%d of %d examples, about %.0f s left.', begin,
                     len(images),
                     (last_progress - start) * (len(images) - begin) / begin)
      batch = images[begin:begin + self.batch_size]
      terms = session.run(self._elbo_terms, {
          self._images: batch,
          self._noise: self._draws(begin, len(batch), _ELBO_DRAWS,
                                   self.num_samples)})
      for key, values in terms.items():
        columns[key].append(values.astype(np.float64))
      if self.iw_samples:
        columns['iw_nll'].append(-self._log_mean_weight(session, batch, begin))
    result = {key: np.concatenate(values) if values else np.zeros([0])
              for key, values in columns.items()}
    result['neg_elbo'] = result['reconstruction'] + result['kl_divergence']
    return result

  def evaluate(self, session, images):
    """Means over `images` (see per_example): {neg_elbo, reconstruction,
    kl_divergence, [iw_nll,] num_examples, num_samples, iw_samples, seed}."""
    if not len(images):
      raise ValueError('No examples to evaluate')
    columns = self.per_example(session, images)
    result = {key: float(np.mean(values)) for key, values in columns.items()}
    result.update(num_examples=len(images), num_samples=self.num_samples,
                  iw_samples=self.iw_samples, seed=self.seed)
    return result

  def _draws(self, first_index, num_examples, purpose, count):
    return standard_normal_draws(self.seed, first_index, num_examples, purpose,
                                 count, self.model_size.latent_dim)

  def _log_mean_weight(self, session, batch, first_index):
    """log mean_k w_k per example of `batch`, float64 [len(batch)]."""
    noise = self._draws(first_index, len(batch), _IMPORTANCE_DRAWS,
                        self.iw_samples)
    log_weights = np.concatenate([
        session.run(self._log_weights, {self._images: batch,
                                        self._noise: noise[k:k + self.iw_chunk]})
        for k in range(0, self.iw_samples, self.iw_chunk)]).astype(np.float64)
    peak = log_weights.max(axis=0)
    return peak + np.log(np.mean(np.exp(log_weights - peak), axis=0))
