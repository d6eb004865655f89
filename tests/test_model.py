"""The graph: architecture, initialisation, loss numerics against the original formula."""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mnist_vae import model

ORIGINAL_SIZE = model.ModelSize(hidden_units=500, latent_dim=20)


def _run(fetches, build_seed=0):
  with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    return session.run(fetches)


def original_log_likelihood(images, logits, dtype):
  """The reference script's formula, evaluated in numpy at `dtype`."""
  with np.errstate(all='ignore'):
    x = images.astype(dtype)
    y = (1 / (1 + np.exp(-logits.astype(dtype)))).astype(dtype)
    y = np.clip(y, dtype(1e-8), dtype(1) - dtype(1e-8))
    eps = dtype(1e-8)
    return np.sum(x * np.log(eps + y) + (1 - x) * np.log(eps + 1 - y), axis=-1)


def original_kl(mean, stddev):
  mean, stddev = mean.astype(np.float64), stddev.astype(np.float64)
  return 0.5 * np.sum(stddev ** 2 + mean ** 2 - np.log(1e-8 + stddev ** 2) - 1, axis=1)


def _ours(function, *arrays):
  with tf.Graph().as_default():
    return _run(function(*[tf.constant(a, tf.float32) for a in arrays]))


def test_shapes():
  with tf.Graph().as_default():
    images = tf.placeholder(tf.float32, [None, 784])
    outputs = model.inference(images, model.ModelSize(hidden_units=7, latent_dim=3))
    terms = model.loss(images, outputs)
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
      -np.mean(loss_terms.log_likelihood - loss_terms.kl_per_example), rtol=1e-6)
  assert loss_terms.neg_elbo == pytest.approx(
      loss_terms.reconstruction + loss_terms.kl_divergence, rel=1e-6)


def test_variables_are_the_originals():
  with tf.Graph().as_default():
    model.inference(tf.zeros([2, 784]), ORIGINAL_SIZE)
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
    model.inference(tf.zeros([2, 784]), ORIGINAL_SIZE)
    variables = {v.op.name: v for v in tf.trainable_variables()}
    values = _run(variables)
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
      rng.uniform(1e-6, 5, (200, 20)), np.full((1, 20), 1e-6)]).astype(np.float32)
  mean = np.concatenate([np.zeros((51, 20)), rng.normal(0, 3, (200, 20)),
                         np.zeros((1, 20))]).astype(np.float32)
  mean[:51] = 0
  kl = _ours(model.gaussian_kl, mean, stddev)
  assert (kl >= 0).all()
  assert kl[0] == 0.0
  np.testing.assert_allclose(kl, original_kl(mean, stddev), rtol=1e-5, atol=2e-6)


def test_saturated_decoder_gives_nan_in_original_and_finite_here():
  images = np.array([[0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0]], np.float32)
  logits = np.array([[-100.0, 100.0, 1e4, 40.0, 60.0, -1e4, 1e30]], np.float32)
  original = original_log_likelihood(images, logits, np.float32)
  assert np.isnan(original).all()  # The defect: 0 * log(0) at x = 1, y = 1.
  ours = _ours(model.bernoulli_log_likelihood, images, logits)
  assert np.isfinite(ours).all()
  # Exact: every pixel costs at most -log(2e-8) nats (clipped at 1e-8, plus 1e-8).
  assert ours[0] >= 7 * math.log(2e-8)
  np.testing.assert_allclose(ours, original_log_likelihood(images, logits, np.float64),
                             rtol=1e-6)


def test_gradients_stay_finite_when_saturated():
  with tf.Graph().as_default():
    logits = tf.constant([[-1e4, 1e4, 100.0, -100.0]])
    images = tf.constant([[0.0, 1.0, 0.0, 1.0]])
    loss = -tf.reduce_sum(model.bernoulli_log_likelihood(images, logits))
    gradient = _run(tf.gradients(loss, logits)[0])
  assert np.isfinite(gradient).all()


def test_log_likelihood_equals_original_formula_where_finite():
  rng = np.random.RandomState(1)
  logits = rng.uniform(-15, 15, (64, 784)).astype(np.float32)
  # Past |logit| = 18.4 the original clips the unlikelier probability at 1e-8.
  logits[:, 600:] *= 2.5
  images = rng.uniform(0, 1, (64, 784)).astype(np.float32)
  images[:, :200] = np.round(images[:, :200])  # Exact 0s and 1s too.
  images[:, 650:700] = np.round(images[:, 650:700])
  ours = _ours(model.bernoulli_log_likelihood, images, logits)
  original_64 = original_log_likelihood(images, logits, np.float64)
  np.testing.assert_allclose(ours, original_64, rtol=1e-5)
  # In float32 the original loses digits in 1 - y as y nears 1 (at logits 15,
  # 1 - y = 3e-7 is stored to about 20%): compare where its own float32
  # result is accurate, |logits| <= 5.
  moderate = np.clip(logits, -5, 5)
  original_32 = original_log_likelihood(images, moderate, np.float32)
  assert np.isfinite(original_32).all()
  np.testing.assert_allclose(_ours(model.bernoulli_log_likelihood, images, moderate),
                             original_32, rtol=1e-5)


def test_log_likelihood_broadcasts_draws_against_the_images():
  rng = np.random.RandomState(2)
  logits = rng.uniform(-20, 20, (3, 5, 784)).astype(np.float32)
  images = rng.uniform(0, 1, (5, 784)).astype(np.float32)
  broadcast = _ours(model.bernoulli_log_likelihood, images, logits)
  assert broadcast.shape == (3, 5)
  for draw in range(3):
    np.testing.assert_array_equal(
        broadcast[draw], _ours(model.bernoulli_log_likelihood, images, logits[draw]))


def _compiled(images, logits):
  return _ours(lambda x, l: model.bernoulli_log_likelihood(x, l, compiled=True),
               images, logits)


@pytest.mark.parametrize('pixels', [784, 787])  # 787 is prime: groups of one.
def test_compiled_log_likelihood_equals_the_graph_one_and_the_original(pixels):
  rng = np.random.RandomState(3)
  logits = np.concatenate([rng.uniform(-30, 30, (2, 6, pixels)),
                           rng.normal(0, 3, (2, 6, pixels))]).astype(np.float32)
  logits[0, 0, :5] = [1e4, -1e4, 18.4, -18.4, 0.0]  # Saturated, clip edge, 1/2.
  images = rng.uniform(0, 1, (6, pixels)).astype(np.float32)
  images[:, :300] = np.round(images[:, :300])
  compiled = _compiled(images, logits)
  np.testing.assert_allclose(
      compiled, _ours(model.bernoulli_log_likelihood, images, logits), rtol=1e-6)
  np.testing.assert_allclose(
      compiled, original_log_likelihood(images, logits, np.float64), rtol=3e-7)


def test_compiled_log_likelihood_passes_nan_on_and_stays_finite_at_infinity():
  images = np.full((2, 784), 0.5, np.float32)
  logits = np.zeros((1, 2, 784), np.float32)
  logits[0, 0, 3] = np.nan
  logits[0, 1, :2] = [np.inf, -np.inf]
  compiled = _compiled(images, logits)[0]
  assert np.isnan(compiled[0])
  # Each infinite logit costs 0.5 * (log(1 + 1e-8) + log(2e-8)), the rest log(1/2).
  expected = math.log(2e-8) + 782 * math.log(0.5)
  assert compiled[1] == pytest.approx(expected, rel=1e-6)


def test_fast_logarithm_is_within_an_ulp():
  values = np.exp(np.random.RandomState(4).uniform(
      math.log(2e-8), math.log(2.0), 100000)).astype(np.float32)
  values[:4] = [2e-8, 1.0, 2.0, math.sqrt(2.0)]
  with tf.Graph().as_default():
    ours = _run(model._log_of_positive_normal(tf.constant(values)))
  exact = np.log(values.astype(np.float64))
  assert ours[1] == 0.0
  ulps = np.abs(ours - exact) / np.spacing(np.abs(exact).astype(np.float32) + 1e-30)
  assert ulps.max() <= 1.0


def test_dropout_only_in_training_and_evaluation_deterministic():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(4, 784), tf.float32)
    noise = tf.constant(np.random.RandomState(1).randn(4, 20), tf.float32)
    evaluation = model.inference(images, ORIGINAL_SIZE, keep_prob=1.0, noise=noise)
    training = model.inference(images, ORIGINAL_SIZE, keep_prob=0.9, noise=noise)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      eval_runs = [session.run(evaluation.logits) for _ in range(2)]
      train_runs = [session.run(training.logits) for _ in range(2)]
  np.testing.assert_array_equal(eval_runs[0], eval_runs[1])
  assert not np.array_equal(train_runs[0], train_runs[1])


@pytest.mark.parametrize('optimizer', model.OPTIMIZERS)
def test_each_optimizer_steps_and_lowers_the_loss(optimizer):
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(16, 784) > 0.7, tf.float32)
    noise = tf.zeros([16, 4])
    terms = model.loss(images, model.inference(images, model.ModelSize(32, 4), noise=noise))
    learning_rate = {'sgd': 1e-3, 'momentum': 1e-3}.get(optimizer, 1e-2)
    train_op, global_step = model.training(
        terms.neg_elbo, model.make_optimizer(optimizer, learning_rate))
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      before = session.run(terms.neg_elbo)
      for _ in range(20):
        session.run(train_op)
      after, step = session.run([terms.neg_elbo, global_step])
  assert step == 20
  assert after < before


@pytest.mark.parametrize('name, optimizer_class', [
    ('sgd', tf.train.GradientDescentOptimizer), ('adam', tf.train.AdamOptimizer),
    ('adagrad', tf.train.AdagradOptimizer), ('rmsprop', tf.train.RMSPropOptimizer),
    ('momentum', tf.train.MomentumOptimizer)])
def test_each_optimizer_name_gives_its_class(name, optimizer_class):
  optimizer = model.make_optimizer(name, 0.25)
  assert type(optimizer) is optimizer_class
  assert getattr(optimizer, '_lr', getattr(optimizer, '_learning_rate', None)) == 0.25
  if name == 'momentum':
    assert optimizer._momentum == 0.9


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'"):
    model.make_optimizer('lbfgs', 0.1)


@pytest.mark.parametrize('keep_prob', [0.5, 0.9, 0.999995, 1 - 1e-7, 1.0])
def test_dropout_keeps_that_fraction_for_every_keep_prob(keep_prob):
  """16-bit thresholds cannot express keep_prob within 2^-17 of 0 or 1."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    ones = tf.ones([1000, 1000])
    dropped = model._dropout(ones, keep_prob=keep_prob)
    with tf.Session() as session:
      values = np.concatenate([session.run(dropped).ravel() for _ in range(4)])
  assert np.isfinite(values).all()
  kept = values != 0
  dropped_fraction = 1.0 - kept.mean()
  expected = 1.0 - keep_prob
  # Binomial: within 6 standard deviations (and at most 40 units for 1 - 1e-7).
  assert abs(dropped_fraction - expected) <= 6 * np.sqrt(
      expected * keep_prob / values.size) + 10 / values.size, dropped_fraction
  assert abs(values.mean() - 1.0) < 0.003  # Inverted dropout keeps the mean.
  np.testing.assert_allclose(values[kept], values[kept][0], rtol=1e-6)


def test_keep_prob_outside_the_unit_interval_is_refused():
  with tf.Graph().as_default(), pytest.raises(ValueError, match='keep_prob'):
    model._dropout(tf.ones([2, 2]), keep_prob=0.0)


def test_dropout_keeps_the_requested_fraction_scaled_up():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    ones = tf.ones([128, 501])  # Odd size: the last 16-bit draw is half used.
    dropped = model._dropout(ones, keep_prob=0.9)
    with tf.Session() as session:
      values = np.concatenate([session.run(dropped).ravel() for _ in range(20)])
  kept = values[values != 0]
  assert abs(kept.size / values.size - 0.9) < 0.002
  np.testing.assert_allclose(kept, 65536.0 / round(0.9 * 65536), rtol=1e-6)
  assert abs(values.mean() - 1.0) < 0.003  # Inverted dropout keeps the mean.


def test_bfloat16_matmuls_keep_float32_variables_and_close_values():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(8, 784), tf.float32)
    noise = tf.zeros([8, 20])
    full = model.inference(images, ORIGINAL_SIZE, noise=noise)
    half = model.inference(images, ORIGINAL_SIZE, noise=noise,
                           matmul_dtype=tf.bfloat16)
    assert {v.dtype.base_dtype for v in tf.global_variables()} == {tf.float32}
    assert half.logits.dtype == tf.float32
    full_logits, half_logits = _run([full.logits, half.logits])
  assert not np.array_equal(full_logits, half_logits)  # It did round.
  np.testing.assert_allclose(half_logits, full_logits, atol=0.1)


def _compiled_and_separate(images, noise, keep_prob=1.0, kl_weight=None,
                           matmul_dtype=tf.float32):
  """The compiled step's and the separate ops' loss terms, objective and
  gradients, over the same variables, images and noise."""
  size = model.ModelSize(64, 5)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images, noise = tf.constant(images), tf.constant(noise)
    weight = None if kl_weight is None else tf.constant(kl_weight)
    compiled = model.compiled_training_step(images, size, keep_prob, matmul_dtype,
                                            weight, noise=noise)
    terms = model.loss(images, model.inference(images, size, keep_prob, noise=noise,
                                               matmul_dtype=matmul_dtype))
    objective = (terms.neg_elbo if weight is None
                 else terms.reconstruction + weight * terms.kl_divergence)
    variables = [var for _, var in compiled.grads_and_vars]
    assert len(tf.trainable_variables()) == len(variables) == 14  # Shared, not doubled.
    separate_gradients = tf.gradients(objective, variables)
    return _run([compiled, (terms, objective, separate_gradients)])


def test_compiled_step_equals_the_separate_ops():
  rng = np.random.RandomState(0)
  images = (rng.rand(32, 784) > 0.6).astype(np.float32)
  noise = rng.standard_normal([32, 5]).astype(np.float32)
  for kl_weight in (None, 0.25):
    compiled, (terms, objective, gradients) = _compiled_and_separate(
        images, noise, kl_weight=kl_weight)
    for name in ('neg_elbo', 'reconstruction', 'kl_divergence'):
      assert getattr(compiled.loss_terms, name) == pytest.approx(
          getattr(terms, name), rel=1e-5), name
    np.testing.assert_allclose(compiled.loss_terms.log_likelihood,
                               terms.log_likelihood, rtol=1e-5)
    assert compiled.objective == pytest.approx(objective, rel=1e-5)
    if kl_weight is not None:
      assert objective == pytest.approx(
          terms.reconstruction + kl_weight * terms.kl_divergence, rel=1e-6)
    for (got, _), expected in zip(compiled.grads_and_vars, gradients):
      np.testing.assert_allclose(got, expected, rtol=1e-3,
                                 atol=1e-5 * np.abs(expected).max())
    assert compiled.gradient_sum == pytest.approx(
        sum(float(np.sum(g)) for g in gradients), rel=1e-3, abs=1e-3)


def test_compiled_step_in_bfloat16_is_close_to_float32():
  rng = np.random.RandomState(1)
  images = rng.rand(16, 784).astype(np.float32)
  noise = rng.standard_normal([16, 5]).astype(np.float32)
  full, _ = _compiled_and_separate(images, noise)
  half, _ = _compiled_and_separate(images, noise, matmul_dtype=tf.bfloat16)
  assert half.loss_terms.neg_elbo != full.loss_terms.neg_elbo  # It did round.
  assert half.loss_terms.neg_elbo == pytest.approx(full.loss_terms.neg_elbo, rel=0.01)


@pytest.mark.parametrize('keep_prob', [0.5, 0.9, 1 - 1e-6])
def test_compiled_step_drops_that_fraction_of_units(keep_prob):
  """With one example, a dropped unit of the first hidden layer makes its row
  of the second layer's weight gradient all zeros. 0.5 and 0.9 take the
  Threefry bits made inside the computation; 1 - 1e-6 the float32 uniforms
  drawn outside."""
  size = model.ModelSize(500, 4)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(1, 784), tf.float32)
    step = model.compiled_training_step(images, size, keep_prob)
    fc2_gradient = dict((var.op.name, grad) for grad, var in step.grads_and_vars)[
        model.ENCODER_SCOPE + '/fc2/weights']
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      masks = [np.abs(session.run(fc2_gradient)).sum(axis=1) != 0
               for _ in range(20)]
  if keep_prob <= 0.9:  # Each step draws a new key, so a new mask.
    assert len({mask.tobytes() for mask in masks}) == 20
  rows = np.concatenate(masks)
  dropped_fraction = np.mean(~rows)
  expected = 1 - keep_prob
  assert abs(dropped_fraction - expected) <= 6 * np.sqrt(
      expected * keep_prob / rows.size), dropped_fraction


def test_compiled_step_refuses_a_non_finite_update():
  with tf.Graph().as_default():
    images = tf.constant(np.random.RandomState(0).rand(4, 784), tf.float32)
    step = model.compiled_training_step(images, model.ModelSize(8, 2))
    # A NaN weight makes the loss NaN: the update must not happen.
    first_weights = dict((var.op.name, var) for _, var in step.grads_and_vars)[
        model.ENCODER_SCOPE + '/fc1/weights']
    train_op, global_step = model.training(step.objective, model.make_optimizer(
        'adam', 1e-3), step.grads_and_vars, step.gradient_sum)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      session.run(tf.assign(first_weights, tf.fill(tf.shape(first_weights), np.nan)))
      before = session.run(tf.trainable_variables())
      with pytest.raises(tf.errors.InvalidArgumentError, match='non-finite'):
        session.run(train_op)
      after = session.run(tf.trainable_variables())
      assert session.run(global_step) == 0
  for old, new in zip(before, after):
    np.testing.assert_array_equal(old, new)
