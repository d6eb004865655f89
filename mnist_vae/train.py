"""Trains the MLP variational autoencoder on MNIST TFRecords (tf.compat.v1 graph).

Data flow: IDX files -> data_prep -> TFRecords -> input_pipeline (tf.data)
-> model (graph) -> this session loop -> PNGs, checkpoints, summaries, metrics.

Usage:
  python train.py --mnist_dir ../shared/mnist --train_dir /tmp/run
  python train.py --flagfile my_run.flags   # one --flag=value per line

Re-running with the same --train_dir resumes from its latest checkpoint. In a
cluster (TF_CONFIG, or --ps_hosts/--worker_hosts/--job_name/--task_index) a
parameter server only serves (cluster.run_parameter_server); every training
task runs `run_training`, whose cluster differences are cluster.Worker's.
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import contextlib
import os
import re
import signal
import time

from absl import flags
from absl import logging
import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import cli
from mnist_vae import cluster
from mnist_vae import fast_step
from mnist_vae import files
from mnist_vae import images
from mnist_vae import input_pipeline
from mnist_vae import learning_rates
from mnist_vae import model
from mnist_vae import run_dir
from mnist_vae import settings
from mnist_vae import training
from mnist_vae import training_loop
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import download
from mnist_vae.data_prep import idx
from mnist_vae.data_prep import records

# Flags that job launchers add to every task's command line (Alibaba PAI);
# accepted and logged, so that a typo in any other flag is still an error.
LAUNCHER_FLAGS = ('tables', 'outputs')
# The settings train.py's flags fill; the flags that fill none, and why.
SETTINGS_TYPES = (training.RunSettings, training.DataSource, training.NetworkSettings,
                  training.OptimizerSettings, training.Schedule, training.StepSettings,
                  settings.Threads, cluster.SyncReplicas, cluster.ClusterFlags)
OTHER_FLAGS = dict(
    {
        'buckets': 'Alibaba PAI\'s name for --data_dir',
        'checkpointDir': 'Alibaba PAI\'s name for --train_dir'
    }, **{name: 'a launcher\'s, logged' for name in LAUNCHER_FLAGS})


def _default(name):
  """The default of flag --name: its settings field's."""
  settings_type = next(
      settings_type for settings_type in SETTINGS_TYPES if name in settings_type._fields)
  return settings.default(settings_type, name)


def define_flags(flag_values=flags.FLAGS):
  """Defines train.py's flags in `flag_values` (by its entry point, so that
  other programs can import this module; the benchmark reads the defaults
  from a FlagValues of its own)."""
  flags.DEFINE_string(
      'data_dir',
      _default('data_dir'),
      flag_values=flag_values,
      help='Directory with train/validation/test.tfrecords. '
      'Default: data/<dataset>. Made from --mnist_dir (or '
      '--download) when the files are missing.')
  flags.DEFINE_string(
      'train_dir',
      _default('train_dir'),
      flag_values=flag_values,
      help='Directory for checkpoints, TensorBoard summaries, '
      'images/ and metrics.json. An existing checkpoint here is '
      'resumed.')
  flags.DEFINE_string(
      'mnist_dir',
      _default('mnist_dir'),
      flag_values=flag_values,
      help='Directory with the four MNIST IDX files (gzip or '
      'not), converted into --data_dir when that has no '
      'TFRecords.')
  flags.DEFINE_boolean(
      'download',
      _default('download'),
      flag_values=flag_values,
      help='When --data_dir has no TFRecords, first download '
      'the IDX files that are missing (SHA256-verified) into '
      '--mnist_dir, or DATA_DIR/raw.')
  flags.DEFINE_enum(
      'dataset',
      _default('dataset'),
      convert_to_records.DATASETS,
      flag_values=flag_values,
      help='Dataset to prepare when the TFRecords are missing.')
  flags.DEFINE_integer(
      'validation_size',
      _default('validation_size'),
      lower_bound=0,
      upper_bound=10**6,
      flag_values=flag_values,
      help='Training images held out as the validation split '
      'when preparing TFRecords (default 5000; 0: no '
      'validation split). Existing TFRecords must have been '
      'made with it (default: as they were made).')
  flags.DEFINE_enum(
      'validation_from',
      _default('validation_from'),
      convert_to_records.VALIDATION_FROM,
      flag_values=flag_values,
      help='Whether the validation split is the first or the last '
      '--validation_size training images (default first). '
      'Existing TFRecords must have been made with it (default: '
      'as they were made).')
  flags.DEFINE_integer(
      'batch_size',
      _default('batch_size'),
      lower_bound=1,
      upper_bound=cli.MAX_BATCH,
      flag_values=flag_values,
      help='Training examples per step.')
  flags.DEFINE_enum(
      'optimizer',
      _default('optimizer'),
      training.OPTIMIZERS,
      flag_values=flag_values,
      help='sgd is the original script\'s; adam is the upstream '
      'repository\'s; momentum uses 0.9; rmsprop is TF1\'s '
      '(mean squares from one), rmsprop_keras Keras 3\'s (from zero, '
      'epsilon 1e-7).')
  flags.DEFINE_float(
      'learning_rate',
      _default('learning_rate'),
      lower_bound=0.0,
      upper_bound=1e6,
      flag_values=flag_values,
      help='Optimizer learning rate (constant; see '
      '--learning_rate_schedule).')
  flags.DEFINE_string(
      'learning_rate_schedule',
      _default('learning_rate_schedule'),
      flag_values=flag_values,
      help='Stages of learning rates instead of '
      '--learning_rate: LENGTH:RATE,LENGTH:RATE,... with the '
      'lengths in --learning_rate_schedule_unit; e.g. '
      '"1:1e-3,3:7.2e-4" is 1 epoch at 1e-3, then 3 at 7.2e-4. '
      'Without --max_steps, training ends with the last stage.')
  flags.DEFINE_enum(
      'learning_rate_schedule_unit',
      _default('learning_rate_schedule_unit'),
      learning_rates.UNITS,
      flag_values=flag_values,
      help='What the schedule\'s lengths count: epochs (of '
      'training_images // batch_size steps) or steps.')
  flags.DEFINE_float(
      'adam_beta1',
      _default('adam_beta1'),
      lower_bound=0.0,
      upper_bound=1.0,
      flag_values=flag_values,
      help='--optimizer=adam: decay rate of the first moments.')
  flags.DEFINE_float(
      'adam_beta2',
      _default('adam_beta2'),
      lower_bound=0.0,
      upper_bound=1.0,
      flag_values=flag_values,
      help='--optimizer=adam: decay rate of the second moments.')
  flags.DEFINE_float(
      'adam_epsilon',
      _default('adam_epsilon'),
      lower_bound=0.0,
      upper_bound=1.0,
      flag_values=flag_values,
      help='--optimizer=adam: added to the root of the second '
      'moments (of the gradient of the batch\'s mean loss).')
  flags.DEFINE_integer(
      'simulated_staleness',
      _default('simulated_staleness'),
      lower_bound=0,
      upper_bound=100,
      flag_values=flag_values,
      help='One process only: apply at each step the '
      'gradient computed this many steps earlier, on the '
      'weights of then, as an asynchronous worker of a '
      'cluster does (scripts/cluster_study.sh). 0 = off.')
  flags.DEFINE_float(
      'kl_weight',
      _default('kl_weight'),
      lower_bound=0.0,
      upper_bound=1e6,
      flag_values=flag_values,
      help='beta: training minimizes reconstruction + beta * KL '
      '(0 = a plain autoencoder, 1 = the VAE, > 1 = a beta-VAE). '
      'The log, metrics.json and evaluate.py report the true '
      'negative ELBO (beta = 1) beside it.')
  flags.DEFINE_integer(
      'kl_warmup_steps',
      _default('kl_warmup_steps'),
      lower_bound=0,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Raise the KL weight linearly from 0 to --kl_weight '
      'over this many steps (Bowman et al. 2016); 0 = off.')
  flags.DEFINE_integer(
      'max_steps',
      _default('max_steps'),
      lower_bound=0,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Train until the global step reaches this value.')
  flags.DEFINE_enum(
      'architecture',
      _default('architecture'),
      list(architectures.ARCHITECTURES),
      flag_values=flag_values,
      help='The network (docs/architectures.md): %s.' % '; '.join(
          '%s: %s' % (name, about) for name, (_, _, about) in architectures.ARCHITECTURES.items()))
  flags.DEFINE_integer(
      'latent_dim',
      _default('latent_dim'),
      lower_bound=1,
      upper_bound=architectures.MAX_LATENT_DIM,
      flag_values=flag_values,
      help='Number of dimensions in the latent code z (at '
      'most %d).' % architectures.MAX_LATENT_DIM)
  flags.DEFINE_integer(
      'hidden_units',
      _default('hidden_units'),
      lower_bound=1,
      upper_bound=architectures.MAX_HIDDEN_UNITS,
      flag_values=flag_values,
      help='Width of the hidden layers the architecture lets '
      'one choose (mlp and iwae_mlp: each of the two of the '
      'encoder and of the decoder; keras_cvae: its dense '
      'layer before the heads; at most %d). Default: the '
      'architecture\'s own (500, 200, 16).' % architectures.MAX_HIDDEN_UNITS)
  flags.DEFINE_float(
      'keep_prob',
      _default('keep_prob'),
      flag_values=flag_values,
      help='Dropout keep probability in (0, 1] after each hidden '
      'layer while training (1 = no dropout). Evaluation, '
      'reconstruction and sampling never use dropout.')
  flags.DEFINE_integer(
      'steps_per_call',
      _default('steps_per_call'),
      lower_bound=1,
      upper_bound=10000,
      flag_values=flag_values,
      help='Run up to this many steps, their updates included, '
      'inside one compiled loop per session call: faster where '
      'steps are short (small batches). One process only, '
      '--optimizer=adam or sgd. Logs, checkpoints, validation '
      'and signals still happen at their exact steps; the '
      'random numbers differ from one step per call.')
  flags.DEFINE_integer(
      'train_iw_samples',
      _default('train_iw_samples'),
      lower_bound=1,
      upper_bound=100000,
      flag_values=flag_values,
      help='K: draws of z per training image. K > 1 trains on '
      '--train_bound over the K draws (each image repeated K '
      'times through the network: K times the work of a '
      'step); 1 is the usual one-draw ELBO.')
  flags.DEFINE_enum(
      'train_bound',
      _default('train_bound'),
      model.BOUNDS,
      flag_values=flag_values,
      help='With --train_iw_samples K > 1: iwae maximizes the '
      'importance-weighted bound log mean_k w_k (Burda et al. '
      '2015, the IWAE); elbo the ELBO averaged over the K draws '
      '(their "VAE with k samples").')
  flags.DEFINE_enum(
      'train_kl',
      _default('train_kl'),
      model.KL_ESTIMATES,
      flag_values=flag_values,
      help='How training estimates the ELBO\'s KL term: closed_form, '
      'the exact KL of the two Gaussians; sampled, log q(z|x) - '
      'log p(z) at the drawn z, as Burda et al.\'s code trains its '
      'VAE (the same expectation, a noisier gradient). Evaluation '
      'always reports the closed form.')
  flags.DEFINE_integer(
      'log_every_n_steps',
      _default('log_every_n_steps'),
      lower_bound=1,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Log losses and examples/s, and write scalar '
      'summaries, every this many steps.')
  flags.DEFINE_integer(
      'image_every_n_steps',
      _default('image_every_n_steps'),
      lower_bound=0,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Write reconstruction and prior-sample PNGs every '
      'this many steps (and at the end); 0 = only at the end.')
  flags.DEFINE_integer(
      'eval_every_n_steps',
      _default('eval_every_n_steps'),
      lower_bound=0,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Evaluate the negative ELBO on the validation set '
      'every this many steps; 0 = only at the end.')
  flags.DEFINE_integer(
      'keep_checkpoint_every_n_steps',
      _default('keep_checkpoint_every_n_steps'),
      lower_bound=0,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Also keep the checkpoint of every multiple of this '
      'many steps, in TRAIN_DIR/kept (the saver keeps only the '
      'last 5); the end of each --learning_rate_schedule stage '
      'is kept there too. 0 = off.')
  flags.DEFINE_integer(
      'save_checkpoint_steps',
      _default('save_checkpoint_steps'),
      lower_bound=1,
      upper_bound=cli.MAX_STEPS,
      flag_values=flag_values,
      help='Save a checkpoint every this many steps (and at '
      'the end).')
  flags.DEFINE_integer(
      'seed',
      _default('seed'),
      lower_bound=0,
      upper_bound=cli.MAX_SEED,
      flag_values=flag_values,
      help='Seed of initialisation, dropout, z draws and the '
      'shuffle order.')
  flags.DEFINE_integer(
      'shuffle_buffer_size',
      _default('shuffle_buffer_size'),
      lower_bound=0,
      upper_bound=10**9,
      flag_values=flag_values,
      help='Examples held by the shuffle buffer; 0 = the whole '
      'training set (a uniform shuffle every epoch).')
  flags.DEFINE_integer(
      'eval_batch_size',
      _default('eval_batch_size'),
      lower_bound=1,
      upper_bound=cli.MAX_BATCH,
      flag_values=flag_values,
      help='Batch size of evaluation (does not change results).')
  cli.define_thread_flags(flag_values)
  flags.DEFINE_enum(
      'binarize',
      _default('binarize'),
      input_pipeline.BINARIZE_MODES,
      flag_values=flag_values,
      help='none: grey levels, as the original; static: one fixed '
      'Bernoulli sample per image; dynamic: a new sample per use '
      'in training (evaluation then uses the static sample); '
      'threshold: 1 where the grey level is above 0.5 (TensorFlow\'s '
      'CVAE tutorial).')
  flags.DEFINE_enum(
      'matmul_precision',
      _default('matmul_precision'),
      tuple(model.MATMUL_DTYPES),
      flag_values=flag_values,
      help='bfloat16: training multiplies in bfloat16 (variables, '
      'loss and evaluation stay float32). Faster only on CPUs '
      'with native bfloat16 (AVX512_BF16, AMX) or on GPUs.')
  flags.DEFINE_string(
      'ps_hosts',
      _default('ps_hosts'),
      flag_values=flag_values,
      help='Cluster: comma-separated host:port of the parameter '
      'servers (or give TF_CONFIG instead of these four flags).')
  flags.DEFINE_string(
      'worker_hosts',
      _default('worker_hosts'),
      flag_values=flag_values,
      help='Cluster: comma-separated host:port of the workers; '
      'worker 0 is the chief.')
  flags.DEFINE_string(
      'job_name', _default('job_name'), flag_values=flag_values, help='Cluster: ps or worker.')
  flags.DEFINE_integer(
      'task_index',
      _default('task_index'),
      lower_bound=0,
      upper_bound=10000,
      flag_values=flag_values,
      help='Cluster: index of this task within its job.')
  flags.DEFINE_boolean(
      'sync_replicas',
      _default('sync_replicas'),
      flag_values=flag_values,
      help='Cluster jobs with two or more workers: aggregate '
      'the gradients of --replicas_to_aggregate workers per '
      'update (SyncReplicasOptimizer). The default: it ends '
      'where one process ends, at the same examples seen. '
      '--nosync_replicas: asynchronous updates, which end '
      'several nats behind with Adam (README, "Cluster '
      'jobs"). No effect with one worker or one process.')
  flags.DEFINE_integer(
      'replicas_to_aggregate',
      _default('replicas_to_aggregate'),
      lower_bound=0,
      upper_bound=1000,
      flag_values=flag_values,
      help='With --sync_replicas: gradients per update; 0 = '
      'the number of workers.')
  flags.DEFINE_string(
      'buckets', None, flag_values=flag_values, help='Alibaba PAI\'s name for --data_dir.')
  flags.DEFINE_string(
      'checkpointDir', None, flag_values=flag_values, help='Alibaba PAI\'s name for --train_dir.')
  for name in LAUNCHER_FLAGS:
    flags.DEFINE_string(
        name,
        None,
        flag_values=flag_values,
        help='Alibaba PAI passes --%s; accepted '
        'and logged, not used.' % name)
  flags.register_validator(
      'keep_prob',
      lambda value: 0.0 < value <= 1.0,
      message='--keep_prob must be in (0, 1]',
      flag_values=flag_values)


FLAGS = flags.FLAGS

IMAGES_SUBDIR = 'images'


class TrainingError(RuntimeError):
  """Training cannot start or go on; the message says why."""


# Errors whose message is the whole story: reported in one line, no traceback.
EXPECTED_ERRORS = (TrainingError, architectures.ArchitectureError, learning_rates.ScheduleError,
                   idx.IdxError, input_pipeline.RecordsError, convert_to_records.ConversionError,
                   download.DownloadError, cluster.ClusterError, checkpoints.CheckpointError,
                   run_dir.RunDirBusyError)


def prepare_data(data):
  """Makes the TFRecords of `data` (a training.DataSource) if needed.

  Returns:
    {split: (path, number of examples)}.
  """
  # Also checks that existing records were made with these settings.
  convert_to_records.prepare(
      data.data_dir,
      mnist_dir=data.mnist_dir,
      download_idx=data.download,
      dataset=data.dataset,
      validation_size=data.validation_size,
      validation_from=data.validation_from)
  paths = {split: records.split_path(data.data_dir, split) for split in records.SPLITS}
  return {
      split: (path, input_pipeline.inspect_records(path, allow_empty=split == 'validation'))
      for split, path in paths.items()
  }


def run_training(*,
                 train_dir,
                 data,
                 network,
                 optimizer_settings,
                 schedule,
                 step_settings,
                 eval_batch_size,
                 threads,
                 role=None,
                 sync_replicas=None):
  """Trains (or resumes), writes images and checkpoints, evaluates at the end.

  Args:
    train_dir: where checkpoints, summaries, images/, config.json and
      metrics.json go.
    data: training.DataSource.
    network: architectures.Network.
    optimizer_settings: training.OptimizerSettings.
    schedule: training.Schedule.
    step_settings: training.StepSettings.
    eval_batch_size: examples per evaluation batch.
    threads: settings.Threads.
    role: the cluster.ClusterRole of a training task, None for one process.
    sync_replicas: cluster.SyncReplicas, None for asynchronous updates.

  SIGTERM or SIGINT stops the run after the current step with a checkpoint and
  the metrics so far.

  Returns:
    The metrics dict, also written to train_dir/metrics.json by the chief;
    its 'interrupted_by' names the signal that stopped the run, if one did.
  """
  start_time = time.time()
  worker = cluster.Worker(role, training.session_config(threads))
  worker.wait_for_data(data.data_dir)
  splits = prepare_data(data)
  schedule = _schedule_with_its_end(schedule, optimizer_settings, splits['train'][1],
                                    step_settings.batch_size)
  made_with = records.read_info(data.data_dir) or {}
  config = dict(
      train_dir=train_dir,
      eval_batch_size=eval_batch_size,
      **data._replace(
          validation_size=splits['validation'][1],
          validation_from=made_with.get('validation_from', 'first'))._asdict(),
      **architectures.record(network),
      **optimizer_settings._asdict(),
      **schedule._asdict(),
      **step_settings._asdict(),
      **threads._asdict(),
      **cluster.effective_sync(sync_replicas, role)._asdict())
  images_dir = _make_train_dir(train_dir, splits['train'], step_settings)
  # One writer per run directory: the chief (or the only process) holds it.
  writer_lock = (run_dir.WriterLock(train_dir) if worker.is_chief else run_dir.NoLock())
  with writer_lock, _disk_full_explained(train_dir):
    checkpoint, initial_step, kept_checkpoints = _resume_point(train_dir, worker.is_chief)
    if worker.is_chief:
      _log_start(checkpoint, initial_step, schedule.max_steps)
    # Evaluation feeds whole splits, binarized as in training.
    split_images = {
        split: input_pipeline.read_split_images(path, step_settings.binarize)
        for split, (path, _) in splits.items()
        if split != 'train'
    }
    training_graph = training.build_training_graph(
        train_path=splits['train'][0],
        num_train=splits['train'][1],
        fixed_images=split_images['test'][:images.NUM_GRID_IMAGES],
        network=network,
        optimizer_settings=optimizer_settings,
        step_settings=step_settings,
        eval_batch_size=eval_batch_size,
        initial_step=initial_step,
        worker=worker,
        sync_replicas=sync_replicas,
        output_bias=_initial_output_bias(network, splits['train'][0]))
    with training_graph.tf_graph.as_default(), training.StopSignals() as stop_signals:
      if checkpoint:
        checkpoints.check_matches(checkpoint, tf.global_variables(), optimizer_settings.optimizer,
                                  network)
      if worker.is_chief:
        files.write_json(os.path.join(train_dir, run_dir.CONFIG_FILE), config)
      worker.log_placement(training_graph.tf_graph)
      worker.wait_for_chief(training_graph.tf_graph)
      summary_writer = (tf.summary.FileWriterCache.get(train_dir) if worker.is_chief else None)
      stage_ends = _stage_ends(optimizer_settings, splits['train'][1], step_settings)
      # Its saver, like every op, is made before the session finalizes the graph.
      checkpoint_keeper = (
          training_loop.KeptCheckpoints(schedule.keep_checkpoint_every_n_steps, stage_ends,
                                        train_dir) if worker.is_chief and
          (stage_ends or schedule.keep_checkpoint_every_n_steps) else None)
      with training.monitored_session(
          training_graph,
          train_dir,
          schedule,
          worker.config,
          worker.target,
          worker.is_chief,
          restore_from=checkpoint,
          kept_checkpoints=kept_checkpoints) as session:
        if worker.is_chief:
          training_graph.grid_writer.write_inputs(images_dir)
        progress = _train(
            session, training_graph,
            _LoopContext(train_dir, images_dir, schedule, step_settings, optimizer_settings, worker,
                         summary_writer, writer_lock, split_images['validation'],
                         checkpoint_keeper), stop_signals, initial_step)
    # Closing the session saved a checkpoint of the last step.
    metrics = dict(progress, interrupted_by=stop_signals.name)
    if worker.is_chief:
      metrics['checkpoint'] = checkpoints.in_directory(train_dir)[-1]
      if stop_signals.received:
        logging.warning(
            'Stopped by %s at step %d; checkpoint %s. Re-run the '
            'same command to resume.', stop_signals.name, metrics['step'], metrics['checkpoint'])
      else:
        metrics.update(
            training.final_evaluation(metrics['checkpoint'], split_images, network, eval_batch_size,
                                      summary_writer, images_dir))
    if not stop_signals.received:
      worker.finish(metrics['local_steps'], metrics['step'])
    if not worker.is_chief:
      return metrics
    summary_writer.flush()
    metrics.update(wall_time_sec=time.time() - start_time, config=config)
    files.write_json(os.path.join(train_dir, run_dir.METRICS_FILE), metrics)
    logging.info('Wrote %s', os.path.join(train_dir, run_dir.METRICS_FILE))
    return metrics


def _schedule_with_its_end(schedule, optimizer_settings, num_train, batch_size):
  """`schedule` with max_steps at the learning-rate schedule's end where it
  was left to it (None); TrainingError when --max_steps runs past that end."""
  if not optimizer_settings.learning_rate_schedule:
    return schedule
  _, ends = training.learning_rate_stages(optimizer_settings, num_train, batch_size)
  if schedule.max_steps is None:
    return schedule._replace(max_steps=ends[-1])
  if schedule.max_steps > ends[-1]:
    raise TrainingError('--max_steps=%d runs past the end of --learning_rate_schedule (step %d '
                        'with %d training images in batches of %d): lengthen its last stage or '
                        'lower --max_steps' % (schedule.max_steps, ends[-1], num_train, batch_size))
  return schedule


def _initial_output_bias(network, train_path):
  """The decoder's initial output biases where the network starts them at
  the training images' mean pixel (its logit), else None."""
  if network.output_bias != 'train_mean_logit':
    return None
  return model.train_mean_logit(input_pipeline.read_split_images(train_path).mean(axis=0))


def _make_train_dir(train_dir, train_split, step_settings):
  """Checks the batch fits the training split; creates train_dir/images."""
  path, num_train = train_split
  if step_settings.batch_size > num_train:
    raise TrainingError('--batch_size=%d is larger than the %d examples of %s' %
                        (step_settings.batch_size, num_train, path))
  files.make_dirs(train_dir, '--train_dir')
  images_dir = os.path.join(train_dir, IMAGES_SUBDIR)
  files.make_dirs(images_dir, '--train_dir')
  return images_dir


def _resume_point(train_dir, is_chief):
  """The checkpoint to resume (the newest that reads completely; None for a
  new run), its step, and the older ones the saver keeps rotating. The chief
  first clears what writes cut short left behind, and moves each damaged
  newer checkpoint aside, out of the way of its own saves."""
  found = checkpoints.newest_readable(train_dir)
  if is_chief:
    run_dir.remove_partial_files(train_dir)
    run_dir.set_damaged_aside(train_dir, found.skipped)
  kept = [
      checkpoint for checkpoint in checkpoints.in_directory(train_dir)
      if checkpoint != found.checkpoint
  ]
  return found.checkpoint, found.step, kept


@contextlib.contextmanager
def _disk_full_explained(train_dir):
  """A full disk while training becomes one TrainingError saying what was
  being written and which checkpoint is the last complete one."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    path = files.disk_full_path(e)
    if path is None:
      raise
    run_dir.remove_partial_files(train_dir)
    checkpoint_save = re.match(r'(.*%s-\d+)[._]' % re.escape(checkpoints.BASENAME), path)
    try:
      last = checkpoints.newest_readable(train_dir).checkpoint
    except checkpoints.CheckpointError:
      last = None
    raise TrainingError('%s writing %s; %s. Free space and re-run the same command to resume.' %
                        (files.NO_SPACE, checkpoint_save.group(1) if checkpoint_save else path,
                         'the last complete checkpoint is %s (untouched)'
                         % last if last else 'no checkpoint was saved yet')) from e


def _log_start(checkpoint, initial_step, max_steps):
  if not checkpoint:
    return
  if initial_step >= max_steps:
    logging.info('%s is already at step %d >= --max_steps=%d: evaluating it '
                 'without training.', checkpoint, initial_step, max_steps)
  else:
    logging.info('Resuming from %s (step %d).', checkpoint, initial_step)


# What the training loop needs to know of its run.
_LoopContext = collections.namedtuple('_LoopContext', [
    'train_dir', 'images_dir', 'schedule', 'step_settings', 'optimizer_settings', 'worker',
    'summary_writer', 'writer_lock', 'validation_images', 'checkpoint_keeper'
])


def _train(session, training_graph, context, stop_signals, first_step):
  """The training loop (training_loop.run_loop) with the pieces this task
  runs: the chief all of them, another worker only the progress log.

  Returns:
    {step, local_steps, last_minibatch, last_validation,
     train_examples_per_sec}.
  """
  schedule, worker = context.schedule, context.worker
  runner = training.StepRunner(
      session,
      training_graph.train_fetches,
      schedule,
      through_hooks_always=bool(worker.target),
      steps_to_run=training_graph.steps_to_run)
  caller = training_loop.StepCaller(runner, first_step, bool(training_graph.sync),
                                    context.step_settings.steps_per_call)
  pieces = [
      training_loop.ProgressLog(schedule.log_every_n_steps, schedule.max_steps,
                                context.step_settings.batch_size, first_step, context.writer_lock)
  ]
  if worker.is_chief:
    pieces += [
        training_loop.TrainSummaries(schedule.log_every_n_steps, context.summary_writer),
        training_loop.GridWriting(schedule.image_every_n_steps, training_graph.grid_writer,
                                  context.summary_writer, context.images_dir),
        training_loop.Validation(schedule.eval_every_n_steps, training_graph.evaluator,
                                 context.validation_images, context.summary_writer)
    ]
    if context.checkpoint_keeper:
      pieces.append(context.checkpoint_keeper)
  try:
    step = training_loop.run_loop(session, caller, pieces, schedule, stop_signals)
  except training_loop.NonFiniteStep as e:
    optimizer_settings = context.optimizer_settings
    raise TrainingError(
        'The %s became %s at step %d; the update was not applied. Likely cause: '
        'the learning rate (%s) is too high for --optimizer=%s. The last checkpoint '
        'in %s is untouched: resume from it with a lower %s.' %
        (e.what, e.kind, e.step, optimizer_settings.learning_rate_schedule
         or '%g' % optimizer_settings.learning_rate, optimizer_settings.optimizer,
         context.train_dir, '--learning_rate_schedule'
         if optimizer_settings.learning_rate_schedule else '--learning_rate')) from e
  if training_graph.sync and training_graph.sync.release_tokens is not None:
    # Synchronous workers still waiting for a token would block forever.
    session.run_step_fn(
        lambda step_context: step_context.session.run(training_graph.sync.release_tokens))
  return training_loop.loop_results(caller, pieces, step)


def _stage_ends(optimizer_settings, num_train, step_settings):
  """The global steps at which the learning-rate stages end ([] without a
  schedule)."""
  if not optimizer_settings.learning_rate_schedule:
    return []
  return training.learning_rate_stages(optimizer_settings, num_train, step_settings.batch_size)[1]


def settings_from_flags(flag_values=FLAGS):
  """run_training's settings from parsed flags: {argument name: value}, each
  settings type filled by settings.fill.

  Raises:
    TrainingError: flags that contradict each other.
    learning_rates.ScheduleError: a schedule that does not parse.
    architectures.ArchitectureError: a network the architecture cannot be.
  """
  run = settings.fill(training.RunSettings, flag_values)
  data = settings.fill(training.DataSource, flag_values)
  network = architectures.network(**settings.fill(training.NetworkSettings, flag_values)._asdict())
  optimizer_settings = settings.fill(training.OptimizerSettings, flag_values)
  schedule = settings.fill(training.Schedule, flag_values)
  step_settings = settings.fill(training.StepSettings, flag_values)
  if optimizer_settings.learning_rate_schedule:
    learning_rates.parse(optimizer_settings.learning_rate_schedule)
    if flag_values['learning_rate'].present:
      raise TrainingError('--learning_rate and --learning_rate_schedule both set '
                          'the learning rate; give one of them')
    if not flag_values['max_steps'].present:
      schedule = schedule._replace(max_steps=None)  # The schedule's end.
  _check_step_settings(step_settings, optimizer_settings, network, flag_values)
  return {
      'train_dir':
          flag_values.checkpointDir or run.train_dir,
      'data':
          data._replace(data_dir=(data.data_dir or flag_values.buckets or 'data/' + data.dataset)),
      'network':
          network,
      'optimizer_settings':
          optimizer_settings,
      'schedule':
          schedule,
      'step_settings':
          step_settings,
      'eval_batch_size':
          run.eval_batch_size,
      'threads':
          settings.fill(settings.Threads, flag_values),
      'sync_replicas':
          settings.fill(cluster.SyncReplicas, flag_values),
  }


def _check_step_settings(step_settings, optimizer_settings, network, flag_values):
  """TrainingError for step settings that contradict each other or the
  network."""
  if (flag_values['keep_prob'].present and step_settings.keep_prob != 1.0
      and not architectures.dropout_shapes(network)):
    raise TrainingError('--keep_prob=%g: architecture %s has no dropout; drop the flag' %
                        (step_settings.keep_prob, network.architecture))
  if step_settings.steps_per_call > 1 and not network.xla_step:
    raise TrainingError('--steps_per_call=%d compiles the steps with XLA, whose '
                        'convolutions are slow on CPUs: architecture %s trains '
                        'one step per call' % (step_settings.steps_per_call, network.architecture))
  if step_settings.steps_per_call > 1:
    if optimizer_settings.optimizer not in fast_step.LOOP_OPTIMIZERS:
      raise TrainingError('--steps_per_call=%d works with --optimizer=%s, not %s' %
                          (step_settings.steps_per_call, ' or '.join(
                              fast_step.LOOP_OPTIMIZERS), optimizer_settings.optimizer))
    if optimizer_settings.simulated_staleness:
      raise TrainingError('--simulated_staleness delays each step\'s gradient; '
                          'it works with --steps_per_call=1 only')
  _check_iw_samples(step_settings, optimizer_settings, network)
  adam_flags = [
      name for name in ('adam_beta1', 'adam_beta2', 'adam_epsilon') if flag_values[name].present
  ]
  if adam_flags and optimizer_settings.optimizer != 'adam':
    raise TrainingError('--%s apply to --optimizer=adam, not --optimizer=%s' %
                        (', --'.join(adam_flags), optimizer_settings.optimizer))


# What a training step may hold in memory: activations of the batch times
# --train_iw_samples, forward and backward.
MAX_STEP_MEMORY_FRACTION = 0.5


def _check_iw_samples(step_settings, optimizer_settings, network):
  """TrainingError unless --train_iw_samples fits the objective and memory."""
  samples = step_settings.train_iw_samples
  iwae = samples > 1 and step_settings.train_bound == 'iwae'
  if iwae and step_settings.train_kl != 'closed_form':
    raise TrainingError('--train_kl=%s: --train_bound=iwae with --train_iw_samples=%d has no KL '
                        'term to estimate; set --train_kl=closed_form (a flag file may have '
                        'set it), or use --train_bound=elbo' % (step_settings.train_kl, samples))
  if samples == 1:
    return
  if iwae and (optimizer_settings.kl_weight != 1.0 or optimizer_settings.kl_warmup_steps):
    raise TrainingError('--train_bound=iwae with --train_iw_samples=%d has no KL term '
                        'to weigh: drop --kl_weight/--kl_warmup_steps, or use '
                        '--train_bound=elbo' % samples)
  # Forward activations, their gradients and the pass's temporaries: about
  # three float32 copies of the activations of K * batch rows.
  needed = (3 * 4 * samples * step_settings.batch_size
            * architectures.activations_per_example(network))
  available = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if needed > MAX_STEP_MEMORY_FRACTION * available:
    raise TrainingError('--train_iw_samples=%d with --batch_size=%d needs about %.1f GiB for a '
                        'step\'s activations, more than half of this machine\'s %.1f GiB' %
                        (samples, step_settings.batch_size, needed / 2**30, available / 2**30))


def main():
  for name in LAUNCHER_FLAGS:
    if FLAGS[name].present:
      logging.info('Launcher flag --%s=%s accepted; not used.', name, FLAGS[name].value)
  run_settings = settings_from_flags()
  role = cluster.resolve_role(
      os.environ.get('TF_CONFIG'), *settings.fill(cluster.ClusterFlags, FLAGS))
  if role and run_settings['optimizer_settings'].simulated_staleness:
    raise cluster.ClusterError(
        '--simulated_staleness models a cluster in one process; this process '
        'is the %s task %d of a cluster, whose staleness is real. Drop one of '
        'them.' % (role.job_name, role.task_index))
  if role and run_settings['step_settings'].steps_per_call > 1:
    raise cluster.ClusterError(
        '--steps_per_call=%d runs steps in one process; this process is the %s '
        'task %d of a cluster, whose steps synchronize one at a time. Drop '
        '--steps_per_call.' %
        (run_settings['step_settings'].steps_per_call, role.job_name, role.task_index))
  if role and role.job_name == 'ps':
    return cluster.run_parameter_server(role, training.session_config(run_settings['threads']))
  metrics = run_training(role=role, **run_settings)
  if metrics.get('interrupted_by'):
    return 128 + signal.Signals[metrics['interrupted_by']].value
  return 0


def run():
  """Console-script entry point (vae-train)."""
  cli.run(main, define_flags, __name__, EXPECTED_ERRORS, SETTINGS_TYPES, OTHER_FLAGS)


if __name__ == '__main__':
  run()
