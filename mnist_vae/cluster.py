"""Cluster membership: who is in the job, and which task this process is.

Launchers describe a TensorFlow cluster in one of two ways:

  TF_CONFIG (Kubeflow TFJob, TensorFlow's convention), a JSON environment
  variable: {"cluster": {"chief": [...], "worker": [...], "ps": [...]},
             "task": {"type": "worker", "index": 1}}

  the classic flags (Alibaba PAI, Slurm and hand-written scripts):
  --ps_hosts=h:p,... --worker_hosts=h:p,... --job_name=ps|worker --task_index=i
  (worker 0 is the chief).

`resolve_role` turns either into a ClusterRole; None means single-process.
The rest is the runtime around between-graph replication, so that train.py's
loop reads the same for one process and for a cluster:

  run_parameter_server()  a ps's whole life, ended by the workers' reports
  Worker                  a training task's server, its waits for the chief
                          (data, initialisation) and its report when done; a
                          no-op for a single process
  device_function()       variables on the parameter servers
  synchronize()           SyncReplicasOptimizer and its session parts
  StaleGradientOptimizer  one process that updates as an asynchronous worker
                          does, for the staleness study
"""

import collections
import json
import signal
import socket
import time

from absl import logging
import tensorflow.compat.v1 as tf

from mnist_vae.data_prep import convert_to_records

ClusterRole = collections.namedtuple(
    'ClusterRole',
    [
        'cluster',  # dict job name -> list of 'host:port'.
        'job_name',  # 'ps', 'worker' or 'chief'.
        'task_index',  # index within job_name.
        'is_chief',  # True for the one task that initialises and saves.
        'worker_index',  # 0..num_workers-1 among the training tasks, chief first.
        'num_workers',  # number of training tasks (chief included).
    ])

TRAINING_JOBS = ('chief', 'worker')


class ClusterError(ValueError):
  """The cluster description is inconsistent."""


def _role(cluster, job_name, task_index):
  if not cluster.get('ps'):
    raise ClusterError('The cluster %s has no ps task: between-graph '
                       'replication keeps the variables on parameter servers.'
                       % json.dumps(cluster))
  if job_name not in cluster:
    raise ClusterError('This task is a %r, but the cluster has only the jobs %s' %
                       (job_name, ', '.join(sorted(cluster))))
  if not 0 <= task_index < len(cluster[job_name]):
    raise ClusterError('Task index %d is out of range: job %r has %d tasks' %
                       (task_index, job_name, len(cluster[job_name])))
  trainers = [(job, i) for job in TRAINING_JOBS for i in range(len(cluster.get(job, [])))]
  if not trainers:
    raise ClusterError('The cluster %s has no chief or worker task' % json.dumps(cluster))
  worker_index = (trainers.index((job_name, task_index)) if job_name in TRAINING_JOBS else None)
  return ClusterRole(
      cluster=cluster,
      job_name=job_name,
      task_index=task_index,
      is_chief=worker_index == 0,
      worker_index=worker_index,
      num_workers=len(trainers))


def role_from_tf_config(tf_config):
  """ClusterRole from the JSON text of TF_CONFIG; None when it names no cluster."""
  try:
    config = json.loads(tf_config)
  except ValueError as e:
    raise ClusterError('TF_CONFIG is not valid JSON: %s' % e) from e
  cluster = {
      job: list(hosts)
      for job, hosts in config.get('cluster', {}).items()
      if job in ('ps',) + TRAINING_JOBS and hosts
  }
  if not cluster:
    return None
  task = config.get('task', {})
  if 'type' not in task:
    raise ClusterError('TF_CONFIG has a cluster but no task type')
  return _role(cluster, task['type'], int(task.get('index', 0)))


def role_from_flags(ps_hosts, worker_hosts, job_name, task_index):
  """ClusterRole from the classic flags; None when no hosts are given."""
  if not ps_hosts and not worker_hosts:
    return None
  if job_name not in ('ps', 'worker'):
    raise ClusterError('--job_name must be ps or worker when --ps_hosts/'
                       '--worker_hosts are given, not %r' % job_name)
  cluster = {
      'ps': [h for h in ps_hosts.split(',') if h],
      'worker': [h for h in worker_hosts.split(',') if h]
  }
  return _role(cluster, job_name, task_index)


def resolve_role(tf_config, ps_hosts, worker_hosts, job_name, task_index):
  """The flags win over TF_CONFIG when both describe a cluster."""
  return (role_from_flags(ps_hosts, worker_hosts, job_name, task_index)
          or (role_from_tf_config(tf_config) if tf_config else None))


def free_local_ports(count):
  """`count` distinct ports free on 127.0.0.1 now, for a local cluster."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def device_of(role):
  """This task's device name, e.g. '/job:worker/task:1'."""
  return '/job:%s/task:%d' % (role.job_name, role.task_index)


def device_function(role):
  """Variables on the parameter servers, everything else on this task; None
  (no placement) without a cluster."""
  if role is None:
    return None
  # tf.compat.v1.device: TF2's tf.device rejects a device function.
  return tf.train.replica_device_setter(
      cluster=tf.train.ClusterSpec(role.cluster),
      worker_device=device_of(role),
      ps_strategy=ByteBalancer(len(role.cluster['ps'])))


class ByteBalancer(object):
  """Places each variable on the parameter server holding the fewest bytes.

  replica_device_setter's default, round robin, alternates weights and
  biases: with 2 ps one held 99.8% of this model's bytes, with 4 ps one held
  61%, so the busiest ps's link moved nearly everything anyway. TF 1's
  GreedyLoadBalancingStrategy did this; TF 2 dropped it with contrib.
  """

  def __init__(self, num_ps):
    self.loads = [0] * num_ps

  def __call__(self, op):
    size = 1  # Scalars (steps, Adam's beta powers) still spread.
    if op.type in ('VarHandleOp', 'VariableV2', 'Variable'):
      shape = tf.TensorShape(op.get_attr('shape'))
      if shape.is_fully_defined():
        size = max(shape.num_elements() * op.get_attr('dtype').size, 1)
    task = self.loads.index(min(self.loads))
    self.loads[task] += size
    return task


def _done_queue(ps_index, num_workers):
  # Room for every report a worker may repeat (report_done retries when an
  # answer is lost), so that an enqueue never waits on a full queue.
  with tf.device('/job:ps/task:%d' % ps_index):
    return tf.FIFOQueue(
        num_workers * REPORT_DONE_TRIES,
        tf.int32,
        shapes=[[]],
        shared_name='done_queue_%d' % ps_index)


# How long a parameter server keeps serving after SIGTERM (preemption, a
# requeue, the time limit's --signal): long enough for the chief, stopped by
# the same signal, to save a checkpoint of the variables it holds, and shorter
# than Slurm's KillWait (30 s by default), after which SIGKILL comes.
PS_STOP_GRACE_SEC = 20


def run_parameter_server(role, session_config):
  """Serves variables until every training task has reported that it is done,
  or PS_STOP_GRACE_SEC after SIGTERM.

  A ps blocked in `server.join()` ignores SIGINT and never ends by itself;
  this one waits on a queue the workers enqueue into when they finish
  (`report_done`), so a finished job exits with status 0 on its own.

  Returns:
    The exit status: 0, or 128 + SIGTERM when stopped by it.
  """
  server = tf.train.Server(
      tf.train.ClusterSpec(role.cluster),
      job_name='ps',
      task_index=role.task_index,
      config=session_config)
  # Let SIGINT end the process at once. SIGTERM, which stops every task of a
  # preempted job at once, is served through the grace period.
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  terminated_at = []

  def on_sigterm(signum, frame):
    del signum, frame  # Unused.
    if not terminated_at:
      terminated_at.append(time.time())
      logging.warning(
          'Parameter server %d: received SIGTERM; serving %d s '
          'more so that the chief can save a checkpoint.', role.task_index, PS_STOP_GRACE_SEC)

  signal.signal(signal.SIGTERM, on_sigterm)
  logging.info('Parameter server %d serving at %s; waiting for %d workers.', role.task_index,
               role.cluster['ps'][role.task_index], role.num_workers)
  with tf.Graph().as_default():
    queue = _done_queue(role.task_index, role.num_workers)
    waiting, reports = queue.size(), queue.dequeue_many(queue.size())
    with tf.Session(server.target, config=session_config) as session:
      # A set, not a count: a worker that retried its report counts once.
      finished = set()
      while len(finished) < role.num_workers:
        if terminated_at and time.time() - terminated_at[0] > PS_STOP_GRACE_SEC:
          return 128 + signal.SIGTERM
        # Polled, not waited for: a dequeue cut off by a deadline can take a
        # report with it (seen: a worker's report lost, its ps waiting for
        # ever), and a dequeue of what is there never blocks (only this
        # process dequeues). Between polls the SIGTERM handler runs.
        if not session.run(waiting):
          time.sleep(0.25)
          continue
        for worker in session.run(reports):
          if worker not in finished:
            finished.add(worker)
            logging.info('Parameter server %d: worker %d is done (%d of %d).', role.task_index,
                         worker, len(finished), role.num_workers)
  return 0


# A report that has no answer within REPORT_DONE_TIMEOUT_SEC is sent again,
# up to REPORT_DONE_TRIES times, so that a busy ps cannot hold a finished
# worker for ever; the ps counts each worker once.
REPORT_DONE_TRIES = 4
REPORT_DONE_TIMEOUT_SEC = 30


def report_done(role, target, session_config):
  """Tells every parameter server that this training task has finished.

  Raises:
    ClusterError: if no parameter server answered in any of the tries.
  """
  deadline = tf.RunOptions(timeout_in_ms=REPORT_DONE_TIMEOUT_SEC * 1000)
  for attempt in range(1, REPORT_DONE_TRIES + 1):
    with tf.Graph().as_default():
      reports = [
          _done_queue(ps_index, role.num_workers).enqueue(role.worker_index)
          for ps_index in range(len(role.cluster['ps']))
      ]
      with tf.Session(target, config=session_config) as session:
        try:
          session.run(reports, options=deadline)
          return
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
          logging.warning(
              'Worker %d: telling the parameter servers that it is '
              'done had no answer (try %d of %d): %s', role.worker_index, attempt,
              REPORT_DONE_TRIES,
              e.message.split('\n')[0])
  raise ClusterError('Worker %d could not tell the parameter servers %s that it '
                     'is done (%d tries of %d s); they will wait for it until stopped.' %
                     (role.worker_index, ', '.join(
                         role.cluster['ps']), REPORT_DONE_TRIES, REPORT_DONE_TIMEOUT_SEC))


class Worker(object):
  """This process's part in training: a cluster's training task, or (role
  None) a single process, for which every call below does nothing.

  Attributes:
    role: the ClusterRole, or None.
    is_chief: True for the task that initialises, saves and evaluates (a
      single process is its own chief).
    target: the session target ('' for a single process).
    config: the session ConfigProto, with device filters in a cluster.
  """

  def __init__(self, role, config):
    self.role = role
    self.is_chief = role is None or role.is_chief
    self.config = config
    self.target = ''
    if role is None:
      return
    # Talk to the parameter servers and to this task only: a chief must not
    # wait for workers that have not started.
    config.device_filters.extend(['/job:ps', device_of(role)])
    self._server = tf.train.Server(
        tf.train.ClusterSpec(role.cluster),
        job_name=role.job_name,
        task_index=role.task_index,
        config=config)
    self.target = self._server.target
    logging.info('Worker %d of %d (%s), chief: %s.', role.worker_index, role.num_workers,
                 device_of(role), self.is_chief)

  def wait_for_data(self, data_dir, timeout_sec=600):
    """Non-chief workers leave data preparation to the chief, and wait."""
    if self.is_chief:
      return
    deadline = time.time() + timeout_sec
    while not convert_to_records.tfrecords_exist(data_dir):
      if time.time() > deadline:
        raise ClusterError('No TFRecords appeared in %s within %d s (the chief '
                           'prepares them)' % (data_dir, timeout_sec))
      time.sleep(1.0)

  def wait_for_chief(self, graph, timeout_sec=600):
    """Non-chief workers poll until the chief has initialised the variables
    on the ps (left to itself, a session manager looks once, then sleeps
    30 s before looking again)."""
    if self.is_chief:
      return
    deadline = time.time() + timeout_sec
    with graph.as_default(), tf.device(device_function(self.role)):
      uninitialized = tf.report_uninitialized_variables(tf.global_variables())
    with tf.Session(self.target, graph=graph, config=self.config) as session:
      while session.run(uninitialized).size:
        if time.time() > deadline:
          raise ClusterError('The chief did not initialise the model within '
                             '%d s' % timeout_sec)
        time.sleep(0.25)

  def log_placement(self, graph):
    """Logs how many variables each parameter server holds."""
    if self.role is None:
      return
    counts, sizes = collections.Counter(), collections.Counter()
    for variable in graph.get_collection('variables'):
      counts[variable.device] += 1
      sizes[variable.device] += (variable.shape.num_elements() * variable.dtype.base_dtype.size)
    logging.info(
        'Variables per parameter server: %s.',
        ', '.join('%s: %d (%.2f MB)' % (device, counts[device], sizes[device] / 1e6)
                  for device in sorted(counts)))

  def finish(self, local_steps, step):
    """Logs this task's share and tells every parameter server it is done."""
    if self.role is None:
      return
    logging.info('Worker %d ran %d local steps; global step %d.', self.role.worker_index,
                 local_steps, step)
    report_done(self.role, self.target, self.config)


# --sync_replicas and --replicas_to_aggregate, as given.
SyncReplicas = collections.namedtuple(
    'SyncReplicas', ['sync_replicas', 'replicas_to_aggregate'], defaults=(True, 0))
# A task's place in a cluster as the classic flags give it (TF_CONFIG is the
# other way): see resolve_role.
ClusterFlags = collections.namedtuple(
    'ClusterFlags', ['ps_hosts', 'worker_hosts', 'job_name', 'task_index'],
    defaults=('', '', '', 0))


def effective_sync(sync_replicas, role):
  """The SyncReplicas a task runs with: synchronous only in a cluster with
  two or more workers (one worker has no one to wait for)."""
  synchronous = bool(sync_replicas and sync_replicas.sync_replicas and role
                     and role.num_workers > 1)
  return SyncReplicas(synchronous, sync_replicas.replicas_to_aggregate if synchronous else 0)


class SyncReplicasParts(
    collections.namedtuple(
        'SyncReplicasParts',
        [
            'hook',  # SyncReplicasOptimizer's session hook.
            'release_tokens',  # lets workers blocked at the end finish, or None.
        ])):
  """What a session needs to run a SyncReplicasOptimizer."""


def synchronize(optimizer, sync_replicas, role):
  """`optimizer` wrapped to aggregate replicas_to_aggregate (default: all)
  workers' gradients per update: a SyncReplicasOptimizer."""
  num_workers = role.num_workers if role else 1
  return tf.train.SyncReplicasOptimizer(
      optimizer,
      replicas_to_aggregate=sync_replicas.replicas_to_aggregate or num_workers,
      total_num_replicas=num_workers)


def sync_parts(synced_optimizer, role):
  """The SyncReplicasParts of a SyncReplicasOptimizer that has applied its
  gradients."""
  is_chief = role is None or role.is_chief
  return SyncReplicasParts(
      hook=synced_optimizer.make_session_run_hook(is_chief),
      release_tokens=(synced_optimizer.get_init_tokens_op(
          num_tokens=role.num_workers if role else 1) if is_chief else None))


class StaleGradientOptimizer(tf.train.Optimizer):
  """Applies at each step the gradient computed `staleness` steps earlier.

  One process's model of an asynchronous worker: with N workers each update
  is computed on weights that the other workers have moved about N-1 updates
  since they were read. Here the gradient of step t (computed on the weights
  of step t) waits in a queue of `staleness` buffers and is applied at step
  t + staleness, so every update uses the weights of `staleness` steps
  before, deterministically, with one process's data order and seed. The
  first `staleness` steps apply zero gradients (for Adam: no move, only its
  beta powers advance).
  """

  def __init__(self, optimizer, staleness):
    super().__init__(use_locking=False, name='Stale' + optimizer.get_name())
    self._optimizer = optimizer
    self._staleness = staleness

  def compute_gradients(self, *args, **kwargs):
    return self._optimizer.compute_gradients(*args, **kwargs)

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    """Pushes each gradient into its variable's queue and applies the oldest.

    The queue's reads happen before its shifts, so the applied gradient is the
    one pushed `staleness` steps ago; the update waits for the new gradients,
    which are computed on the weights before it.
    """
    delayed_and_vars, shifts = [], []
    for grad, var in grads_and_vars:
      with tf.colocate_with(var):
        queue = [
            tf.Variable(
                tf.zeros(var.shape, var.dtype.base_dtype),
                trainable=False,
                name='%s/stale_gradient_%d' % (var.op.name, i)) for i in range(self._staleness)
        ]
        oldest_first = [buffer.read_value() for buffer in queue]
        with tf.control_dependencies(oldest_first):
          shifts += [
              buffer.assign(newer) for buffer, newer in zip(queue, oldest_first[1:] + [grad])
          ]
      delayed_and_vars.append((oldest_first[0], var))
    # The new gradients read the weights before this step moves them.
    with tf.control_dependencies([grad for grad, _ in grads_and_vars]):
      update = self._optimizer.apply_gradients(delayed_and_vars, global_step, name=name)
    return tf.group(update, *shifts)
