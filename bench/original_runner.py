"""Runs the original TF1 script on TensorFlow 2 with only the shims it needs,
so that bench/throughput.py can time it against train.py.

  python bench/original_runner.py --script ORIGINAL.py --data_dir DATA --work_dir DIR

The script is executed as it is (nothing of it is copied here). What TF 2
lacks is supplied: the `tensorflow` module it imports is tf.compat.v1 in graph
mode (where `tf.nn.dropout(x, 0.9)` still means keep 0.9 and the queue
runners, `tf.log` and `tf.to_float` still exist), plus
`tf.contrib.layers.variance_scaling_initializer`, which TF 2 removed. It
reads ./train.tfrecords and ./test.tfrecords and writes its PNGs into the
working directory: DIR, with links to DATA's files. --steps shortens its
10,000-step loop (for a smoke test) by bounding `range` in its globals.
"""

import argparse
import os
import runpy
import sys
import types

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow.compat.v1 as tf_v1


def tensorflow_1_shim():
  """A module standing for TF 1.x's `tensorflow`: tf.compat.v1 and contrib's
  variance-scaling initializer (factor 2, fan-in, truncated normal)."""
  shim = types.ModuleType('tensorflow')
  shim.__dict__.update(
      {name: getattr(tf_v1, name) for name in dir(tf_v1) if not name.startswith('__')})
  shim.contrib = types.SimpleNamespace(
      layers=types.SimpleNamespace(
          variance_scaling_initializer=lambda: tf_v1.variance_scaling_initializer(
              scale=2.0, mode='fan_in', distribution='truncated_normal')))
  return shim


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--script', required=True, help='The original script.')
  parser.add_argument(
      '--data_dir', required=True, help='Directory with train.tfrecords and test.tfrecords.')
  parser.add_argument('--work_dir', required=True, help='Where it runs.')
  parser.add_argument(
      '--steps', type=int, default=None, help='Bound its training loop (smoke tests).')
  args = parser.parse_args()
  for name in ('train.tfrecords', 'test.tfrecords'):
    if not os.path.exists(os.path.join(args.data_dir, name)):
      parser.error('--data_dir: %s has no %s' % (args.data_dir, name))
  if not os.path.exists(args.script):
    parser.error('--script: %s does not exist' % args.script)
  os.makedirs(args.work_dir, exist_ok=True)
  for name in ('train.tfrecords', 'test.tfrecords'):
    link = os.path.join(args.work_dir, name)
    if not os.path.exists(link):
      os.symlink(os.path.abspath(os.path.join(args.data_dir, name)), link)
  os.chdir(args.work_dir)
  tf_v1.disable_eager_execution()
  sys.modules['tensorflow'] = tensorflow_1_shim()
  # Its globals only: `range` elsewhere (TensorFlow's own) stays the builtin.
  script_globals = {}
  if args.steps:
    script_globals['range'] = lambda *bounds: range(*(min(bound, args.steps) for bound in bounds))
  sys.argv = [args.script]
  runpy.run_path(args.script, init_globals=script_globals, run_name='__main__')


if __name__ == '__main__':
  main()
