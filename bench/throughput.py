"""Training throughput of this project against a TF2 peer and the matmul ceiling.

Measures, in one process and one run, alternating the contenders round by
round and reporting medians (a noisy machine slows all of them alike):

  1. this project's training loop as train.py runs it (build_training_graph +
     MonitoredTrainingSession with its hooks), fed from the TFRecord pipeline,
     with SGD (the default), with Adam, and with --matmul_precision=bfloat16;
  2. the same loop fed from memory, so the input pipeline's cost shows;
  3. the input pipeline alone;
  4. the plain TF2 peer of bench/tf2_peer.py;
  5. the ceiling: the matrix multiplies of one step alone (forward and both
     backward products of every layer);
  6. MNIST -> TFRecords conversion, evaluation throughput, and the time of
     evaluate.py's k=1000 importance-weighted NLL of the test set (timed on
     500 images and scaled, as the whole takes minutes);
  7. peak RSS of a real train.py process.

Usage:
  python bench/throughput.py                      # full run, ~3 minutes
  python bench/throughput.py --json bench.json
  python bench/throughput.py --smoke              # seconds, synthetic data
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import json
import platform
import resource
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import evaluation
from mnist_vae import input_pipeline
from mnist_vae import train
from mnist_vae import training
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import idx
from mnist_vae.data_prep import records
import tf2_peer  # bench/tf2_peer.py, beside this script.

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string('mnist_dir', os.path.join(REPO_ROOT, os.pardir, 'shared', 'mnist'),
                    help='The four MNIST IDX files (converted, and timed).')
flags.DEFINE_integer('rounds', 5, lower_bound=1,
                     help='Rounds; each measures every contender once.')
flags.DEFINE_integer('steps', 200, lower_bound=1,
                     help='Training steps per contender per round.')
flags.DEFINE_integer('batch_size', 128, lower_bound=1, help='Batch size.')
flags.DEFINE_boolean('smoke', False,
                     help='Tiny synthetic data, 1 round of 3 steps: checks that '
                     'every measurement runs, in seconds.')
flags.DEFINE_string('json', None, help='Also write the results to this file.')
FLAGS = flags.FLAGS

# Layer shapes of one step's matrix multiplies; the encoder's mean and stddev
# layers are one [500, 40] product's worth.
LAYER_SHAPES = ((784, 500), (500, 500), (500, 40), (20, 500), (500, 500), (500, 784))


def _synthetic_idx_dir(directory):
  rng = np.random.RandomState(0)
  images = (rng.rand(600, 28, 28) > 0.8).astype(np.uint8) * 255
  contents = {idx.TRAIN_IMAGES: idx.encode_images(images[:500]),
              idx.TRAIN_LABELS: idx.encode_labels(np.arange(500, dtype=np.uint8) % 10),
              idx.TEST_IMAGES: idx.encode_images(images[500:]),
              idx.TEST_LABELS: idx.encode_labels(np.arange(100, dtype=np.uint8) % 10)}
  os.makedirs(directory)
  for name, data in contents.items():
    with open(os.path.join(directory, name), 'wb') as f:
      f.write(data)
  return directory


def _timed(function, count):
  """Runs function() and returns count / seconds."""
  start = time.perf_counter()
  function()
  return count / (time.perf_counter() - start)


def _train_defaults():
  """run_training's settings with train.py's default flag values."""
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values(['train.py'])
  return train.settings_from_flags(flag_values)


class ProjectLoop(object):
  """train.py's graph and session; feeds from TFRecords or from memory."""

  def __init__(self, splits, work_dir, optimizer, batch_size, steps,
               memory_images=None, matmul_precision='float32'):
    self._steps, self._batch_size = steps, batch_size
    train_images_fn, self._load = None, None
    if memory_images is not None:
      train_images_fn = lambda: self._memory_batches(memory_images, batch_size)
    # train.py's defaults, from its own flag definitions.
    settings = _train_defaults()
    self.graph = training.build_training_graph(
        train_path=splits['train'][0], num_train=splits['train'][1],
        fixed_images=np.zeros((100, records.IMAGE_PIXELS), np.float32),
        model_size=settings['model_size'],
        optimizer_settings=settings['optimizer_settings']._replace(
            optimizer=optimizer),
        step_settings=settings['step_settings']._replace(
            batch_size=batch_size, matmul_precision=matmul_precision),
        eval_batch_size=settings['eval_batch_size'],
        train_images_fn=train_images_fn)
    with self.graph.tf_graph.as_default():
      self.session = training.monitored_session(
          self.graph, work_dir, settings['schedule']._replace(max_steps=10**9),
          tf.ConfigProto())
    if self._load:
      self.session.run_step_fn(lambda step_context: step_context.session.run(
          self._load[0], {self._load[1]: memory_images}))
    for _ in range(20):
      self.session.run(self.graph.train_fetches)

  def _memory_batches(self, images_uint8, batch_size):
    # A local variable is filled once through a placeholder: a numpy constant
    # would be copied into the graph (and each checkpoint's .meta).
    data = tf.Variable(tf.zeros(images_uint8.shape, tf.uint8), trainable=False,
                       collections=[tf.GraphKeys.LOCAL_VARIABLES])
    placeholder = tf.placeholder(tf.uint8, images_uint8.shape)
    self._load = (data.assign(placeholder), placeholder)
    index = tf.random.uniform([batch_size], 0, images_uint8.shape[0], tf.int32)
    return input_pipeline.normalize(tf.gather(data, index))

  def measure(self):
    def run():
      # In the graph, as in train.py: the checkpoint hook may save mid-run.
      with self.graph.tf_graph.as_default():
        for _ in range(self._steps):
          self.session.run(self.graph.train_fetches)
    return _timed(run, self._steps * self._batch_size)

  def close(self):
    with self.graph.tf_graph.as_default():  # Closing saves, which needs the graph.
      self.session.close()

  def evaluation_examples_per_sec(self, images):
    return self.session.run_step_fn(lambda step_context: _timed(
        lambda: self.graph.evaluator.evaluate(step_context.session, images),
        len(images)))


class PipelineAlone(object):
  """The training input pipeline with nothing consuming but a sum."""

  def __init__(self, path, num_examples, batch_size, steps):
    self._count = steps * 4 * batch_size
    graph = tf.Graph()
    with graph.as_default():
      iterator = tf.data.make_one_shot_iterator(input_pipeline.train_dataset(
          path, batch_size, seed=0, shuffle_buffer_size=num_examples))
      # Many batches per session.run, so the ~0.2 ms cost of a run does not
      # cap what is measured.
      self._batches = tf.while_loop(
          lambda i, total: i < steps * 4,
          lambda i, total: (i + 1, total + tf.reduce_sum(iterator.get_next())),
          [tf.constant(0), tf.constant(0.0)])
    self._session = tf.Session(graph=graph)
    self._session.run(self._batches)

  def measure(self):
    return _timed(lambda: self._session.run(self._batches), self._count)


class Tf2Peer(object):

  def __init__(self, images_uint8, batch_size, steps):
    self._step = tf2_peer.make_peer_step(images_uint8, batch_size)
    self._steps, self._batch_size = steps, batch_size
    for _ in range(20):
      self._step()

  def measure(self):
    def run():
      for _ in range(self._steps):
        loss = self._step()
      loss.numpy()
    return _timed(run, self._steps * self._batch_size)


class MatmulCeiling(object):
  """Every matrix multiply of a training step, and nothing else."""

  def __init__(self, batch_size, steps):
    graph = tf.Graph()
    with graph.as_default():
      products = []
      for fan_in, fan_out in LAYER_SHAPES:
        x = tf.Variable(tf.random.normal([batch_size, fan_in]))
        w = tf.Variable(tf.random.normal([fan_in, fan_out]))
        dy = tf.Variable(tf.random.normal([batch_size, fan_out]))
        products += [tf.matmul(x, w), tf.matmul(dy, w, transpose_b=True),
                     tf.matmul(x, dy, transpose_a=True)]
      self._step = tf.add_n([tf.reduce_sum(p) for p in products])
      init = tf.global_variables_initializer()
    self.flops_per_step = sum(3 * 2 * batch_size * a * b for a, b in LAYER_SHAPES)
    self._session = tf.Session(graph=graph)
    self._session.run(init)
    self._steps, self._batch_size = steps, batch_size
    for _ in range(20):
      self._session.run(self._step)

  def measure(self):
    def run():
      for _ in range(self._steps):
        self._session.run(self._step)
    return _timed(run, self._steps * self._batch_size)


def _importance_weighted_test_seconds(checkpoint_dir, test_path, num_images,
                                      num_test, iw_samples):
  """Seconds evaluate.py needs for the k-sample importance-weighted NLL of the
  whole test set, timed on its first `num_images` images and scaled."""
  checkpoint = tf.train.latest_checkpoint(checkpoint_dir)
  images = input_pipeline.read_first_images(test_path, num_images)
  with tf.Graph().as_default():
    evaluator = evaluation.Evaluator(checkpoints.model_size(checkpoint),
                                     iw_samples=iw_samples)
    with tf.Session() as session:
      checkpoints.restore(session, checkpoint)
      start = time.perf_counter()
      evaluator.evaluate(session, images)
      return (time.perf_counter() - start) * num_test / len(images)


def _train_images(path):
  batches = [images for images in tf.data.TFRecordDataset(path).batch(10000).map(
      lambda records: input_pipeline.parse_batch(records)[0])]
  return np.concatenate([b.numpy() for b in batches])


def _peak_rss_of_training(data_dir, validation_size, work_dir, steps):
  """Peak RSS (MiB) of a real train.py process with default settings."""
  command = [sys.executable, os.path.join(REPO_ROOT, 'train.py'),
             '--data_dir', data_dir, '--train_dir', work_dir,
             '--validation_size', str(validation_size),
             '--max_steps', str(steps), '--image_every_n_steps', str(max(steps // 2, 1)),
             '--eval_every_n_steps', str(max(steps // 2, 1))]
  before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  subprocess.run(command, check=True, capture_output=True,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return max(peak_kib, before) / 1024.0


def _cpu_flags():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return sorted(flag for flag in line.split()
                        if flag.startswith(('avx', 'amx', 'fma')))
  except OSError:
    pass
  return []


def run_benchmarks(*, mnist_dir, rounds, steps, batch_size, smoke):
  """Runs every measurement; returns a dict of results."""
  work = tempfile.mkdtemp(prefix='vae_bench_')
  if smoke or not os.path.exists(os.path.join(mnist_dir, idx.TRAIN_IMAGES + '.gz')):
    mnist_dir = _synthetic_idx_dir(os.path.join(work, 'idx'))
    validation_size = 100
  else:
    validation_size = 5000
  data_dir = os.path.join(work, 'data')
  start = time.perf_counter()
  info = convert_to_records.convert(mnist_dir, data_dir, validation_size=validation_size)
  conversion_sec = time.perf_counter() - start
  num_records = sum(info['num_examples'].values())
  splits = {split: (records.split_path(data_dir, split),
                    info['num_examples'][split]) for split in records.SPLITS}
  train_images = _train_images(splits['train'][0])

  contenders = {
      'train.py loop, TFRecords, sgd': ProjectLoop(
          splits, os.path.join(work, 'sgd'), 'sgd', batch_size, steps),
      'train.py loop, TFRecords, adam': ProjectLoop(
          splits, os.path.join(work, 'adam'), 'adam', batch_size, steps),
      'train.py loop, memory, sgd': ProjectLoop(
          splits, os.path.join(work, 'memory'), 'sgd', batch_size, steps,
          memory_images=train_images),
      'train.py loop, TFRecords, sgd, bfloat16 matmuls': ProjectLoop(
          splits, os.path.join(work, 'bf16'), 'sgd', batch_size, steps,
          matmul_precision='bfloat16'),
      'input pipeline alone': PipelineAlone(splits['train'][0], splits['train'][1],
                                            batch_size, steps),
      'TF2 peer (tf.function), sgd': Tf2Peer(train_images, batch_size, steps),
      'matmul ceiling': MatmulCeiling(batch_size, steps),
  }
  samples = {name: [] for name in contenders}
  for round_index in range(rounds):
    for name, contender in contenders.items():
      samples[name].append(contender.measure())
    print('round %d/%d done' % (round_index + 1, rounds), file=sys.stderr)
  medians = {name: float(np.median(values)) for name, values in samples.items()}
  project = contenders['train.py loop, TFRecords, sgd']
  evaluation = project.evaluation_examples_per_sec(
      input_pipeline.read_split_images(splits['test'][0]))
  ceiling = contenders['matmul ceiling']
  for contender in contenders.values():
    if isinstance(contender, ProjectLoop):
      contender.close()
  iw_samples = 20 if smoke else 1000
  iw_sec = _importance_weighted_test_seconds(
      os.path.join(work, 'sgd'), splits['test'][0], 50 if smoke else 500,
      splits['test'][1], iw_samples)
  rss_mib = _peak_rss_of_training(data_dir, validation_size,
                                  os.path.join(work, 'rss'),
                                  steps=5 if smoke else 300)
  return {
      'examples_per_sec': medians,
      'samples': samples,
      'matmul_gflops': medians['matmul ceiling'] * ceiling.flops_per_step / batch_size / 1e9,
      'conversion_sec': conversion_sec,
      'conversion_records_per_sec': num_records / conversion_sec,
      'evaluation_examples_per_sec': evaluation,
      'iw_nll_test_sec': iw_sec,
      'iw_samples': iw_samples,
      'train_peak_rss_mib': rss_mib,
      'machine': {'cpu_count': os.cpu_count(), 'cpu_flags': _cpu_flags(),
                  'tensorflow': tf.version.VERSION, 'python': platform.python_version()},
      'settings': {'rounds': rounds, 'steps': steps, 'batch_size': batch_size,
                   'smoke': smoke, 'num_train': splits['train'][1]},
  }


def format_report(results):
  rate = results['examples_per_sec']
  project = rate['train.py loop, TFRecords, sgd']
  lines = ['| measurement | examples/s | vs. train.py loop (TFRecords, sgd) |',
           '|---|---|---|']
  for name, value in rate.items():
    lines.append('| %s | %.0f | %.2fx |' % (name, value, value / project))
  lines += [
      '',
      'matmul ceiling: %.0f GFLOP/s' % results['matmul_gflops'],
      'MNIST -> TFRecords: %.2f s (%.0f records/s)' % (
          results['conversion_sec'], results['conversion_records_per_sec']),
      'evaluation (negative ELBO, test set): %.0f examples/s' %
      results['evaluation_examples_per_sec'],
      'importance-weighted NLL of the test set, k=%d (evaluate.py): %.0f s '
      '(timed on part of it, scaled)' % (results['iw_samples'], results['iw_nll_test_sec']),
      'peak RSS of train.py: %.0f MiB' % results['train_peak_rss_mib'],
      'CPU: %d cores, %s; TensorFlow %s' % (
          results['machine']['cpu_count'], ' '.join(results['machine']['cpu_flags']),
          results['machine']['tensorflow']),
      '',
      'targets (ratios of this run):',
  ]
  checks = [
      ('TFRecord loop / TF2 peer >= 1.2', project / rate['TF2 peer (tf.function), sgd'], 1.2),
      ('TFRecord loop / matmul ceiling >= 0.70', project / rate['matmul ceiling'], 0.70),
      ('TFRecord loop / memory loop >= 0.97', project / rate['train.py loop, memory, sgd'], 0.97),
      ('pipeline alone / TFRecord loop >= 10', rate['input pipeline alone'] / project, 10),
  ]
  for label, value, target in checks:
    lines.append('  %-42s %.2f  %s' % (label, value, 'met' if value >= target else 'NOT met'))
  lines.append('  %-42s %.2f  %s' % ('conversion seconds < 2', results['conversion_sec'],
                                     'met' if results['conversion_sec'] < 2 else 'NOT met'))
  lines.append('  %-42s %.0f  %s' % ('peak RSS MiB < 1536', results['train_peak_rss_mib'],
                                     'met' if results['train_peak_rss_mib'] < 1536 else 'NOT met'))
  return '\n'.join(lines)


def main(argv):
  del argv  # Unused.
  tf.get_logger().setLevel('ERROR')  # Checkpoint chatter of the contenders.
  rounds, steps = (1, 3) if FLAGS.smoke else (FLAGS.rounds, FLAGS.steps)
  results = run_benchmarks(mnist_dir=FLAGS.mnist_dir, rounds=rounds, steps=steps,
                           batch_size=FLAGS.batch_size, smoke=FLAGS.smoke)
  print(format_report(results))
  if FLAGS.json:
    with tf.io.gfile.GFile(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
