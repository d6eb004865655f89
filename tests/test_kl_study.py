"""The KL study's tools as real processes: samples from the aggregate
posterior (generate.py, export.py), sample quality (sample_quality.py), and
scripts/kl_study.sh --smoke end to end."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from helpers import REPO_ROOT
from helpers import run_python
from mnist_vae import aggregate_posterior

# Every test here starts processes, a cluster or a server.
pytestmark = pytest.mark.large


@pytest.fixture(scope='module')
def trained(tmp_path_factory, small_mnist_records):
  train_dir = tmp_path_factory.mktemp('kl_study') / 'train'
  result = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '40', '--hidden_units', '32', '--latent_dim', '3',
      '--batch_size', '32', '--optimizer', 'adam', '--kl_weight', '2'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  return small_mnist_records, train_dir


def _fit_file(train_dir):
  return str(train_dir / 'model.ckpt-40') + aggregate_posterior.FIT_SUFFIX


def test_aggregate_samples_come_from_a_fit_saved_beside_the_checkpoint(trained, tmp_path):
  data_dir, train_dir = trained
  if os.path.exists(_fit_file(train_dir)):
    os.remove(_fit_file(train_dir))
  command = [
      'generate.py', '--train_dir',
      str(train_dir), '--data_dir', data_dir, '--mode', 'samples', '--sample_from', 'aggregate',
      '--num', '20', '--output_dir',
      str(tmp_path / 'out')
  ]
  first = run_python(command)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'Fitted the aggregate posterior to the 1800 training images' in first.stderr
  fit = json.loads(open(_fit_file(train_dir)).read())
  assert fit['num_examples'] == 1800 and fit['split'] == 'train'
  assert fit['checkpoint'] == 'model.ckpt-40'
  with Image.open(tmp_path / 'out' / 'samples_aggregate.png') as grid:
    assert grid.size == (10 * 30 - 2, 2 * 30 - 2)
    aggregate_pixels = np.asarray(grid)

  # The fit is reused, not made again; prior samples of the same seed differ.
  second = run_python(command[:-1] + [str(tmp_path / 'again')])
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Fitted' not in second.stderr and "aggregate posterior's fit" in second.stderr
  with Image.open(tmp_path / 'again' / 'samples_aggregate.png') as grid:
    np.testing.assert_array_equal(np.asarray(grid), aggregate_pixels)
  prior = run_python(command[:7] + ['--num', '20', '--output_dir', str(tmp_path / 'prior')])
  assert prior.returncode == 0, prior.stderr[-3000:]
  with Image.open(tmp_path / 'prior' / 'samples.png') as grid:
    assert np.abs(np.asarray(grid, float) - aggregate_pixels).mean() > 1.0


def test_sample_from_is_only_for_samples(trained, tmp_path):
  data_dir, train_dir = trained
  result = run_python([
      'generate.py', '--train_dir',
      str(train_dir), '--data_dir', data_dir, '--mode', 'traverse', '--sample_from', 'aggregate',
      '--output_dir',
      str(tmp_path)
  ])
  assert result.returncode == 1
  assert '--sample_from is for --mode samples, not traverse' in result.stderr


def test_an_export_samples_the_aggregate_posterior_it_was_given(trained, tmp_path):
  data_dir, train_dir = trained
  # The first checkpoint has no fit (the other tests fit the latest).
  without = run_python([
      'export.py', '--checkpoint',
      str(train_dir / 'model.ckpt-0'), '--export_dir',
      str(tmp_path / 'plain')
  ])
  assert without.returncode == 0, without.stderr[-3000:]
  assert 'No sample_aggregate signature' in without.stderr
  refused = run_python([
      'generate.py', '--export_dir',
      str(tmp_path / 'plain'), '--sample_from', 'aggregate', '--output_dir',
      str(tmp_path / 'x')
  ])
  assert refused.returncode == 1
  assert 'no sample_aggregate signature' in refused.stderr and 'export.py --data_dir' in (
      refused.stderr)

  result = run_python([
      'export.py', '--train_dir',
      str(train_dir), '--data_dir', data_dir, '--export_dir',
      str(tmp_path / 'export')
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'sample_aggregate' in result.stderr
  mean, covariance = aggregate_posterior.read_fit(_fit_file(train_dir), 3)
  # In plain TensorFlow 2, without this project: the draws have q(z)'s moments.
  loaded = tf.saved_model.load(str(tmp_path / 'export'))
  out = loaded.signatures['sample_aggregate'](
      num_samples=tf.constant(20000), seed=tf.constant(7, tf.int64), temperature=tf.constant(1.0))
  z = out['z'].numpy()
  assert out['probabilities'].shape == (20000, 784)
  np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.05)
  np.testing.assert_allclose(np.cov(z, rowvar=False), covariance, atol=0.05)
  generated = run_python([
      'generate.py', '--export_dir',
      str(tmp_path / 'export'), '--sample_from', 'aggregate', '--output_dir',
      str(tmp_path / 'g')
  ])
  assert generated.returncode == 0, generated.stderr[-3000:]
  assert (tmp_path / 'g' / 'samples_aggregate.png').exists()


def test_sample_quality_scores_prior_and_aggregate_samples(trained, tmp_path):
  data_dir, train_dir = trained
  classifier_dir = tmp_path / 'classifier'
  missing = run_python([
      'sample_quality.py', '--classifier_dir',
      str(classifier_dir), '--train_dir',
      str(train_dir), '--data_dir', data_dir
  ])
  assert missing.returncode == 1
  assert 'No classifier in %s' % classifier_dir in missing.stderr
  assert '--train_classifier' in missing.stderr

  trained_classifier = run_python([
      'sample_quality.py', '--train_classifier', '--classifier_dir',
      str(classifier_dir), '--data_dir', data_dir, '--classifier_steps', '300'
  ])
  assert trained_classifier.returncode == 0, trained_classifier.stderr[-3000:]
  info = json.loads((classifier_dir / 'classifier.json').read_text())
  assert 0.7 < info['test_accuracy'] <= 1.0  # 1,800 real training digits.
  again = run_python([
      'sample_quality.py', '--train_classifier', '--classifier_dir',
      str(classifier_dir), '--data_dir', data_dir
  ])
  assert again.returncode == 1 and 'already holds a classifier' in again.stderr

  scored = run_python([
      'sample_quality.py', '--classifier_dir',
      str(classifier_dir), '--train_dir',
      str(train_dir), '--data_dir', data_dir, '--num_samples', '300'
  ])
  assert scored.returncode == 0, scored.stderr[-3000:]
  result = json.loads((train_dir / 'sample_quality_step_000040.json').read_text())
  assert result['classifier_test_accuracy'] == info['test_accuracy']
  assert result['step'] == 40 and result['num_samples'] == 300
  for source in ('prior', 'aggregate'):
    shares = result[source]['digit_shares']
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0)
    assert result[source]['least_digit_share'] == min(shares)
    # 40 steps make blurs, far from real digits; real images are close.
    assert result[source]['frechet_distance'] > 5 * result['real_train_frechet_distance']


def test_unknown_sample_source_is_a_flag_error(trained, tmp_path):
  data_dir, train_dir = trained
  result = run_python([
      'sample_quality.py', '--classifier_dir',
      str(tmp_path), '--train_dir',
      str(train_dir), '--sample_from', 'posterior'
  ])
  assert result.returncode == 1
  assert "'posterior' is not one of prior, aggregate" in result.stderr


def test_kl_study_smoke_writes_the_tables_and_figures_and_resumes(small_mnist_records,
                                                                  fashion_mnist_dir, tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2')
  # The convolutional part's Fashion-MNIST records go beside --data_dir.
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'mnist').symlink_to(small_mnist_records)
  command = [
      'bash', 'scripts/kl_study.sh', '--smoke', '--data_dir',
      str(tmp_path / 'data' / 'mnist'), '--fashion_mnist_dir', fashion_mnist_dir, '--runs_dir',
      str(tmp_path / 'runs'), '--report_dir',
      str(tmp_path / 'report'), '--jobs', '2'
  ]
  result = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=800)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = (tmp_path / 'report' / 'kl_study.md').read_text()
  rows = [line for line in report.splitlines() if line.startswith('| beta')]
  assert [row.split(' | ')[0] for row in rows
         ] == ['| beta = 0', '| beta = 10', '| beta = 1', '| beta = 1, warm-up 20 steps']
  results = json.loads((tmp_path / 'report' / 'results.json').read_text())
  latent2 = {name: runs[0]['test'] for name, runs in results['latent2'].items()}
  # The weight does what it says: less KL as beta grows.
  assert latent2['beta0']['kl_divergence'] > latent2['beta10']['kl_divergence']
  for name, runs in results['latent20'].items():
    test = runs[0]['test']
    assert test['mutual_information'] + test['marginal_kl'] == pytest.approx(
        test['kl_divergence']), name
    assert runs[0]['samples']['aggregate']['frechet_distance'] > 0, name
  with Image.open(tmp_path / 'report' / 'latent2_by_beta.png') as figure:
    assert figure.width >= 2 * 300  # One column per beta (the smoke's 0 and 10).
  with Image.open(tmp_path / 'report' / 'samples_prior_vs_aggregate.png') as figure:
    assert figure.width >= 2 * 300  # One column per 20-d run (the smoke's beta = 1 and warm-up).
  assert (tmp_path / 'runs' / 'classifier' / 'classifier.json').exists()
  # The KL article's network on Fashion-MNIST: its beta = 0, the ELBO, its beta = 10.
  # Each dataset has a report of its own: a study of one leaves the other's.
  fashion = (tmp_path / 'report' / 'kl_study_fashion_mnist.md').read_text()
  assert 'Fashion' not in report and set(results) == {'latent2', 'latent20'}
  conv = [
      line.split(' | ')[0]
      for line in fashion.splitlines()
      if line.startswith(('| article', '| ELBO'))
  ]
  assert conv == [
      '| article beta = 0 (kl_weight 0)', '| ELBO (kl_weight 1; article beta 2)',
      '| article beta = 10 (kl_weight 5)'
  ], fashion
  assert 'FD) on Fashion-MNIST: test accuracy' in fashion
  fashion_results = json.loads((tmp_path / 'report' / 'results_fashion_mnist.json').read_text())
  conv_test = {name: runs[0]['test'] for name, runs in fashion_results['conv'].items()}
  assert conv_test['article_beta0']['kl_divergence'] > conv_test['article_beta10']['kl_divergence']
  for name in ('conv_by_beta.png', 'conv_samples_prior_vs_aggregate.png'):
    with Image.open(tmp_path / 'report' / name) as figure:
      assert figure.width >= 3 * 300, name
  assert (tmp_path / 'runs' / 'classifier_fashion_mnist' / 'classifier.json').exists()
  assert (tmp_path / 'data' / 'fashion_mnist_no_validation' / 'test.tfrecords').exists()

  again = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('already trained and scored') == 7, again.stdout
  assert 'the classifier of' not in again.stdout


@pytest.mark.parametrize('option, value, message', [
    ('--seeds', 'two', "--seeds takes a number of seeds (1, 2, ...), not 'two'"),
    ('--parts', 'mlp cnn', "--parts takes mlp and/or conv, not 'cnn'"),
    ('--conv_epochs', '0', "--conv_epochs takes a number of epochs (1, 2, ...), not '0'"),
])
def test_kl_study_refuses_bad_options(option, value, message, tmp_path):
  result = subprocess.run(
      ['bash', 'scripts/kl_study.sh', option, value, '--runs_dir',
       str(tmp_path / 'runs')],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=60)
  assert result.returncode == 2
  assert message in result.stderr
  assert not (tmp_path / 'runs').exists()
