"""The aggregate posterior's figures against direct NumPy computations and
cases whose answer is known; the Frechet distance likewise."""

import math

import numpy as np
import pytest

from helpers import direct_mutual_information
from mnist_vae import aggregate_posterior
from mnist_vae import sample_quality


def _posteriors(n=300, latent_dim=3, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.normal(0.0, 1.5, (n, latent_dim)), rng.uniform(0.2, 1.2, (n, latent_dim)))


def _mean_kl(z_mean, z_stddev):
  return float(np.mean(np.sum(0.5 * (z_mean**2 + z_stddev**2 - 1.0) - np.log(z_stddev), axis=1)))


def test_decomposition_equals_a_direct_computation_and_sums_to_the_kl():
  z_mean, z_stddev = _posteriors()
  kl = _mean_kl(z_mean, z_stddev)
  result = aggregate_posterior.decompose_kl(z_mean, z_stddev, kl, draws=2, seed=3)
  assert result['mutual_information'] == pytest.approx(
      direct_mutual_information(z_mean, z_stddev, 2, 3), rel=1e-9)
  assert result['mutual_information'] + result['marginal_kl'] == pytest.approx(kl)
  assert 0 < result['mutual_information'] < result['mutual_information_max']
  assert result['mutual_information_max'] == pytest.approx(math.log(300))
  assert result['aggregate_draws'] == 2
  assert 0 < result['mutual_information_stderr'] < 0.1


def test_the_pairs_are_scored_in_chunks_without_changing_the_result(monkeypatch):
  z_mean, z_stddev = _posteriors(n=100)
  whole = aggregate_posterior.decompose_kl(z_mean, z_stddev, 1.0, seed=1)
  monkeypatch.setattr(aggregate_posterior, 'PAIRS_AT_ONCE', 700)  # 7 rows.
  chunked = aggregate_posterior.decompose_kl(z_mean, z_stddev, 1.0, seed=1)
  assert chunked['mutual_information'] == pytest.approx(whole['mutual_information'], rel=1e-12)


def test_posteriors_equal_to_the_prior_have_nothing_to_decompose():
  z_mean, z_stddev = np.zeros((500, 4)), np.ones((500, 4))
  result = aggregate_posterior.summarize(z_mean, z_stddev, _mean_kl(z_mean, z_stddev))
  assert result['mutual_information'] == pytest.approx(0.0, abs=1e-12)
  assert result['marginal_kl'] == pytest.approx(0.0, abs=1e-12)
  assert result['prior_fit_kl'] == pytest.approx(0.0, abs=1e-12)
  np.testing.assert_allclose(result['aggregate_covariance_eigenvalues'], 1.0)


def test_posteriors_far_apart_carry_log_n_nats_about_the_example():
  n = 200
  z_mean = np.arange(n, dtype=np.float64)[:, None] * 50.0
  result = aggregate_posterior.decompose_kl(z_mean, np.ones((n, 1)), 10.0)
  assert result['mutual_information'] == pytest.approx(math.log(n), abs=1e-9)


def test_posteriors_too_narrow_for_the_expanded_density_are_scored_exactly():
  # A run trained without the KL term (kl_study's article beta = 0): standard
  # deviations down to 1e-20, whose squared distances expanded as
  # z^2/s^2 - 2 z mu/s^2 + mu^2/s^2 are float64 noise of 1e22 nats; the
  # figures were -3e22 nats of information.
  z_mean, _ = _posteriors(n=400, latent_dim=2)
  z_stddev = 10.0**np.random.RandomState(1).uniform(-20, -10, z_mean.shape)
  result = aggregate_posterior.decompose_kl(z_mean, z_stddev, 50.0, seed=2)
  assert result['mutual_information'] == pytest.approx(
      direct_mutual_information(z_mean, z_stddev, 1, 2), rel=1e-9)
  assert result['mutual_information'] == pytest.approx(math.log(400), abs=1e-6)


def test_the_exact_scores_equal_the_expanded_ones_where_both_hold(monkeypatch):
  z_mean, z_stddev = _posteriors(n=150)
  expanded = aggregate_posterior.decompose_kl(z_mean, z_stddev, 1.0, draws=2, seed=4)
  monkeypatch.setattr(aggregate_posterior, 'EXPANSION_TOLERANCE', -1.0)
  monkeypatch.setattr(aggregate_posterior, 'PAIRS_AT_ONCE', 3000)  # 10 rows at a time.
  exact = aggregate_posterior.decompose_kl(z_mean, z_stddev, 1.0, draws=2, seed=4)
  assert exact['mutual_information'] == pytest.approx(expanded['mutual_information'], rel=1e-9)


def test_moments_are_those_of_the_mixture():
  z_mean, z_stddev = _posteriors(n=50, latent_dim=2)
  mean, covariance = aggregate_posterior.moments(z_mean, z_stddev)
  rng = np.random.RandomState(1)
  component = rng.randint(50, size=400000)
  draws = z_mean[component] + z_stddev[component] * rng.standard_normal((400000, 2))
  np.testing.assert_allclose(mean, draws.mean(axis=0), atol=0.01)
  np.testing.assert_allclose(covariance, np.cov(draws, rowvar=False), atol=0.02)


def test_the_gaussian_fit_bounds_the_marginal_kl_from_below():
  # A mixture of two far-apart clusters is not Gaussian: its marginal KL is
  # larger than that of the Gaussian with its moments.
  rng = np.random.RandomState(2)
  z_mean = np.concatenate([rng.normal(-3, 0.1, (300, 2)), rng.normal(3, 0.1, (300, 2))])
  z_stddev = np.full_like(z_mean, 0.3)
  summary = aggregate_posterior.summarize(z_mean, z_stddev, _mean_kl(z_mean, z_stddev), draws=4)
  assert summary['prior_fit_kl'] < summary['marginal_kl'] - 1.0
  mean, covariance = aggregate_posterior.moments(z_mean, z_stddev)
  expected = 0.5 * (np.trace(covariance) + mean @ mean - 2 - np.log(np.linalg.det(covariance)))
  assert summary['prior_fit_kl'] == pytest.approx(expected)


def test_a_fit_round_trips_and_a_wrong_one_is_named(tmp_path):
  path = str(tmp_path / 'model.ckpt-5') + aggregate_posterior.FIT_SUFFIX
  covariance = np.array([[2.0, 0.5], [0.5, 1.0]])
  aggregate_posterior.write_fit(path, np.array([1.0, -1.0]), covariance, step=5)
  mean, read_covariance = aggregate_posterior.read_fit(path, 2)
  np.testing.assert_array_equal(mean, [1.0, -1.0])
  np.testing.assert_array_equal(read_covariance, covariance)
  with pytest.raises(ValueError, match='fits a 2-d latent, the model has 3'):
    aggregate_posterior.read_fit(path, 3)
  aggregate_posterior.write_fit(path, np.zeros(2), -np.eye(2))
  with pytest.raises(ValueError, match='not positive definite'):
    aggregate_posterior.read_fit(path, 2)


def test_samples_have_the_fit_moments():
  mean, covariance = np.array([2.0, -1.0]), np.array([[2.0, 0.8], [0.8, 1.0]])
  z = aggregate_posterior.sample(mean, covariance, 200000, seed=0)
  assert z.dtype == np.float32 and z.shape == (200000, 2)
  np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.02)
  np.testing.assert_allclose(np.cov(z, rowvar=False), covariance, atol=0.03)


def test_frechet_distance_of_gaussians_with_diagonal_covariances():
  rng = np.random.RandomState(0)
  a = rng.normal([0.0, 1.0, 2.0], [1.0, 2.0, 0.5], (200000, 3))
  b = rng.normal([1.0, 1.0, 0.0], [2.0, 2.0, 1.5], (200000, 3))
  expected = 1.0 + 4.0 + (1.0 - 2.0)**2 + 0.0 + (0.5 - 1.5)**2  # 7
  assert sample_quality.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
  assert sample_quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_digit_shares_count_each_label():
  assert sample_quality.digit_shares(np.array([0, 0, 3,
                                               9])) == [0.5, 0, 0, 0.25, 0, 0, 0, 0, 0, 0.25]
