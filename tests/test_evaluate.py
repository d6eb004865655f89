"""Evaluation: the graph's ELBO and importance-weighted bound against NumPy,
and evaluate.py as a real process."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import direct_mutual_information
from helpers import run_python
from mnist_vae import architectures
from mnist_vae import evaluation
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae.data_prep import records


def _softplus(x):
  return np.logaddexp(0.0, x)


def _elu(x):
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _numpy_model(weights, images, noise):
  """An independent float64 implementation of encoder, decoder and both bounds."""

  def dense(x, scope):
    return x @ weights[scope + '/weights'] + weights[scope + '/biases']

  hidden = _elu(dense(images, 'gaussian_encoder/fc1'))
  hidden = np.tanh(dense(hidden, 'gaussian_encoder/fc2'))
  mean = dense(hidden, 'gaussian_encoder/mean')
  stddev = 1e-6 + _softplus(dense(hidden, 'gaussian_encoder/stddev'))
  z = mean[None] + stddev[None] * noise  # [K, B, D]
  hidden = np.tanh(dense(z, 'bernoulli_decoder/fc1'))
  hidden = _elu(dense(hidden, 'bernoulli_decoder/fc2'))
  y = 1.0 / (1.0 + np.exp(-dense(hidden, 'bernoulli_decoder/output')))
  y = np.clip(y, 1e-8, 1 - 1e-8)
  log_px_z = np.sum(images * np.log(1e-8 + y) + (1 - images) * np.log(1e-8 + 1 - y), -1)
  kl = 0.5 * np.sum(stddev**2 + mean**2 - np.log(1e-8 + stddev**2) - 1, -1)
  log_pz = np.sum(-0.5 * (z**2 + np.log(2 * np.pi)), -1)
  log_qz = np.sum(-0.5 * (noise**2 + np.log(2 * np.pi)) - np.log(stddev)[None], -1)
  log_w = log_px_z + log_pz - log_qz
  iw_bound = np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0)
  return {'elbo': np.mean(log_px_z, 0) - kl, 'kl': kl, 'log_w': log_w, 'iw_bound': iw_bound}


def test_graph_matches_independent_numpy_implementation():
  rng = np.random.RandomState(0)
  images = rng.rand(6, 784).astype(np.float32)
  images[:, :300] = np.round(images[:, :300])
  noise = rng.randn(50, 6, 3).astype(np.float32)
  with tf.Graph().as_default():
    tf.set_random_seed(3)
    images_t, noise_t = tf.constant(images), tf.constant(noise)
    size = architectures.network('mlp', 16, 3)
    z_mean, z_stddev = model.encode(images_t, size)
    log_w = model.log_importance_weights(images_t, z_mean, z_stddev, noise_t, size)
    z = z_mean[None] + z_stddev[None] * noise_t
    logits = model.decode(tf.reshape(z, [-1, 3]), size)
    log_px_z = tf.reshape(
        model.bernoulli_log_likelihood(tf.tile(images_t, [50, 1]), logits, size), [50, 6])
    kl = model.gaussian_kl(z_mean, z_stddev, size)
    elbo = tf.reduce_mean(log_px_z, 0) - kl
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      got = session.run({'elbo': elbo, 'kl': kl, 'log_w': log_w})
      weights = {
          var.op.name: value.astype(np.float64)
          for var, value in zip(tf.global_variables(), session.run(tf.global_variables()))
      }
  expected = _numpy_model(weights, images.astype(np.float64), noise.astype(np.float64))
  np.testing.assert_allclose(got['kl'], expected['kl'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got['elbo'], expected['elbo'], rtol=1e-5)
  np.testing.assert_allclose(got['log_w'], expected['log_w'], rtol=1e-5)
  # The importance-weighted bound is tighter than the ELBO (same draws).
  assert (expected['iw_bound'] >= expected['elbo'] - 1e-9).all()


@pytest.fixture(scope='module')
def trained(tmp_path_factory, small_mnist_records):
  train_dir = tmp_path_factory.mktemp('evaluate') / 'train'
  result = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '60', '--hidden_units', '32', '--latent_dim', '4',
      '--batch_size', '32', '--optimizer', 'adam', '--save_checkpoint_steps', '30'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  return small_mnist_records, train_dir


def _evaluate(data_dir, train_dir, output, *extra):
  result = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--output',
      str(output), '--iw_samples', '40'
  ] + list(extra))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output) as f:
    return json.load(f)


@pytest.mark.large
def test_evaluate_is_deterministic_and_chunk_size_free(trained, tmp_path):
  data_dir, train_dir = trained
  first = _evaluate(data_dir, train_dir, tmp_path / 'a.json', '--iw_chunk', '7')
  second = _evaluate(data_dir, train_dir, tmp_path / 'b.json', '--iw_chunk', '40')
  for key in ('neg_elbo', 'reconstruction', 'kl_divergence', 'iw_nll'):
    assert first[key] == pytest.approx(second[key], rel=1e-6), key
  assert first['step'] == 60 and first['num_examples'] == 200
  assert first['iw_nll'] < first['neg_elbo']
  assert first['neg_elbo'] == pytest.approx(first['reconstruction'] + first['kl_divergence'])


@pytest.mark.large
def test_more_samples_tighten_the_bound(trained, tmp_path):
  data_dir, train_dir = trained
  one = _evaluate(data_dir, train_dir, tmp_path / 'a.json', '--iw_samples', '1')
  many = _evaluate(data_dir, train_dir, tmp_path / 'b.json', '--iw_samples', '200')
  assert many['iw_nll'] < one['iw_nll'] - 0.1


@pytest.mark.large
def test_watch_evaluates_every_checkpoint_then_times_out(trained, tmp_path):
  data_dir, train_dir = trained
  result = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--iw_samples', '0', '--split', 'validation', '--watch',
      '--watch_timeout_sec', '2'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.exists(os.path.join(train_dir, 'eval_validation_step_000060.json'))
  assert 'validation step 60: neg_elbo' in result.stderr


@pytest.mark.large
def test_no_checkpoint_is_a_clear_error(small_mnist_records, tmp_path):
  result = run_python(
      ['evaluate.py', '--data_dir', small_mnist_records, '--train_dir',
       str(tmp_path)])
  assert result.returncode == 1
  assert 'No checkpoint in %s' % tmp_path in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.large
@pytest.mark.parametrize('preset, optimizer, max_steps', [('original', 'sgd', 10000),
                                                          ('upstream', 'adam', 8580),
                                                          ('long', 'adam', 42900)])
def test_presets_are_valid_flag_files(preset, optimizer, max_steps, tmp_path):
  """train.py parses each preset (and a flag given after it wins)."""
  result = run_python([
      'train.py', '--flagfile',
      'configs/%s.flags' % preset, '--train_dir',
      str(tmp_path), '--data_dir',
      str(tmp_path / 'none'), '--batch_size', '0'
  ])
  assert 'flag --batch_size=0' in result.stderr  # Parsed up to the override.
  assert 'Unknown command line flag' not in result.stderr  # No unknown flag inside.
  with open(os.path.join('configs', '%s.flags' % preset)) as f:
    text = f.read()
  assert '--optimizer=%s' % optimizer in text and '--max_steps=%d' % max_steps in text


@pytest.mark.large
def test_binarized_training_and_evaluation(small_mnist_records, tmp_path):
  train_dir = tmp_path / 'train'
  trained = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '20', '--hidden_units', '32', '--latent_dim', '4',
      '--batch_size', '32', '--binarize', 'dynamic'
  ])
  assert trained.returncode == 0, trained.stderr[-3000:]
  with open(train_dir / 'metrics.json') as f:
    assert json.load(f)['config']['binarize'] == 'dynamic'
  binary = _evaluate(small_mnist_records, train_dir, tmp_path / 'b.json', '--binarize', 'static')
  grey = _evaluate(small_mnist_records, train_dir, tmp_path / 'g.json', '--binarize', 'none')
  as_trained = _evaluate(small_mnist_records, train_dir, tmp_path / 'd.json')
  assert binary['binarize'] == 'static' and grey['binarize'] == 'none'
  # Without --binarize, the mode the run was trained with (from metrics.json);
  # dynamic and static models are both evaluated on the static sample.
  assert as_trained['binarize'] == 'dynamic'
  assert as_trained['neg_elbo'] == binary['neg_elbo']
  assert binary['neg_elbo'] != grey['neg_elbo']
  assert np.isfinite(binary['neg_elbo']) and np.isfinite(binary['iw_nll'])
  # Another binary sample of the same images: another figure, recorded.
  other = _evaluate(small_mnist_records, train_dir, tmp_path / 'o.json', '--binary_sample', '3')
  assert binary['binary_sample'] == 0 and other['binary_sample'] == 3
  assert other['neg_elbo'] != binary['neg_elbo'] and np.isfinite(other['iw_nll'])
  refused = run_python([
      'evaluate.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--binarize', 'none', '--binary_sample', '1', '--output',
      str(tmp_path / 'refused.json')
  ])
  assert refused.returncode == 1 and 'Traceback' not in refused.stderr
  assert '--binary_sample=1 chooses a binary sample' in refused.stderr
  assert '--binarize=none evaluates grey levels' in refused.stderr
  assert not (tmp_path / 'refused.json').exists()


@pytest.mark.large
def test_evaluate_output_equals_an_independent_numpy_computation(trained, tmp_path):
  """evaluate.py's figures against NumPy on the same draws: a missing log K,
  a wrong divisor or a wrong draw would fail here."""
  data_dir, train_dir = trained
  result = _evaluate(data_dir, train_dir, tmp_path / 'e.json', '--iw_samples', '30',
                     '--num_samples', '2', '--split', 'validation', '--seed', '5')
  checkpoint = tf.train.latest_checkpoint(str(train_dir))
  reader = tf.train.load_checkpoint(checkpoint)
  weights = {
      name: reader.get_tensor(name).astype(np.float64)
      for name in reader.get_variable_to_shape_map()
      if name.startswith(('gaussian_encoder/', 'bernoulli_decoder/')) and 'Adam' not in name
  }
  images = input_pipeline.read_split_images(records.split_path(data_dir,
                                                               'validation')).astype(np.float64)
  # The draw rule (seed, example index) is the evaluator's; the arithmetic is not.
  with tf.Graph().as_default(), tf.Session() as session:
    elbo_noise, iw_noise = session.run([
        evaluation.keyed_normal_draws(5, np.arange(len(images)), purpose, count, 4)
        for purpose, count in ((evaluation.ELBO_DRAWS, 2), (evaluation.IMPORTANCE_DRAWS, 30))
    ])
  elbo_run = _numpy_model(weights, images, elbo_noise.astype(np.float64))
  iw_run = _numpy_model(weights, images, iw_noise.astype(np.float64))
  assert result['num_examples'] == len(images) == 200
  np.testing.assert_allclose(result['kl_divergence'], np.mean(elbo_run['kl']), rtol=1e-5)
  np.testing.assert_allclose(result['neg_elbo'], -np.mean(elbo_run['elbo']), rtol=1e-5)
  np.testing.assert_allclose(result['iw_nll'], -np.mean(iw_run['iw_bound']), rtol=1e-5)


@pytest.mark.large
def test_the_aggregate_posterior_figures_equal_a_numpy_computation(trained, tmp_path):
  """Mutual information, marginal KL and the Gaussian fit of q(z) from the
  checkpoint's weights in NumPy: a posterior left out of the mixture, a
  variance left out of the covariance or a wrong log n would fail here."""
  data_dir, train_dir = trained
  result = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--output',
      str(tmp_path / 'e.json'), '--iw_samples', '0', '--split', 'validation', '--aggregate_draws',
      '2', '--seed', '4'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'mutual information' in result.stderr and 'marginal KL' in result.stderr
  figures = json.loads((tmp_path / 'e.json').read_text())
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(train_dir)))

  def dense(x, scope):
    return (x @ reader.get_tensor(scope + '/weights').astype(np.float64)
            + reader.get_tensor(scope + '/biases'))

  images = input_pipeline.read_split_images(records.split_path(data_dir,
                                                               'validation')).astype(np.float64)
  hidden = np.tanh(dense(_elu(dense(images, 'gaussian_encoder/fc1')), 'gaussian_encoder/fc2'))
  z_mean = dense(hidden, 'gaussian_encoder/mean')
  z_stddev = 1e-6 + _softplus(dense(hidden, 'gaussian_encoder/stddev'))
  mutual_information = direct_mutual_information(z_mean, z_stddev, 2, 4)
  assert figures['mutual_information'] == pytest.approx(mutual_information, rel=1e-4)
  assert figures['marginal_kl'] == pytest.approx(
      figures['kl_divergence'] - mutual_information, rel=1e-4)
  covariance = (np.cov(z_mean, rowvar=False, bias=True) + np.diag(np.mean(z_stddev**2, axis=0)))
  mean = z_mean.mean(axis=0)
  np.testing.assert_allclose(
      figures['aggregate_covariance_eigenvalues'],
      np.sort(np.linalg.eigvalsh(covariance))[::-1],
      rtol=1e-4)
  assert figures['prior_fit_kl'] == pytest.approx(
      0.5 * (np.trace(covariance) + mean @ mean - 4 - np.log(np.linalg.det(covariance))), rel=1e-4)
  assert figures['aggregate_draws'] == 2
  assert figures['mutual_information_max'] == pytest.approx(np.log(200))
  assert 0 < figures['mutual_information'] < figures['mutual_information_max']


@pytest.mark.large
def test_metrics_json_and_evaluate_agree_at_any_batch_size(small_mnist_records, tmp_path):
  train_dir = tmp_path / 'train'
  trained = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '30', '--hidden_units', '32', '--latent_dim', '4',
      '--batch_size', '32', '--eval_batch_size', '64'
  ])
  assert trained.returncode == 0, trained.stderr[-3000:]
  with open(train_dir / 'metrics.json') as f:
    metrics = json.load(f)
  for batch_size in ('7', '200'):
    for split in ('validation', 'test'):
      result = _evaluate(small_mnist_records, train_dir, tmp_path / ('%s%s.json' %
                                                                     (split, batch_size)),
                         '--iw_samples', '0', '--batch_size', batch_size, '--split', split)
      for key in ('neg_elbo', 'reconstruction', 'kl_divergence'):
        assert result[key] == pytest.approx(metrics[split][key], abs=1e-4), (split, batch_size, key)


@pytest.mark.large
def test_missing_checkpoint_is_an_error(trained, tmp_path):
  data_dir, train_dir = trained
  missing = str(train_dir / 'model.ckpt-999')
  result = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--checkpoint', missing, '--iw_samples', '0', '--output',
      str(tmp_path / 'out.json')
  ])
  assert result.returncode == 1
  assert 'Cannot read checkpoint %s' % missing in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out.json').exists()


@pytest.mark.large
def test_negative_seed_is_a_flag_error(trained):
  data_dir, train_dir = trained
  result = run_python(
      ['evaluate.py', '--data_dir', data_dir, '--train_dir',
       str(train_dir), '--seed=-1'])
  assert result.returncode == 1
  assert 'flag --seed=-1' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.large
def test_binarize_mode_is_known_from_the_start_of_training(small_mnist_records, tmp_path):
  """An evaluator beside training (before metrics.json exists) evaluates a
  binarized run on binary pixels: config.json is written when training starts."""
  train_dir = tmp_path / 'train'
  trained = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '10', '--hidden_units', '16', '--latent_dim', '2',
      '--batch_size', '32', '--binarize', 'dynamic'
  ])
  assert trained.returncode == 0, trained.stderr[-3000:]
  os.remove(train_dir / 'metrics.json')  # As while training runs.
  result = _evaluate(small_mnist_records, train_dir, tmp_path / 'e.json', '--iw_samples', '0')
  assert result['binarize'] == 'dynamic'
  assert 'config.json says' in run_python([
      'evaluate.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--iw_samples', '0', '--output',
      str(tmp_path / 'f.json')
  ]).stderr


def test_validating_again_reuses_the_draws_and_gives_the_same_figures():
  """Training validates the same split again and again: the second time the
  evaluator feeds the ELBO draws it kept instead of making them, with the same
  result to the bit; another batch size keys other batches."""
  rng = np.random.RandomState(0)
  images = rng.rand(250, 784).astype(np.float32)
  size = architectures.network('mlp', 16, 3)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    evaluator = evaluation.Evaluator(size, batch_size=100, aggregate_draws=0)
    other_batching = evaluation.Evaluator(size, batch_size=64, aggregate_draws=0)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      first = evaluator.per_example(session, images)
      # The batches of 100, 100 and 50 examples, by first index.
      assert sorted(evaluator._kept_elbo_draws) == [(0, 100), (100, 100), (200, 50)]
      # Kept draws are what the second run feeds: changing one changes it.
      kept = evaluator._kept_elbo_draws[200, 50]
      evaluator._kept_elbo_draws[200, 50] = kept + 1.0
      changed = evaluator.per_example(session, images)
      evaluator._kept_elbo_draws[200, 50] = kept
      again = evaluator.per_example(session, images)
      other = other_batching.per_example(session, images)
  for name in ('reconstruction', 'kl_divergence', 'neg_elbo'):
    np.testing.assert_array_equal(again[name], first[name])
    np.testing.assert_allclose(other[name], first[name], rtol=1e-5)
  np.testing.assert_array_equal(changed['reconstruction'][:200], first['reconstruction'][:200])
  assert not np.array_equal(changed['reconstruction'][200:], first['reconstruction'][200:])
