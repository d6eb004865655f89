"""Each architecture's description and what is derived from it: variables,
forward passes (op by op and compiled), checkpoint names; the original MLP's
numbers unchanged by the move to descriptions."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import REPO_ROOT
from helpers import run_process
from helpers import run_session
from mnist_vae import architectures
from mnist_vae import fast_step
from mnist_vae import model

# Every architecture at its own sizes (a 2-d z for the convolutional ones, as
# their sources have it).
NETWORKS = {
    name: architectures.network(name, latent_dim=2 if 'cvae' in name else 20)
    for name in architectures.ARCHITECTURES
}


def test_the_original_mlp_has_the_originals_variables():
  assert architectures.variable_shapes(NETWORKS['mlp']) == {
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
      'bernoulli_decoder/output/biases': [784]
  }


def test_the_convolutional_networks_are_their_sources_layers():
  shapes = dict(architectures.layer_shapes(NETWORKS['cvae_tutorial']))
  # 'valid' convolutions: 28 -> 13 -> 6; the decoder back to 28x28x1.
  assert shapes['encoder'] == [(784,), (28, 28, 1), (13, 13, 32), (6, 6, 64), (2304,)]
  assert shapes['decoder'] == [(2,), (1568,), (7, 7, 32), (14, 14, 64), (28, 28, 32), (28, 28, 1),
                               (784,)]
  shapes = dict(architectures.layer_shapes(NETWORKS['keras_cvae']))
  assert shapes['encoder'] == [(784,), (28, 28, 1), (14, 14, 32), (7, 7, 64), (3136,), (16,)]
  assert shapes['decoder'][1:4] == [(3136,), (7, 7, 64), (14, 14, 64)]
  assert NETWORKS['cvae_tutorial'].scale == NETWORKS['keras_cvae'].scale == 'log_variance'


@pytest.mark.parametrize('name', list(architectures.ARCHITECTURES))
def test_a_checkpoints_variables_name_its_network(name):
  """from_variables finds each network back from its variables alone, at other
  sizes too, and no two architectures share their variables."""
  for latent_dim in (1, 7):
    network = NETWORKS[name]._replace(latent_dim=latent_dim)
    network = architectures.network(name, network.hidden_units, latent_dim)
    assert architectures.from_variables(architectures.variable_shapes(network), 'x') == network
  others = [
      architectures.variable_shapes(NETWORKS[other])
      for other in architectures.ARCHITECTURES
      if other != name
  ]
  assert architectures.variable_shapes(NETWORKS[name]) not in others


@pytest.mark.parametrize('arguments, message', [
    (('resnet',), "Unknown architecture 'resnet'; expected one of mlp, iwae_mlp"),
    (('cvae_tutorial', 64), '--hidden_units=64 does not apply to architecture cvae_tutorial'),
    (('mlp', 0), '--hidden_units=0 is outside 1..8000'),
    (('keras_cvae', None, 0), '--latent_dim=0 is outside 1..1000'),
])
def test_what_an_architecture_cannot_take_is_named(arguments, message):
  with pytest.raises(architectures.ArchitectureError, match=message):
    architectures.network(*arguments)


def test_a_checkpoint_of_no_known_network_is_named():
  with pytest.raises(architectures.ArchitectureError, match='holds no VAE'):
    architectures.from_variables({'dense/kernel': [3, 4]}, 'some.ckpt')
  shapes = architectures.variable_shapes(NETWORKS['mlp'])
  shapes['gaussian_encoder/fc3/weights'] = [500, 500]
  with pytest.raises(architectures.ArchitectureError, match='no known architecture'):
    architectures.from_variables(shapes, 'some.ckpt')


@pytest.mark.parametrize('name', list(architectures.ARCHITECTURES))
def test_the_graphs_variables_are_the_descriptions(name):
  network = NETWORKS[name]
  with tf.Graph().as_default():
    outputs = model.inference(tf.zeros([3, 784]), network)
    assert {
        v.op.name: v.shape.as_list() for v in tf.trainable_variables()
    } == (
        architectures.variable_shapes(network))
    assert outputs.z_mean.shape.as_list() == [3, network.latent_dim]
    assert outputs.logits.shape.as_list() == [3, 784]


def test_multiply_adds_are_counted_from_the_layers():
  mlp = architectures.multiply_adds(NETWORKS['mlp'])
  assert mlp == {
      'encoder': 784 * 500 + 500 * 500 + 2 * 500 * 20,
      'decoder': 20 * 500 + 500 * 500 + 500 * 784
  }
  tutorial = architectures.multiply_adds(NETWORKS['cvae_tutorial'])
  # conv1: 13x13 outputs of a 3x3x1 kernel, 32 filters; conv2: 6x6 of 3x3x32, 64.
  assert tutorial['encoder'] == (13 * 13 * 9 * 32 + 6 * 6 * 9 * 32 * 64 + 2 * 2304 * 2)
  assert architectures.training_flops_per_example(NETWORKS['mlp']) == 6 * (
      mlp['encoder'] + mlp['decoder'])


@pytest.mark.parametrize('name', list(architectures.ARCHITECTURES))
def test_compiled_step_equals_the_separate_ops_for_every_architecture(name):
  network = NETWORKS[name]
  rng = np.random.RandomState(0)
  images = (rng.rand(4, 784) > 0.6).astype(np.float32)
  noise = rng.standard_normal([4, network.latent_dim]).astype(np.float32)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    images_t, noise_t = tf.constant(images), tf.constant(noise)
    compiled = fast_step.compiled_training_step(images_t, network, noise=noise_t)
    terms = model.loss(images_t, model.inference(images_t, network, noise=noise_t), network)
    variables = [var for _, var in compiled.grads_and_vars]
    separate = tf.gradients(terms.neg_elbo, variables)
    got, expected, gradients = run_session([compiled, terms, separate])
  assert got.loss_terms.neg_elbo == pytest.approx(expected.neg_elbo, rel=1e-5)
  for (gradient, _), reference in zip(got.grads_and_vars, gradients):
    np.testing.assert_allclose(gradient, reference, rtol=1e-3, atol=1e-5 * np.abs(reference).max())


def test_the_exponential_scales_give_the_kl_of_their_log_variance():
  """log_variance and log_stddev networks: the KL of the head's output
  exactly, however narrow the posterior (no 1e-8 floor)."""
  network = NETWORKS['keras_cvae']
  log_variance = np.array([[-30.0, 0.0], [2.0, -1.0]], np.float32)
  mean = np.array([[0.5, -1.0], [0.0, 2.0]], np.float32)
  with tf.Graph().as_default():
    stddev = model.stddev_of(network, tf.constant(log_variance))
    kl = run_session(model.gaussian_kl(tf.constant(mean), stddev, network))
  expected = -0.5 * np.sum(1 + log_variance - mean**2 - np.exp(log_variance), axis=1)
  np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_the_iwae_networks_output_biases_start_at_the_training_means_logit():
  mean = np.array([0.0, 0.0005, 0.25, 0.5, 1.0], np.float32)
  logits = model.train_mean_logit(mean)
  clipped = np.clip(mean, 0.001, 0.999)
  np.testing.assert_allclose(logits, np.log(clipped / (1 - clipped)), rtol=1e-6)
  with tf.Graph().as_default():
    layers = model.create_variables(NETWORKS['iwae_mlp'], np.full(784, 0.3, np.float32))
    biases = run_session(layers['bernoulli_decoder/output'][1])
  np.testing.assert_allclose(biases, 0.3)


# The last commit before the network was described once, and the two presets
# whose numbers must not change.
REFERENCE_COMMIT = '6d97d94'


def _test_figures(root, preset, data_dir, train_dir, mnist_dir):
  result = run_process([
      sys.executable, 'train.py', '--flagfile',
      'configs/%s.flags' % preset, '--mnist_dir', mnist_dir, '--data_dir',
      str(data_dir), '--train_dir',
      str(train_dir), '--max_steps', '300', '--seed', '4'
  ],
                       cwd=root,
                       env=dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(train_dir, 'metrics.json')) as f:
    return json.load(f)['test']


@pytest.mark.large
@pytest.mark.parametrize('preset', ['original', 'upstream'])
def test_the_original_mlp_gives_the_numbers_it_gave_before_the_move(preset, mnist_dir, tmp_path):
  """train.py with the preset, 300 steps, seed 4: the same test figures to
  every digit as commit 6d97d94's train.py on this machine."""
  reference_root = tmp_path / 'reference'
  reference_root.mkdir()
  try:
    archive = subprocess.run(['git', 'archive', REFERENCE_COMMIT],
                             cwd=REPO_ROOT,
                             capture_output=True,
                             check=True).stdout
  except subprocess.CalledProcessError as e:
    pytest.fail('git archive %s failed (a clone with history is needed): %s' %
                (REFERENCE_COMMIT, e.stderr.decode()[-500:]))
  subprocess.run(['tar', '-x', '-C', str(reference_root)], input=archive, check=True)
  data_dir = tmp_path / 'data'
  reference = _test_figures(str(reference_root), preset, data_dir, tmp_path / 'before', mnist_dir)
  now = _test_figures(REPO_ROOT, preset, data_dir, tmp_path / 'now', mnist_dir)
  for key in ('neg_elbo', 'reconstruction', 'kl_divergence'):
    assert now[key] == reference[key], key
  assert math.isfinite(now['neg_elbo'])


def _run(args, cwd=REPO_ROOT):
  result = run_process([sys.executable] + args, cwd=cwd)
  assert result.returncode == 0, (args, result.stderr[-3000:])
  return result


@pytest.mark.large
@pytest.mark.parametrize('name', ['iwae_mlp', 'cvae_tutorial', 'keras_cvae'])
def test_every_architecture_runs_through_every_program(name, tmp_path):
  """Train, resume, evaluate, export (every signature, from TensorFlow
  alone), generate every picture, score samples: the network rebuilt from
  each checkpoint, and a resume naming another network stopped in one line."""
  from helpers import indexed_images
  from helpers import write_idx_dir
  labels = np.arange(120, dtype=np.uint8) % 10
  idx_dir = write_idx_dir(tmp_path / 'idx', indexed_images(120), labels,
                          indexed_images(40, offset=500), labels[:40])
  data_dir, train_dir = str(tmp_path / 'data'), str(tmp_path / 'train')
  network_flags = ['--architecture', name, '--latent_dim', '2', '--keep_prob', '1']
  common = [
      'train.py', '--mnist_dir', idx_dir, '--data_dir', data_dir, '--train_dir', train_dir,
      '--validation_size', '20', '--batch_size', '10', '--save_checkpoint_steps', '3',
      '--log_every_n_steps', '3'
  ] + network_flags
  _run(common + ['--max_steps', '3'])
  resumed = _run(common + ['--max_steps', '6'])
  assert 'Resuming from' in resumed.stderr
  with open(os.path.join(train_dir, 'config.json')) as f:
    assert json.load(f)['architecture'] == name
  other = run_process([sys.executable] + common[:-len(network_flags)]
                      + ['--architecture', 'mlp', '--latent_dim', '2', '--max_steps', '9'])
  assert other.returncode == 1
  assert "--architecture=mlp (the checkpoint's: %s)" % name in other.stderr
  evaluated = _run([
      'evaluate.py', '--train_dir', train_dir, '--iw_samples', '3', '--output',
      str(tmp_path / 'eval.json')
  ])
  with open(tmp_path / 'eval.json') as f:
    assert np.isfinite(json.load(f)['iw_nll'])
  assert 'Traceback' not in evaluated.stderr
  export_dir = str(tmp_path / 'export')
  _run(['export.py', '--train_dir', train_dir, '--export_dir', export_dir])
  signatures = _run([
      '-c',
      ('import tensorflow as tf; s = tf.saved_model.load(%r).signatures; '
       'x = tf.zeros([2, 784]); '
       'print(s["encode"](images=x)["z_mean"].shape, s["decode"](z=tf.zeros([2, 2]))'
       '["probabilities"].shape, s["reconstruct"](images=x)["probabilities"].shape, '
       's["sample"](num_samples=tf.constant(3), seed=tf.constant(0, tf.int64))["z"].shape, '
       's["log_likelihood"](images=x, num_samples=tf.constant(2), '
       'seed=tf.constant(0, tf.int64))["nll"].shape)') % export_dir
  ],
                    cwd=str(tmp_path))
  assert signatures.stdout.split() == [
      '(2,', '2)', '(2,', '784)', '(2,', '784)', '(3,', '2)', '(2,)'
  ]
  for mode in ('samples', 'interpolate', 'traverse', 'reconstruct'):
    _run([
        'generate.py', '--train_dir', train_dir, '--mode', mode, '--output_dir',
        str(tmp_path / 'out' / mode)
    ])
  _run([
      'sample_quality.py', '--train_classifier', '--classifier_steps', '5', '--classifier_dir',
      str(tmp_path / 'classifier'), '--data_dir', data_dir, '--train_dir', train_dir,
      '--num_samples', '20'
  ])
  assert [n for n in os.listdir(train_dir) if n.startswith('sample_quality_step_')]
