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

FASHION_MNIST_TRAIN_IMAGES = 60000
_TERMS = ('neg_elbo', 'reconstruction', 'kl_divergence')


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
  """{beta: {'program': figures, 'preset': figures}} of the runs that ended,
  each figures {'epochs', 'train', 'test'} (the last weights' -ELBO,
  reconstruction and KL over the training and the test images; 'train' is
  missing where it was not evaluated), the program's also 'last_epoch': its
  loss terms as Keras logs them, averaged over the last epoch's batches."""
  rows = {}
  for beta in ('10', '0'):
    program = os.path.join(runs_dir, 'kl_article', 'program', 'beta%s.json' % beta)
    preset = os.path.join(runs_dir, 'kl_article', 'preset', 'beta%s' % beta)
    row = {}
    if os.path.exists(program):
      content = files.read_json(program)
      row['program'] = {
          'epochs': content['epochs'],
          'test': content['test'],
          # Keras' kl_loss is the mean over z's 2 dimensions: twice it is the sum.
          'last_epoch': {
              'reconstruction': content['final_epoch']['reconstruction_loss'],
              'kl_divergence': 2 * content['final_epoch']['kl_loss']
          }
      }
      if 'train' in content:
        row['program']['train'] = content['train']
    if os.path.exists(os.path.join(preset, 'metrics.json')):
      metrics = files.read_json(os.path.join(preset, 'metrics.json'))
      config = files.read_json(os.path.join(preset, 'config.json'))
      row['preset'] = {
          'epochs': metrics['step'] * config['batch_size'] / FASHION_MNIST_TRAIN_IMAGES,
          'test': {
              key: metrics['test'][key] for key in _TERMS
          }
      }
      if os.path.exists(os.path.join(preset, 'eval_train.json')):
        train = files.read_json(os.path.join(preset, 'eval_train.json'))
        row['preset']['train'] = {key: train[key] for key in _TERMS}
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


def _article_table(article):
  """The KL article's rows: program and preset per beta, the last weights'
  loss terms over the training images and the test images, then what the
  program logged over its last epoch."""

  def terms(figures):
    if figures is None:
      return ['-'] * 3
    return ['%.2f' % figures[key] for key in _TERMS]

  lines = [
      '## The KL article\'s network on Fashion-MNIST: the last weights\' loss terms (nats per '
      'image, one z each)', '',
      'Training images (the 60,000 both train on) and the 10,000 test images. The program\'s '
      'reconstruction is Keras\' binary cross-entropy of the clipped sigmoid, the preset\'s the '
      'exact Bernoulli log-likelihood of the logits; the KL is summed over z.', '',
      '| beta | | epochs | training -ELBO | reconstruction | KL | test -ELBO | reconstruction '
      '| KL |', '|---|---|---|---|---|---|---|---|---|'
  ]
  logged = []
  for beta, row in article.items():
    for name in ('program', 'preset'):
      if name in row:
        figures = row[name]
        lines.append('| %s | %s | %.3g | %s |' %
                     (beta, name, figures['epochs'],
                      ' | '.join(terms(figures.get('train')) + terms(figures['test']))))
    if 'program' in row and 'preset' in row:
      differences = []
      for split in ('train', 'test'):
        pair = [row[name].get(split) for name in ('preset', 'program')]
        differences += (['%+.2f' % (pair[0][key] - pair[1][key]) for key in _TERMS]
                        if None not in pair else ['-'] * 3)
      lines.append('| %s | preset - program | | %s |' % (beta, ' | '.join(differences)))
    if 'program' in row:
      last = row['program']['last_epoch']
      logged.append('beta %s: reconstruction %.2f, KL %.2f' %
                    (beta, last['reconstruction'], last['kl_divergence']))
  if logged:
    lines += [
        '',
        'The program\'s last epoch as Keras logs it (means over the epoch\'s batches while '
        'the weights move; twice its kl_loss, the KL summed over z): %s.' % '; '.join(logged)
    ]
  return lines + ['']


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
    lines += _article_table(article)
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
