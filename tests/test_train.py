"""train.py as a real process: outputs, resume, reproducibility, clear errors."""

import glob
import json
import os
import re
import shutil
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from helpers import REPO_ROOT
from helpers import indexed_images
from helpers import run_process
from helpers import run_python
from helpers import write_idx_dir
from mnist_vae import model
from mnist_vae import quiet_start
from mnist_vae import training

SMALL_MODEL = [
    '--hidden_units', '32', '--latent_dim', '4', '--batch_size', '16', '--validation_size', '10',
    '--log_every_n_steps', '5', '--image_every_n_steps', '10', '--eval_every_n_steps', '10',
    '--save_checkpoint_steps', '10', '--optimizer', 'adam'
]


@pytest.fixture(scope='module')
def idx_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('idx')
  labels = np.arange(200, dtype=np.uint8) % 10
  return write_idx_dir(directory, indexed_images(200), labels, indexed_images(120, offset=500),
                       labels[:120])


def _train(idx_dir, data_dir, train_dir, *extra):
  return run_python([
      'train.py', '--mnist_dir', idx_dir, '--data_dir',
      str(data_dir), '--train_dir',
      str(train_dir)
  ] + SMALL_MODEL + list(extra))


def _metrics(train_dir):
  with open(os.path.join(train_dir, 'metrics.json')) as f:
    return json.load(f)


def _png_size(path):
  with Image.open(path) as image:
    image.load()
    return image.mode, image.size


def _summary_tags(train_dir):
  tags = set()
  for events in glob.glob(os.path.join(train_dir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(events):
      tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.fixture(scope='module')
def first_run(idx_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('run')
  result = _train(idx_dir, root / 'data', root / 'train', '--max_steps', '20')
  assert result.returncode == 0, result.stderr
  return root, result


@pytest.mark.large
def test_writes_pngs_checkpoint_events_and_metrics(first_run):
  root, result = first_run
  train_dir = str(root / 'train')
  images = os.path.join(train_dir, 'images')
  assert sorted(os.listdir(images)) == [
      'inputs.png', 'reconstructions_step_000010.png', 'reconstructions_step_000020.png',
      'samples_step_000010.png', 'samples_step_000020.png'
  ]
  assert _png_size(os.path.join(images, 'reconstructions_step_000020.png')) == ('L', (606, 316))
  assert _png_size(os.path.join(images, 'samples_step_000020.png')) == ('L', (298, 298))
  assert _png_size(os.path.join(images, 'inputs.png')) == ('L', (298, 298))

  with open(os.path.join(train_dir, 'config.json')) as f:
    # --sync_replicas (the default) only acts in a cluster of 2+ workers.
    assert json.load(f)['sync_replicas'] is False
  checkpoint = tf.train.latest_checkpoint(train_dir)
  assert checkpoint.endswith('model.ckpt-20')
  assert tf.train.load_variable(checkpoint, 'global_step') == 20

  tags = _summary_tags(train_dir)
  assert {
      'train/neg_elbo', 'train/reconstruction', 'train/kl_divergence', 'validation/neg_elbo',
      'test/neg_elbo', 'images/reconstructions', 'images/samples'
  } <= tags

  metrics = _metrics(train_dir)
  assert metrics['step'] == 20
  assert metrics['validation']['num_examples'] == 10
  assert metrics['test']['num_examples'] == 120
  for split in ('validation', 'test'):
    terms = metrics[split]
    assert np.isfinite(terms['neg_elbo']) and terms['kl_divergence'] >= 0
    assert terms['neg_elbo'] == pytest.approx(terms['reconstruction'] + terms['kl_divergence'])
  assert metrics['config']['latent_dim'] == 4 and metrics['wall_time_sec'] > 0
  assert 'step 20: test neg_elbo' in result.stderr
  assert 'examples/s' in result.stderr
  assert not glob.glob(os.path.join(train_dir, '**', '*.tmp'), recursive=True)


def _copy_of_first_run(first_run, tmp_path):
  """A copy of the shared run's train_dir, for a test that changes it."""
  source = first_run[0] / 'train'
  copy = tmp_path / 'train'
  shutil.copytree(source, copy)
  state = (copy / 'checkpoint').read_text()
  (copy / 'checkpoint').write_text(state.replace(str(source), str(copy)))
  return copy


@pytest.mark.large
def test_resumes_from_checkpoint(first_run, idx_dir, tmp_path):
  root, _ = first_run
  train_dir = str(_copy_of_first_run(first_run, tmp_path))
  result = _train(idx_dir, root / 'data', train_dir, '--max_steps', '30')
  assert result.returncode == 0, result.stderr
  assert 'Resuming from' in result.stderr and '(step 20)' in result.stderr
  assert 'step 25 of 30' in result.stderr and 'step 5 of' not in result.stderr
  assert tf.train.latest_checkpoint(train_dir).endswith('model.ckpt-30')
  assert _metrics(train_dir)['step'] == 30
  assert os.path.exists(os.path.join(train_dir, 'images', 'samples_step_000030.png'))


@pytest.mark.large
def test_finished_run_is_evaluated_not_trained_further(first_run, idx_dir, tmp_path):
  root, _ = first_run
  train_dir = str(_copy_of_first_run(first_run, tmp_path))
  before = _metrics(train_dir)
  result = _train(idx_dir, root / 'data', train_dir, '--max_steps', '20')
  assert result.returncode == 0, result.stderr
  assert 'already at step 20 >= --max_steps=20' in result.stderr
  assert tf.train.latest_checkpoint(train_dir).endswith('model.ckpt-20')
  assert not os.path.exists(os.path.join(train_dir, 'model.ckpt-21.index'))
  after = _metrics(train_dir)
  assert after['step'] == 20 and after['local_steps'] == 0
  assert after['test']['neg_elbo'] == pytest.approx(before['test']['neg_elbo'], rel=1e-6)


def _loss_lines(log):
  """The 'step N ...: neg_elbo ...' parts of a log, without the timing (the
  time left and the examples/s)."""
  return [
      re.sub(r', about .* left', '',
             line.split('] ', 1)[1].split('), ')[0])
      for line in log.splitlines()
      if '] step ' in line
  ]


@pytest.mark.large
def test_same_seed_gives_identical_results(first_run, idx_dir):
  root, first = first_run
  again = _train(idx_dir, root / 'data', root / 'again', '--max_steps', '20')
  assert again.returncode == 0, again.stderr
  assert len(_loss_lines(first.stderr)) >= 6
  assert _loss_lines(first.stderr) == _loss_lines(again.stderr)
  other_seed = _train(idx_dir, root / 'data', root / 'other', '--max_steps', '20', '--seed', '1')
  assert _loss_lines(other_seed.stderr) != _loss_lines(first.stderr)


@pytest.mark.large
def test_checkpoint_of_another_model_size_is_refused(first_run, idx_dir):
  root, _ = first_run
  result = _train(idx_dir, root / 'data', root / 'train', '--max_steps', '40', '--latent_dim', '5')
  assert result.returncode == 1
  assert "--latent_dim=5 (the checkpoint's: 4)" in result.stderr
  assert 'Traceback' not in result.stderr
  latest = tf.train.latest_checkpoint(str(root / 'train'))
  assert tf.train.load_variable(latest, 'gaussian_encoder/mean/weights').shape == (32, 4)


@pytest.mark.large
def test_weighted_kl_trains_the_objective_and_reports_the_true_bound(first_run, idx_dir, tmp_path):
  root, first = first_run
  result = _train(idx_dir, root / 'data', tmp_path / 'beta2', '--max_steps', '20', '--kl_weight',
                  '2', '--kl_warmup_steps', '10')
  assert result.returncode == 0, result.stderr
  assert 'objective' in result.stderr and '(KL weight 2)' in result.stderr
  metrics = _metrics(tmp_path / 'beta2')
  last = metrics['last_minibatch']
  assert last['kl_weight'] == 2.0  # The warm-up of 10 steps is over at step 20.
  assert last['objective'] == pytest.approx(
      last['reconstruction'] + 2 * last['kl_divergence'], rel=1e-5)
  assert last['neg_elbo'] == pytest.approx(last['reconstruction'] + last['kl_divergence'], rel=1e-5)
  # The final evaluation is the true bound, and the configuration is recorded.
  test = metrics['test']
  assert test['neg_elbo'] == pytest.approx(test['reconstruction'] + test['kl_divergence'], rel=1e-5)
  assert metrics['config']['kl_weight'] == 2.0 and metrics['config']['kl_warmup_steps'] == 10
  assert {'train/objective', 'train/kl_weight'} <= _summary_tags(tmp_path / 'beta2')
  # Another beta trains another model from the same seed; the default run has
  # no weighted objective at all.
  assert _loss_lines(result.stderr)[-1] != _loss_lines(first.stderr)[-1]
  assert 'objective' not in _metrics(root / 'train')['last_minibatch']


def test_kl_weight_rises_linearly_over_the_warm_up():
  with tf.Graph().as_default():
    step = tf.compat.v1.placeholder(tf.int64, [])
    weight = model.kl_weight_at(step, 4.0, 100)
    with tf.compat.v1.Session() as session:
      values = [session.run(weight, {step: s}) for s in (0, 25, 100, 5000)]
    assert values == [0.0, 1.0, 4.0, 4.0]
    assert model.kl_weight_at(step, 1.0, 0) is None  # The plain ELBO, as before.
    with pytest.raises(ValueError, match='kl_weight'):
      model.kl_weight_at(step, -1.0, 0)


@pytest.mark.parametrize('flag, message', [
    ('--kl_weight=-1', 'flag --kl_weight=-1: -1.0 is not a number in the range [0.0, '),
    ('--kl_warmup_steps=-5', 'flag --kl_warmup_steps=-5: -5 is not an integer in the range [0, '),
    ('--batch_size=0', 'flag --batch_size=0: 0 is not an integer in the range [1, '),
    ('--keep_prob=1.5', '--keep_prob must be in (0, 1]'),
    ('--optimizer=lbfgs', 'flag --optimizer=lbfgs: value should be one of'),
])
@pytest.mark.large
def test_out_of_range_flags(flag, message, tmp_path):
  result = run_python(['train.py', '--train_dir', str(tmp_path), flag])
  assert result.returncode != 0
  assert message in result.stderr


@pytest.mark.large
def test_missing_data_says_how_to_supply_it(tmp_path):
  result = run_python(
      ['train.py', '--data_dir',
       str(tmp_path / 'nothing'), '--train_dir',
       str(tmp_path / 'train')])
  assert result.returncode == 1
  assert 'pass --mnist_dir DIR' in result.stderr and '--download' in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('command', [
    ['train.py', '--learnig_rate=0.5'],
    ['evaluate.py', '--train_dir=x', '--iw_sample=3'],
    ['-m', 'mnist_vae.data_prep.convert_to_records', '--validation_sise=3'],
])
@pytest.mark.large
def test_unknown_flag_is_an_error_naming_the_closest(command):
  result = run_python(command)
  assert result.returncode == 1
  typo = command[-1].split('=')[0][2:]
  assert "Unknown command line flag '%s'" % typo in result.stderr
  assert 'Did you mean: %s' % {
      'learnig_rate': 'learning_rate',
      'iw_sample': 'iw_samples',
      'validation_sise': 'validation_size'
  }[typo] in result.stderr


@pytest.mark.large
def test_unknown_flag_in_a_flag_file_is_an_error(idx_dir, tmp_path):
  flag_file = tmp_path / 'run.flags'
  flag_file.write_text('--optimizer=adam\n--learnig_rate=0.5\n')
  result = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', '--flagfile', str(flag_file),
                  '--max_steps', '5')
  assert result.returncode == 1
  assert "Unknown command line flag 'learnig_rate'" in result.stderr
  assert 'Did you mean: learning_rate' in result.stderr
  assert not (tmp_path / 'train').exists()


@pytest.mark.large
def test_no_validation_split_trains_and_evaluation_says_why(idx_dir, tmp_path):
  result = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', '--max_steps', '20',
                  '--validation_size', '0')
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = _metrics(tmp_path / 'train')
  assert 'validation' not in metrics and metrics['test']['num_examples'] == 120
  assert metrics['last_validation'] is None and metrics['step'] == 20
  evaluated = run_python([
      'evaluate.py', '--data_dir',
      str(tmp_path / 'data'), '--train_dir',
      str(tmp_path / 'train'), '--split', 'validation'
  ])
  assert evaluated.returncode == 1
  assert 'validation.tfrecords holds no examples' in evaluated.stderr
  assert '--validation_size=0' in evaluated.stderr and 'Traceback' not in evaluated.stderr


@pytest.mark.large
def test_records_made_with_other_settings_are_refused(first_run, idx_dir, tmp_path):
  root, _ = first_run  # Its records were made with --validation_size=10.
  result = _train(idx_dir, root / 'data', tmp_path / 'train', '--max_steps', '5',
                  '--validation_size', '20')
  assert result.returncode == 1
  assert 'made with --validation_size=10, asked for 20' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'train' / 'metrics.json').exists()


@pytest.mark.large
def test_resuming_with_other_settings_names_every_difference_at_once(first_run, idx_dir, tmp_path):
  root, _ = first_run  # Trained with adam, hidden_units 32, latent_dim 4.
  train_dir = _copy_of_first_run(first_run, tmp_path)
  config_before = (train_dir / 'config.json').read_text()
  result = _train(idx_dir, root / 'data', train_dir, '--max_steps', '40', '--optimizer', 'momentum',
                  '--latent_dim', '6', '--hidden_units', '16')
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if 'other settings' in line]
  assert len(errors) == 1, result.stderr[-3000:]
  for difference in ("--optimizer=momentum (the checkpoint's: adam)",
                     "--hidden_units=16 (the checkpoint's: 32)",
                     "--latent_dim=6 (the checkpoint's: 4)"):
    assert difference in errors[0]
  assert tf.train.latest_checkpoint(str(train_dir)).endswith('-20')
  assert (train_dir / 'config.json').read_text() == config_before


@pytest.mark.large
def test_bfloat16_matmuls_train_in_a_real_process(idx_dir, tmp_path):
  result = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', '--max_steps', '10',
                  '--matmul_precision', 'bfloat16')
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = _metrics(tmp_path / 'train')
  assert metrics['config']['matmul_precision'] == 'bfloat16'
  assert metrics['step'] == 10 and np.isfinite(metrics['test']['neg_elbo'])


@pytest.mark.large
def test_the_first_lines_are_the_programs_own_and_progress_has_an_end(first_run, tmp_path):
  """TensorFlow's start-up notices (oneDNN forced on, so that they appear on
  every CPU) stay off the terminal unless the user asked for them."""
  root, _ = first_run
  env = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(TF_ENABLE_ONEDNN_OPTS='1', PYTHONPATH=REPO_ROOT)
  command = [sys.executable, 'train.py', '--data_dir',
             str(root / 'data'), '--max_steps', '20'] + SMALL_MODEL
  quiet = run_process(command + ['--train_dir', str(tmp_path / 'quiet')], env=env)
  assert quiet.returncode == 0, quiet.stderr
  assert 'oneDNN' not in quiet.stderr and 'InitializeLog' not in quiet.stderr
  assert re.match(r'I\d{4} [\d:.]+ +\d+ \w+\.py:\d+\] ', quiet.stderr), quiet.stderr[:500]
  assert re.search(r'\] step 10 of 20 \(50%\), about \d+ s left: neg_elbo', quiet.stderr)
  assert re.search(r'\] step 20 of 20 \(100%\): neg_elbo', quiet.stderr)

  asked = run_process(
      command + ['--train_dir', str(tmp_path / 'asked')], env=dict(env, TF_CPP_MIN_LOG_LEVEL='0'))
  assert asked.returncode == 0, asked.stderr
  assert 'oneDNN custom operations are on' in asked.stderr


@pytest.mark.large
def test_tensorflow_starts_without_the_optional_packages_keras_would_import():
  """JAX, pyplot and IPython (installed here by the bench and test extras) are
  not imported with TensorFlow, and import as usual afterwards."""
  code = (
      'import sys\n'
      'from mnist_vae import quiet_start\n'
      'quiet_start.import_tensorflow()\n'
      'import tensorflow as tf\n'
      'print(sorted(name for name in ("jax", "matplotlib", "IPython") if name in sys.modules))\n'
      'import jax, matplotlib.pyplot, keras\n'
      'print(tf.constant(2.0).numpy() * 2, jax.numpy.ones(2).sum(),\n'
      '      keras.optimizers.Adam.__name__)\n')
  result = run_process([sys.executable, '-c', code], env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split('\n')[:2] == ['[]', '4.0 2.0 Adam'], result.stdout


def test_start_up_notices_are_told_from_warnings():
  notices = [
      'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
      'I0000 00:00:1796207854.721456   12525 port.cc:153] oneDNN custom operations are on.',
      'To enable the following instructions: AVX2 FMA, in other operations, rebuild',
  ]
  previous = False
  for line in notices:
    previous = quiet_start.is_start_up_notice(line, previous)
    assert previous, line
  assert not quiet_start.is_start_up_notice(
      'W0000 00:00:1796207854.7 12525 cpu_allocator.cc:1] Allocation exceeds 10%', True)
  assert not quiet_start.is_start_up_notice('Traceback (most recent call last):', False)


def test_progress_gives_the_time_left_at_the_pace_so_far():
  assert training.progress(300, 8580, 300, 6.0) == 'step 300 of 8580 (3%), about 2 min 46 s left'
  assert training.progress(100, 200000, 100,
                           36.0) == 'step 100 of 200000 (0%), about 19 h 59 min left'
  assert training.progress(8580, 8580, 10, 1.0) == 'step 8580 of 8580 (100%)'
  assert training.progress(5, 10, 0, 0.0) == 'step 5 of 10 (50%)'


@pytest.mark.large
def test_a_missing_mnist_dir_is_an_error_even_with_tfrecords(first_run, idx_dir, tmp_path):
  root, _ = first_run  # Its TFRecords exist in root / 'data'.
  result = run_python([
      'train.py', '--mnist_dir', idx_dir + 't', '--data_dir',
      str(root / 'data'), '--train_dir',
      str(tmp_path / 'train')
  ] + SMALL_MODEL)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith('E')]
  assert len(errors) == 1 and '--mnist_dir=%st does not exist' % idx_dir in errors[0]
  assert not (tmp_path / 'train').exists()


@pytest.mark.large
def test_one_line_per_checkpoint_and_no_deprecation_warnings(idx_dir, tmp_path):
  """Seven checkpoints, so that the saver rotates the oldest out."""
  result = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', '--max_steps', '14',
                  '--save_checkpoint_steps', '2')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count('Saving checkpoints for') == 8  # Steps 0, 2, ..., 14.
  assert 'Calling checkpoint listeners' not in result.stderr
  assert 'deprecated' not in result.stderr
  assert 'The TFRecords in' not in result.stderr  # Made here, not found.


@pytest.mark.large
def test_a_learning_rate_schedule_resumes_where_it_was(idx_dir, tmp_path):
  """Stages of 2 and 3 epochs (11 steps each: 190 images in batches of 16)
  at 0.01 and 0.001; without --max_steps the run ends with the last stage;
  killed and resumed, it takes each rate at the same steps."""
  schedule = [
      '--learning_rate_schedule', '2:0.01,3:0.001', '--log_every_n_steps', '11',
      '--save_checkpoint_steps', '11'
  ]
  first = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', *schedule, '--max_steps', '22')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'step 22 of 22 (100%)' in first.stderr and 'learning rate 0.01' in first.stderr
  rest = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', *schedule)
  assert rest.returncode == 0, rest.stderr[-3000:]
  assert 'step 33 of 55' in rest.stderr and 'learning rate 0.001' in rest.stderr
  assert _metrics(tmp_path / 'train')['step'] == 55
  kept = sorted(os.listdir(tmp_path / 'train' / 'kept'))
  assert [name for name in kept if name.endswith('.index')
         ] == ['model.ckpt-22.index', 'model.ckpt-55.index']


@pytest.mark.large
@pytest.mark.parametrize('flags, message', [
    (['--learning_rate_schedule', '3:1e-3,x'], "'x' is not LENGTH:RATE"),
    (['--learning_rate_schedule', '3:1e-3,0:1e-4'], 'stage 2 has length 0'),
    (['--learning_rate_schedule', '3:1e-3', '--learning_rate', '0.1'
     ], 'both set the learning rate'),
    (['--learning_rate_schedule', '1:1e-3', '--max_steps', '1000'
     ], '--max_steps=1000 runs past the end of --learning_rate_schedule'),
    (['--train_iw_samples', '5', '--kl_weight', '2'], 'has no KL term to weigh'),
    (['--train_iw_samples', '5', '--train_kl', 'sampled'], 'has no KL term to estimate'),
    (['--train_iw_samples', '100000', '--batch_size', '128'], 'needs about'),
    (['--adam_beta1', '0.5', '--optimizer', 'sgd'], 'apply to --optimizer=adam'),
    (['--steps_per_call', '10', '--optimizer', 'rmsprop'], 'works with --optimizer=adam or sgd'),
    (['--architecture', 'cvae_tutorial', '--hidden_units', '64'], 'does not apply to'),
    (['--architecture', 'cvae_tutorial', '--keep_prob', '0.5', '--hidden_units', '16'
     ], 'does not apply to'),
])
def test_settings_that_cannot_work_are_one_line_and_nothing_written(idx_dir, tmp_path, flags,
                                                                    message):
  result = _train(idx_dir, tmp_path / 'data', tmp_path / 'train', *flags)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('E')]
  assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'train').exists()
