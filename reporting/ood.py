"""Out-of-distribution figure: how a model trained on MNIST scores Fashion-MNIST.

Reads two per-example CSVs of evaluate.py (--per_example_csv), one for the
MNIST test set and one for the Fashion-MNIST test set scored by the same
checkpoint, and writes a histogram of -log p(x) for both and the AUROC of
telling them apart by it (MNIST = in-distribution, lower -log p(x)).
scripts/ood_fashion.sh makes the CSVs and calls this.

Usage:
  python -m reporting.ood --in_csv mnist.csv --out_csv fashion.csv \
      --figure reproduction/ood_fashion_mnist.png --json ood.json
"""

import csv
import io
import json

from absl import app
from absl import flags
import numpy as np

from mnist_vae import files

FLAGS = flags.FLAGS


def read_scores(path, column='nll'):
  """The `column` of an evaluate.py per-example CSV: float64 [n]."""
  with open(path) as f:
    return np.array([float(row[column]) for row in csv.DictReader(f)])


def auroc(in_scores, out_scores):
  """Probability that an out-of-distribution example scores a higher -log p(x)
  than an in-distribution one (ties count half): the area under the ROC
  curve of the detector "out when -log p(x) > threshold"."""
  sorted_in = np.sort(in_scores)
  below = np.searchsorted(sorted_in, out_scores, side='left')
  at_or_below = np.searchsorted(sorted_in, out_scores, side='right')
  return float(np.sum(below + 0.5 * (at_or_below - below)) / (len(in_scores) * len(out_scores)))


def histogram_png(in_scores, out_scores, title):
  """PNG bytes of both histograms, or None without matplotlib."""
  try:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
  except ImportError:
    return None
  figure, axes = pyplot.subplots(figsize=(7, 4))
  high = np.percentile(np.concatenate([in_scores, out_scores]), 99.5)
  bins = np.linspace(0, high, 80)
  axes.hist(in_scores, bins, alpha=0.6, label='MNIST test (in distribution)')
  axes.hist(out_scores, bins, alpha=0.6, label='Fashion-MNIST test')
  axes.set_xlabel('-log p(x), nats (importance-weighted estimate)')
  axes.set_ylabel('images')
  axes.set_title(title)
  axes.legend()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', bbox_inches='tight')
  pyplot.close(figure)
  return buffer.getvalue()


def main(argv):
  del argv
  in_scores, out_scores = read_scores(FLAGS.in_csv), read_scores(FLAGS.out_csv)
  result = {
      'auroc': auroc(in_scores, out_scores),
      'in_mean_nll': float(np.mean(in_scores)),
      'out_mean_nll': float(np.mean(out_scores)),
      'in_examples': len(in_scores),
      'out_examples': len(out_scores),
  }
  png = histogram_png(in_scores, out_scores, 'AUROC %.4f' % result['auroc'])
  if png and FLAGS.figure:
    files.write(FLAGS.figure, png)
  if FLAGS.json:
    files.write_json(FLAGS.json, result)
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == '__main__':
  flags.DEFINE_string('in_csv', None, help='evaluate.py CSV of the MNIST test set.')
  flags.DEFINE_string('out_csv', None, help='evaluate.py CSV of Fashion-MNIST.')
  flags.DEFINE_string('figure', None, help='Where the histogram PNG goes.')
  flags.DEFINE_string('json', None, help='Where the figures go as JSON.')
  flags.mark_flags_as_required(['in_csv', 'out_csv'])
  app.run(main)
