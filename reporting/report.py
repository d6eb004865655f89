"""Writes REPRODUCTION.md and its figures from the runs of scripts/reproduce.sh.

Reads RUNS_DIR/<preset>/seed<N>/ (train.py's metrics.json, event files and
images; evaluate.py's eval_validation.json and eval_test.json) and, when
present, RUNS_DIR/latent2/seed0 (a 2-d latent model, for the manifold).

Usage:
  python report.py --runs_dir runs/reproduce --data_dir data/mnist --report_dir reproduction
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import os
import platform

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import files
from mnist_vae import images as image_grids
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae.data_prep import records
from reporting import figures

FLAGS = flags.FLAGS
LATENT2 = 'latent2'
PRESET_ORDER = ('original', 'upstream', 'long')


def define_flags():
  flags.DEFINE_string('runs_dir', 'runs/reproduce', help='What reproduce.sh wrote.')
  flags.DEFINE_string('data_dir', 'data/mnist', help='The TFRecords (for the 2-d figures).')
  flags.DEFINE_string(
      'report_dir', 'reproduction', help='Where REPRODUCTION.md and the figures go.')
  flags.DEFINE_string('command', '', help='The command that made the runs, quoted in the report.')


def read_scalars(train_dir, tag):
  """(steps, values) of summary `tag` in train_dir's event files, by step."""
  steps, values = [], []
  for events in sorted(tf.io.gfile.glob(os.path.join(train_dir, 'events.out.tfevents.*'))):
    for event in tf.train.summary_iterator(events):
      for value in event.summary.value:
        if value.tag == tag:
          steps.append(event.step)
          values.append(value.simple_value)
  order = np.argsort(steps, kind='stable')
  return np.asarray(steps)[order], np.asarray(values)[order]


def _run_order(run_dir):
  """The presets in the order of the README (then any other, by name), and
  seeds by number (seed10 after seed9)."""
  preset = os.path.basename(os.path.dirname(run_dir))
  rank = PRESET_ORDER.index(preset) if preset in PRESET_ORDER else len(PRESET_ORDER)
  seed = os.path.basename(run_dir)[len('seed'):]
  return rank, preset, int(seed) if seed.isdigit() else -1, seed


def collect_runs(runs_dir):
  """{preset: [run dict, ...]} with each run's metrics and evaluations."""
  presets = {}
  run_dirs = tf.io.gfile.glob(os.path.join(runs_dir, '*', 'seed*'))
  for run_dir in sorted(run_dirs, key=_run_order):
    preset = os.path.basename(os.path.dirname(run_dir))
    try:
      run = {
          'dir': run_dir,
          'metrics': files.read_json(os.path.join(run_dir, 'metrics.json')),
          'test': files.read_json(os.path.join(run_dir, 'eval_test.json')),
          'validation': None
      }
      if run['metrics'].get('config', {}).get('validation_size', 1):
        run['validation'] = files.read_json(os.path.join(run_dir, 'eval_validation.json'))
    except (tf.errors.NotFoundError, FileNotFoundError):
      continue  # Not finished.
    presets.setdefault(preset, []).append(run)
  return presets


def mean_spread(values):
  values = np.asarray(values, float)
  if len(values) == 1:
    return '%.2f' % values[0]  # One seed has no spread to show.
  return '%.2f &plusmn; %.2f (%.2f-%.2f)' % (values.mean(), values.std(ddof=1), values.min(),
                                             values.max())


def _validation_cell(runs):
  """The runs' mean validation -ELBO, or 'none' for runs trained on every
  training image (no validation split)."""
  if any(run['validation'] is None for run in runs):
    return 'none'
  return '%.2f' % np.mean([run['validation']['neg_elbo'] for run in runs])


def summary_table(presets):
  lines = [
      '| preset | seeds | test -ELBO (mean &plusmn; sd, range) | test NLL, k=%s '
      '| validation -ELBO | steps | training wall time |' % _iw_samples(presets),
      '|---|---|---|---|---|---|---|'
  ]
  for preset, runs in presets.items():
    lines.append(
        '| %s | %d | %s | %s | %s | %d | %.0f s |' %
        (preset, len(runs), mean_spread([r['test']['neg_elbo'] for r in runs]),
         mean_spread([r['test'].get('iw_nll', np.nan) for r in runs]), _validation_cell(runs),
         runs[0]['metrics']['step'], np.mean([r['metrics']['wall_time_sec'] for r in runs])))
  return '\n'.join(lines)


def data_notes(presets):
  """A line for each preset trained on other data than MNIST's grey levels
  (binarized pixels, another dataset): its nats measure a different data
  distribution from the grey-level rows."""
  notes = []
  for preset, runs in presets.items():
    config = runs[0]['metrics'].get('config', {})
    mode = config.get('binarize', 'none')
    dataset = config.get('dataset', 'mnist')
    if dataset != 'mnist':
      notes += [
          '%s: trained and evaluated on --dataset=%s; its nats are not comparable '
          'with the MNIST rows.' % (preset, dataset), ''
      ]
    elif mode == 'threshold':
      notes += [
          '%s: trained and evaluated on the images binarized at 0.5 '
          '(--binarize=threshold); comparable with neither the grey-level rows '
          'nor the stochastically binarized ones.' % preset, ''
      ]
    elif mode != 'none':
      notes += [
          '%s: trained with --binarize=%s and evaluated on the static binary '
          'sample of each image; comparable with the binarized-MNIST '
          'literature, not with the grey-level rows.' % (preset, mode), ''
      ]
  return notes


def per_run_table(presets):
  lines = [
      '| preset | seed | test -ELBO | reconstruction | KL | test NLL | '
      'validation -ELBO | training wall time |', '|---|---|---|---|---|---|---|---|'
  ]
  for preset, runs in presets.items():
    for run in runs:
      test = run['test']
      lines.append('| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %.0f s |' %
                   (preset, os.path.basename(run['dir'])[len('seed'):], test['neg_elbo'],
                    test['reconstruction'], test['kl_divergence'], test.get('iw_nll', np.nan),
                    _validation_cell([run]), run['metrics']['wall_time_sec']))
  return '\n'.join(lines)


def _cpu_model():
  """The processor's name from /proc/cpuinfo, or the platform's guess."""
  try:
    with tf.io.gfile.GFile('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except tf.errors.OpError:
    pass
  return platform.processor() or platform.machine()


def _iw_samples(presets):
  counts = {r['test'].get('iw_samples') for runs in presets.values() for r in runs}
  return '/'.join(str(c) for c in sorted(counts, key=str))


def latent2_pictures(run_dir, data_dir):
  """The decoded manifold (uint8 grid) and the test set's posterior means
  coloured by class (RGB uint8) of the 2-d latent model in run_dir, or None
  when its latent is not 2-d."""
  checkpoint = checkpoints.readable(run_dir)
  network = checkpoints.network(checkpoint)
  if network.latent_dim != 2:
    return None
  test_path = records.split_path(data_dir, 'test')
  batches = list(tf.data.TFRecordDataset(test_path).batch(10000).map(input_pipeline.parse_batch))
  images = np.concatenate([input_pipeline.normalize(pixels).numpy() for pixels, _ in batches])
  labels = np.concatenate([labels.numpy() for _, labels in batches])
  with tf.Graph().as_default(), tf.Session() as session:
    z = tf.placeholder(tf.float32, [None, 2])
    decoded = model.probabilities(model.decode(z, network))
    x = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
    z_mean, _ = model.encode(x, network)
    tf.train.Saver(model.model_variables()).restore(session, checkpoint)
    grid = figures.manifold_grid(session.run(decoded, {z: figures.manifold_latents()}))
    means = session.run(z_mean, {x: images})
  return grid, figures.posterior_scatter(means, labels, class_names=records.class_names(data_dir))


def latent2_figures(run_dir, data_dir, report_dir):
  """The manifold and the posterior means of a 2-d latent model; paths written."""
  pictures = latent2_pictures(run_dir, data_dir)
  if pictures is None:
    return []
  manifold = os.path.join(report_dir, 'manifold_latent2.png')
  scatter = os.path.join(report_dir, 'posterior_means_latent2.png')
  image_grids.write_png(manifold, pictures[0])
  image_grids.write_png(scatter, pictures[1])
  return [manifold, scatter]


def write_report(runs_dir, data_dir, report_dir, command=''):
  """Writes report_dir/REPRODUCTION.md and figures; returns the report's path."""
  tf.io.gfile.makedirs(report_dir)
  presets = collect_runs(runs_dir)
  latent2 = presets.pop(LATENT2, None)
  sections = [
      '# Reproduction of the presets\' results', '',
      'Made by `%s`.' % (command or 'scripts/reproduce.sh'), '',
      'Machine: %d cores (%s), Python %s, TensorFlow %s. Negative ELBO and '
      'NLL in nats per image over all examples of the split, dropout off '
      '(evaluate.py). Wall time is that of train.py (with its periodic '
      'validation and images) on a possibly shared machine: a rough '
      'guide, not a benchmark.' %
      (os.cpu_count(), _cpu_model(), platform.python_version(), tf.version.VERSION), '',
      summary_table(presets), ''
  ] + data_notes(presets) + ['### Each run', '', per_run_table(presets), '']
  for preset, runs in presets.items():
    curves = {}
    for run in runs:
      seed = os.path.basename(run['dir'])
      curves['minibatch, %s' % seed] = read_scalars(run['dir'], 'train/neg_elbo')
      curves['validation, %s' % seed] = read_scalars(run['dir'], 'validation/neg_elbo')
    curve_path = os.path.join(report_dir, 'curve_%s.png' % preset)
    sections.append('## %s' % preset)
    if figures.training_curves(curve_path, curves, 'preset %s' % preset):
      sections.append('![training curve](%s)' % os.path.basename(curve_path))
    else:
      sections.append('(training curves need matplotlib: pip install -e \'.[plots]\')')
    images_dir = os.path.join(runs[0]['dir'], 'images')
    step = runs[0]['metrics']['step']
    for kind in ('reconstructions', 'samples'):
      source = os.path.join(images_dir, '%s_step_%06d.png' % (kind, step))
      if tf.io.gfile.exists(source):
        target = os.path.join(report_dir, '%s_%s.png' % (preset, kind))
        tf.io.gfile.copy(source, target, overwrite=True)
        sections.append('![%s](%s)' % (kind, os.path.basename(target)))
    sections.append('')
  if latent2:
    paths = latent2_figures(latent2[0]['dir'], data_dir, report_dir)
    if paths:
      sections += [
          '## 2-d latent space (upstream preset, --latent_dim 2)', '',
          'Test -ELBO %.2f. Left: decoder means over a 20x20 grid of the '
          'Gaussian inverse CDF (Kingma & Welling 2014, Figure 4). Right: '
          'posterior means of the test set by digit.' % latent2[0]['test']['neg_elbo'], ''
      ]
      sections += ['![%s](%s)' % (os.path.basename(p), os.path.basename(p)) for p in paths]
  path = os.path.join(report_dir, 'REPRODUCTION.md')
  files.write(path, '\n'.join(sections) + '\n')
  print(summary_table(presets))
  return path


def main(argv):
  del argv  # Unused.
  write_report(FLAGS.runs_dir, FLAGS.data_dir, FLAGS.report_dir, FLAGS.command)


if __name__ == '__main__':
  define_flags()
  app.run(main)
