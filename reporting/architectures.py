"""The tables of scripts/architectures_study.sh: each convolutional preset
beside its source's program.

  python -m reporting.architectures --runs_dir runs/architectures \
      --report_dir reproduction/architectures
"""

import glob
import os

from absl import app
from absl import flags
import numpy as np

from mnist_vae import files

flags.DEFINE_string('runs_dir', 'runs/architectures', help='Where the study trained.')
flags.DEFINE_string('report_dir', 'reproduction/architectures', help='Where the tables go.')
FLAGS = flags.FLAGS


def _spread(values):
  """'mean +- sd (n)' of a list of numbers."""
  values = np.asarray(values, np.float64)
  if len(values) == 1:
    return '%.2f (1 seed)' % values[0]
  return '%.2f &plusmn; %.2f (%d seeds)' % (values.mean(), values.std(ddof=1), len(values))


def cvae_tutorial(runs_dir):
  """{'program': {epoch: [test -ELBO per seed]}, 'preset': {...}}."""
  table = {'program': {}, 'preset': {}}
  for path in sorted(glob.glob(os.path.join(runs_dir, 'cvae_tutorial', 'program', '*.json'))):
    for epoch in files.read_json(path)['epochs']:
      table['program'].setdefault(epoch['epoch'], []).append(-epoch['test_elbo'])
  for path in sorted(
      glob.glob(
          os.path.join(runs_dir, 'cvae_tutorial', 'preset', 'seed*', 'eval_test_epoch*.json'))):
    epoch = int(os.path.basename(path)[len('eval_test_epoch'):-len('.json')])
    table['preset'].setdefault(epoch, []).append(files.read_json(path)['neg_elbo'])
  return table


def kl_article(runs_dir):
  """{beta: {'program': figures, 'preset': figures}} of the runs that ended."""
  rows = {}
  for beta in ('10', '0'):
    program = os.path.join(runs_dir, 'kl_article', 'program', 'beta%s.json' % beta)
    preset = os.path.join(runs_dir, 'kl_article', 'preset', 'beta%s' % beta, 'metrics.json')
    row = {}
    if os.path.exists(program):
      content = files.read_json(program)
      row['program'] = dict(
          content['test'], epochs=content['epochs'], final_epoch=content['final_epoch'])
    if os.path.exists(preset):
      metrics = files.read_json(preset)
      row['preset'] = dict(
          {key: metrics['test'][key] for key in ('neg_elbo', 'reconstruction', 'kl_divergence')},
          final_minibatch=metrics['last_minibatch'],
          steps=metrics['step'])
    if row:
      rows[beta] = row
  return rows


def _seed_noise(tutorial):
  """Whether the last epoch's difference of the means lies within seed
  noise: the standard error of that difference from the seeds' spread."""
  epoch = max(set(tutorial['program']) & set(tutorial['preset']), default=None)
  if epoch is None:
    return 'No epoch has both columns yet.'
  program, preset = (np.asarray(tutorial[part][epoch]) for part in ('program', 'preset'))
  if min(len(program), len(preset)) < 2:
    return 'Epoch %d: one seed in a column, no spread to judge the difference by.' % epoch
  error = np.sqrt(program.var(ddof=1) / len(program) + preset.var(ddof=1) / len(preset))
  difference = preset.mean() - program.mean()
  return ('Epoch %d: the preset\'s mean is %+.2f nats from the program\'s, %.1f standard '
          'errors of that difference (%.2f, from the seeds\' spread): %s.' %
          (epoch, difference, abs(difference) / error, error,
           'within seed noise' if abs(difference) <= 2 * error else 'beyond seed noise'))


def markdown(tutorial, article):
  lines = []
  if tutorial['program'] or tutorial['preset']:
    lines += [
        '## TensorFlow\'s CVAE tutorial: test -ELBO (nats per image) after each epoch', '',
        '| epoch | the tutorial\'s program | configs/cvae_tutorial.flags | preset - program |',
        '|---|---|---|---|'
    ]
    for epoch in sorted(set(tutorial['program']) | set(tutorial['preset'])):
      program, preset = (tutorial[part].get(epoch, [np.nan]) for part in ('program', 'preset'))
      lines.append('| %d | %s | %s | %+.2f |' %
                   (epoch, _spread(program), _spread(preset), np.mean(preset) - np.mean(program)))
    lines += ['', _seed_noise(tutorial), '']
  if article:
    lines += [
        '## The KL article\'s network on Fashion-MNIST: the test set after training (nats per '
        'image, one z each)', '', '| beta | program | -ELBO | reconstruction | KL |',
        '|---|---|---|---|---|'
    ]
    for beta, row in article.items():
      for name, figures in sorted(row.items()):
        lines.append(
            '| %s | %s | %.2f | %.2f | %.2f |' %
            (beta, name, figures['neg_elbo'], figures['reconstruction'], figures['kl_divergence']))
    lines.append('')
  return '\n'.join(lines)


def main(argv):
  del argv  # Unused.
  tutorial, article = cvae_tutorial(FLAGS.runs_dir), kl_article(FLAGS.runs_dir)
  files.make_dirs(FLAGS.report_dir, '--report_dir')
  files.write_json(
      os.path.join(FLAGS.report_dir, 'comparison.json'), {
          'cvae_tutorial': {
              part: {
                  str(epoch): values for epoch, values in table.items()
              } for part, table in tutorial.items()
          },
          'kl_article': article
      })
  text = markdown(tutorial, article)
  files.write(os.path.join(FLAGS.report_dir, 'comparison.md'), text)
  print(text)


if __name__ == '__main__':
  app.run(main)
