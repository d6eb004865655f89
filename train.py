"""Trains the MLP variational autoencoder on MNIST TFRecords (tf.compat.v1 graph).

Data flow: IDX files -> data_prep -> TFRecords -> input_pipeline (tf.data)
-> model (graph) -> this session loop -> PNGs, checkpoints, summaries, metrics.

Usage:
  python train.py --mnist_dir ../shared/mnist --train_dir /tmp/run
  python train.py --flagfile my_run.flags   # one --flag=value per line

Re-running with the same --train_dir resumes from its latest checkpoint.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow loads.

import collections
import signal
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from data_prep import convert_to_records
from data_prep import download
from data_prep import idx
import atomic_files
import cluster
import image_grids
import input_pipeline
import model

def define_flags():
  """Defines train.py's flags (called by its entry point only, so that other
  programs can import this module)."""
  flags.DEFINE_string('data_dir', None,
                      help='Directory with train/validation/test.tfrecords. '
                      'Default: data/<dataset>. Made from --mnist_dir (or '
                      '--download) when the files are missing.')
  flags.DEFINE_string('train_dir', 'runs/vae',
                      help='Directory for checkpoints, TensorBoard summaries, '
                      'images/ and metrics.json. An existing checkpoint here is '
                      'resumed.')
  flags.DEFINE_string('mnist_dir', None,
                      help='Directory with the four MNIST IDX files (gzip or '
                      'not), converted into --data_dir when that has no '
                      'TFRecords.')
  flags.DEFINE_boolean('download', False,
                       help='When --data_dir has no TFRecords, first download '
                       'the IDX files that are missing (SHA256-verified) into '
                       '--mnist_dir, or DATA_DIR/raw.')
  flags.DEFINE_enum('dataset', 'mnist', convert_to_records.DATASETS,
                    help='Dataset to prepare when the TFRecords are missing.')
  flags.DEFINE_integer('validation_size', 5000, lower_bound=0,
                       help='When preparing TFRecords: leading training images '
                       'held out as the validation split.')
  flags.DEFINE_integer('batch_size', 128, lower_bound=1,
                       help='Training examples per step.')
  flags.DEFINE_enum('optimizer', 'sgd', model.OPTIMIZERS,
                    help='sgd is the original script\'s; adam is the upstream '
                    'repository\'s; momentum uses 0.9.')
  flags.DEFINE_float('learning_rate', 0.001, lower_bound=0.0,
                     help='Optimizer learning rate.')
  flags.DEFINE_integer('max_steps', 10000, lower_bound=0,
                       help='Train until the global step reaches this value.')
  flags.DEFINE_integer('latent_dim', 20, lower_bound=1,
                       help='Number of dimensions in the latent code z.')
  flags.DEFINE_integer('hidden_units', 500, lower_bound=1,
                       help='Width of each of the two hidden layers of the '
                       'encoder and of the decoder.')
  flags.DEFINE_float('keep_prob', 0.9,
                     help='Dropout keep probability in (0, 1] after each hidden '
                     'layer while training (1 = no dropout). Evaluation, '
                     'reconstruction and sampling never use dropout.')
  flags.DEFINE_integer('log_every_n_steps', 100, lower_bound=1,
                       help='Log losses and examples/s, and write scalar '
                       'summaries, every this many steps.')
  flags.DEFINE_integer('image_every_n_steps', 1000, lower_bound=0,
                       help='Write reconstruction and prior-sample PNGs every '
                       'this many steps (and at the end); 0 = only at the end.')
  flags.DEFINE_integer('eval_every_n_steps', 1000, lower_bound=0,
                       help='Evaluate the negative ELBO on the validation set '
                       'every this many steps; 0 = only at the end.')
  flags.DEFINE_integer('save_checkpoint_steps', 1000, lower_bound=1,
                       help='Save a checkpoint every this many steps (and at '
                       'the end).')
  flags.DEFINE_integer('seed', 0, help='Seed of initialisation, dropout, z '
                       'draws and the shuffle order.')
  flags.DEFINE_integer('shuffle_buffer_size', 0, lower_bound=0,
                       help='Examples held by the shuffle buffer; 0 = the whole '
                       'training set (a uniform shuffle every epoch).')
  flags.DEFINE_integer('eval_batch_size', 1000, lower_bound=1,
                       help='Batch size of evaluation (does not change results).')
  flags.DEFINE_integer('intra_op_threads', 0, lower_bound=0,
                       help='Threads inside one op; 0 = TensorFlow picks.')
  flags.DEFINE_integer('inter_op_threads', 0, lower_bound=0,
                       help='Ops run in parallel; 0 = TensorFlow picks.')
  flags.DEFINE_enum('binarize', 'none', input_pipeline.BINARIZE_MODES,
                    help='none: grey levels, as the original; static: one fixed '
                    'Bernoulli sample per image; dynamic: a new sample per use '
                    'in training (evaluation then uses the static sample).')
  flags.DEFINE_enum('matmul_precision', 'float32', tuple(MATMUL_DTYPES),
                    help='bfloat16: training multiplies in bfloat16 (variables, '
                    'loss and evaluation stay float32). Faster only on CPUs '
                    'with native bfloat16 (AVX512_BF16, AMX) or on GPUs.')
  flags.DEFINE_string('ps_hosts', '',
                      help='Cluster: comma-separated host:port of the parameter '
                      'servers (or give TF_CONFIG instead of these four flags).')
  flags.DEFINE_string('worker_hosts', '',
                      help='Cluster: comma-separated host:port of the workers; '
                      'worker 0 is the chief.')
  flags.DEFINE_string('job_name', '', help='Cluster: ps or worker.')
  flags.DEFINE_integer('task_index', 0, lower_bound=0,
                       help='Cluster: index of this task within its job.')
  flags.DEFINE_boolean('sync_replicas', False,
                       help='Cluster: aggregate gradients of '
                       '--replicas_to_aggregate workers per update '
                       '(SyncReplicasOptimizer) instead of asynchronous updates.')
  flags.DEFINE_integer('replicas_to_aggregate', 0, lower_bound=0,
                       help='With --sync_replicas: gradients per update; 0 = '
                       'the number of workers.')
  flags.DEFINE_string('buckets', None,
                      help='Alibaba PAI\'s name for --data_dir.')
  flags.DEFINE_string('checkpointDir', None,
                      help='Alibaba PAI\'s name for --train_dir.')
  flags.register_validator('keep_prob', lambda value: 0.0 < value <= 1.0,
                           message='--keep_prob must be in (0, 1]')


FLAGS = flags.FLAGS

MATMUL_DTYPES = {'float32': tf.float32, 'bfloat16': tf.bfloat16}
NUM_GRID_IMAGES = 100
# Prior draws for samples_step_*.png come from this fixed seed, not --seed, so
# grids of different runs and of a resumed run show the same z.
SAMPLE_GRID_SEED = 20
EVAL_NOISE_SEED = 7
IMAGES_SUBDIR = 'images'
METRICS_FILE = 'metrics.json'


class TrainingError(RuntimeError):
  """Training cannot start or go on; the message says why."""


# Errors whose message is the whole story: reported in one line, no traceback.
EXPECTED_ERRORS = (TrainingError, idx.IdxError, input_pipeline.RecordsError,
                   convert_to_records.ConversionError, download.DownloadError,
                   cluster.ClusterError)


def _prepare_data(data_dir, mnist_dir, download_idx, dataset, validation_size):
  """Makes the TFRecords if needed; returns {split: (path, num_examples)}."""
  if not convert_to_records.tfrecords_exist(data_dir):
    convert_to_records.prepare(data_dir, mnist_dir=mnist_dir,
                               download_idx=download_idx, dataset=dataset,
                               validation_size=validation_size)
  splits = {}
  for split, name in convert_to_records.SPLIT_FILES.items():
    path = os.path.join(data_dir, name)
    splits[split] = (path, input_pipeline.inspect_records(path))
  return splits


def _latest_checkpoint_step(train_dir):
  checkpoint = tf.train.latest_checkpoint(train_dir)
  if checkpoint is None:
    return checkpoint, 0
  return checkpoint, int(tf.train.load_variable(checkpoint, 'global_step'))


def _check_checkpoint_matches(checkpoint, variables):
  """Raises TrainingError when `checkpoint` was written by another model size."""
  saved = dict(tf.train.list_variables(checkpoint))
  for variable in variables:
    name = variable.op.name
    shape = variable.shape.as_list()
    if name not in saved:
      raise TrainingError('Checkpoint %s has no variable %s: it was not written '
                          'by this model. Use another --train_dir.'
                          % (checkpoint, name))
    if saved[name] != shape:
      raise TrainingError(
          'Checkpoint %s holds %s with shape %s, but --latent_dim/'
          '--hidden_units ask for %s. Pass the flags it was trained with, or '
          'use another --train_dir.' % (checkpoint, name, saved[name], shape))


class _Evaluator(object):
  """Deterministic negative ELBO over whole splits (dropout off).

  One z per example, drawn by a stateless generator seeded with the batch
  index, so the same weights always give the same numbers.
  """

  def __init__(self, split_paths, batch_size, hidden_units, latent_dim,
               binarize='none'):
    self._split_paths = split_paths
    self._path = tf.placeholder(tf.string, [])
    iterator = tf.data.make_initializable_iterator(
        input_pipeline.eval_dataset(self._path, batch_size, binarize))
    self._initializer = iterator.initializer
    batch_index, images = iterator.get_next()
    noise = tf.random.stateless_normal(
        tf.stack([tf.shape(images)[0], latent_dim]),
        seed=tf.stack([tf.constant(EVAL_NOISE_SEED, tf.int64), batch_index]))
    outputs = model.inference(images, hidden_units, latent_dim, keep_prob=1.0,
                              noise=noise)
    terms = model.loss(images, outputs)
    self._sums = {
        'reconstruction': -tf.reduce_sum(tf.cast(terms.log_likelihood, tf.float64)),
        'kl_divergence': tf.reduce_sum(tf.cast(terms.kl, tf.float64)),
        'num_examples': tf.shape(images)[0],
    }

  def evaluate(self, session, split):
    """Returns {neg_elbo, reconstruction, kl_divergence, num_examples}."""
    session.run(self._initializer,
                feed_dict={self._path: self._split_paths[split]})
    totals = {key: 0 for key in self._sums}
    while True:
      try:
        batch = session.run(self._sums)
      except tf.errors.OutOfRangeError:
        break
      for key, value in batch.items():
        totals[key] += value
    count = max(int(totals['num_examples']), 1)
    result = {key: float(totals[key] / count)
              for key in ('reconstruction', 'kl_divergence')}
    result['neg_elbo'] = result['reconstruction'] + result['kl_divergence']
    result['num_examples'] = int(totals['num_examples'])
    return result


class _ImageWriter(object):
  """Reconstructions of fixed test images and decodings of fixed prior draws."""

  def __init__(self, fixed_images, hidden_units, latent_dim, images_dir):
    self._images_dir = images_dir
    self._fixed_images = fixed_images
    self._prior_draws = np.random.RandomState(SAMPLE_GRID_SEED).standard_normal(
        (NUM_GRID_IMAGES, latent_dim)).astype(np.float32)
    # Fed, not constants: constants would copy them into every .meta file.
    self._images = tf.placeholder(tf.float32, fixed_images.shape)
    self._z = tf.placeholder(tf.float32, self._prior_draws.shape)
    # Reconstructions decode the posterior mean: no sampling noise, so the
    # grid changes only when the weights do.
    z_mean, _ = model.encode(self._images, hidden_units, latent_dim)
    output_size = fixed_images.shape[1]
    self._reconstructions = model.probabilities(
        model.decode(z_mean, hidden_units, output_size))
    self._samples = model.probabilities(
        model.decode(self._z, hidden_units, output_size))

  def write_inputs(self):
    path = os.path.join(self._images_dir, 'inputs.png')
    if not tf.io.gfile.exists(path):
      image_grids.write_png(path, image_grids.sample_grid(self._fixed_images))

  def write(self, session, step, summary_writer):
    reconstructions, samples = session.run(
        [self._reconstructions, self._samples],
        feed_dict={self._images: self._fixed_images, self._z: self._prior_draws})
    grids = {
        'reconstructions': image_grids.reconstruction_grid(self._fixed_images,
                                                           reconstructions),
        'samples': image_grids.sample_grid(samples),
    }
    summary = tf.Summary()
    for name, grid in grids.items():
      png = image_grids.write_png(
          os.path.join(self._images_dir, '%s_step_%06d.png' % (name, step)), grid)
      summary.value.add(tag='images/%s' % name, image=tf.Summary.Image(
          height=grid.shape[0], width=grid.shape[1], colorspace=1,
          encoded_image_string=png))
    summary_writer.add_summary(summary, step)


def _add_scalar_summaries(summary_writer, step, prefix, values):
  summary = tf.Summary()
  for key in ('neg_elbo', 'reconstruction', 'kl_divergence'):
    summary.value.add(tag='%s/%s' % (prefix, key), simple_value=values[key])
  summary_writer.add_summary(summary, step)


TrainingGraph = collections.namedtuple('TrainingGraph', [
    'graph',          # the tf.Graph holding everything below.
    'train_fetches',  # dict: the train step's new global step and loss terms.
    'global_step',
    'evaluator',      # _Evaluator over the validation and test splits.
    'image_writer',   # _ImageWriter for the fixed grids.
    'saver',
    'uninitialized',  # names of variables not yet initialised (cluster).
    'sync_hook',      # SyncReplicasOptimizer's session hook, or None.
    'release_tokens', # lets sync workers blocked at the end finish, or None.
])


def build_training_graph(*, train_path, num_train, eval_paths, fixed_images,
                         images_dir, batch_size, optimizer, learning_rate,
                         latent_dim, hidden_units, keep_prob, seed,
                         shuffle_buffer_size, eval_batch_size, initial_step=0,
                         matmul_precision='float32', train_images_fn=None,
                         role=None, sync_replicas=False,
                         replicas_to_aggregate=0, binarize='none'):
  """Builds input pipeline, training tower, train op, evaluator and image towers.

  Args:
    train_images_fn: builds the training batches, float32 [batch_size, 784];
      None reads `train_path` through `input_pipeline.train_dataset` (the
      benchmark passes an in-memory source to measure the pipeline's cost).
    role: a cluster.ClusterRole for between-graph replication (variables on
      the parameter servers, this worker's share of the data), or None.
    sync_replicas, replicas_to_aggregate: aggregate the gradients of this
      many workers (default all) per update, with SyncReplicasOptimizer.
    Others: as for `run_training`.

  Returns:
    A TrainingGraph.
  """
  graph = tf.Graph()
  with graph.as_default(), tf.device(cluster.device_function(role)):
    # Each worker of a cluster draws its own dropout masks and z noise; the
    # chief's (worker 0) seed also initialises the variables.
    tf.set_random_seed(seed + (role.worker_index if role else 0))
    num_shards = role.num_workers if role else 1
    with tf.name_scope('input'):
      if train_images_fn:
        images = train_images_fn()
      else:
        # A resumed run continues with a new shuffle order rather than
        # replaying the first epoch's.
        images = tf.data.make_one_shot_iterator(input_pipeline.train_dataset(
            train_path, batch_size, seed=seed + initial_step,
            shuffle_buffer_size=shuffle_buffer_size or num_train,
            num_shards=num_shards,
            shard_index=role.worker_index if role else 0,
            binarize=binarize)).get_next()
    with tf.name_scope('training_tower'):
      outputs = model.inference(images, hidden_units, latent_dim, keep_prob,
                                matmul_dtype=MATMUL_DTYPES[matmul_precision])
      loss_terms = model.loss(images, outputs)
    model.add_loss_summaries(loss_terms, 'train')
    optimizer_op = model.make_optimizer(optimizer, learning_rate)
    sync_hook = release_tokens = None
    if sync_replicas:
      optimizer_op = tf.train.SyncReplicasOptimizer(
          optimizer_op, replicas_to_aggregate=replicas_to_aggregate or num_shards,
          total_num_replicas=num_shards)
    train_op, global_step = model.training(loss_terms.neg_elbo, optimizer_op)
    if sync_replicas:
      sync_hook = optimizer_op.make_session_run_hook(role is None or role.is_chief)
      if role is None or role.is_chief:
        release_tokens = optimizer_op.get_init_tokens_op(num_tokens=num_shards)
    with tf.control_dependencies([train_op]):
      step_after_update = global_step.read_value()
    with tf.name_scope('eval'):
      evaluator = _Evaluator(eval_paths, eval_batch_size, hidden_units,
                             latent_dim, binarize)
    with tf.name_scope('images'):
      image_writer = _ImageWriter(fixed_images, hidden_units, latent_dim,
                                  images_dir)
    saver = tf.train.Saver(max_to_keep=5)
    uninitialized = None
    if role and not role.is_chief:
      uninitialized = tf.report_uninitialized_variables(tf.global_variables())
  train_fetches = {'step': step_after_update, 'neg_elbo': loss_terms.neg_elbo,
                   'reconstruction': loss_terms.reconstruction,
                   'kl_divergence': loss_terms.kl_divergence}
  return TrainingGraph(graph, train_fetches, global_step, evaluator,
                       image_writer, saver, uninitialized, sync_hook,
                       release_tokens)


def monitored_session(graph, train_dir, max_steps, save_checkpoint_steps,
                      log_every_n_steps, session_config, master='',
                      is_chief=True):
  """The MonitoredTrainingSession of a run: restores or initialises, then
  saves checkpoints and summaries as it goes (chief only), and stops at
  max_steps."""
  hooks = [tf.train.StopAtStepHook(last_step=max_steps)]
  if graph.sync_hook:
    hooks.append(graph.sync_hook)
  return tf.train.MonitoredTrainingSession(
      master=master, is_chief=is_chief, checkpoint_dir=train_dir,
      scaffold=tf.train.Scaffold(saver=graph.saver), hooks=hooks,
      save_checkpoint_steps=save_checkpoint_steps,
      save_summaries_steps=log_every_n_steps, log_step_count_steps=0,
      # SyncReplicasOptimizer's queue runner would hold a closing session
      # for the default 120 s.
      stop_grace_period_secs=5, config=session_config)


class _StopSignals(object):
  """Turns the first SIGTERM or SIGINT into a request to stop after this step.

  Preemption sends SIGTERM and Ctrl-C sends SIGINT; either way the loop ends
  at a step boundary, so the checkpoint saved on the way out is complete. A
  second signal gets the default behaviour (it kills at once).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame  # Unused.
    self.received = signal.Signals(signum)
    signal.signal(signum, signal.SIG_DFL)
    logging.warning('Received %s: saving a checkpoint after this step and '
                    'exiting (send it again to stop at once).',
                    self.received.name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _numerics_error(error, step, learning_rate, optimizer, train_dir):
  """A TrainingError explaining a failed numerics check of `model.training`."""
  what = ('loss' if model.NUMERICS_CHECK_LOSS in error.message
          else 'gradients')
  kind = 'NaN' if 'NaN' in error.message else 'Inf'
  return TrainingError(
      'The %s became %s at step %d; the update was not applied. Likely cause: '
      'the learning rate (%g) is too high for --optimizer=%s. The last '
      'checkpoint in %s is untouched: resume from it with a lower '
      '--learning_rate.' % (what, kind, step, learning_rate, optimizer,
                            train_dir))


def _evaluate_splits(session, evaluator, splits, step, summary_writer):
  """Negative ELBO of the validation and test splits, logged and summarised."""
  results = {}
  for split in ('validation', 'test'):
    if not splits[split][1]:
      continue
    result = evaluator.evaluate(session, split)
    _add_scalar_summaries(summary_writer, step, split, result)
    logging.info('step %d: %s neg_elbo %.3f (reconstruction %.3f, kl %.3f) '
                 'over %d examples', step, split, result['neg_elbo'],
                 result['reconstruction'], result['kl_divergence'],
                 result['num_examples'])
    results[split] = result
  return results


def _crossed(previous_step, step, every):
  """True when a multiple of `every` lies in (previous_step, step].

  In a cluster the global step moves by more than one between this worker's
  steps, so `step % every == 0` would miss most multiples.
  """
  return bool(every) and step // every > previous_step // every


def _wait_for_tfrecords(data_dir, timeout_sec=600):
  """Non-chief workers leave data preparation to the chief, and wait for it."""
  deadline = time.time() + timeout_sec
  while not convert_to_records.tfrecords_exist(data_dir):
    if time.time() > deadline:
      raise TrainingError('No TFRecords appeared in %s within %d s (the chief '
                          'prepares them)' % (data_dir, timeout_sec))
    time.sleep(1.0)


def run_training(*, train_dir, data_dir=None, mnist_dir=None, download_idx=False,
                 dataset='mnist', validation_size=5000, batch_size=128,
                 optimizer='sgd', learning_rate=0.001, max_steps=10000,
                 latent_dim=20, hidden_units=500, keep_prob=0.9,
                 log_every_n_steps=100, image_every_n_steps=1000,
                 eval_every_n_steps=1000, save_checkpoint_steps=1000, seed=0,
                 shuffle_buffer_size=0, eval_batch_size=1000,
                 intra_op_threads=0, inter_op_threads=0,
                 matmul_precision='float32', role=None, sync_replicas=False,
                 replicas_to_aggregate=0, binarize='none'):
  """Trains (or resumes), writes images and checkpoints, evaluates at the end.

  Arguments mirror the flags of the same names; `role` (a
  cluster.ClusterRole, None for a single process) makes this process a
  parameter server, the chief, or another worker of a cluster. SIGTERM or
  SIGINT stops the run after the current step with a checkpoint and the
  metrics so far.

  Returns:
    The metrics dict also written to train_dir/metrics.json (by the chief);
    its 'interrupted_by' names the signal that stopped the run, if one did.
  """
  start_time = time.time()
  config = {key: value for key, value in locals().items()
            if key not in ('start_time', 'role')}
  session_config = tf.ConfigProto(
      intra_op_parallelism_threads=intra_op_threads,
      inter_op_parallelism_threads=inter_op_threads)
  if role and role.job_name == 'ps':
    cluster.run_parameter_server(role, session_config)
    return {'job': 'ps', 'task_index': role.task_index}
  is_chief = role is None or role.is_chief
  server = None
  if role:
    # Talk to the parameter servers and to this task only: a chief must not
    # wait for workers that have not started.
    session_config.device_filters.extend(['/job:ps', cluster.device_of(role)])
    server = tf.train.Server(tf.train.ClusterSpec(role.cluster),
                             job_name=role.job_name, task_index=role.task_index,
                             config=session_config)
    logging.info('Worker %d of %d (%s), chief: %s.', role.worker_index,
                 role.num_workers, cluster.device_of(role), is_chief)

  data_dir = data_dir or 'data/' + dataset
  if not is_chief:
    _wait_for_tfrecords(data_dir)
  splits = _prepare_data(data_dir, mnist_dir, download_idx, dataset,
                         validation_size)
  num_train = splits['train'][1]
  if batch_size > num_train:
    raise TrainingError('--batch_size=%d is larger than the %d examples of %s'
                        % (batch_size, num_train, splits['train'][0]))
  images_dir = os.path.join(train_dir, IMAGES_SUBDIR)
  try:
    tf.io.gfile.makedirs(images_dir)
  except tf.errors.OpError as e:
    raise TrainingError('Cannot create --train_dir %s: %s'
                        % (train_dir, e.message)) from e
  checkpoint, initial_step = _latest_checkpoint_step(train_dir)
  if checkpoint and is_chief:
    if initial_step >= max_steps:
      logging.info('%s is already at step %d >= --max_steps=%d: evaluating it '
                   'without training.', checkpoint, initial_step, max_steps)
    else:
      logging.info('Resuming from %s (step %d).', checkpoint, initial_step)

  graph = build_training_graph(
      train_path=splits['train'][0], num_train=num_train,
      eval_paths={split: path for split, (path, count) in splits.items()
                  if count},
      fixed_images=input_pipeline.read_first_images(
          splits['test'][0], NUM_GRID_IMAGES, binarize),
      images_dir=images_dir, batch_size=batch_size, optimizer=optimizer,
      learning_rate=learning_rate, latent_dim=latent_dim,
      hidden_units=hidden_units, keep_prob=keep_prob, seed=seed,
      shuffle_buffer_size=shuffle_buffer_size, eval_batch_size=eval_batch_size,
      initial_step=initial_step, matmul_precision=matmul_precision, role=role,
      sync_replicas=sync_replicas, replicas_to_aggregate=replicas_to_aggregate,
      binarize=binarize)
  step = initial_step
  values, last_validation = None, None
  throughputs = []
  local_steps = 0
  with graph.graph.as_default(), _StopSignals() as stop_signals:
    if checkpoint:
      _check_checkpoint_matches(checkpoint, tf.global_variables())
    summary_writer = None
    if is_chief:
      summary_writer = tf.summary.FileWriterCache.get(train_dir)
      graph.image_writer.write_inputs()
    else:
      cluster.wait_for_initialization(graph.graph, graph.uninitialized,
                                      server.target, session_config)
    last_log_time, last_log_step, side_work_sec = time.time(), step, 0.0
    with monitored_session(graph, train_dir, max_steps, save_checkpoint_steps,
                           log_every_n_steps, session_config,
                           master=server.target if server else '',
                           is_chief=is_chief) as session:
      # StopAtStepHook only looks after a step, so a run restored at
      # max_steps would otherwise train one step past it.
      while (step < max_steps and not session.should_stop()
             and not stop_signals.received):
        try:
          values = session.run(graph.train_fetches)
        except tf.errors.InvalidArgumentError as e:
          if 'non-finite' not in e.message:
            raise
          raise _numerics_error(e, step + 1, learning_rate, optimizer,
                                train_dir) from e
        previous_step, step = step, int(values['step'])
        local_steps += 1
        if _crossed(previous_step, step, log_every_n_steps):
          now = time.time()
          examples_per_sec = ((step - last_log_step) * batch_size
                              / max(now - last_log_time - side_work_sec, 1e-9))
          throughputs.append(examples_per_sec)
          logging.info('step %d: neg_elbo %.3f (reconstruction %.3f, kl %.3f), '
                       '%.0f examples/s', step, values['neg_elbo'],
                       values['reconstruction'], values['kl_divergence'],
                       examples_per_sec)
          last_log_time, last_log_step, side_work_sec = now, step, 0.0
        if not is_chief:
          continue
        side_start = time.time()
        # run_step_fn hands over the raw session: hooks do not fire for these.
        if _crossed(previous_step, step, image_every_n_steps):
          session.run_step_fn(lambda step_context: graph.image_writer.write(
              step_context.session, step, summary_writer))
        if (_crossed(previous_step, step, eval_every_n_steps)
            and splits['validation'][1]):
          last_validation = session.run_step_fn(
              lambda step_context: graph.evaluator.evaluate(
                  step_context.session, 'validation'))
          last_validation['step'] = step
          _add_scalar_summaries(summary_writer, step, 'validation',
                                last_validation)
          logging.info('step %d: validation neg_elbo %.3f', step,
                       last_validation['neg_elbo'])
        side_work_sec += time.time() - side_start
      if graph.release_tokens is not None:
        # Synchronous workers still waiting for a token would block forever.
        session.run_step_fn(
            lambda step_context: step_context.session.run(graph.release_tokens))
    if role:
      logging.info('Worker %d ran %d local steps; global step %d.',
                   role.worker_index, local_steps, step)
    if not is_chief:
      if not stop_signals.received:
        cluster.report_done(role, server.target, session_config)
      return {'job': role.job_name, 'task_index': role.task_index,
              'local_steps': local_steps, 'step': step,
              'interrupted_by': stop_signals.received and stop_signals.received.name}
    # Closing the session above saved a checkpoint of the last step.
    final_checkpoint = tf.train.latest_checkpoint(train_dir)

    if stop_signals.received:
      metrics = {'step': step, 'checkpoint': final_checkpoint,
                 'interrupted_by': stop_signals.received.name,
                 'last_minibatch': {key: float(value) for key, value
                                    in (values or {}).items() if key != 'step'},
                 'last_validation': last_validation}
      logging.warning('Stopped by %s at step %d; checkpoint %s. Re-run the same '
                      'command to resume.', stop_signals.received.name, step,
                      final_checkpoint)
    else:
      # Evaluate exactly the checkpoint that was saved.
      with tf.Session(server.target if server else '',
                      config=session_config) as session:
        graph.saver.restore(session, final_checkpoint)
        step = int(session.run(graph.global_step))
        graph.image_writer.write(session, step, summary_writer)
        metrics = {'step': step, 'checkpoint': final_checkpoint}
        metrics.update(_evaluate_splits(session, graph.evaluator, splits, step,
                                        summary_writer))
      if role:
        cluster.report_done(role, server.target, session_config)
    summary_writer.flush()
  metrics['train_examples_per_sec'] = (float(np.median(throughputs))
                                       if throughputs else None)
  metrics['local_steps'] = local_steps
  metrics['wall_time_sec'] = time.time() - start_time
  metrics['config'] = config
  atomic_files.write_json(os.path.join(train_dir, METRICS_FILE), metrics)
  logging.info('Wrote %s', os.path.join(train_dir, METRICS_FILE))
  return metrics


def _parse_flags(argv):
  """absl's flag parsing, except that flags this program does not define are
  returned, to be logged, instead of being fatal: job launchers such as PAI
  add their own (--tables, --outputs, ...)."""
  try:
    return FLAGS(argv, known_only=True)
  except flags.Error as error:
    sys.stderr.write('FATAL Flags parsing error: %s\nPass --helpshort or '
                     '--helpfull to see help on flags.\n' % error)
    sys.exit(1)


def main(argv):
  # TensorFlow's logger has a handler of its own; absl's already prints.
  tf.get_logger().handlers.clear()
  if argv[1:]:
    logging.warning('Ignoring arguments this program does not use: %s',
                    ' '.join(argv[1:]))
  try:
    role = cluster.resolve_role(os.environ.get('TF_CONFIG'), FLAGS.ps_hosts,
                                FLAGS.worker_hosts, FLAGS.job_name,
                                FLAGS.task_index)
    metrics = run_training(
        train_dir=FLAGS.checkpointDir or FLAGS.train_dir,
        data_dir=FLAGS.data_dir or FLAGS.buckets,
        mnist_dir=FLAGS.mnist_dir, download_idx=FLAGS.download,
        dataset=FLAGS.dataset, validation_size=FLAGS.validation_size,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, max_steps=FLAGS.max_steps,
        latent_dim=FLAGS.latent_dim, hidden_units=FLAGS.hidden_units,
        keep_prob=FLAGS.keep_prob, log_every_n_steps=FLAGS.log_every_n_steps,
        image_every_n_steps=FLAGS.image_every_n_steps,
        eval_every_n_steps=FLAGS.eval_every_n_steps,
        save_checkpoint_steps=FLAGS.save_checkpoint_steps, seed=FLAGS.seed,
        shuffle_buffer_size=FLAGS.shuffle_buffer_size,
        eval_batch_size=FLAGS.eval_batch_size,
        intra_op_threads=FLAGS.intra_op_threads,
        inter_op_threads=FLAGS.inter_op_threads,
        matmul_precision=FLAGS.matmul_precision, role=role,
        sync_replicas=FLAGS.sync_replicas,
        replicas_to_aggregate=FLAGS.replicas_to_aggregate,
        binarize=FLAGS.binarize)
  except EXPECTED_ERRORS as e:
    # One line names the problem; --verbosity=1 adds the traceback.
    logging.error('%s', e, exc_info=logging.level_debug())
    return 1
  if metrics.get('interrupted_by'):
    return 128 + signal.Signals[metrics['interrupted_by']].value
  return 0


def run():
  """Console-script entry point."""
  define_flags()
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
