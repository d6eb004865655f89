"""scripts/architectures_study.sh's report (reporting/architectures.py) on
runs written here, and the script's refusal of bad options."""

import json
import subprocess

import pytest

from helpers import REPO_ROOT
from reporting import architectures


def _write_tutorial_runs(runs_dir, program, preset):
  """The files the study leaves: the program's JSON per seed and the preset's
  evaluation of each epoch's checkpoint per seed ({seed: [-ELBO by epoch]})."""
  (runs_dir / 'cvae_tutorial' / 'program').mkdir(parents=True)
  for seed, values in program.items():
    epochs = [{'epoch': epoch, 'test_elbo': -value} for epoch, value in enumerate(values, 1)]
    (runs_dir / 'cvae_tutorial' / 'program' /
     ('seed%d.json' % seed)).write_text(json.dumps({'epochs': epochs}))
  for seed, values in preset.items():
    run = runs_dir / 'cvae_tutorial' / 'preset' / ('seed%d' % seed)
    run.mkdir(parents=True)
    for epoch, value in enumerate(values, 1):
      (run / ('eval_test_epoch%d.json' % epoch)).write_text(json.dumps({'neg_elbo': value}))


@pytest.mark.parametrize('preset_last, verdict', [(157.1, 'within seed noise'),
                                                  (159.0, 'beyond seed noise')])
def test_the_tutorial_table_judges_the_last_epoch_by_the_seeds_spread(tmp_path, preset_last,
                                                                      verdict):
  _write_tutorial_runs(tmp_path, {
      0: [180.0, 157.0],
      1: [179.0, 156.8],
      2: [181.0, 157.2]
  }, {
      0: [180.5, preset_last - 0.2],
      1: [179.5, preset_last],
      2: [180.0, preset_last + 0.2]
  })
  text = architectures.markdown(architectures.cvae_tutorial(str(tmp_path)), {})
  rows = [line for line in text.splitlines() if line.startswith('| 2 |')]
  assert rows == [
      '| 2 | 157.00 &plusmn; 0.20 (3 seeds) | %.2f &plusmn; 0.20 (3 seeds) | %+.2f |' %
      (preset_last, preset_last - 157.0)
  ]
  assert 'Epoch 2: the preset\'s mean is %+.2f nats' % (preset_last - 157.0) in text
  assert verdict in text


def test_one_seed_has_no_spread_to_judge_by(tmp_path):
  _write_tutorial_runs(tmp_path, {0: [180.0]}, {0: [180.4], 1: [180.2]})
  text = architectures.markdown(architectures.cvae_tutorial(str(tmp_path)), {})
  assert 'one seed in a column' in text
  assert 'seed noise' not in text


@pytest.mark.parametrize('option, value', [('--seeds', '0'), ('--kl_epochs', 'x'),
                                           ('--parts', 'cvae_tutorial mlp')])
def test_the_study_refuses_bad_options(option, value, tmp_path):
  result = subprocess.run([
      'bash', 'scripts/architectures_study.sh', option, value, '--runs_dir',
      str(tmp_path / 'runs')
  ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=60)
  assert result.returncode == 2, result.stderr
  assert 'architectures_study.sh:' in result.stderr
  assert not (tmp_path / 'runs').exists()
