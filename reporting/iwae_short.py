"""The table of scripts/iwae_short.sh: the VAE and the k = 5 IWAE trained on
the same shortened schedule, their test NLL (importance-weighted, the
evaluation's k) and -ELBO, and active units.

  python -m reporting.iwae_short --runs_dir runs/iwae_short --report_dir reproduction/iwae
"""

import os

from absl import app
from absl import flags

from mnist_vae import files

flags.DEFINE_string('runs_dir', 'runs/iwae_short', help='Where iwae_short.sh trained.')
flags.DEFINE_string('report_dir', 'reproduction/iwae', help='Where the table goes.')
flags.DEFINE_string('schedule', '', help='The schedule both were trained on, for the table.')
FLAGS = flags.FLAGS

MODELS = (('vae', 'VAE (k = 1)'), ('iwae_k5', 'IWAE, k = 5'))


def summarize(runs_dir):
  """{model: figures} of each run that has its test evaluation."""
  rows = {}
  for model, _ in MODELS:
    evaluation_path = os.path.join(runs_dir, model, 'eval_test.json')
    metrics_path = os.path.join(runs_dir, model, 'metrics.json')
    if not (os.path.exists(evaluation_path) and os.path.exists(metrics_path)):
      continue
    evaluation, metrics = files.read_json(evaluation_path), files.read_json(metrics_path)
    rows[model] = {
        'test_nll': evaluation['iw_nll'],
        'test_neg_elbo': evaluation['neg_elbo'],
        'iw_samples': evaluation['iw_samples'],
        'active_units': evaluation['active_units'],
        'steps': metrics['step'],
        'train_iw_samples': metrics['config']['train_iw_samples'],
    }
  return rows


def markdown(rows, schedule):
  lines = [
      'The VAE and the IWAE (k = 5) on the same shortened schedule '
      '(`--learning_rate_schedule=%s`), test set, nats per image:' % schedule, '',
      '| model | test NLL | test -ELBO | active units | steps |', '|---|---|---|---|---|'
  ]
  for model, label in MODELS:
    if model in rows:
      row = rows[model]
      lines.append('| %s | %.2f (k = %d) | %.2f | %d | %d |' %
                   (label, row['test_nll'], row['iw_samples'], row['test_neg_elbo'],
                    row['active_units'], row['steps']))
  if len(rows) == 2:
    gap = rows['vae']['test_nll'] - rows['iwae_k5']['test_nll']
    lines += [
        '',
        'The IWAE ends %.2f nats %s than the VAE.' % (abs(gap), 'lower' if gap > 0 else 'higher')
    ]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv  # Unused.
  rows = summarize(FLAGS.runs_dir)
  files.make_dirs(FLAGS.report_dir, '--report_dir')
  files.write_json(
      os.path.join(FLAGS.report_dir, 'short_schedule.json'), {
          'schedule': FLAGS.schedule,
          'runs': rows
      })
  text = markdown(rows, FLAGS.schedule)
  files.write(os.path.join(FLAGS.report_dir, 'short_schedule.md'), text)
  print(text)


if __name__ == '__main__':
  app.run(main)
