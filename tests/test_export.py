"""Using a trained model: export.py's SavedModel (loaded by a process that
does not import this project), generate.py's modes, evaluate.py's per-example
scores and latent statistics, and the out-of-distribution script."""

import csv
import json
import os
import re
import sys

import numpy as np
from PIL import Image
from PIL import ImageDraw
import pytest
import tensorflow.compat.v1 as tf

from helpers import REPO_ROOT
from helpers import run_process
from helpers import run_python
from mnist_vae import checkpoints
from mnist_vae import evaluation
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae.data_prep import records
from reporting import ood


@pytest.fixture(scope='module')
def trained(tmp_path_factory, small_mnist_records):
  train_dir = tmp_path_factory.mktemp('export') / 'train'
  result = run_python([
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '60', '--hidden_units', '32', '--latent_dim', '4',
      '--batch_size', '32', '--optimizer', 'adam'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  return small_mnist_records, train_dir


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
  _, train_dir = trained
  export_dir = tmp_path_factory.mktemp('saved') / 'model'
  result = run_python(['export.py', '--train_dir', str(train_dir), '--export_dir', str(export_dir)])
  assert result.returncode == 0, result.stderr[-3000:]
  return export_dir


# Runs in a fresh interpreter from an empty directory, with plain TensorFlow 2.
_LOAD_AND_RUN = r'''
import sys
import numpy as np
import tensorflow as tf
export_dir, inputs_path, outputs_path = sys.argv[1:]
inputs = np.load(inputs_path)
signatures = tf.saved_model.load(export_dir).signatures
images = tf.constant(inputs['images'])
seed = tf.constant(int(inputs['seed']), tf.int64)
num = tf.constant(int(inputs['num_samples']), tf.int32)
results = {}
for name, output in signatures['encode'](images=images).items():
  results['encode/' + name] = output.numpy()
for name, output in signatures['decode'](z=tf.constant(inputs['z'])).items():
  results['decode/' + name] = output.numpy()
for key in ('reconstruct', 'serving_default'):
  results[key] = signatures[key](images=images)['probabilities'].numpy()
for run in range(2):
  for name, output in signatures['sample'](num_samples=num, seed=seed).items():
    results['sample%d/%s' % (run, name)] = output.numpy()
for name, output in signatures['log_likelihood'](
    images=images, num_samples=num, seed=seed).items():
  results['log_likelihood/' + name] = output.numpy()
other = signatures['sample'](num_samples=num, seed=seed + 1)['z'].numpy()
results['sample_other_seed/z'] = other
assert not any(m.startswith('mnist_vae') for m in sys.modules), 'project imported'
np.savez(outputs_path, **results)
'''


def _our_graph(checkpoint, images, z):
  """encode / decode / reconstruct of our own graph over the checkpoint."""
  size = checkpoints.network(checkpoint)
  with tf.Graph().as_default(), tf.Session() as session:
    images_t = tf.constant(images)
    z_mean, z_stddev = model.encode(images_t, size)
    logits = model.decode(tf.constant(z), size)
    reconstruction = model.probabilities(model.decode(z_mean, size))
    tf.train.Saver(model.model_variables()).restore(session, checkpoint)
    return session.run({
        'z_mean': z_mean,
        'z_stddev': z_stddev,
        'logits': logits,
        'probabilities': model.probabilities(logits),
        'reconstruction': reconstruction
    })


@pytest.mark.large
def test_export_loads_without_the_project_and_matches_our_graph(trained, exported, tmp_path):
  data_dir, train_dir = trained
  images = input_pipeline.read_split_images(records.split_path(data_dir, 'test'))
  z = np.random.RandomState(0).standard_normal((7, 4)).astype(np.float32)
  np.savez(tmp_path / 'inputs.npz', images=images, z=z, seed=3, num_samples=20)
  script = tmp_path / 'load.py'
  script.write_text(_LOAD_AND_RUN)
  empty = tmp_path / 'empty'
  empty.mkdir()
  result = run_process([
      sys.executable,
      str(script),
      str(exported),
      str(tmp_path / 'inputs.npz'),
      str(tmp_path / 'out.npz')
  ],
                       cwd=str(empty))
  assert result.returncode == 0, result.stderr[-3000:]
  got = dict(np.load(tmp_path / 'out.npz'))
  ours = _our_graph(tf.train.latest_checkpoint(str(train_dir)), images, z)
  for name, key in (('encode/z_mean', 'z_mean'), ('encode/z_stddev', 'z_stddev'),
                    ('decode/logits', 'logits'), ('decode/probabilities', 'probabilities'),
                    ('reconstruct', 'reconstruction'), ('serving_default', 'reconstruction')):
    np.testing.assert_allclose(got[name], ours[key], rtol=1e-5, atol=1e-5, err_msg=name)
  # Samples: deterministic per seed, another seed other samples.
  np.testing.assert_array_equal(got['sample0/z'], got['sample1/z'])
  np.testing.assert_array_equal(got['sample0/probabilities'], got['sample1/probabilities'])
  assert got['sample0/z'].shape == (20, 4) and got['sample0/probabilities'].shape == (20, 784)
  assert not np.array_equal(got['sample0/z'], got['sample_other_seed/z'])
  # Per-example scores: the same as evaluate.py's on the same draws.
  evaluated = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--seed', '3', '--num_samples', '20', '--iw_samples', '20', '--output',
      str(tmp_path / 'e.json')
  ])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  figures = json.loads((tmp_path / 'e.json').read_text())
  assert got['log_likelihood/neg_elbo'].shape == (len(images),)
  assert np.mean(got['log_likelihood/neg_elbo']) == pytest.approx(figures['neg_elbo'], rel=1e-5)
  assert np.mean(got['log_likelihood/nll']) == pytest.approx(figures['iw_nll'], rel=1e-5)


@pytest.mark.large
def test_saved_model_cli_lists_the_signatures(exported):
  result = run_process(['saved_model_cli', 'show', '--dir', str(exported), '--all'])
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ('encode', 'decode', 'reconstruct', 'sample', 'log_likelihood', 'serving_default'):
    assert "signature_def['%s']" % name in result.stdout


@pytest.mark.large
def test_existing_export_is_kept_unless_overwrite(trained, exported, tmp_path):
  _, train_dir = trained
  target = tmp_path / 'model'
  first = run_python(['export.py', '--train_dir', str(train_dir), '--export_dir', str(target)])
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'deprecated' not in first.stderr  # The project's own calls are current ones.
  before = (target / 'saved_model.pb').read_bytes()
  again = run_python(['export.py', '--train_dir', str(train_dir), '--export_dir', str(target)])
  assert again.returncode == 1 and 'already exists: pass --overwrite' in again.stderr
  assert (target / 'saved_model.pb').read_bytes() == before
  replaced = run_python([
      'export.py', '--checkpoint',
      tf.train.latest_checkpoint(str(train_dir)), '--export_dir',
      str(target), '--overwrite'
  ])
  assert replaced.returncode == 0, replaced.stderr[-3000:]
  assert sorted(os.listdir(tmp_path)) == ['model']  # No temporary left.


def _digit_photo(path):
  """A dark 7 drawn on light paper, off-centre, larger than MNIST's 20x20."""
  image = Image.new('RGB', (120, 90), (235, 230, 220))
  draw = ImageDraw.Draw(image)
  draw.line([(30, 10), (80, 10), (50, 80)], fill=(20, 20, 30), width=9)
  image.save(path)


@pytest.mark.large
@pytest.mark.parametrize('source', ['checkpoint', 'export'])
def test_every_generate_mode_works_with_no_other_flag(trained, exported, tmp_path, source):
  data_dir, train_dir = trained
  model_flags = (['--train_dir', str(train_dir)]
                 if source == 'checkpoint' else ['--export_dir', str(exported)])
  expected = {
      'samples': ['samples.png'],
      'interpolate': [
          'interpolate_linear.png', 'interpolate_linear.gif', 'interpolate_spherical.png',
          'interpolate_spherical.gif'
      ],
      'traverse': ['traverse.png'],
      'reconstruct': ['reconstruct.png']
  }
  for mode, names in expected.items():
    out = tmp_path / mode
    result = run_python(
        ['generate.py', '--mode', mode, '--output_dir',
         str(out), '--data_dir', data_dir] + model_flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted(names)
  with Image.open(tmp_path / 'samples' / 'samples.png') as grid:
    assert grid.size == (298, 298)  # 10 x 10 decoded samples.
  with Image.open(tmp_path / 'traverse' / 'traverse.png') as grid:
    assert grid.size == (10 * 30 - 2, 4 * 30 - 2)  # A row per latent dimension.
  with Image.open(tmp_path / 'interpolate' / 'interpolate_linear.gif') as gif:
    assert gif.n_frames == 18  # 10 frames there and 8 back.
  # --scale enlarges every PNG, each pixel a square.
  result = run_python([
      'generate.py', '--mode', 'samples', '--output_dir',
      str(tmp_path / 'big'), '--data_dir', data_dir, '--scale', '3'
  ] + model_flags)
  assert result.returncode == 0, result.stderr[-3000:]
  with Image.open(tmp_path / 'big' / 'samples.png') as big, Image.open(tmp_path / 'samples'
                                                                       / 'samples.png') as small:
    assert big.size == (3 * 298, 3 * 298)
    np.testing.assert_array_equal(np.asarray(big)[::3, ::3], np.asarray(small))


@pytest.mark.large
def test_reconstruct_prepares_a_photo_the_way_mnist_was_made(trained, tmp_path):
  from mnist_vae import generate
  photo = tmp_path / 'seven.jpg'
  _digit_photo(photo)
  [(as_given, prepared)] = generate.read_inputs([str(photo)], trained[0])
  digit = prepared.reshape(28, 28)
  assert digit.max() == pytest.approx(1.0, abs=0.05)  # White ink ...
  assert digit[0].max() == 0 and digit[:, 0].max() == 0  # ... on black.
  rows, cols = np.nonzero(digit > 0.1)
  assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21
  assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 >= 19
  centre = np.array([(np.arange(28)[:, None] * digit).sum(),
                     (np.arange(28)[None] * digit).sum()]) / digit.sum()
  np.testing.assert_allclose(centre, [14, 14], atol=1.0)
  result = run_python([
      'generate.py', '--train_dir',
      str(trained[1]), '--mode', 'reconstruct', '--inputs',
      '%s,3' % photo, '--output_dir',
      str(tmp_path / 'out'), '--data_dir', trained[0]
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  with Image.open(tmp_path / 'out' / 'reconstruct.png') as grid:
    assert grid.size == (3 * 30 - 2, 2 * 30 - 2)  # input | prepared | output.


@pytest.mark.large
def test_generate_bad_input_is_one_line_and_exit_1(trained, tmp_path):
  data_dir, train_dir = trained
  text = tmp_path / 'notes.png'
  text.write_text('not an image')
  other = tmp_path / 'other'
  with tf.Graph().as_default(), tf.Session() as session:
    tf.get_variable('weights', [3])
    session.run(tf.global_variables_initializer())
    tf.train.Saver().save(session, str(other / 'model.ckpt'))
  cases = [
      (['--train_dir',
        str(train_dir), '--mode', 'reconstruct', '--inputs',
        str(text)], 'notes.png is not an image Pillow can read'),
      ([
          '--train_dir',
          str(train_dir), '--mode', 'reconstruct', '--inputs',
          str(tmp_path / 'missing.png')
      ], 'missing.png: no such file'),
      (['--train_dir', str(train_dir), '--mode', 'traverse', '--inputs',
        '5000'], 'Test-set index 5000 is out of range'),
      (['--train_dir', str(other), '--mode', 'samples'], 'holds no VAE of this project'),
      (['--export_dir', str(tmp_path), '--mode', 'samples'], 'Cannot load a SavedModel'),
  ]
  for arguments, message in cases:
    result = run_python(
        ['generate.py', '--data_dir', data_dir, '--output_dir',
         str(tmp_path / 'out')] + arguments)
    assert result.returncode == 1, (arguments, result.stderr[-2000:])
    assert message in result.stderr, (message, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr


@pytest.mark.large
def test_per_example_csv_and_latent_statistics(trained, tmp_path):
  data_dir, train_dir = trained
  result = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--iw_samples', '10', '--output',
      str(tmp_path / 'e.json'), '--per_example_csv',
      str(tmp_path / 'scores.csv')
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads((tmp_path / 'e.json').read_text())
  with open(tmp_path / 'scores.csv') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['index', 'label', 'neg_elbo', 'reconstruction', 'kl', 'nll']
  labels = input_pipeline.read_split_labels(records.split_path(data_dir, 'test'))
  assert [int(row['label']) for row in rows] == list(labels)
  assert [int(row['index']) for row in rows] == list(range(len(labels)))
  for column, key in (('neg_elbo', 'neg_elbo'), ('kl', 'kl_divergence'), ('nll', 'iw_nll')):
    assert np.mean([float(row[column]) for row in rows]) == pytest.approx(figures[key], abs=1e-4)
  assert len(figures['kl_per_dimension']) == 4
  assert sum(figures['kl_per_dimension']) == pytest.approx(figures['kl_divergence'], rel=1e-5)
  assert 0 <= figures['active_units'] <= 4
  assert 'latent units active' in result.stderr
  tags = set()
  for events in (train_dir / 'eval_test').iterdir():
    for event in tf.train.summary_iterator(str(events)):
      tags.update(value.tag for value in event.summary.value)
  assert {'test/neg_elbo', 'test/iw_nll', 'test/active_units', 'test/kl_per_dimension/03'} <= tags


def test_active_units_follow_burdas_definition():
  z_mean = np.zeros((100, 3))
  z_mean[:, 0] = np.linspace(-1, 1, 100)  # Variance 0.34: active.
  z_mean[:, 1] = np.linspace(-0.1, 0.1, 100)  # Variance 0.0034: inactive.
  summary = evaluation.summarize_latents(z_mean, np.ones((100, 3)))
  assert summary['active_units'] == 1 and summary['kl_per_dimension'] == [1, 1, 1]


def test_auroc():
  assert ood.auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
  assert ood.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0
  assert ood.auroc(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == 0.625
  rng = np.random.RandomState(0)
  assert abs(ood.auroc(rng.rand(4000), rng.rand(4000)) - 0.5) < 0.02


@pytest.mark.large
def test_out_of_distribution_script(trained, tmp_path, fashion_mnist_dir):
  data_dir, train_dir = trained
  result = run_process([
      'bash',
      os.path.join(REPO_ROOT, 'scripts', 'ood_fashion.sh'), '--train_dir',
      str(train_dir), '--data_dir', data_dir, '--fashion_records',
      str(tmp_path / 'fashion'), '--out_dir',
      str(tmp_path / 'out'), '--iw_samples', '3'
  ])
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads((tmp_path / 'out' / 'ood_fashion_mnist.json').read_text())
  assert figures['in_examples'] == 200 and figures['out_examples'] == 10000
  assert 0.0 <= figures['auroc'] <= 1.0
  assert (tmp_path / 'out' / 'ood_fashion_mnist.png').exists()


@pytest.mark.large
def test_absurd_values_unwritable_outputs_and_oversized_inputs_are_one_line(trained, tmp_path):
  data_dir, train_dir = trained
  huge = tmp_path / 'huge.png'
  Image.new('L', (15000, 15000)).save(huge)  # Compresses to a few hundred KB.
  wide = tmp_path / 'wide.png'
  Image.new('L', (7000, 6000)).save(wide)  # Under Pillow's bound, over ours.
  run = ['--train_dir', str(train_dir)]
  cases = [
      (['generate.py', '--num', '3000000'] + run,
       r'--num=3000000: .*not an integer in the range \[1, 10000\]'),
      (['generate.py', '--output_dir', '/proc/nope'] + run,
       r'Cannot create --output_dir /proc/nope: '),
      (['generate.py', '--mode', 'reconstruct', '--inputs',
        str(huge)] + run, r'huge.png: Image size \(225000000 pixels\) exceeds limit .*at most '
       r'36000000 pixels'),
      (['generate.py', '--mode', 'reconstruct', '--inputs',
        str(wide)] + run, r'wide.png is 7000 x 6000 pixels; --inputs takes images of at most '
       r'36000000 pixels'),
      (['train.py', '--hidden_units', '1000000000', '--train_dir',
        str(tmp_path / 't')],
       r'--hidden_units=1000000000: .*not an integer in the range \[1, 8000\]'),
      (['evaluate.py', '--iw_chunk', '1000', '--batch_size', '1000'] + run,
       r'--iw_chunk=1000 x --batch_size=1000 decodes 1000000 images at once'),
      (['evaluate.py', '--output', '/proc/nope/eval.json'] + run,
       r'Cannot create --output /proc/nope: '),
      (['evaluate.py', '--per_example_csv', '/proc/nope/rows.csv'] + run,
       r'Cannot create --per_example_csv /proc/nope: '),
      (['export.py', '--export_dir', '/proc/nope/model'] + run,
       r'Cannot create --export_dir /proc/nope: '),
  ]
  for arguments, pattern in cases:
    if arguments[0] != 'export.py':
      arguments = arguments + ['--data_dir', data_dir]
    result = run_python(arguments)
    assert result.returncode == 1, (arguments, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, (arguments, result.stderr[-2000:])
    assert re.search(pattern, result.stderr), (pattern, result.stderr[-2000:])
