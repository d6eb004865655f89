"""Every numeric flag of every entry point at its largest legal value: the
program runs (still running after a while is running) or stops with one
line and exit status 1, never a traceback."""

import os
import re
import subprocess
import sys
import time

from absl import flags
import numpy as np
import pytest

from helpers import indexed_images
from helpers import start_process
from helpers import write_idx_dir
from mnist_vae import evaluate
from mnist_vae import export
from mnist_vae import generate
from mnist_vae import sample_quality
from mnist_vae import train
from mnist_vae.data_prep import convert_to_records

pytestmark = pytest.mark.large

# A process still running after this long, without a traceback so far, runs.
RUNS_FOR_SEC = 15

ENTRY_POINTS = {
    'train': train,
    'evaluate': evaluate,
    'export': export,
    'generate': generate,
    'sample_quality': sample_quality,
    'convert_to_records': convert_to_records
}


def _numeric_flags(module):
  """[(flag, largest legal value)] of the module's integer and float flags."""
  flag_values = flags.FlagValues()
  module.define_flags(flag_values)
  found = []
  for name in sorted(flag_values):
    flag = flag_values[name]
    kind = type(flag.parser).__name__
    if kind not in ('IntegerParser', 'FloatParser'):
      continue
    bound = flag.parser.upper_bound
    if bound is None and name == 'keep_prob':
      bound = 1.0  # Its validator: (0, 1].
    assert bound is not None, '--%s of %s has no upper bound' % (name, module.__name__)
    found.append((name, bound))
  return found


CASES = [(entry, name, bound)
         for entry, module in sorted(ENTRY_POINTS.items())
         for name, bound in _numeric_flags(module)]


@pytest.fixture(scope='module')
def small_run(tmp_path_factory):
  """A tiny trained run and its data, for the programs that read one."""
  root = tmp_path_factory.mktemp('bounds')
  idx_dir = write_idx_dir(root / 'idx', indexed_images(60),
                          np.arange(60, dtype=np.uint8) % 10, indexed_images(20, offset=1000),
                          np.arange(20, dtype=np.uint8) % 10)
  data_dir, train_dir = str(root / 'data'), str(root / 'train')
  subprocess.run([
      sys.executable, 'train.py', '--mnist_dir', idx_dir, '--data_dir', data_dir, '--train_dir',
      train_dir, '--validation_size', '10', '--batch_size', '10', '--hidden_units', '8',
      '--latent_dim', '2', '--max_steps', '2'
  ],
                 check=True,
                 capture_output=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return {'root': str(root), 'idx': idx_dir, 'data': data_dir, 'train': train_dir}


def _base_command(entry, run, work):
  """The program with the other flags it needs, all small."""
  if entry == 'train':
    return [
        'train.py', '--mnist_dir', run['idx'], '--data_dir',
        os.path.join(work, 'data'), '--train_dir',
        os.path.join(work, 'train'), '--validation_size', '10', '--batch_size', '10',
        '--hidden_units', '8', '--latent_dim', '2', '--max_steps', '2'
    ]
  if entry == 'evaluate':
    return [
        'evaluate.py', '--train_dir', run['train'], '--iw_samples', '5', '--output',
        os.path.join(work, 'eval.json')
    ]
  if entry == 'export':
    return ['export.py', '--train_dir', run['train'], '--export_dir', os.path.join(work, 'e')]
  if entry == 'generate':
    return ['generate.py', '--train_dir', run['train'], '--output_dir', work]
  if entry == 'sample_quality':
    return [
        'sample_quality.py', '--train_classifier', '--classifier_steps', '2', '--classifier_dir',
        os.path.join(work, 'classifier'), '--data_dir', run['data']
    ]
  return [
      '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', run['idx'], '--output_dir',
      os.path.join(work, 'records')
  ]


# A line of train.py's progress, logged once its steps run: past start-up,
# graph building and compilation, where a bad value would have stopped it.
_TRAINING = re.compile(r'step \d+ of \d+ \(')


def _wait_until_it_stops_or_trains(process, log_path):
  """The exit status, or None when the program still runs after
  RUNS_FOR_SEC or logs training progress first (a long run of a legal
  value); either way the process is gone on return."""
  deadline = time.monotonic() + RUNS_FOR_SEC
  while time.monotonic() < deadline:
    if process.poll() is not None:
      return process.returncode
    if _TRAINING.search(log_path.read_text()):
      break
    time.sleep(0.25)
  process.kill()
  process.wait()
  return None


@pytest.mark.parametrize(
    'entry, name, bound', CASES, ids=['%s --%s' % (entry, name) for entry, name, _ in CASES])
def test_a_numeric_flag_at_its_largest_value_runs_or_stops_in_one_line(
    entry, name, bound, small_run, tmp_path):
  value = bound if isinstance(bound, float) else int(bound)
  command = [sys.executable] + _base_command(entry, small_run,
                                             str(tmp_path)) + ['--%s=%s' % (name, value)]
  log_path = tmp_path / 'log'
  with open(log_path, 'w') as log:
    process = start_process(command, stdout=log, stderr=subprocess.STDOUT)
  returncode = _wait_until_it_stops_or_trains(process, log_path)
  output = log_path.read_text()
  assert 'Traceback' not in output, output[-3000:]
  assert returncode in (None, 0, 1), (returncode, output[-3000:])
  if returncode == 1:
    errors = [line for line in output.splitlines() if line.startswith(('E', 'FATAL'))]
    assert len(errors) == 1, output[-3000:]
