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


def _write_article_runs(runs_dir, beta, program_train):
  """The files of one beta: the program's JSON (with its training-image
  figures when program_train) and the preset's run after 20 epochs."""
  figures = lambda rec, kl: {'neg_elbo': rec + kl, 'reconstruction': rec, 'kl_divergence': kl}
  program = {
      'epochs': 20,
      'final_epoch': {
          'loss': 300.0,
          'reconstruction_loss': 262.5,
          'kl_loss': 2.25
      },
      'test': figures(265.0, 4.0)
  }
  if program_train:
    program['train'] = figures(262.0, 4.5)
  (runs_dir / 'kl_article' / 'program').mkdir(parents=True, exist_ok=True)
  (runs_dir / 'kl_article' / 'program' / ('beta%s.json' % beta)).write_text(json.dumps(program))
  preset = runs_dir / 'kl_article' / 'preset' / ('beta%s' % beta)
  preset.mkdir(parents=True)
  (preset / 'config.json').write_text(json.dumps({'batch_size': 128}))
  (preset / 'metrics.json').write_text(json.dumps({'step': 9375, 'test': figures(266.5, 3.5)}))
  (preset / 'eval_train.json').write_text(json.dumps(dict(figures(263.0, 4.0), seed=1)))


def test_the_article_table_gives_both_programs_loss_terms_on_both_splits(tmp_path):
  _write_article_runs(tmp_path, '10', program_train=True)
  _write_article_runs(tmp_path, '0', program_train=False)
  text = architectures.markdown({
      'program': {},
      'preset': {}
  }, architectures.kl_article(str(tmp_path)))
  rows = [line for line in text.splitlines() if line.startswith('| 10 |')]
  assert rows == [
      '| 10 | program | 20 | 266.50 | 262.00 | 4.50 | 269.00 | 265.00 | 4.00 |',
      '| 10 | preset | 20 | 267.00 | 263.00 | 4.00 | 270.00 | 266.50 | 3.50 |',
      '| 10 | preset - program | | +0.50 | +1.00 | -0.50 | +1.00 | +1.50 | -0.50 |'
  ]
  # A program run from before its training-image figures: its cells say so.
  assert '| 0 | program | 20 | - | - | - | 269.00 | 265.00 | 4.00 |' in text
  assert '| 0 | preset - program | | - | - | - | +1.00 | +1.50 | -0.50 |' in text
  # Keras' kl_loss is the mean over z's 2 dimensions: the KL summed is twice it.
  assert 'beta 10: reconstruction 262.50, KL 4.50' in text
