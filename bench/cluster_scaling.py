"""How far between-graph training scales: what a worker moves per step,
measured, and the throughput that follows for bigger clusters.

Measures, on this machine:
  - the bytes of the variables each parameter server holds (1, 2 and 4 ps,
    placed by train.py's replica_device_setter): what a worker pulls per
    step, and the gradients it pushes (the same sizes);
  - the bytes that actually cross the network per worker step, from the
    loopback counters of a network namespace of its own (as root: the
    program re-runs itself under `unshare --net`), for 1 ps + 1 worker and
    1 ps + 2 workers, as the difference of two job lengths (start-up and the
    final checkpoint cancel) over the difference of the steps the workers
    logged (asynchronous workers may run one step past --max_steps);
  - the wall time per global step of those jobs, of one process alone, and
    the spread of one process's step times (for synchronous stragglers);
  - the time a parameter server needs to apply one Adam update.
Then prints a table of the examples/s that 4, 8, 16 and 64 workers would
reach on 10 and 100 Gbit/s networks with 1, 2 and 4 parameter servers, for
asynchronous and synchronous training, naming what limits each cell.

Model behind the table (each worker a machine like this one):
  asynchronous: a worker's step = its compute + pulling the variables +
    pushing the gradients through its own link; the job is also capped by
    each ps's link (its share of the bytes per step, each way) and by each
    ps applying its share of the updates.
  synchronous (all workers aggregated): a round = the slowest of W workers'
    compute (drawn from the measured spread) + pulls and pushes, where a ps
    link now carries W workers' traffic at once + one update.

Usage (as root, ~3 minutes):
  python bench/cluster_scaling.py --data_dir data/mnist [--json FILE]
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import platform
import re
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import cluster
from mnist_vae import fast_step
from mnist_vae import files
from mnist_vae import model
from mnist_vae import training
from mnist_vae.data_prep import records

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE_ENV = 'VAE_SCALING_NETNS'

flags.DEFINE_string('data_dir', 'data/mnist', 'TFRecords (train.py --data_dir).')
flags.DEFINE_integer(
    'short_steps', 200, lower_bound=1, help='Global steps of the shorter job of each pair.')
flags.DEFINE_integer(
    'long_steps', 1200, lower_bound=2, help='Global steps of the longer job of each pair.')
flags.DEFINE_integer(
    'step_samples', 300, lower_bound=10, help='Single steps timed for the spread of step times.')
flags.DEFINE_integer(
    'adam_updates', 200, lower_bound=1, help='Adam updates timed for the ps update cost.')
flags.DEFINE_boolean(
    'allow_shared_network',
    False,
    help='Measure on the machine\'s own loopback when no '
    'namespace can be made (other traffic then counts too).')
flags.DEFINE_string('json', None, 'Also write the figures to this file.')
FLAGS = flags.FLAGS

BATCH = 128
NETWORK = architectures.network()  # The original MLP at its default sizes.
WORKER_COUNTS = (4, 8, 16, 64)
LINKS_GBIT = (10, 100)
PS_COUNTS = (1, 2, 4)


def bytes_per_ps(num_ps):
  """Bytes of trainable variables on each of `num_ps` parameter servers, as
  train.py's device function places the model and Adam's state."""
  hosts = ['127.0.0.1:%d' % (1000 + i) for i in range(num_ps)]
  role = cluster.ClusterRole({'ps': hosts, 'worker': ['127.0.0.1:999']}, 'worker', 0, True, 0, 1)
  graph = tf.Graph()
  with graph.as_default(), tf.device(cluster.device_function(role)):
    images = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
    outputs = model.inference(images, NETWORK, fast_step.dropout(0.9))
    model.training(
        model.loss(images, outputs, NETWORK).neg_elbo, training.make_optimizer('adam', 1e-3))
    shares = [0] * num_ps
    for variable in tf.trainable_variables():
      task = int(variable.device.split('task:')[1].split('/')[0])
      shares[task] += variable.shape.num_elements() * 4
  return shares


def _loopback_bytes():
  with open('/proc/net/dev') as f:
    for line in f:
      name, _, counters = line.partition(':')
      if name.strip() == 'lo':
        return int(counters.split()[8])  # Transmitted bytes.
  raise RuntimeError('no loopback interface in /proc/net/dev')


LOCAL_STEPS_LINE = re.compile(rb'Worker \d+ ran (\d+) local steps')


def run_job(num_workers, steps, work_dir):
  """(wall seconds, loopback bytes, steps the workers ran) of a 1 ps +
  num_workers job of train.py (upstream settings, no evaluation or images
  during training). Asynchronous workers stop when the global step reaches
  `steps`, so the last of them may still finish one more: the count is what
  each worker logs it ran, one pull and one push each."""
  ports = cluster.free_local_ports(1 + num_workers)
  ps_hosts = '127.0.0.1:%d' % ports[0]
  worker_hosts = ','.join('127.0.0.1:%d' % p for p in ports[1:])
  common = [
      sys.executable,
      os.path.join(REPO_ROOT, 'train.py'), '--data_dir', FLAGS.data_dir, '--train_dir', work_dir,
      '--optimizer', 'adam', '--max_steps',
      str(steps), '--eval_every_n_steps', '0', '--image_every_n_steps', '0',
      '--save_checkpoint_steps',
      str(10 * steps), '--log_every_n_steps', '100', '--ps_hosts', ps_hosts, '--worker_hosts',
      worker_hosts, '--nosync_replicas'
  ]  # Per global step: one worker's pull and push.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  before, start = _loopback_bytes(), time.perf_counter()
  processes = [
      subprocess.Popen(
          common + ['--job_name', 'ps', '--task_index', '0'],
          env=env,
          stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL)
  ]
  processes += [
      subprocess.Popen(
          common
          + ['--job_name', 'worker', '--task_index', str(i)],
          env=env,
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE) for i in range(num_workers)
  ]
  local_steps = 0
  try:
    for index, process in enumerate(processes):
      _, stderr = process.communicate(timeout=1800)
      if process.returncode:
        raise RuntimeError('task %d of the %d-worker job exited %d: %s' %
                           (index, num_workers, process.returncode,
                            (stderr or b'').decode()[-2000:]))
      if index:
        ran = LOCAL_STEPS_LINE.search(stderr)
        if not ran:
          raise RuntimeError('worker %d of the %d-worker job did not log its '
                             'local steps: %s' % (index - 1, num_workers, stderr.decode()[-2000:]))
        local_steps += int(ran.group(1))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  return time.perf_counter() - start, _loopback_bytes() - before, local_steps


def one_process_seconds(steps, work_dir):
  command = [
      sys.executable,
      os.path.join(REPO_ROOT, 'train.py'), '--data_dir', FLAGS.data_dir, '--train_dir', work_dir,
      '--optimizer', 'adam', '--max_steps',
      str(steps), '--eval_every_n_steps', '0', '--image_every_n_steps', '0',
      '--save_checkpoint_steps',
      str(10 * steps)
  ]
  start = time.perf_counter()
  subprocess.run(
      command, check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  return time.perf_counter() - start


def step_time_samples(count=300):
  """Seconds of `count` single training steps of one process (memory-fed,
  Adam): the spread synchronous rounds wait on."""
  graph = tf.Graph()
  with graph.as_default():
    images = tf.random.uniform([BATCH, records.IMAGE_PIXELS])
    outputs = model.inference(images, NETWORK, fast_step.dropout(0.9))
    train_op, _ = model.training(
        model.loss(images, outputs, NETWORK).neg_elbo, training.make_optimizer('adam', 1e-3))
    init = tf.global_variables_initializer()
  with tf.Session(graph=graph) as session:
    session.run(init)
    for _ in range(30):
      session.run(train_op)
    samples = []
    for _ in range(count):
      start = time.perf_counter()
      session.run(train_op)
      samples.append(time.perf_counter() - start)
  return np.asarray(samples)


def adam_apply_seconds(count=200):
  """Seconds for one Adam update of every variable (what the ps run per step)."""
  graph = tf.Graph()
  with graph.as_default():
    images = tf.placeholder(tf.float32, [None, records.IMAGE_PIXELS])
    model.inference(images, NETWORK)
    variables = tf.trainable_variables()
    gradients = [tf.Variable(tf.random.normal(v.shape) * 1e-3, trainable=False) for v in variables]
    apply = tf.train.AdamOptimizer(1e-3).apply_gradients(zip(gradients, variables))
    init = tf.global_variables_initializer()
  with tf.Session(graph=graph) as session:
    session.run(init)
    for _ in range(20):
      session.run(apply)
    start = time.perf_counter()
    for _ in range(count):
      session.run(apply)
    return (time.perf_counter() - start) / count


def expected_max(samples, workers, draws=2000, seed=0):
  """E[max of `workers` step times], resampling the measured ones."""
  rng = np.random.RandomState(seed)
  return float(np.mean(np.max(rng.choice(samples, (draws, workers)), axis=1)))


def projected(figures, workers, link_gbit, num_ps, synchronous):
  """(examples/s, limit) of a cluster of `workers` machines like this one."""
  link = link_gbit * 1e9 / 8  # bytes/s each way.
  wire = figures['wire_overhead']  # wire bytes per payload byte.
  model_bytes = sum(figures['bytes_per_ps'][str(num_ps)]) * wire
  biggest_share = max(figures['bytes_per_ps'][str(num_ps)]) * wire
  share_fraction = biggest_share / model_bytes
  compute = figures['step_sec_median']
  apply_sec = figures['adam_apply_sec'] * share_fraction
  if not synchronous:
    # A worker's step: its compute, then pulling and pushing through its link.
    transfer = 2 * model_bytes / link
    worker_part = "workers' compute" if compute >= transfer else "workers' links"
    rates = {
        worker_part: workers / (compute + transfer),
        "ps's link": link / biggest_share,
        "ps's updates": 1.0 / apply_sec
    }
    limit = min(rates, key=rates.get)
    return rates[limit] * BATCH, limit
  slowest = expected_max(figures['step_samples'], workers)
  # All workers pull and push at once: a ps link carries every worker's share.
  busiest_link = ("ps's link" if workers * biggest_share > model_bytes else "workers' links")
  terms = {
      "workers' compute": compute,
      'sync stragglers': slowest - compute,
      busiest_link: 2 * max(model_bytes, workers * biggest_share) / link,
      "ps's updates": apply_sec
  }
  round_sec = sum(terms.values())
  return workers * BATCH / round_sec, max(terms, key=terms.get)


def measure(work):
  figures = {'bytes_per_ps': {str(p): bytes_per_ps(p) for p in PS_COUNTS}}
  short, long = FLAGS.short_steps, FLAGS.long_steps
  for workers in (1, 2):
    jobs = [
        run_job(workers, steps, os.path.join(work, 'w%d_%d' % (workers, steps)))
        for steps in (short, long)
    ]
    (t1, b1, s1), (t2, b2, s2) = jobs
    figures['%d_workers' % workers] = {
        'wire_bytes_per_step': (b2 - b1) / (s2 - s1),
        'sec_per_step': (t2 - t1) / (s2 - s1),
        'local_steps': [s1, s2]
    }
    print('%d-worker jobs done' % workers, file=sys.stderr)
  alone = [
      one_process_seconds(steps, os.path.join(work, 'alone_%d' % steps)) for steps in (short, long)
  ]
  figures['one_process_sec_per_step'] = (alone[1] - alone[0]) / (long - short)
  samples = step_time_samples(FLAGS.step_samples)
  figures['step_samples'] = samples.tolist()
  figures['step_sec_median'] = float(np.median(samples))
  figures['step_sec_p90'] = float(np.percentile(samples, 90))
  figures['adam_apply_sec'] = adam_apply_seconds(FLAGS.adam_updates)
  payload = 2 * sum(figures['bytes_per_ps']['1'])
  figures['wire_overhead'] = figures['1_workers']['wire_bytes_per_step'] / payload
  return figures


def report(figures):
  model_bytes = sum(figures['bytes_per_ps']['1'])
  lines = [
      'Variables a worker pulls per step: %.2f MB; gradients it pushes: %.2f MB '
      '(float32, %d parameters).' % (model_bytes / 1e6, model_bytes / 1e6, model_bytes // 4),
      'Largest share on one ps: %s.'
      % ', '.join('%s ps: %.2f MB' % (p, max(s) / 1e6) for p, s in figures['bytes_per_ps'].items()),
  ]
  for workers in (1, 2):
    f = figures['%d_workers' % workers]
    lines.append('1 ps + %d worker(s), measured: %.2f MB on the wire per global step '
                 '(%.2fx the payload of pull + push), %.1f ms per global step.' %
                 (workers, f['wire_bytes_per_step'] / 1e6, f['wire_bytes_per_step'] /
                  (2 * model_bytes), 1e3 * f['sec_per_step']))
  lines += [
      'One process alone: %.1f ms per step (whole train.py); single steps in a '
      'session: median %.1f ms, 90th percentile %.1f ms.' %
      (1e3 * figures['one_process_sec_per_step'], 1e3 * figures['step_sec_median'],
       1e3 * figures['step_sec_p90']),
      'One Adam update of all variables on a ps: %.2f ms.' % (1e3 * figures['adam_apply_sec']),
      '',
      '| workers | link | mode | ' + ' | '.join('%d ps' % p for p in PS_COUNTS) + ' |',
      '|---|---|---|' + '---|' * len(PS_COUNTS),
  ]
  for workers in WORKER_COUNTS:
    for link in LINKS_GBIT:
      for synchronous in (False, True):
        cells = []
        for num_ps in PS_COUNTS:
          rate, limit = projected(figures, workers, link, num_ps, synchronous)
          cells.append('%.0fk ex/s (%s)' % (rate / 1e3, limit))
        lines.append('| %d | %d Gbit/s | %s | %s |' %
                     (workers, link, 'sync' if synchronous else 'async', ' | '.join(cells)))
  lines.append('')
  lines.append('CPU: %s, %d cores; TensorFlow %s' %
               (_cpu_name(), os.cpu_count(), tf.version.VERSION))
  return '\n'.join(lines)


def _cpu_name():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _in_own_namespace():
  """Re-runs this program in a network namespace with only loopback; False
  when that is impossible."""
  if os.environ.get(NAMESPACE_ENV):
    subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
    return True
  flags_for_unshare = ['--net'] if os.geteuid() == 0 else ['--map-root-user', '--net']
  if subprocess.run(['unshare'] + flags_for_unshare + ['true'], capture_output=True).returncode:
    return False
  result = subprocess.run(
      ['unshare'] + flags_for_unshare + [sys.executable] + sys.argv,
      env=dict(os.environ, **{NAMESPACE_ENV: '1'}))
  sys.exit(result.returncode)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Unexpected arguments: %s' % ' '.join(argv[1:]))
  if not os.path.exists(records.split_path(FLAGS.data_dir, 'train')):
    raise app.UsageError('--data_dir %s has no TFRecords; make them with '
                         'vae-convert-mnist first' % FLAGS.data_dir)
  FLAGS.data_dir = os.path.abspath(FLAGS.data_dir)
  if not _in_own_namespace() and not FLAGS.allow_shared_network:
    raise app.UsageError('Cannot make a network namespace here (needs root or '
                         'user namespaces); --allow_shared_network measures on '
                         'the shared loopback, where other traffic counts too.')
  tf.get_logger().setLevel('ERROR')
  with tempfile.TemporaryDirectory(prefix='vae_scaling_') as work:
    figures = measure(work)
  print(report(figures))
  if FLAGS.json:
    files.write_json(FLAGS.json, figures)


if __name__ == '__main__':
  app.run(main)
