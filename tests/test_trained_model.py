"""mnist_vae.load: a run, a checkpoint or an export as a model called from
Python with NumPy arrays, for every architecture; what it accepts and what it
refuses; the SavedModel's own refusal of pixels outside [0, 1]."""

import os

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

import mnist_vae
from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import export
from mnist_vae import model
from mnist_vae import trained_model

NETWORKS = {
    name:
        architectures.network(
            name,
            latent_dim=2 if 'cvae' in name else 3,
            hidden_units=None if name == 'cvae_tutorial' else 16)
    for name in architectures.ARCHITECTURES
}


def _saved_run(network, directory, seed=0):
  """A run directory holding one checkpoint of `network` (random weights)."""
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    model.create_variables(network)
    global_step = tf.train.get_or_create_global_step()
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      session.run(global_step.assign(7))
      tf.train.Saver().save(session, os.path.join(directory, checkpoints.BASENAME), global_step=7)
  return directory


@pytest.fixture(scope='module')
def run_and_export(tmp_path_factory):
  root = tmp_path_factory.mktemp('trained')
  run = _saved_run(NETWORKS['mlp'], str(root / 'run'))
  export.export(checkpoints.readable(run), str(root / 'export'))
  return run, str(root / 'export')


def _digits(count=3, seed=0):
  return (np.random.RandomState(seed).rand(count, 28, 28) * 255).astype(np.uint8)


def test_a_run_a_checkpoint_and_its_export_give_the_same_answers(run_and_export):
  run, export_dir = run_and_export
  models = [
      mnist_vae.load(run),
      mnist_vae.load(os.path.join(run, 'model.ckpt-7')),
      mnist_vae.load(export_dir)
  ]
  assert [type(vae).__name__ for vae in models
         ] == ['CheckpointModel', 'CheckpointModel', 'ExportedModel']
  digits = _digits()
  reference, *others = [(vae.encode(digits), vae.decode(np.ones([2, 3])), vae.reconstruct(digits),
                         vae.sample(4, seed=5), vae.log_likelihood(digits, k=20, seed=1))
                        for vae in models]
  (z_mean, z_stddev), decoded, reconstructed, sampled, log_px = reference
  assert z_mean.shape == z_stddev.shape == (3, 3) and z_mean.dtype == np.float32
  assert decoded.shape == (2, 784) and reconstructed.shape == (3, 784)
  assert sampled.shape == (4, 784) and log_px.shape == (3,) and (log_px < 0).all()
  for other in others:
    np.testing.assert_allclose(other[0][0], z_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other[1], decoded, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other[3], sampled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other[4], log_px, rtol=1e-5)


def test_every_accepted_form_of_the_images_gives_the_same_codes(run_and_export):
  vae = mnist_vae.load(run_and_export[0])
  digits = _digits()
  as_floats = digits.astype(np.float64) / 255
  codes = vae.encode(digits)[0]
  for form in (as_floats, as_floats.astype(np.float16).astype(np.float32),
               as_floats.reshape(3, 784), as_floats.reshape(3, 28, 28, 1)):
    np.testing.assert_allclose(vae.encode(form)[0], codes, atol=2e-3)
  np.testing.assert_array_equal(vae.encode(as_floats.astype(np.float32))[0], codes)


@pytest.mark.parametrize('images, message', [
    (np.zeros([2, 27, 28]), r'shape \(2, 27, 28\) is not one of \[n, 784\]'),
    (np.zeros([784]), r'shape \(784,\) is not one of'),
    (np.zeros([2, 784], np.int64), 'dtype int64 is not accepted'),
    (np.zeros([2, 784], bool), 'dtype bool is not accepted'),
    (np.full([2, 784], 255.0), r'float values must lie in \[0, 1\]; these lie in \[255.0'),
    (np.full([1, 784], np.nan), r'must lie in \[0, 1\]; 784 of 784 are NaN or infinite'),
])
def test_images_it_cannot_take_are_a_value_error_that_says_why(run_and_export, images, message):
  vae = mnist_vae.load(run_and_export[0])
  for method in (vae.encode, vae.reconstruct, vae.log_likelihood):
    with pytest.raises(ValueError, match=message):
      method(images)


def test_other_arguments_it_cannot_take_are_value_errors(run_and_export):
  vae = mnist_vae.load(run_and_export[1])
  with pytest.raises(ValueError, match=r'z: shape \(2, 5\) is not \[n, 3\]'):
    vae.decode(np.zeros([2, 5]))
  with pytest.raises(ValueError, match='n: expected a whole number >= 1, got 0'):
    vae.sample(0)
  with pytest.raises(ValueError, match='k: expected a whole number >= 1'):
    vae.log_likelihood(_digits(), k=2.5)


def test_a_path_with_no_model_is_named(tmp_path):
  with pytest.raises(trained_model.ModelError, match='is neither a run directory'):
    mnist_vae.load(str(tmp_path / 'nothing'))
  with pytest.raises(checkpoints.CheckpointError, match='No checkpoint in'):
    mnist_vae.load(str(tmp_path))


@pytest.mark.parametrize('name', sorted(NETWORKS))
def test_every_architecture_loads_and_answers(name, tmp_path):
  network = NETWORKS[name]
  vae = mnist_vae.load(_saved_run(network, str(tmp_path)))
  assert vae.network == network
  posterior = vae.encode(_digits(2))
  assert isinstance(posterior, tuple) and len(posterior) == 2  # (z_mean, z_stddev)
  assert posterior[0].shape == posterior[1].shape == (2, network.latent_dim)
  assert (posterior[1] > 0).all()
  assert vae.reconstruct(_digits(2)).shape == (2, 784)
  assert np.isfinite(vae.log_likelihood(_digits(2), k=3)).all()


def test_the_savedmodel_refuses_pixels_outside_the_unit_interval(run_and_export):
  signatures = tf2.saved_model.load(run_and_export[1]).signatures
  fine = signatures['encode'](images=tf2.zeros([1, 784]))
  assert fine['z_mean'].shape == (1, 3)
  for signature in ('encode', 'reconstruct'):
    with pytest.raises(tf2.errors.InvalidArgumentError, match=r'images must lie in \[0, 1\]'):
      signatures[signature](images=tf2.fill([1, 784], 255.0))
