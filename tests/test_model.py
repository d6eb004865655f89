"""The graph: architecture, initialisation, loss numerics against the original formula."""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import ORIGINAL_NETWORK
from helpers import graph_log_likelihood
from helpers import original_kl
from helpers import original_log_likelihood
from helpers import run_in_new_graph
from helpers import run_session
from mnist_vae import architectures
from mnist_vae import fast_step
from mnist_vae import model


def test_shapes():
  with tf.Graph().as_default():
    images = tf.placeholder(tf.float32, [None, 784])
    outputs = model.inference(images, architectures.network('mlp', 7, 3))
    terms = model.loss(images, outputs, ORIGINAL_NETWORK)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      got = session.run([outputs, terms], {images: np.random.rand(5, 784)})
  inference_outputs, loss_terms = got
  assert inference_outputs.z_mean.shape == (5, 3)
  assert inference_outputs.z_stddev.shape == (5, 3)
  assert inference_outputs.z.shape == (5, 3)
  assert inference_outputs.logits.shape == (5, 784)
  assert loss_terms.log_likelihood.shape == (5,) and loss_terms.kl_per_example.shape == (5,)
  assert loss_terms.neg_elbo.shape == ()
  assert (inference_outputs.z_stddev >= 1e-6).all()
  np.testing.assert_allclose(
      loss_terms.neg_elbo,
      -np.mean(loss_terms.log_likelihood - loss_terms.kl_per_example),
      rtol=1e-6)
  assert loss_terms.neg_elbo == pytest.approx(
      loss_terms.reconstruction + loss_terms.kl_divergence, rel=1e-6)


def test_variables_are_the_originals():
  with tf.Graph().as_default():
    model.inference(tf.zeros([2, 784]), ORIGINAL_NETWORK)
    shapes = {v.op.name: v.shape.as_list() for v in tf.trainable_variables()}
  assert shapes == {
      'gaussian_encoder/fc1/weights': [784, 500],
      'gaussian_encoder/fc1/biases': [500],
      'gaussian_encoder/fc2/weights': [500, 500],
      'gaussian_encoder/fc2/biases': [500],
      'gaussian_encoder/mean/weights': [500, 20],
      'gaussian_encoder/mean/biases': [20],
      'gaussian_encoder/stddev/weights': [500, 20],
      'gaussian_encoder/stddev/biases': [20],
      'bernoulli_decoder/fc1/weights': [20, 500],
      'bernoulli_decoder/fc1/biases': [500],
      'bernoulli_decoder/fc2/weights': [500, 500],
      'bernoulli_decoder/fc2/biases': [500],
      'bernoulli_decoder/output/weights': [500, 784],
      'bernoulli_decoder/output/biases': [784],
  }


def test_initialisation_matches_tf1_variance_scaling():
  with tf.Graph().as_default():
    tf.set_random_seed(1)
    model.inference(tf.zeros([2, 784]), ORIGINAL_NETWORK)
    variables = {v.op.name: v for v in tf.trainable_variables()}
    values = run_session(variables)
  for name, value in values.items():
    if name.endswith('biases'):
      assert not value.any(), name
      continue
    fan_in = value.shape[0]
    # contrib's truncated normal: stddev sqrt(1.3 * 2 / fan_in), cut at 2 sigma,
    # leaves an actual spread of sqrt(2 / fan_in) (He et al.).
    assert value.std() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05), name
    assert np.abs(value).max() <= 2 * math.sqrt(1.3 * 2.0 / fan_in) + 1e-6, name


def test_kl_is_never_negative_and_equals_original():
  rng = np.random.RandomState(0)
  stddev = np.concatenate([
      np.ones((1, 20)), 1 + rng.uniform(-1e-3, 1e-3, (50, 20)),
      rng.uniform(1e-6, 5, (200, 20)),
      np.full((1, 20), 1e-6)
  ]).astype(np.float32)
  mean = np.concatenate([np.zeros((51, 20)),
                         rng.normal(0, 3, (200, 20)),
                         np.zeros((1, 20))]).astype(np.float32)
  mean[:51] = 0
  kl = run_in_new_graph(lambda m, s: model.gaussian_kl(m, s, ORIGINAL_NETWORK), mean, stddev)
  assert (kl >= 0).all()
  assert kl[0] == 0.0
  np.testing.assert_allclose(kl, original_kl(mean, stddev), rtol=1e-5, atol=2e-6)


def test_sampled_kl_averages_to_the_closed_form():
  """--train_kl=sampled estimates the same KL: log q(z|x) - log p(z) at
  200,000 draws averages to the closed form within 3 standard errors."""
  rng = np.random.RandomState(0)
  mean = rng.normal(0, 1.5, (1, 4)).astype(np.float32)
  stddev = rng.uniform(0.05, 2, (1, 4)).astype(np.float32)
  noise = rng.standard_normal((200000, 4)).astype(np.float32)
  sampled = run_in_new_graph(
      lambda m, s, e: model.sampled_kl(tf.tile(m, [200000, 1]), tf.tile(s, [200000, 1]), e), mean,
      stddev, noise)
  closed_form = run_in_new_graph(lambda m, s: model.gaussian_kl(m, s, ORIGINAL_NETWORK), mean,
                                 stddev)[0]
  assert closed_form > 1
  assert abs(sampled.mean() - closed_form) < 3 * sampled.std() / math.sqrt(sampled.size)
  assert sampled.std() > 0.5  # A sample, not the closed form again.


def test_saturated_decoder_gives_nan_in_original_and_finite_here():
  images = np.array([[0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0]], np.float32)
  logits = np.array([[-100.0, 100.0, 1e4, 40.0, 60.0, -1e4, 1e30]], np.float32)
  original = original_log_likelihood(images, logits, np.float32)
  assert np.isnan(original).all()  # The defect: 0 * log(0) at x = 1, y = 1.
  ours = run_in_new_graph(graph_log_likelihood, images, logits)
  assert np.isfinite(ours).all()
  # Exact: every pixel costs at most -log(2e-8) nats (clipped at 1e-8, plus 1e-8).
  assert ours[0] >= 7 * math.log(2e-8)
  np.testing.assert_allclose(ours, original_log_likelihood(images, logits, np.float64), rtol=1e-6)


def test_gradients_stay_finite_when_saturated():
  with tf.Graph().as_default():
    logits = tf.constant([[-1e4, 1e4, 100.0, -100.0]])
    images = tf.constant([[0.0, 1.0, 0.0, 1.0]])
    loss = -tf.reduce_sum(model.bernoulli_log_likelihood(images, logits, ORIGINAL_NETWORK))
    gradient = run_session(tf.gradients(loss, logits)[0])
  assert np.isfinite(gradient).all()


def test_log_likelihood_equals_original_formula_where_finite():
  rng = np.random.RandomState(1)
  logits = rng.uniform(-15, 15, (64, 784)).astype(np.float32)
  # Past |logit| = 18.4 the original clips the unlikelier probability at 1e-8.
  logits[:, 600:] *= 2.5
  images = rng.uniform(0, 1, (64, 784)).astype(np.float32)
  images[:, :200] = np.round(images[:, :200])  # Exact 0s and 1s too.
  images[:, 650:700] = np.round(images[:, 650:700])
  ours = run_in_new_graph(graph_log_likelihood, images, logits)
  original_64 = original_log_likelihood(images, logits, np.float64)
  np.testing.assert_allclose(ours, original_64, rtol=1e-5)
  # In float32 the original loses digits in 1 - y as y nears 1 (at logits 15,
  # 1 - y = 3e-7 is stored to about 20%): compare where its own float32
  # result is accurate, |logits| <= 5.
  moderate = np.clip(logits, -5, 5)
  original_32 = original_log_likelihood(images, moderate, np.float32)
  assert np.isfinite(original_32).all()
  np.testing.assert_allclose(
      run_in_new_graph(graph_log_likelihood, images, moderate), original_32, rtol=1e-5)


def test_log_likelihood_broadcasts_draws_against_the_images():
  rng = np.random.RandomState(2)
  logits = rng.uniform(-20, 20, (3, 5, 784)).astype(np.float32)
  images = rng.uniform(0, 1, (5, 784)).astype(np.float32)
  broadcast = run_in_new_graph(graph_log_likelihood, images, logits)
  assert broadcast.shape == (3, 5)
  for draw in range(3):
    np.testing.assert_array_equal(broadcast[draw],
                                  run_in_new_graph(graph_log_likelihood, images, logits[draw]))


def test_dropout_only_in_training_and_evaluation_deterministic():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(4, 784), tf.float32)
    noise = tf.constant(np.random.RandomState(1).randn(4, 20), tf.float32)
    evaluation = model.inference(images, ORIGINAL_NETWORK, noise=noise)
    training = model.inference(images, ORIGINAL_NETWORK, fast_step.dropout(0.9), noise=noise)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      eval_runs = [session.run(evaluation.logits) for _ in range(2)]
      train_runs = [session.run(training.logits) for _ in range(2)]
  np.testing.assert_array_equal(eval_runs[0], eval_runs[1])
  assert not np.array_equal(train_runs[0], train_runs[1])


def test_bfloat16_matmuls_keep_float32_variables_and_close_values():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(8, 784), tf.float32)
    noise = tf.zeros([8, 20])
    full = model.inference(images, ORIGINAL_NETWORK, noise=noise)
    half = model.inference(images, ORIGINAL_NETWORK, noise=noise, matmul_dtype=tf.bfloat16)
    assert {v.dtype.base_dtype for v in tf.global_variables()} == {tf.float32}
    assert half.logits.dtype == tf.float32
    full_logits, half_logits = run_session([full.logits, half.logits])
  assert not np.array_equal(full_logits, half_logits)  # It did round.
  np.testing.assert_allclose(half_logits, full_logits, atol=0.1)
