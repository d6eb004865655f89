"""The aggregate posterior q(z) = mean over x of q(z | x), against the prior.

Training pulls each q(z | x) towards p(z) = N(0, I), but prior samples are
only as good as the match of q(z), the mixture of every posterior of the
data, to p(z). Two measurements (NumPy, from the posterior means and
standard deviations of a split, float64):

- ELBO surgery (Hoffman & Johnson 2016): the average KL term splits exactly
  into the mutual information between the example's index and z under
  q(x, z), and the marginal KL(q(z) || p(z)):
      mean_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)).
  `decompose_kl` estimates I by Monte Carlo: draws z_i ~ q(z | x_i) for each
  example, log q(z_i) as a log-mean-exp over every posterior of the split,
  I = mean of log q(z_i | x_i) - log q(z_i) (at most log n); the marginal KL
  is the closed-form average KL minus I, so the two add up to the KL term.
- The moments of q(z): mean m = mean_x mu(x), covariance
  S = Cov_x(mu(x)) + mean_x diag(sigma(x)^2) (the law of total covariance).
  `prior_fit_kl` is KL(N(m, S) || N(0, I)), a lower bound on the marginal KL
  (a Gaussian has the most entropy for its moments), and S's eigenvalues say
  which directions q(z) fills (1 for the prior's) and which it leaves empty.

The moment-matched Gaussian is also what `generate.py --sample_from
aggregate` samples from; its fit is saved beside the checkpoint
(`fit_path`).
"""

import functools
import math

import numpy as np

from mnist_vae import files

# log q(z_i | x_j) is computed for this many (i, j) pairs at a time (float64:
# 4 MB), whatever the size of the split: a chunk that stays in the caches
# (and under malloc's mmap threshold, so it is not page-faulted in anew each
# time) beats a larger one.
PAIRS_AT_ONCE = 2**19
LOG_2PI = math.log(2.0 * math.pi)
FIT_SUFFIX = '.aggregate_posterior.json'
# The expanded log density's rounding error (nats) beyond which decompose_kl
# takes the differences themselves.
EXPANSION_TOLERANCE = 1e-6


def moments(z_mean, z_stddev):
  """The mean and covariance of the mixture of N(z_mean[i], diag(z_stddev[i]^2)).

  Args:
    z_mean, z_stddev: float [n, latent_dim], n >= 1.

  Returns:
    mean: float64 [latent_dim]; covariance: float64 [latent_dim, latent_dim].
  """
  z_mean = np.asarray(z_mean, np.float64)
  z_stddev = np.asarray(z_stddev, np.float64)
  mean = z_mean.mean(axis=0)
  centred = z_mean - mean
  covariance = centred.T @ centred / len(z_mean)
  covariance[np.diag_indices_from(covariance)] += np.mean(z_stddev**2, axis=0)
  return mean, covariance


def prior_fit_kl(mean, covariance):
  """KL(N(mean, covariance) || N(0, I)) in nats (float)."""
  _, log_det = np.linalg.slogdet(covariance)
  return 0.5 * float(np.trace(covariance) + mean @ mean - len(mean) - log_det)


def _density_factors(z_mean, z_stddev):
  """The right-hand side of log q(z | x_j) as one matrix product, float64
  [2 * latent_dim + 1, n]: with features(z) = [z, z^2, 1],
  log q(z | x_j) = features(z) @ factors[:, j], the squared distance expanded
  as z^2/s^2 - 2 z mu/s^2 + mu^2/s^2 (no [len(z), n, latent_dim] tensor)."""
  precision = 1.0 / z_stddev**2
  constant = (
      np.sum(z_mean**2 * precision, axis=1) + 2.0 * np.sum(np.log(z_stddev), axis=1)
      + z_mean.shape[1] * LOG_2PI)
  return np.concatenate([(z_mean * precision).T, -0.5 * precision.T, -0.5 * constant[None, :]])


def _expanded_log_densities(z, factors):
  """log q(z_i | x_j), float64 [len(z), n], as one matrix product of
  features(z) = [z, z^2, 1] and _density_factors."""
  return np.concatenate([z, z**2, np.ones((len(z), 1))], axis=1) @ factors


def _expansion_error_bound(z, z_mean, z_stddev):
  """A bound (nats) on the rounding error of the expanded log density: its
  terms z^2/s^2, 2 z mu/s^2 and mu^2/s^2 cancel to (z - mu)^2/s^2, which is
  about 1 where it matters. Posteriors much narrower than their distance
  from the origin (a run trained without the KL term: s down to 1e-20) make
  each term ~1e40 and the difference float64 noise."""
  scale = np.max(np.abs(z)) + np.max(np.abs(z_mean))
  return 4.0 * z.shape[1] * np.finfo(np.float64).eps * scale**2 * np.max(z_stddev**-2.0)


def _exact_log_densities(z_mean, z_stddev):
  """A function of z giving log q(z_i | x_j) from the standardized
  differences, float64 [len(z), n]: no cancellation, one
  [len(z), n, latent_dim] array."""
  log_normalizer = np.sum(np.log(z_stddev), axis=1) + 0.5 * z_mean.shape[1] * LOG_2PI

  def log_densities(z):
    standardized = (z[:, None, :] - z_mean[None]) / z_stddev[None]
    return -0.5 * np.sum(standardized**2, axis=2) - log_normalizer[None, :]

  return log_densities


def decompose_kl(z_mean, z_stddev, kl_divergence, draws=1, seed=0):
  """Splits the average KL term into mutual information and marginal KL.

  Args:
    z_mean, z_stddev: float [n, latent_dim], the posteriors of a split.
    kl_divergence: the split's mean KL(q(z|x) || p(z)), in closed form.
    draws: z draws per example; draws * n Monte Carlo terms.
    seed: seed of the draws (NumPy); the same inputs and seed give the same
      figures.

  Returns:
    {'mutual_information', 'marginal_kl' (nats; they sum to kl_divergence),
     'mutual_information_stderr' (the standard error of the Monte Carlo
     mean, which the marginal KL shares), 'aggregate_draws',
     'mutual_information_max' (log n: no estimate can exceed it)}.
  """
  z_mean = np.asarray(z_mean, np.float64)
  z_stddev = np.asarray(z_stddev, np.float64)
  n, latent_dim = z_mean.shape
  noise = np.random.default_rng(seed).standard_normal((draws, n, latent_dim))
  z = (z_mean + z_stddev * noise).reshape(draws * n, latent_dim)
  own = np.tile(np.arange(n), draws)
  # One matrix product where its rounding is negligible, the differences
  # themselves (latent_dim times the memory and some 5x the time) where it
  # is not.
  if _expansion_error_bound(z, z_mean, z_stddev) > EXPANSION_TOLERANCE:
    scored = _exact_log_densities(z_mean, z_stddev)
    rows_at_once = max(1, PAIRS_AT_ONCE // (n * latent_dim))
  else:
    factors = _density_factors(z_mean, z_stddev)
    scored = functools.partial(_expanded_log_densities, factors=factors)
    rows_at_once = max(1, PAIRS_AT_ONCE // n)
  terms = np.empty(draws * n)
  for begin in range(0, draws * n, rows_at_once):
    rows = slice(begin, begin + rows_at_once)
    log_densities = scored(z[rows])  # log q(z_i | x_j): [rows, n].
    log_own = log_densities[np.arange(len(log_densities)), own[rows]]
    # log mean_j q(z_i | x_j), in place: the chunk is the only large array.
    peak = np.max(log_densities, axis=1, keepdims=True)
    log_densities -= peak
    np.exp(log_densities, out=log_densities)
    terms[rows] = log_own - (np.log(np.mean(log_densities, axis=1)) + peak[:, 0])
  mutual_information = float(np.mean(terms))
  return {
      'mutual_information': mutual_information,
      'marginal_kl': float(kl_divergence) - mutual_information,
      'mutual_information_stderr': float(np.std(terms) / math.sqrt(len(terms))),
      'mutual_information_max': math.log(n),
      'aggregate_draws': int(draws),
  }


def summarize(z_mean, z_stddev, kl_divergence, draws=1, seed=0):
  """Every figure of q(z) against p(z), for an evaluation's results.

  Returns decompose_kl's keys (none when draws is 0), 'prior_fit_kl' and
  'aggregate_covariance_eigenvalues' (a list, largest first).
  """
  mean, covariance = moments(z_mean, z_stddev)
  result = {
      'prior_fit_kl': prior_fit_kl(mean, covariance),
      'aggregate_covariance_eigenvalues': [float(v) for v in np.linalg.eigvalsh(covariance)[::-1]],
  }
  if draws:
    result.update(decompose_kl(z_mean, z_stddev, kl_divergence, draws, seed))
  return result


def fit_path(checkpoint):
  """Where the fit of `checkpoint` (model.ckpt-N) is saved: beside it."""
  return checkpoint + FIT_SUFFIX


def write_fit(path, mean, covariance, **provenance):
  """Saves a moment-matched Gaussian (and where it comes from) as JSON."""
  files.write_json(
      path,
      dict(
          provenance,
          mean=[float(v) for v in mean],
          covariance=[[float(v) for v in row] for row in covariance]))


def read_fit(path, latent_dim):
  """(mean [D], covariance [D, D]) saved by write_fit; ValueError naming the
  file when it is not a fit of that size or not positive definite."""
  content = files.read_json(path)
  try:
    mean = np.asarray(content['mean'], np.float64)
    covariance = np.asarray(content['covariance'], np.float64)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError('%s is not a fit of the aggregate posterior (%s)' % (path, e)) from e
  if mean.shape != (latent_dim,) or covariance.shape != (latent_dim,) * 2:
    raise ValueError('%s fits a %d-d latent, the model has %d dimensions' %
                     (path, len(mean), latent_dim))
  try:
    np.linalg.cholesky(covariance)
  except np.linalg.LinAlgError as e:
    raise ValueError('%s: the covariance is not positive definite' % path) from e
  return mean, covariance


def sample(mean, covariance, num, seed, temperature=1.0):
  """num draws of N(mean, temperature^2 covariance): float32 [num, D]; the
  standard normal draws are those of a prior sample of the same seed."""
  noise = np.random.RandomState(seed).standard_normal((num, len(mean)))
  return (mean + temperature * noise @ np.linalg.cholesky(covariance).T).astype(np.float32)
