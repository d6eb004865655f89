"""scripts/reproduce.sh end to end in its smoke mode, and the report's figures."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from reporting import figures


def test_smoke_reproduction_writes_the_report(small_mnist_records, tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2')
  command = ['bash', 'scripts/reproduce.sh', '--smoke', '--data_dir', small_mnist_records,
             '--runs_dir', str(tmp_path / 'runs'), '--report_dir', str(tmp_path / 'report')]
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = (tmp_path / 'report' / 'REPRODUCTION.md').read_text()
  original = [line for line in report.splitlines() if line.startswith('| original |')]
  summary = [line for line in original if '&plusmn;' in line]
  assert len(summary) == 1 and '| 2 |' in summary[0] and '| 30 |' in summary[0]
  per_run = [line.split(' | ')[1] for line in original if line not in summary]
  assert per_run == ['0', '1']
  assert 'upstream_binarized: trained with --binarize=dynamic' in report
  assert 'Machine: %d cores (' % os.cpu_count() in report
  for name in ('original_reconstructions.png', 'original_samples.png',
               'manifold_latent2.png', 'posterior_means_latent2.png'):
    assert (tmp_path / 'report' / name).exists(), name
  with Image.open(tmp_path / 'report' / 'manifold_latent2.png') as manifold:
    assert manifold.size == (560, 560)
  for seed in ('seed0', 'seed1'):
    assert (tmp_path / 'runs' / 'original' / seed / 'eval_test.json').exists()

  # A second run resumes: nothing is trained again, the report is rewritten.
  again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('already trained') == 4, again.stdout
  assert 'Resuming from' not in again.stderr
  assert (tmp_path / 'report' / 'REPRODUCTION.md').read_text() == report


@pytest.mark.parametrize('option, value, message', [
    ('--seeds', '0 x', "--seeds takes seed numbers"),
    ('--presets', 'upstrem', 'unknown preset upstrem (no configs/upstrem.flags)'),
])
def test_bad_seeds_or_presets_are_refused_before_anything_runs(option, value, message,
                                                               tmp_path):
  result = subprocess.run(['bash', 'scripts/reproduce.sh', option, value,
                           '--runs_dir', str(tmp_path / 'runs')],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert message in result.stderr
  assert not (tmp_path / 'runs').exists()


def test_manifold_latents_cover_the_prior_evenly():
  latents = figures.manifold_latents(20)
  assert latents.shape == (400, 2)
  np.testing.assert_allclose(latents.mean(axis=0), 0.0, atol=1e-6)
  assert latents[0, 0] < latents[1, 0] and latents[0, 1] > latents[20, 1]
