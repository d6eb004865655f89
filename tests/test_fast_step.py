"""fast_step.py against model.py's plain ops: the compiled training step, the
compiled likelihood, the fast logarithm and the 16-bit dropout."""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import ORIGINAL_NETWORK
from helpers import graph_log_likelihood
from helpers import original_log_likelihood
from helpers import run_in_new_graph
from helpers import run_session
from mnist_vae import architectures
from mnist_vae import fast_step
from mnist_vae import model
from mnist_vae import training


def _compiled(images, logits):
  return run_in_new_graph(fast_step.compiled_log_likelihood(ORIGINAL_NETWORK), images, logits)


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
      compiled, run_in_new_graph(graph_log_likelihood, images, logits), rtol=1e-6)
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
  values = np.exp(np.random.RandomState(4).uniform(math.log(2e-8), math.log(2.0),
                                                   100000)).astype(np.float32)
  values[:4] = [2e-8, 1.0, 2.0, math.sqrt(2.0)]
  with tf.Graph().as_default():
    ours = run_session(fast_step.log_of_positive_normal(tf.constant(values)))
  exact = np.log(values.astype(np.float64))
  assert ours[1] == 0.0
  ulps = np.abs(ours - exact) / np.spacing(np.abs(exact).astype(np.float32) + 1e-30)
  assert ulps.max() <= 1.0


@pytest.mark.parametrize('keep_prob', [0.5, 0.9, 0.999995, 1 - 1e-7, 1.0])
def test_dropout_keeps_that_fraction_for_every_keep_prob(keep_prob):
  """16-bit thresholds cannot express keep_prob within 2^-17 of 0 or 1."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    ones = tf.ones([1000, 1000])
    dropped = fast_step.dropout(keep_prob)(ones)
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
    fast_step.dropout(0.0)


def test_dropout_keeps_the_requested_fraction_scaled_up():
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    ones = tf.ones([128, 501])  # Odd size: the last 16-bit draw is half used.
    dropped = fast_step.dropout(0.9)(ones)
    with tf.Session() as session:
      values = np.concatenate([session.run(dropped).ravel() for _ in range(20)])
  kept = values[values != 0]
  assert abs(kept.size / values.size - 0.9) < 0.002
  np.testing.assert_allclose(kept, 65536.0 / round(0.9 * 65536), rtol=1e-6)
  assert abs(values.mean() - 1.0) < 0.003  # Inverted dropout keeps the mean.


def _compiled_and_separate(images, noise, keep_prob=1.0, kl_weight=None, matmul_dtype=tf.float32):
  """The compiled step's and the separate ops' loss terms, objective and
  gradients, over the same variables, images and noise."""
  size = architectures.network('mlp', 64, 5)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images, noise = tf.constant(images), tf.constant(noise)
    weight = None if kl_weight is None else tf.constant(kl_weight)
    compiled = fast_step.compiled_training_step(
        images, size, keep_prob, matmul_dtype, weight, noise=noise)
    terms = model.loss(
        images,
        model.inference(
            images, size, fast_step.dropout(keep_prob), noise=noise, matmul_dtype=matmul_dtype),
        size)
    objective = (
        terms.neg_elbo if weight is None else terms.reconstruction + weight * terms.kl_divergence)
    variables = [var for _, var in compiled.grads_and_vars]
    assert len(tf.trainable_variables()) == len(variables) == 14  # Shared, not doubled.
    separate_gradients = tf.gradients(objective, variables)
    return run_session([compiled, (terms, objective, separate_gradients)])


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
    np.testing.assert_allclose(compiled.loss_terms.log_likelihood, terms.log_likelihood, rtol=1e-5)
    assert compiled.objective == pytest.approx(objective, rel=1e-5)
    if kl_weight is not None:
      assert objective == pytest.approx(
          terms.reconstruction + kl_weight * terms.kl_divergence, rel=1e-6)
    for (got, _), expected in zip(compiled.grads_and_vars, gradients):
      np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())
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
  size = architectures.network('mlp', 500, 4)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images = tf.constant(np.random.RandomState(0).rand(1, 784), tf.float32)
    step = fast_step.compiled_training_step(images, size, keep_prob)
    fc2_gradient = dict(
        (var.op.name, grad) for grad, var in step.grads_and_vars)[model.ENCODER_SCOPE
                                                                  + '/fc2/weights']
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      masks = [np.abs(session.run(fc2_gradient)).sum(axis=1) != 0 for _ in range(20)]
  if keep_prob <= 0.9:  # Each step draws a new key, so a new mask.
    assert len({mask.tobytes() for mask in masks}) == 20
  rows = np.concatenate(masks)
  dropped_fraction = np.mean(~rows)
  expected = 1 - keep_prob
  assert abs(dropped_fraction
             - expected) <= 6 * np.sqrt(expected * keep_prob / rows.size), dropped_fraction


def test_compiled_step_refuses_a_non_finite_update():
  with tf.Graph().as_default():
    images = tf.constant(np.random.RandomState(0).rand(4, 784), tf.float32)
    step = fast_step.compiled_training_step(images, architectures.network('mlp', 8, 2))
    # A NaN weight makes the loss NaN: the update must not happen.
    first_weights = dict(
        (var.op.name, var) for _, var in step.grads_and_vars)[model.ENCODER_SCOPE + '/fc1/weights']
    train_op, global_step = model.training(step.objective, training.make_optimizer('adam', 1e-3),
                                           step.grads_and_vars, step.gradient_sum)
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


def _loop_and_reference(network, blocks, optimizer_settings, steps, kl_weight=None):
  """`steps` steps of the compiled loop and, from the same initial weights, of
  compiled_training_step with the optimizer's own kernels and the z noise the
  loop drew (the same Threefry numbers of its key): their variables after."""
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    loop = fast_step.compiled_training_loop(
        tf.constant(blocks),
        network,
        training.make_optimizer(optimizer_settings),
        kl_weight_at=None if kl_weight is None else lambda step: tf.constant(kl_weight))
    key = tf.get_default_graph().get_tensor_by_name('dropout_key:0')
    variables = tf.global_variables()
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      initial = session.run(variables)
      _, key_value = session.run([loop.train_op, key], {loop.steps_to_run: steps})
      after_loop = dict(zip([v.op.name for v in variables], session.run(variables)))
  with tf.Graph().as_default():
    images = tf.placeholder(tf.float32, blocks.shape[1:])
    noise = tf.placeholder(tf.float32, [blocks.shape[1], network.latent_dim])
    step = fast_step.compiled_training_step(
        images,
        network,
        noise=noise,
        kl_weight=None if kl_weight is None else tf.constant(kl_weight))
    train_op, _ = model.training(step.objective, training.make_optimizer(optimizer_settings),
                                 step.grads_and_vars, step.gradient_sum)
    seed = tf.placeholder(tf.int32, [2])
    # Inside XLA, as in the loop: TensorFlow's own Threefry kernel takes
    # another form of key.
    draw = tf.function(jit_compile=True)(lambda seed: tf.random.stateless_normal(
        [blocks.shape[1], network.latent_dim], seed=seed, alg='threefry'))(
            seed)
    variables = tf.global_variables()
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      session.run([variable.assign(value) for variable, value in zip(variables, initial)])
      for index in range(steps):
        noise_value = session.run(draw, {seed: [key_value[0], key_value[1] + index]})
        session.run(train_op, {images: blocks[index], noise: noise_value})
      reference = dict(zip([v.op.name for v in variables], session.run(variables)))
  return after_loop, reference


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
def test_compiled_loop_takes_the_steps_of_the_optimizers_kernels(optimizer):
  """The loop's own update is TensorFlow's Adam (or SGD) kernel's, to float32
  rounding, on the same slot variables."""
  network = architectures.network('iwae_mlp', 16, 3)
  blocks = (np.random.RandomState(0).rand(4, 8, 784) < 0.3).astype(np.float32)
  settings = training.OptimizerSettings(optimizer, 1e-2, adam_beta1=0.99, adam_epsilon=1e-4)
  after_loop, reference = _loop_and_reference(network, blocks, settings, steps=3)
  assert set(after_loop) == set(reference)
  assert after_loop['global_step'] == reference['global_step'] == 3
  initial_output_biases = np.zeros(784)
  assert not np.allclose(after_loop['bernoulli_decoder/output/biases'], initial_output_biases)
  for name, value in reference.items():
    np.testing.assert_allclose(after_loop[name], value, rtol=2e-4, atol=2e-6, err_msg=name)


def test_compiled_loop_stops_before_a_step_that_is_not_finite():
  """A NaN in the third batch: two steps applied, the third not at all (every
  variable and slot exactly as after the second), and the call says why."""
  network = architectures.network('iwae_mlp', 16, 3)
  blocks = (np.random.RandomState(0).rand(4, 8, 784) < 0.3).astype(np.float32)
  poisoned = blocks.copy()
  poisoned[2, 0, 5] = np.nan
  settings = training.OptimizerSettings('adam', 1e-2)
  results = []
  for data, steps in ((blocks, 2), (poisoned, 4)):
    with tf.Graph().as_default():
      tf.set_random_seed(0)
      loop = fast_step.compiled_training_loop(
          tf.constant(data), network, training.make_optimizer(settings))
      with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        fetched = session.run(loop.fetches, {loop.steps_to_run: steps})
        results.append((fetched, {v.op.name: session.run(v) for v in tf.global_variables()}))
  (clean, clean_variables), (stopped, stopped_variables) = results
  assert clean['non_finite'] == 0 and clean['step'] == 2
  assert fast_step.NON_FINITE[stopped['non_finite']] == ('loss', 'NaN')
  assert stopped['step'] == 2
  for name, value in clean_variables.items():
    np.testing.assert_array_equal(stopped_variables[name], value, err_msg=name)


def _numpy_objective(weights, images, noise, iw_samples, bound, train_kl='closed_form'):
  """The IWAE network's training objective written out in float64 NumPy:
  -mean_i log mean_k w_ik ('iwae') or the ELBO averaged over the K draws with
  its KL in closed form or sampled, log q(z|x) - log p(z) at each draw
  ('elbo'); noise [K * batch, latent] in repeat_for_draws' row order."""

  def dense(name, x):
    w, b = weights[name]
    return x @ w + b

  x = np.tile(images, (iw_samples, 1))
  h = np.tanh(dense('gaussian_encoder/fc2', np.tanh(dense('gaussian_encoder/fc1', x))))
  mean, log_stddev = dense('gaussian_encoder/mean', h), dense('gaussian_encoder/log_stddev', h)
  z = mean + np.exp(log_stddev) * noise
  h = np.tanh(dense('bernoulli_decoder/fc2', np.tanh(dense('bernoulli_decoder/fc1', z))))
  logits = dense('bernoulli_decoder/output', h)
  log_likelihood = np.sum(x * logits - np.logaddexp(0.0, logits), axis=1)
  # q's density at z written from z itself, not from the noise that made it.
  log_posterior = -0.5 * np.sum(
      ((z - mean) / np.exp(log_stddev))**2 + np.log(2 * np.pi) + 2 * log_stddev, axis=1)
  log_prior = -0.5 * np.sum(z**2 + np.log(2 * np.pi), axis=1)
  if bound == 'elbo' and train_kl == 'sampled':
    return -np.mean(log_likelihood - (log_posterior - log_prior))
  if bound == 'elbo':
    kl = 0.5 * np.sum(mean**2 + np.exp(2 * log_stddev) - 2 * log_stddev - 1, axis=1)
    return -np.mean(log_likelihood - kl)
  log_w = (log_likelihood + log_prior - log_posterior).reshape(iw_samples, -1)
  top = log_w.max(axis=0)
  return -np.mean(top + np.log(np.mean(np.exp(log_w - top), axis=0)))


@pytest.mark.parametrize('bound, train_kl, iw_samples', [('iwae', 'closed_form', 3),
                                                         ('elbo', 'closed_form', 3),
                                                         ('elbo', 'sampled', 3),
                                                         ('elbo', 'sampled', 1)])
def test_training_on_k_draws_takes_the_bound_and_its_gradient(bound, train_kl, iw_samples):
  """The importance-weighted bound (and the K-draw ELBO, its KL in closed form
  or sampled) and their gradients against a NumPy computation on a tiny
  network, gradients by central differences in float64."""
  network = architectures.network('iwae_mlp', 3, 2)
  rng = np.random.RandomState(0)
  images = (rng.rand(4, 784) < 0.3).astype(np.float32)
  noise = rng.standard_normal([iw_samples * 4, 2]).astype(np.float32)
  with tf.Graph().as_default():
    tf.set_random_seed(1)
    step = fast_step.compiled_training_step(
        tf.constant(images),
        network,
        noise=tf.constant(noise),
        iw_samples=iw_samples,
        bound=bound,
        train_kl=train_kl)
    gradients = {var.op.name: grad for grad, var in step.grads_and_vars}
    variables = {var.op.name: var for _, var in step.grads_and_vars}
    objective, gradients, values = run_session([step.objective, gradients, variables])
  weights = {
      name[:-len('/weights')]: (values[name].astype(np.float64),
                                values[name[:-len('weights')] + 'biases'].astype(np.float64)
                               ) for name in values if name.endswith('weights')
  }
  expected = _numpy_objective(weights, images, noise, iw_samples, bound, train_kl)
  assert objective == pytest.approx(expected, rel=1e-5)
  for name in ('gaussian_encoder/log_stddev', 'gaussian_encoder/fc1', 'bernoulli_decoder/fc2',
               'bernoulli_decoder/output'):
    for part, index in ((0, (0, 1)), (1, (1,))):
      plus = {key: tuple(np.copy(array) for array in pair) for key, pair in weights.items()}
      minus = {key: tuple(np.copy(array) for array in pair) for key, pair in weights.items()}
      plus[name][part][index] += 1e-6
      minus[name][part][index] -= 1e-6
      numeric = (_numpy_objective(plus, images, noise, iw_samples, bound, train_kl)
                 - _numpy_objective(minus, images, noise, iw_samples, bound, train_kl)) / 2e-6
      got = gradients[name + ('/weights' if part == 0 else '/biases')][index]
      assert got == pytest.approx(numeric, rel=2e-3, abs=1e-5), (name, part)


def test_one_draw_is_the_usual_objective_bit_for_bit():
  """--train_iw_samples=1: the graph and every number of the one-draw ELBO."""
  network = architectures.network('iwae_mlp', 8, 2)
  images = (np.random.RandomState(0).rand(6, 784) < 0.3).astype(np.float32)
  results = []
  for extra in ({}, {'iw_samples': 1, 'bound': 'iwae'}, {'iw_samples': 1, 'bound': 'elbo'}):
    with tf.Graph().as_default():
      tf.set_random_seed(3)
      step = fast_step.compiled_training_step(tf.constant(images), network, **extra)
      results.append((run_session([step.objective, [g for g, _ in step.grads_and_vars]]),
                      len(tf.get_default_graph().get_operations())))
  for (values, ops), (reference, reference_ops) in zip(results[1:], results[:1] * 2):
    assert ops == reference_ops
    assert values[0] == reference[0]
    for got, expected in zip(values[1], reference[1]):
      np.testing.assert_array_equal(got, expected)


def test_more_draws_tighten_the_bound_being_trained():
  """On the same weights and images, the K-draw bound's expectation rises
  with K (Burda et al., theorem 1): -bound falls from K = 1 to K = 50."""
  network = architectures.network('iwae_mlp', 16, 4)
  images = (np.random.RandomState(0).rand(64, 784) < 0.3).astype(np.float32)
  objectives = []
  for iw_samples in (1, 50):
    with tf.Graph().as_default():
      tf.set_random_seed(0)
      step = fast_step.compiled_training_step(
          tf.constant(images), network, iw_samples=iw_samples, bound='iwae')
      with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        objectives.append(np.mean([session.run(step.objective) for _ in range(5)]))
  assert objectives[1] < objectives[0]
