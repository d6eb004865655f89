"""The parts of a training run that train.py assembles: its settings, its graph
and its session.

  build_training_graph()  input pipeline -> training tower -> train op, plus
                          the evaluator and the image grids over the same
                          variables
  monitored_session()     restores or initialises, saves checkpoints,
                          stops at max_steps
  StepRunner              runs a training step, through the session's hooks
                          only on the steps where they have work
  StopSignals             SIGTERM / SIGINT -> stop after the current step

The settings are namedtuples whose fields are named as train.py's flags, so
the flags are their only defaults and the recorded configuration is their
union.
"""

import collections
import signal
import threading

from absl import logging
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import cluster
from mnist_vae import evaluation
from mnist_vae import fast_step
from mnist_vae import images
from mnist_vae import input_pipeline
from mnist_vae import learning_rates
from mnist_vae import model

# The settings of a training run, each filled from train.py's flags of the
# same names (settings.fill), whose defaults are these.
#
# Where the training batches come from, and how the TFRecords are made when
# data_dir has none (data_dir None: data/<dataset>; validation_size and
# validation_from None: as existing TFRecords were made, else 5000 and
# 'first').
DataSource = collections.namedtuple(
    'DataSource',
    ['data_dir', 'mnist_dir', 'download', 'dataset', 'validation_size', 'validation_from'],
    defaults=(None, None, False, 'mnist', None, None))
# The network: architectures.network's arguments (hidden_units None: the
# architecture's own).
NetworkSettings = collections.namedtuple(
    'NetworkSettings', ['architecture', 'hidden_units', 'latent_dim'],
    defaults=(architectures.DEFAULT_ARCHITECTURE, None, 20))
# When things happen, in global steps (max_steps None: at the end of the
# learning-rate schedule).
Schedule = collections.namedtuple(
    'Schedule', [
        'max_steps', 'log_every_n_steps', 'image_every_n_steps', 'eval_every_n_steps',
        'save_checkpoint_steps', 'keep_checkpoint_every_n_steps'
    ],
    defaults=(10000, 100, 1000, 1000, 1000, 0))
# `optimizer` is the optimizer's name, one of OPTIMIZERS; `adam_*` are Adam's
# moments' decay rates and epsilon. `learning_rate_schedule` ('' for a constant
# learning_rate) is learning_rates.parse's text, its lengths in
# `learning_rate_schedule_unit`.
# `simulated_staleness` > 0 delays every gradient by that many steps
# (cluster.StaleGradientOptimizer).
# `kl_weight` (beta) and `kl_warmup_steps` shape the objective minimized:
# reconstruction + weight * KL, the weight rising linearly from 0 to beta over
# the warm-up (model.kl_weight_at).
OptimizerSettings = collections.namedtuple(
    'OptimizerSettings', [
        'optimizer', 'learning_rate', 'learning_rate_schedule', 'learning_rate_schedule_unit',
        'adam_beta1', 'adam_beta2', 'adam_epsilon', 'simulated_staleness', 'kl_weight',
        'kl_warmup_steps'
    ],
    defaults=('sgd', 0.001, '', 'epochs', 0.9, 0.999, 1e-8, 0, 1.0, 0))
# How each training step sees the data.
# `steps_per_call` > 1 runs that many steps, updates included, inside one
# compiled loop per session call (fast_step.compiled_training_loop).
# `train_iw_samples` K > 1 draws K z per image and maximizes `train_bound`
# (model.BOUNDS) over them; `train_kl` is how the ELBO's KL term is estimated
# (model.KL_ESTIMATES).
StepSettings = collections.namedtuple(
    'StepSettings', [
        'batch_size', 'keep_prob', 'seed', 'shuffle_buffer_size', 'binarize', 'matmul_precision',
        'steps_per_call', 'train_iw_samples', 'train_bound', 'train_kl'
    ],
    defaults=(128, 0.9, 0, 0, 'none', 'float32', 1, 1, 'iwae', 'closed_form'))
# Where the run writes, and the batch size of its evaluations.
RunSettings = collections.namedtuple(
    'RunSettings', ['train_dir', 'eval_batch_size'], defaults=('runs/vae', 1000))


def session_config(threads):
  """The ConfigProto of a settings.Threads."""
  config = tf.ConfigProto(
      intra_op_parallelism_threads=threads.intra_op_threads,
      inter_op_parallelism_threads=threads.inter_op_threads)
  # Grappler's memory optimizer rewrites a large gradient AddN into a
  # TemporaryVariable accumulation, which XLA cannot compile: the compiled step
  # of a wide network (e.g. --hidden_units 8000) would fail to build.
  config.graph_options.rewrite_options.memory_optimization = (
      rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)
  return config


TrainingGraph = collections.namedtuple(
    'TrainingGraph',
    [
        'tf_graph',  # the tf.Graph holding everything below.
        'train_fetches',  # dict: the global step after the update, loss terms.
        'global_step',
        'evaluator',  # evaluation.Evaluator over the training variables.
        'grid_writer',  # images.GridWriter for the fixed grids.
        'saver',
        'sync',  # cluster.SyncReplicasParts, or None.
        'steps_to_run',  # the compiled loop's int32 [] placeholder, or None.
        'local_init_feed',  # what its local variables' initializer is fed, or None.
    ])


def build_training_graph(*,
                         train_path,
                         num_train,
                         fixed_images,
                         network,
                         optimizer_settings,
                         step_settings,
                         eval_batch_size,
                         initial_step=0,
                         worker=None,
                         sync_replicas=None,
                         train_images_fn=None,
                         output_bias=None):
  """Builds the training step and, over the same variables, evaluation and
  image towers.

  Args:
    train_path: the training TFRecord file.
    num_train: its number of examples (the default shuffle buffer).
    fixed_images: float32 [images.NUM_GRID_IMAGES, 784] for the grids.
    network: architectures.Network.
    optimizer_settings: OptimizerSettings.
    step_settings: StepSettings.
    eval_batch_size: examples per evaluation batch.
    initial_step: the global step training starts from (a resumed run
      shuffles anew instead of replaying the first epoch's order).
    worker: the cluster.Worker this process is (variables on the parameter
      servers, this worker's share of the data), or None for one process.
    sync_replicas: cluster.SyncReplicas, or None for asynchronous updates;
      only a cluster with two or more workers synchronizes.
    train_images_fn: builds the training batches, float32 [batch_size, 784];
      None reads `train_path` (the benchmark passes an in-memory source).
    output_bias: float32 [784], the initial output biases of a network that
      starts them at the training mean's logit (model.create_variables).

  Returns:
    A TrainingGraph.
  """
  role = worker.role if worker else None
  num_shards = role.num_workers if role else 1
  shard_index = role.worker_index if role else 0
  seed = step_settings.seed
  per_call = step_settings.steps_per_call
  # A compiled loop gathers its batches from the whole split, kept in the
  # graph's memory (read here, outside the graph: the reading is eager).
  pixels_value = (
      input_pipeline.read_split_pixels(train_path, step_settings.binarize)
      if per_call > 1 and not train_images_fn else None)
  local_init_feed = None
  graph = tf.Graph()
  with graph.as_default(), tf.device(cluster.device_function(role)):
    # Each worker of a cluster draws its own dropout masks and z noise; the
    # chief's (worker 0) seed also initialises the variables.
    tf.set_random_seed(seed + shard_index)
    with tf.name_scope('input'):
      if train_images_fn:
        train_images = train_images_fn()
      elif pixels_value is not None:
        # Fed once when the session starts: a constant would be copied into
        # the graph (and every checkpoint's .meta); a local variable is not
        # saved in checkpoints.
        initial_pixels = tf.placeholder(tf.uint8, pixels_value.shape)
        pixels = tf.Variable(
            initial_pixels,
            trainable=False,
            name='train_pixels',
            collections=[tf.GraphKeys.LOCAL_VARIABLES])
        local_init_feed = {initial_pixels: pixels_value}
        # Each call's batches as indices: one batch for each step it may take.
        train_images = tf.data.make_one_shot_iterator(
            input_pipeline.train_indices(
                len(pixels_value), step_settings.batch_size, seed + initial_step,
                step_settings.shuffle_buffer_size
                or num_train).batch(per_call, drop_remainder=True)).get_next()
      else:
        train_images = tf.data.make_one_shot_iterator(
            input_pipeline.train_dataset(
                train_path,
                step_settings.batch_size,
                seed=seed + initial_step,
                shuffle_buffer_size=step_settings.shuffle_buffer_size or num_train,
                num_shards=num_shards,
                shard_index=shard_index,
                binarize=step_settings.binarize)).get_next()
    stages, ends = (
        learning_rate_stages(optimizer_settings, num_train, step_settings.batch_size)
        if optimizer_settings.learning_rate_schedule else (None, None))
    if per_call > 1:
      train_fetches, steps_to_run = _compiled_loop(train_images, network, optimizer_settings,
                                                   step_settings, stages, ends, output_bias,
                                                   None if pixels_value is None else pixels.value())
      sync = None
    else:
      train_fetches, sync = _single_step(train_images, network, optimizer_settings, step_settings,
                                         stages, ends, output_bias, role, sync_replicas)
      steps_to_run = None
    global_step = tf.train.get_global_step()
    evaluator = evaluation.Evaluator(network, batch_size=eval_batch_size)
    with tf.name_scope('images'):
      grid_writer = images.GridWriter(fixed_images, network)
    # Relative paths in the `checkpoint` file: a run directory keeps working
    # when it is moved or copied off the disk it was trained on.
    saver = tf.train.Saver(max_to_keep=5, save_relative_paths=True)
  return TrainingGraph(graph, train_fetches, global_step, evaluator, grid_writer, saver, sync,
                       steps_to_run, local_init_feed)


def _single_step(train_images, network, optimizer_settings, step_settings, stages, ends,
                 output_bias, role, sync_replicas):
  """One step per call: the compiled step's gradients applied by the
  optimizer's kernels (through a cluster's synchronization). Returns the
  train fetches and the cluster.SyncReplicasParts (or None)."""
  kl_weight = _kl_weight(optimizer_settings)
  with tf.name_scope('training_tower'):
    step = fast_step.compiled_training_step(
        train_images,
        network,
        step_settings.keep_prob,
        model.MATMUL_DTYPES[step_settings.matmul_precision],
        kl_weight,
        output_bias=output_bias,
        iw_samples=step_settings.train_iw_samples,
        bound=step_settings.train_bound,
        train_kl=step_settings.train_kl)
  learning_rate = optimizer_settings.learning_rate
  if stages:
    learning_rate = learning_rates.rate_at(tf.train.get_global_step(), stages, ends)
  optimizer = make_optimizer(optimizer_settings, learning_rate)
  if optimizer_settings.simulated_staleness:
    optimizer = cluster.StaleGradientOptimizer(optimizer, optimizer_settings.simulated_staleness)
  synchronous = cluster.effective_sync(sync_replicas, role).sync_replicas
  if synchronous:
    optimizer = cluster.synchronize(optimizer, sync_replicas, role)
  train_op, global_step = model.training(
      step.objective, optimizer, grads_and_vars=step.grads_and_vars, gradient_sum=step.gradient_sum)
  sync = cluster.sync_parts(optimizer, role) if synchronous else None
  with tf.control_dependencies([train_op]):
    step_after_update = global_step.read_value()
  loss_terms = step.loss_terms
  train_fetches = {
      'step': step_after_update,
      'neg_elbo': loss_terms.neg_elbo,
      'reconstruction': loss_terms.reconstruction,
      'kl_divergence': loss_terms.kl_divergence
  }
  if kl_weight is not None:
    train_fetches.update(objective=step.objective, kl_weight=kl_weight)
  elif step.objective is not loss_terms.neg_elbo:
    train_fetches.update(objective=step.objective)
  if stages:
    train_fetches.update(learning_rate=learning_rate)
  return train_fetches, sync


def _compiled_loop(train_blocks, network, optimizer_settings, step_settings, stages, ends,
                   output_bias, pixels):
  """Up to steps_per_call steps per call in one compiled loop, the updates
  inside it (one process only). Returns the train fetches and the
  steps-to-run placeholder."""
  settings = optimizer_settings
  kl_weight_at = None
  if settings.kl_weight != 1.0 or settings.kl_warmup_steps:
    kl_weight_at = lambda step: model.kl_weight_at(  # noqa: E731
        step, settings.kl_weight, settings.kl_warmup_steps)
  with tf.name_scope('training_tower'):
    loop = fast_step.compiled_training_loop(
        train_blocks,
        network,
        make_optimizer(settings),
        step_settings.keep_prob,
        model.MATMUL_DTYPES[step_settings.matmul_precision],
        learning_rate_at=(lambda step: learning_rates.rate_at(step, stages, ends))
        if stages else None,
        kl_weight_at=kl_weight_at,
        output_bias=output_bias,
        iw_samples=step_settings.train_iw_samples,
        bound=step_settings.train_bound,
        train_kl=step_settings.train_kl,
        pixels=pixels,
        binarize=step_settings.binarize)
  return loop.fetches, loop.steps_to_run


OPTIMIZERS = ('sgd', 'adam', 'adagrad', 'rmsprop', 'momentum', 'rmsprop_keras')


class KerasRMSPropOptimizer(tf.train.RMSPropOptimizer):
  """RMSProp as Keras 3 defines it: the mean squares start at zero (TF1's at
  one) and epsilon is 1e-7; the update is TF1's kernel's, lr g / sqrt(ms +
  epsilon). Its slots are named for it, so that a checkpoint tells the two
  apart."""

  def __init__(self, learning_rate):
    super().__init__(learning_rate, decay=0.9, momentum=0.0, epsilon=1e-7, name='RMSPropKeras')

  def _create_slots(self, var_list):
    for variable in var_list:
      self._zeros_slot(variable, 'rms', self._name)
      self._zeros_slot(variable, 'momentum', self._name)


def learning_rate_stages(optimizer_settings, num_train, batch_size):
  """([learning_rates.Stage], the global step at which each ends) of the
  settings' schedule, epochs being num_train // batch_size steps."""
  stages = learning_rates.parse(optimizer_settings.learning_rate_schedule)
  return stages, learning_rates.stage_ends(stages, optimizer_settings.learning_rate_schedule_unit,
                                           num_train // batch_size)


def make_optimizer(settings, learning_rate=None):
  """The tf.compat.v1 optimizer of `settings` (an OptimizerSettings, or the
  name of one of OPTIMIZERS with the defaults), at `learning_rate` (a number
  or a tensor; None: settings.learning_rate)."""
  if isinstance(settings, str):
    settings = OptimizerSettings(settings, learning_rate)
  name = settings.optimizer
  if learning_rate is None:
    learning_rate = settings.learning_rate
  if name == 'sgd':
    return tf.train.GradientDescentOptimizer(learning_rate)
  if name == 'adam':
    return tf.train.AdamOptimizer(learning_rate, settings.adam_beta1, settings.adam_beta2,
                                  settings.adam_epsilon)
  if name == 'adagrad':
    return tf.train.AdagradOptimizer(learning_rate)
  if name == 'rmsprop':
    return tf.train.RMSPropOptimizer(learning_rate)
  if name == 'momentum':
    return tf.train.MomentumOptimizer(learning_rate, momentum=0.9)
  if name == 'rmsprop_keras':
    return KerasRMSPropOptimizer(learning_rate)
  raise ValueError('Unknown optimizer %r; expected one of %s' % (name, ', '.join(OPTIMIZERS)))


def _kl_weight(optimizer_settings):
  """The KL term's weight at the global step (created here if the graph has
  none); see model.kl_weight_at."""
  return model.kl_weight_at(tf.train.get_or_create_global_step(), optimizer_settings.kl_weight,
                            optimizer_settings.kl_warmup_steps)


def monitored_session(training_graph,
                      train_dir,
                      schedule,
                      config,
                      master='',
                      is_chief=True,
                      restore_from=None,
                      kept_checkpoints=()):
  """The MonitoredSession of a run: restores `restore_from` or initialises,
  then saves checkpoints as it goes (chief only), and stops at
  schedule.max_steps. The training loop writes the training summaries
  itself, from the losses each step fetches anyway.

  This is MonitoredTrainingSession's assembly, but restoring the checkpoint it
  is given (the newest one that reads, checkpoints.newest_readable) instead of
  the one the `checkpoint` file names, which may be damaged or, in a moved run
  directory, elsewhere.

  Args:
    kept_checkpoints: the older checkpoints in train_dir, oldest first, which
      the saver deletes in turn as it keeps its last five.
  """
  scaffold = tf.train.Scaffold(
      saver=training_graph.saver,
      local_init_op=tf.train.Scaffold.default_local_init_op(),
      local_init_feed_dict=training_graph.local_init_feed)
  if is_chief:
    # What Saver.recover_last_checkpoints does, without its deprecated call.
    training_graph.saver.set_last_checkpoints_with_time([
        (path, tf.io.gfile.stat(path + '.index').mtime_nsec / 1e9) for path in kept_checkpoints
    ])
    creator = tf.train.ChiefSessionCreator(
        scaffold=scaffold, master=master, config=config, checkpoint_filename_with_path=restore_from)
    hooks = [
        tf.train.CheckpointSaverHook(
            train_dir,
            save_steps=schedule.save_checkpoint_steps,
            scaffold=scaffold,
            checkpoint_basename=checkpoints.BASENAME)
    ]
  else:
    creator = tf.train.WorkerSessionCreator(scaffold=scaffold, master=master, config=config)
    hooks = []
  hooks.append(tf.train.StopAtStepHook(last_step=schedule.max_steps))
  if training_graph.sync:
    hooks.append(training_graph.sync.hook)
  # SyncReplicasOptimizer's queue runner would hold a closing session for the
  # default 120 s.
  return tf.train.MonitoredSession(session_creator=creator, hooks=hooks, stop_grace_period_secs=5)


class StepRunner(object):
  """Runs training steps: through the MonitoredSession and its hooks on the
  calls where a hook has work (the one that reaches a multiple of
  save_checkpoint_steps, and the last), straight on its raw session otherwise.

  The hooks' bookkeeping on every other call (fetching the global step,
  merging their fetches into each run) is a cost with nothing to do; the
  graph run is the same either way, so are its checks and results. A cluster
  worker always goes through the hooks: its synchronization hook and its
  recoverable session (re-created when a parameter server restarts) need
  every step.

  Args:
    session: the MonitoredSession.
    fetches: the train fetches.
    schedule: a Schedule.
    through_hooks_always: see above.
    steps_to_run: the compiled loop's placeholder of steps per call, or None
      for one step per call.
  """

  def __init__(self, session, fetches, schedule, through_hooks_always, steps_to_run=None):
    self._session, self._fetches = session, fetches
    self._save_every, self._max_steps = (schedule.save_checkpoint_steps, schedule.max_steps)
    self._steps_to_run = steps_to_run
    self._raw_step = None
    if not through_hooks_always:
      feeds = [steps_to_run] if steps_to_run is not None else []
      self._raw_step = session.run_step_fn(
          lambda step_context: step_context.session.make_callable(fetches, feeds))

  def run(self, step, steps=1, options=None):
    """Runs `steps` steps after global step `step` (more than one only with
    a compiled loop); returns the fetches' values."""
    following = step + steps
    feeds = [steps] if self._steps_to_run is not None else []
    if (self._raw_step is None or options is not None or following % self._save_every == 0
        or following >= self._max_steps):
      return self._session.run(
          self._fetches,
          options=options,
          feed_dict=dict(zip([self._steps_to_run], feeds)) if feeds else None)
    return self._raw_step(*feeds)


class StopSignals(object):
  """Turns the first SIGTERM or SIGINT into a request to stop after this step.

  Preemption sends SIGTERM and Ctrl-C sends SIGINT; either way the loop ends
  at a step boundary, so the checkpoint saved on the way out is complete. A
  second signal gets the default behaviour (it kills at once).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  @property
  def name(self):
    """The received signal's name ('SIGTERM'), or None."""
    return self.received.name if self.received else None

  def _handle(self, signum, frame):
    del frame  # Unused.
    self.received = signal.Signals(signum)
    signal.signal(signum, signal.SIG_DFL)
    logging.warning(
        'Received %s: saving a checkpoint after this step and '
        'exiting (send it again to stop at once).', self.received.name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def crossed(previous_step, step, every):
  """True when a multiple of `every` lies in (previous_step, step].

  In a cluster the global step moves by more than one between this worker's
  steps, so `step % every == 0` would miss most multiples.
  """
  return bool(every) and step // every > previous_step // every


def _duration(seconds):
  seconds = int(round(seconds))
  if seconds < 60:
    return '%d s' % seconds
  if seconds < 3600:
    return '%d min %02d s' % divmod(seconds, 60)
  return '%d h %02d min' % (seconds // 3600, seconds % 3600 // 60)


def progress(step, max_steps, steps_done, seconds):
  """'step 300 of 8580 (3%), about 2 min 05 s left': the time left at the
  pace of steps_done recent steps taken in `seconds` (validation, grids and
  checkpoints included, as they will be again)."""
  text = 'step %d of %d (%d%%)' % (step, max_steps, 100 * step // max(max_steps, 1))
  if steps_done > 0 and step < max_steps:
    text += ', about %s left' % _duration((max_steps - step) * seconds / steps_done)
  return text


def add_scalar_summaries(summary_writer, step, prefix, values):
  """Writes values' neg_elbo, reconstruction and kl_divergence (and the
  objective and KL weight of a weighted run) as summaries `prefix/...` at
  `step`."""
  summary = tf.Summary()
  for key in ('neg_elbo', 'reconstruction', 'kl_divergence', 'objective', 'kl_weight',
              'learning_rate'):
    # The KL weight and objective only where the KL term is weighted, the
    # learning rate only where it follows a schedule.
    if key in values:
      summary.value.add(tag='%s/%s' % (prefix, key), simple_value=values[key])
  summary_writer.add_summary(summary, step)


def final_evaluation(checkpoint, split_images, network, eval_batch_size, summary_writer,
                     images_dir):
  """Evaluates the saved `checkpoint` in a graph and session of its own (in a
  cluster, the shared variables on the parameter servers are never read):
  the image grids, then the negative ELBO of the validation and test splits,
  logged and summarised at the checkpoint's step.

  Args:
    split_images: {split: float32 [n, 784]}, 'test' first images the grids'.

  Returns:
    {'step': N, 'validation': {...}, 'test': {...}} (a split without
    examples is left out).
  """
  with tf.Graph().as_default():
    evaluator = evaluation.Evaluator(network, batch_size=eval_batch_size)
    grid_writer = images.GridWriter(split_images['test'][:images.NUM_GRID_IMAGES], network)
    global_step = tf.train.get_or_create_global_step()
    saver = tf.train.Saver(model.model_variables() + [global_step])
    with tf.Session() as session:
      checkpoints.restore(session, checkpoint, saver)
      step = int(session.run(global_step))
      grid_writer.write(session, step, summary_writer, images_dir)
      results = {'step': step}
      for split in ('validation', 'test'):
        if not len(split_images.get(split, ())):
          continue
        result = evaluator.evaluate(session, split_images[split])
        add_scalar_summaries(summary_writer, step, split, result)
        logging.info(
            'step %d: %s neg_elbo %.3f (reconstruction %.3f, kl %.3f) '
            'over %d examples, %d active latent units', step, split, result['neg_elbo'],
            result['reconstruction'], result['kl_divergence'], result['num_examples'],
            result['active_units'])
        results[split] = result
  return results
