"""scripts/reproduce.sh end to end in its smoke mode, and the report's figures."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from helpers import REPO_ROOT
from reporting import figures
from reporting import report as reproduction_report


@pytest.mark.large
def test_smoke_reproduction_writes_the_report_resumes_and_runs_two_jobs_at_once(
    small_mnist_records, tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2')
  # One thread per run, so that the runs made two at once below can be
  # compared with these, made one after another.
  command = [
      'bash', 'scripts/reproduce.sh', '--smoke', '--threads_per_job', '1', '--data_dir',
      small_mnist_records, '--runs_dir',
      str(tmp_path / 'runs'), '--report_dir',
      str(tmp_path / 'report')
  ]
  result = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  # Which run of how many, and from the first finish on, the time left.
  left = r', about (?:\d+ s|\d+ min \d\d s|\d+ h \d\d min) left'
  starts = re.findall(r'^== run (\d) of 4(%s)?: ' % left, result.stdout, re.MULTILINE)
  assert [number for number, _ in starts] == ['1', '2', '3', '4'], result.stdout
  assert not starts[0][1] and all(time_left for _, time_left in starts[1:]), result.stdout
  assert re.search(r'^  3 of 4 runs done%s$' % left, result.stdout, re.MULTILINE), result.stdout
  report = (tmp_path / 'report' / 'REPRODUCTION.md').read_text()
  original = [line for line in report.splitlines() if line.startswith('| original |')]
  summary = [line for line in original if '&plusmn;' in line]
  assert len(summary) == 1 and '| 2 |' in summary[0] and '| 30 |' in summary[0]
  per_run = [line.split(' | ')[1] for line in original if line not in summary]
  assert per_run == ['0', '1']
  assert 'upstream_binarized: trained with --binarize=dynamic' in report
  assert 'Machine: %d cores (' % os.cpu_count() in report
  for name in ('original_reconstructions.png', 'original_samples.png', 'manifold_latent2.png',
               'posterior_means_latent2.png'):
    assert (tmp_path / 'report' / name).exists(), name
  with Image.open(tmp_path / 'report' / 'manifold_latent2.png') as manifold:
    assert manifold.size == (560, 560)
  for seed in ('seed0', 'seed1'):
    assert (tmp_path / 'runs' / 'original' / seed / 'eval_test.json').exists()

  # A second run resumes: nothing is trained again, the report is rewritten.
  again = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('already trained') == 4, again.stdout
  assert 'Resuming from' not in again.stderr
  assert (tmp_path / 'report' / 'REPRODUCTION.md').read_text() == report

  # Two jobs at once: both runs start before either finishes, each logging to
  # its own file, and each gets the numbers it got alone.
  beside = subprocess.run([
      'bash', 'scripts/reproduce.sh', '--smoke', '--presets', 'original', '--seeds', '0 1',
      '--jobs', '2', '--threads_per_job', '1', '--data_dir', small_mnist_records, '--runs_dir',
      str(tmp_path / 'runs_jobs2'), '--report_dir',
      str(tmp_path / 'report2')
  ],
                          cwd=REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
  assert beside.returncode == 0, beside.stderr[-3000:]
  lines = beside.stdout.splitlines()
  started = [i for i, line in enumerate(lines) if 'in the background' in line]
  finished = [i for i, line in enumerate(lines) if line.strip().startswith('finished')]
  assert len(started) == 2 and len(finished) == 2 and started[1] < finished[0], beside.stdout
  assert 'step 30' in (tmp_path / 'runs_jobs2' / 'logs' / 'original.seed1.log').read_text()
  for seed in ('seed0', 'seed1'):
    for name in ('eval_test.json', 'eval_validation.json'):
      alone, two_at_once = (
          _numbers(tmp_path / runs / 'original' / seed / name) for runs in ('runs', 'runs_jobs2'))
      assert alone == two_at_once and alone['neg_elbo'] > 0, (seed, name)


def _numbers(path):
  """An evaluation's JSON without what differs between identical runs."""
  result = json.loads(path.read_text())
  for key in ('wall_time_sec', 'checkpoint'):
    result.pop(key)
  return result


@pytest.mark.large
def test_a_convolutional_preset_trains_on_its_own_data(mnist_dir, tmp_path):
  """cvae_tutorial (all 60,000 MNIST images, binarized at 0.5) gets its
  TFRecords beside --data_dir's, is evaluated on the test set only (it has no
  validation split), and its rows say so. (kl_article's Fashion-MNIST comes
  through the same scripts/lib/runs.sh function in the KL study's test.)"""

  def reproduce(*options):
    return subprocess.run(
        [
            'bash', 'scripts/reproduce.sh', '--smoke', '--seeds', '0', '--mnist_dir', mnist_dir,
            '--data_dir',
            str(tmp_path / 'data' / 'mnist'), '--runs_dir',
            str(tmp_path / 'runs'), '--report_dir',
            str(tmp_path / 'report')
        ] + list(options),
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2'),
        capture_output=True,
        text=True,
        timeout=600)

  result = reproduce('--presets', 'cvae_tutorial kl_article', '--fashion_mnist_dir',
                     str(tmp_path / 'no_fashion'))
  # kl_article's data cannot be made: nothing runs, and the message says why.
  assert result.returncode == 1
  assert 'could not make kl_article\'s TFRecords in %s' % (
      tmp_path / 'data' / 'fashion_mnist_no_validation') in result.stderr, result.stderr
  assert '== run' not in result.stdout
  result = reproduce('--presets', 'cvae_tutorial')
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((tmp_path / 'data' / 'mnist_no_validation' / 'dataset_info.json').read_text())
  assert info['num_examples']['train'] == 60000 and info['num_examples']['validation'] == 0
  run = tmp_path / 'runs' / 'cvae_tutorial' / 'seed0'
  config = json.loads((run / 'config.json').read_text())
  assert (config['data_dir'],
          config['mnist_dir']) == (str(tmp_path / 'data' / 'mnist_no_validation'), mnist_dir)
  assert (run / 'eval_test.json').exists() and not (run / 'eval_validation.json').exists()
  report = (tmp_path / 'report' / 'REPRODUCTION.md').read_text()
  rows = [line for line in report.splitlines() if line.startswith('| cvae_tutorial |')]
  assert len(rows) == 2 and all('| none |' in row for row in rows), report
  assert 'cvae_tutorial: trained and evaluated on the images binarized at 0.5' in report


def test_the_report_says_what_data_each_row_measures():
  runs = {
      preset: [{
          'metrics': {
              'config': config
          }
      }] for preset, config in (('original', {}), ('fashion', {
          'dataset': 'fashion_mnist'
      }), ('threshold', {
          'binarize': 'threshold'
      }), ('dynamic', {
          'binarize': 'dynamic'
      }))
  }
  notes = [note for note in reproduction_report.data_notes(runs) if note]
  assert len(notes) == 3
  assert notes[0].startswith('fashion: trained and evaluated on --dataset=fashion_mnist')
  assert notes[1].startswith('threshold: trained and evaluated on the images binarized at 0.5')
  assert notes[2].startswith('dynamic: trained with --binarize=dynamic')


@pytest.mark.large
def test_a_failing_job_is_reported_with_its_log_and_fails_the_script(small_mnist_records, tmp_path):
  data_dir = tmp_path / 'data'
  shutil.copytree(small_mnist_records, data_dir)
  with open(data_dir / 'train.tfrecords', 'r+b') as records:
    records.truncate(1000)  # Both trainings fail reading it; the script says which.
  result = subprocess.run([
      'bash', 'scripts/reproduce.sh', '--smoke', '--presets', 'original', '--seeds', '0 1',
      '--jobs', '2', '--data_dir',
      str(data_dir), '--runs_dir',
      str(tmp_path / 'runs')
  ],
                          cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHON=sys.executable),
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 1
  assert re.search(r'FAILED \(1\): original seed [01]\. The end of', result.stderr), result.stderr
  assert 'train.tfrecords' in result.stderr  # The end of the run's log names the file.
  assert 'a run failed (above)' in result.stderr


@pytest.mark.large
def test_data_are_prepared_once_before_runs_start_side_by_side(tmp_path):
  result = subprocess.run([
      'bash', 'scripts/reproduce.sh', '--smoke', '--jobs', '2', '--data_dir',
      str(tmp_path / 'no_data'), '--mnist_dir',
      str(tmp_path / 'no_mnist'), '--runs_dir',
      str(tmp_path / 'runs')
  ],
                          cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHON=sys.executable),
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 1
  assert 'no_mnist' in result.stderr
  assert 'could not make the TFRecords in %s' % (tmp_path / 'no_data') in result.stderr
  assert '== run' not in result.stdout


def _progress_lines(jobs, events):
  """The lines scripts/lib/runs.sh's progress functions print for four runs
  of 100 steps' work each, run `jobs` at once; events: (seconds, function,
  run name), the script's clock set to each time, function one of 'next'
  (announced), 'running' (started, once a slot is free) and 'finished'."""
  script = ['source scripts/lib/runs.sh', 'JOBS=%d' % jobs]
  script += ['progress_expect %s 100' % name for name in 'abcd']
  for seconds, function, name in events:
    script += ['SECONDS=%d' % seconds, 'progress_%s %s' % (function, name), 'echo "$progress_line"']
  result = subprocess.run(['bash', '-c', '\n'.join(script)],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=60,
                          check=True)
  return result.stdout.splitlines()


@pytest.mark.large
def test_time_left_counts_the_runs_in_flight():
  # Two at once, each run taking 100 s, c announced at once but waiting for
  # a slot: at 100 s, a and b are done (b's finish is due) and c and d, side
  # by side, take 100 s more.
  events = [(0, 'next', 'a'), (0, 'running', 'a'), (0, 'next', 'b'), (0, 'running', 'b'),
            (0, 'next', 'c'), (100, 'finished', 'a')]
  assert _progress_lines(2, events)[-1] == ', 1 of 4 runs done, about 1 min 40 s left'
  # One at a time: three runs of 100 s to come.
  events = [(0, 'next', 'a'), (0, 'running', 'a'), (100, 'finished', 'a'), (100, 'next', 'b')]
  assert _progress_lines(1, events)[-2:] == [
      ', 1 of 4 runs done, about 5 min 00 s left', 'run 2 of 4, about 5 min 00 s left'
  ]


@pytest.mark.parametrize('option, value, message', [
    ('--jobs', '0', '--jobs takes a number of runs at once'),
    ('--threads_per_job', 'two', '--threads_per_job takes a number of threads'),
    ('--seeds', '0 x', "--seeds takes seed numbers"),
    ('--presets', 'upstrem', 'unknown preset upstrem (no configs/upstrem.flags)'),
])
@pytest.mark.large
def test_bad_seeds_or_presets_are_refused_before_anything_runs(option, value, message, tmp_path):
  result = subprocess.run(
      ['bash', 'scripts/reproduce.sh', option, value, '--runs_dir',
       str(tmp_path / 'runs')],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=60)
  assert result.returncode == 2
  assert message in result.stderr
  assert not (tmp_path / 'runs').exists()


def test_manifold_latents_cover_the_prior_evenly():
  latents = figures.manifold_latents(20)
  assert latents.shape == (400, 2)
  np.testing.assert_allclose(latents.mean(axis=0), 0.0, atol=1e-6)
  assert latents[0, 0] < latents[1, 0] and latents[0, 1] > latents[20, 1]
