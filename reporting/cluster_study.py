"""The table and curves of scripts/cluster_study.sh: multi-worker modes against
one process on the same preset.

  python -m reporting.cluster_study --runs_dir runs/cluster_study [--out_dir DIR]

Reads RUNS_DIR/<mode>/seed*/ (metrics.json, config.json, validation
summaries); prints a Markdown table and writes it, with a PNG of the
validation curves against examples seen, to --out_dir (default RUNS_DIR).
"""

import os
import statistics

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import files
from reporting import figures
from reporting import report

MODE_NAMES = {
    'one_process': 'one process',
    'staleness1': 'one process, gradients 1 step stale',
    'staleness2': 'one process, gradients 2 steps stale',
    'async2': '1 ps + 2 workers, asynchronous',
    'sync2_examples': '1 ps + 2 workers, sync, equal examples',
    'sync2_updates': '1 ps + 2 workers, sync, equal updates',
}

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('runs_dir', 'runs/cluster_study', 'Directory with one subdirectory per mode.')
  flags.DEFINE_list('modes', list(MODE_NAMES),
                    'Modes to report, in this order (space- or comma-separated).')
  flags.DEFINE_string(
      'out_dir', None, 'Where cluster_study.md and cluster_study_curves.png go '
      '(default: --runs_dir).')


def examples_per_update(config):
  """Training examples one global step consumes in a run of `config`."""
  if config.get('sync_replicas'):
    # replicas_to_aggregate 0 means all workers; the study's sync runs have 2.
    return config['batch_size'] * (config.get('replicas_to_aggregate') or 2)
  return config['batch_size']


def read_run(run_dir):
  """A finished run's figures: test/validation -ELBO, steps, examples, the
  validation curve against examples seen, wall time."""
  metrics = files.read_json(os.path.join(run_dir, 'metrics.json'))
  config = metrics['config']
  per_update = examples_per_update(config)
  steps, values = report.read_scalars(run_dir, 'validation/neg_elbo')
  return {
      'test': metrics['test']['neg_elbo'],
      'validation': metrics['validation']['neg_elbo'],
      'updates': metrics['step'],
      'examples': metrics['step'] * per_update,
      'curve': (np.asarray(steps) * per_update, np.asarray(values)),
      'wall_time_sec': metrics.get('wall_time_sec'),
  }


def late_rise(examples, values):
  """Sum of the validation curve's increases over the second half of
  training: 0 for a curve that only falls; large when it oscillates."""
  late = values[examples >= examples[-1] / 2] if len(values) else values
  return float(np.sum(np.clip(np.diff(late), 0, None)))


def _mean_sd(values):
  if len(values) == 1:
    return '%.2f' % values[0]
  return '%.2f ± %.2f (%.2f-%.2f)' % (statistics.mean(values), statistics.stdev(values),
                                      min(values), max(values))


def table(runs_by_mode):
  """Markdown rows: one per mode, means over its seeds."""
  lines = [
      '| mode | seeds | updates | examples seen | test -ELBO | '
      'validation -ELBO | late validation rise | wall time |', '|---|---|---|---|---|---|---|---|'
  ]
  for mode, runs in runs_by_mode.items():
    rise = statistics.mean(late_rise(*run['curve']) for run in runs)
    walls = [run['wall_time_sec'] for run in runs if run['wall_time_sec']]
    lines.append('| %s | %d | %s | %.2f M | %s | %s | %.2f | %s |' %
                 (MODE_NAMES.get(mode, mode), len(runs), format(runs[0]['updates'], ','),
                  runs[0]['examples'] / 1e6, _mean_sd([run['test'] for run in runs]),
                  _mean_sd([run['validation'] for run in runs
                           ]), rise, '%.0f s' % statistics.mean(walls) if walls else '-'))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Unexpected arguments: %s' % ' '.join(argv[1:]))
  modes = [mode for entry in FLAGS.modes for mode in entry.split()]
  out_dir = FLAGS.out_dir or FLAGS.runs_dir
  runs_by_mode = {}
  for mode in modes:
    run_dirs = sorted(tf.io.gfile.glob(os.path.join(FLAGS.runs_dir, mode, 'seed*')))
    finished = [d for d in run_dirs if tf.io.gfile.exists(os.path.join(d, 'metrics.json'))]
    if not finished:
      raise app.UsageError('%s has no finished run of mode %s' % (FLAGS.runs_dir, mode))
    runs_by_mode[mode] = [read_run(d) for d in finished]
  markdown = table(runs_by_mode)
  print(markdown)
  files.write(os.path.join(out_dir, 'cluster_study.md'), markdown + '\n')
  curves = {}
  for mode, runs in runs_by_mode.items():
    length = min(len(run['curve'][1]) for run in runs)
    curves[MODE_NAMES.get(mode, mode)] = (runs[0]['curve'][0][:length] / 1e6,
                                          np.mean([run['curve'][1][:length] for run in runs],
                                                  axis=0))
  curve_path = os.path.join(out_dir, 'cluster_study_curves.png')
  if figures.training_curves(
      curve_path,
      curves,
      'validation -ELBO, mean over seeds',
      xlabel='training examples seen (millions)'):
    print('Wrote', curve_path)


if __name__ == '__main__':
  define_flags()
  app.run(main)
