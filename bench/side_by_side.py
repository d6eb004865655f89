"""What running two jobs at once can gain on this machine: the float32
multiply rate of one process using every core, against the same number of
one-thread processes side by side.

`scripts/reproduce.sh --jobs N` runs N trainings at once with the threads
split between them. That gains only where one process leaves cores idle;
this measures the bound for the products that dominate a training: chains
of [512, 1024] x [1024, 1024] products (TensorFlow's oneDNN kernel), each
contender for --seconds, alternating --rounds times.

  python bench/side_by_side.py [--seconds 15] [--rounds 2] [--json FILE]

Prints each round's GFLOP/s and the ratio (the processes side by side over
the one process): `--jobs N` cannot make a reproduction faster than this
ratio allows.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import files

flags.DEFINE_float(
    'seconds', 15.0, lower_bound=0.1, help='How long each contender multiplies, per round.')
flags.DEFINE_integer(
    'rounds', 2, lower_bound=1, help='Rounds; the contenders alternate within each.')
flags.DEFINE_integer(
    'processes',
    max(2,
        os.cpu_count() or 1),
    lower_bound=2,
    help='One-thread processes run side by side (and the '
    'threads of the single process).')
flags.DEFINE_string('json', None, 'Also write the figures to this file.')
# Internal: set in the processes this program starts.
flags.DEFINE_integer(
    'multiply_threads', 0, lower_bound=0, help='Multiply on this many threads and print GFLOP/s.')
FLAGS = flags.FLAGS

ROWS, DEPTH, CHAIN = 512, 1024, 10
FLOPS_PER_CHAIN = CHAIN * 2 * ROWS * DEPTH * DEPTH


def multiply_gflops(threads, seconds):
  """GFLOP/s of product chains on `threads` threads, in this process."""
  graph = tf.Graph()
  with graph.as_default():
    left = tf.Variable(tf.random.normal([ROWS, DEPTH]))
    right = tf.Variable(tf.random.normal([DEPTH, DEPTH]))
    product = left
    for _ in range(CHAIN):
      # Scaled so the chain stays finite: the rate, not the values, counts.
      product = tf.matmul(product, right) * 1e-3
    total = tf.reduce_sum(product)
  config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
  with tf.Session(graph=graph, config=config) as session:
    session.run([left.initializer, right.initializer])
    run = session.make_callable(total)
    for _ in range(3):  # Warm-up: oneDNN picks and caches its kernel.
      run()
    chains, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      run()
      chains += 1
    return chains * FLOPS_PER_CHAIN / (time.perf_counter() - start) / 1e9


def _start(threads, seconds):
  return subprocess.Popen([
      sys.executable,
      os.path.abspath(__file__), '--multiply_threads',
      str(threads), '--seconds',
      str(seconds)
  ],
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)


def _gflops_of(process):
  stdout, stderr = process.communicate()
  if process.returncode:
    raise RuntimeError('a multiplying process exited %d: %s' % (process.returncode, stderr[-2000:]))
  return float(stdout.split()[-1])


def measure(processes, seconds, rounds):
  """{'one_process': [GFLOP/s per round], 'side_by_side': [[GFLOP/s of each
  process] per round], 'ratio': median of the rounds' ratios, 'processes'}."""
  one, side = [], []
  for _ in range(rounds):
    one.append(_gflops_of(_start(processes, seconds)))
    # All started before any is waited for, so they multiply at once.
    started = [_start(1, seconds) for _ in range(processes)]
    try:
      side.append([_gflops_of(process) for process in started])
    finally:  # One failed: the others would multiply on for nothing.
      for process in started:
        if process.poll() is None:
          process.kill()
  ratios = [sum(rates) / alone for rates, alone in zip(side, one)]
  return {
      'one_process': one,
      'side_by_side': side,
      'ratio': float(np.median(ratios)),
      'processes': processes
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Unexpected arguments: %s' % ' '.join(argv[1:]))
  if FLAGS.multiply_threads:
    print('%.3f' % multiply_gflops(FLAGS.multiply_threads, FLAGS.seconds))
    return
  figures = measure(FLAGS.processes, FLAGS.seconds, FLAGS.rounds)
  for alone, side in zip(figures['one_process'], figures['side_by_side']):
    print('one process on %d threads: %.0f GFLOP/s; %d one-thread processes '
          'side by side: %s = %.0f GFLOP/s (%.2fx)' %
          (FLAGS.processes, alone, FLAGS.processes, ' + '.join(
              '%.0f' % rate for rate in side), sum(side), sum(side) / alone))
  print('side by side / one process (median of %d rounds): %.2fx; '
        '--jobs %d can run at most this much faster than --jobs 1' %
        (FLAGS.rounds, figures['ratio'], FLAGS.processes))
  if FLAGS.json:
    files.write_json(FLAGS.json, figures)


if __name__ == '__main__':
  app.run(main)
