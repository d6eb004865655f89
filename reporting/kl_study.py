"""The tables and figures of scripts/kl_study.sh: what the KL term's weight
does to the model, and how far the aggregate posterior is from the prior.

  python -m reporting.kl_study --runs_dir runs/kl_study --report_dir reproduction/kl_study

Reads RUNS_DIR/latent2/<config>/seed0, RUNS_DIR/latent20/<config>/seed* and
RUNS_DIR/conv/<config>/seed0 (train.py's metrics.json, whose test figures
include the aggregate posterior's; sample_quality.py's
sample_quality_step_*.json; each run's own data directory), and writes to
--report_dir, for each dataset that has runs: kl_study.md and results.json
(MNIST's tables and every number), kl_study_fashion_mnist.md and
results_fashion_mnist.json (Fashion-MNIST's); and the figures:
latent2_by_beta.png and conv_by_beta.png (the test set's posterior means by
class above the decoded manifold, one column per beta),
samples_prior_vs_aggregate.png and conv_samples_prior_vs_aggregate.png
(prior samples above aggregate samples, one column per configuration).
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import os

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import files
from mnist_vae import images as image_grids
from mnist_vae import trained_model
from reporting import report

FLAGS = flags.FLAGS
# The columns of latent2_by_beta.png and of the sample figure are this wide.
PANEL = 300
SAMPLES_PER_PANEL = 36


def define_flags():
  flags.DEFINE_string(
      'runs_dir', 'runs/kl_study', 'The study\'s runs: latent2/<config>/seed0, '
      'latent20/<config>/seed<N> and conv/<config>/seed0.')
  flags.DEFINE_string('report_dir', 'reproduction/kl_study', 'Where the tables and figures go.')
  flags.DEFINE_string('command', '', 'The command that made the runs, quoted '
                      'in kl_study.md.')


def config_label(config):
  """`beta0.5` -> 'beta = 0.5'; `warmup` -> 'beta = 1, warm-up'; the KL
  article's network by the article's beta (twice --kl_weight: its mean over
  z's 2 dimensions halves the summed KL)."""
  if config.get('architecture') == 'keras_cvae':
    if config['kl_weight'] == 1:
      return 'ELBO (kl_weight 1; article beta 2)'
    return 'article beta = %g (kl_weight %g)' % (2 * config['kl_weight'], config['kl_weight'])
  if config['kl_warmup_steps']:
    return 'beta = %g, warm-up %s steps' % (config['kl_weight'],
                                            format(config['kl_warmup_steps'], ','))
  return 'beta = %g' % config['kl_weight']


def _finished(run_dir):
  """train.py ended run_dir with its final test figures, uninterrupted."""
  try:
    metrics = files.read_json(os.path.join(run_dir, 'metrics.json'))
  except tf.errors.NotFoundError:
    return False
  return 'test' in metrics and not metrics.get('interrupted_by')


def read_run(run_dir):
  """A finished run's test figures and sample-quality figures."""
  metrics = files.read_json(os.path.join(run_dir, 'metrics.json'))
  scores = sorted(tf.io.gfile.glob(os.path.join(run_dir, 'sample_quality_step_*.json')))
  if not scores:
    raise app.UsageError('%s has no sample_quality_step_*.json: run '
                         'sample_quality.py on it (kl_study.sh does)' % run_dir)
  return {
      'dir': run_dir,
      'config': metrics['config'],
      'test': metrics['test'],
      'samples': files.read_json(scores[-1])
  }


def collect(runs_dir, part):
  """{config name: [runs, by seed]} for RUNS_DIR/<part>/, sorted by the KL
  weight (a warm-up after the run of the same weight)."""
  runs = {}
  for config_dir in sorted(tf.io.gfile.glob(os.path.join(runs_dir, part, '*'))):
    finished = [
        d for d in sorted(tf.io.gfile.glob(os.path.join(config_dir, 'seed*'))) if _finished(d)
    ]
    if finished:
      runs[os.path.basename(config_dir)] = [read_run(d) for d in finished]
  return dict(
      sorted(
          runs.items(),
          key=lambda item:
          (item[1][0]['config']['kl_weight'], item[1][0]['config']['kl_warmup_steps'])))


COLUMNS = (
    ('test -ELBO', lambda run: run['test']['neg_elbo']),
    ('reconstruction', lambda run: run['test']['reconstruction']),
    ('KL', lambda run: run['test']['kl_divergence']),
    ('active units', lambda run: run['test']['active_units']),
    ('mutual information', lambda run: run['test']['mutual_information']),
    ('marginal KL', lambda run: run['test']['marginal_kl']),
    ('Gaussian fit KL', lambda run: run['test']['prior_fit_kl']),
    ('FD prior', lambda run: run['samples']['prior']['frechet_distance']),
    ('FD aggregate', lambda run: run['samples']['aggregate']['frechet_distance']),
    ('least class, prior', lambda run: run['samples']['prior']['least_digit_share']),
    ('least class, aggregate', lambda run: run['samples']['aggregate']['least_digit_share']),
)


def table(runs_by_config):
  """Markdown: one row per configuration, means over its seeds."""
  lines = [
      '| configuration | seeds | ' + ' | '.join(name for name, _ in COLUMNS) + ' |',
      '|---|---|' + '---|' * len(COLUMNS)
  ]
  for runs in runs_by_config.values():
    lines.append('| %s | %d | %s |' % (config_label(runs[0]['config']), len(runs), ' | '.join(
        report.mean_spread([key(run) for run in runs]) for _, key in COLUMNS)))
  return '\n'.join(lines)


def _labelled(picture, label, width=PANEL):
  """An RGB panel `width` wide: `label` above `picture` scaled to fit."""
  picture = Image.fromarray(picture).convert('RGB')
  picture = picture.resize((width, round(picture.height * width / picture.width)), Image.NEAREST)
  panel = Image.new('RGB', (width, picture.height + 16), (255, 255, 255))
  ImageDraw.Draw(panel).text((4, 2), label, fill=(0, 0, 0))
  panel.paste(picture, (0, 16))
  return np.asarray(panel)


def _side_by_side(columns):
  """Lists of RGB panels (one list per column, top to bottom) -> one image."""
  stacked = [np.concatenate(column, axis=0) for column in columns]
  height = max(column.shape[0] for column in stacked)
  padded = [
      np.pad(column, ((0, height - column.shape[0]), (0, 4), (0, 0)), constant_values=255)
      for column in stacked
  ]
  return np.concatenate(padded, axis=1)


def _data_dir(run):
  """The TFRecords the run trained on (its test split, its training split for
  the aggregate posterior's fit)."""
  return run['config']['data_dir']


def latent2_figure(runs_by_config):
  columns = []
  for runs in runs_by_config.values():
    manifold, scatter = report.latent2_pictures(runs[0]['dir'], _data_dir(runs[0]))
    label = config_label(runs[0]['config'])
    columns.append([
        _labelled(scatter, label + ': test posterior means'),
        _labelled(manifold, label + ': decoded manifold')
    ])
  return _side_by_side(columns)


def samples_figure(runs_by_config):
  columns = []
  for runs in runs_by_config.values():
    vae = trained_model.CheckpointModel(checkpoints.readable(runs[0]['dir']))
    label = config_label(runs[0]['config'])
    column = []
    for source in trained_model.SAMPLE_SOURCES:
      samples = trained_model.draw_samples(
          vae, SAMPLES_PER_PANEL, 0, sample_from=source, data_dir=_data_dir(runs[0]))
      column.append(
          _labelled(image_grids.sample_grid(samples, columns=6), '%s, %s' % (label, source)))
    columns.append(column)
  return _side_by_side(columns)


def _results(runs_by_config):
  return {
      name: [{
          'dir': run['dir'],
          'seed': run['config']['seed'],
          'test': run['test'],
          'samples': run['samples']
      } for run in runs] for name, runs in runs_by_config.items()
  }


def _classifier_line(run, dataset):
  return ('Classifier of the Frechet distances (FD) on %s: test accuracy %.4f; real '
          'training images score %.2f against the test set. Least class: the share of the '
          'least frequent class among the samples as the classifier labels them (the test '
          'set: %.3f).' %
          (dataset, run['samples']['classifier_test_accuracy'],
           run['samples']['real_train_frechet_distance'], min(run['samples']['test_digit_shares'])))


# The study's parts: (runs subdirectory, section title, dataset, figures'
# names: the latent scatter of 2-d models, the samples of the configurations).
PARTS = (
    ('latent2', '2-d latent', 'MNIST', 'latent2_by_beta.png', None),
    ('latent20', '20-d latent (upstream preset)', 'MNIST', None, 'samples_prior_vs_aggregate.png'),
    ('conv', 'The KL article\'s network (keras_cvae, 2-d) on Fashion-MNIST', 'Fashion-MNIST',
     'conv_by_beta.png', 'conv_samples_prior_vs_aggregate.png'),
)

# Each dataset's parts make a report of their own (its tables, its numbers),
# so that a study of one (kl_study.sh --parts conv) leaves the other's as it was.
REPORTS = (
    ('MNIST', 'kl_study.md', 'results.json'),
    ('Fashion-MNIST', 'kl_study_fashion_mnist.md', 'results_fashion_mnist.json'),
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Unexpected arguments: %s' % ' '.join(argv[1:]))
  tf.get_logger().handlers.clear()  # absl prints TensorFlow's lines already.
  parts = {name: collect(FLAGS.runs_dir, name) for name, *_ in PARTS}
  if not any(parts.values()):
    raise app.UsageError('%s holds no finished run of the study' % FLAGS.runs_dir)
  files.make_dirs(FLAGS.report_dir, '--report_dir')
  for dataset, markdown_name, results_name in REPORTS:
    names = [name for name, _, of, *_ in PARTS if of == dataset and parts[name]]
    if not names:
      continue
    sections = [
        '# The KL term and the aggregate posterior: %s' % dataset, '',
        'Made by `%s`.' % (FLAGS.command or 'scripts/kl_study.sh'), '',
        _classifier_line(next(iter(parts[names[0]].values()))[0], dataset), ''
    ]
    for name, title, *_ in PARTS:
      if name in names:
        sections += ['## ' + title, '', table(parts[name]), '']
    markdown = '\n'.join(sections)
    print(markdown)
    files.write(os.path.join(FLAGS.report_dir, markdown_name), markdown)
    files.write_json(
        os.path.join(FLAGS.report_dir, results_name),
        {name: _results(parts[name]) for name in names})
  for name, _, _, scatter_png, samples_png in PARTS:
    for png, make in ((scatter_png, latent2_figure), (samples_png, samples_figure)):
      if png and parts[name]:
        path = os.path.join(FLAGS.report_dir, png)
        image_grids.write_png(path, make(parts[name]))
        print('Wrote', path)


if __name__ == '__main__':
  define_flags()
  app.run(main)
