"""Cluster membership: who is in the job, and which task this process is.

Launchers describe a TensorFlow cluster in one of two ways:

  TF_CONFIG (Kubeflow TFJob, TensorFlow's convention), a JSON environment
  variable: {"cluster": {"chief": [...], "worker": [...], "ps": [...]},
             "task": {"type": "worker", "index": 1}}

  the classic flags (Alibaba PAI, Slurm and hand-written scripts):
  --ps_hosts=h:p,... --worker_hosts=h:p,... --job_name=ps|worker --task_index=i
  (worker 0 is the chief).

`resolve_role` turns either into a ClusterRole; None means single-process.
The rest is the runtime around between-graph replication: where ops go
(`device_function`), the parameter server's life (`run_parameter_server`,
ended by the workers' `report_done`), and a non-chief's wait for the chief
(`wait_for_initialization`).
"""

import collections
import json
import signal
import time

from absl import logging
import tensorflow.compat.v1 as tf

ClusterRole = collections.namedtuple('ClusterRole', [
    'cluster',       # dict job name -> list of 'host:port'.
    'job_name',      # 'ps', 'worker' or 'chief'.
    'task_index',    # index within job_name.
    'is_chief',      # True for the one task that initialises and saves.
    'worker_index',  # 0..num_workers-1 among the training tasks, chief first.
    'num_workers',   # number of training tasks (chief included).
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
    raise ClusterError('This task is a %r, but the cluster has only the jobs %s'
                       % (job_name, ', '.join(sorted(cluster))))
  if not 0 <= task_index < len(cluster[job_name]):
    raise ClusterError('Task index %d is out of range: job %r has %d tasks'
                       % (task_index, job_name, len(cluster[job_name])))
  trainers = [(job, i) for job in TRAINING_JOBS
              for i in range(len(cluster.get(job, [])))]
  if not trainers:
    raise ClusterError('The cluster %s has no chief or worker task'
                       % json.dumps(cluster))
  worker_index = (trainers.index((job_name, task_index))
                  if job_name in TRAINING_JOBS else None)
  return ClusterRole(cluster=cluster, job_name=job_name, task_index=task_index,
                     is_chief=worker_index == 0, worker_index=worker_index,
                     num_workers=len(trainers))


def role_from_tf_config(tf_config):
  """ClusterRole from the JSON text of TF_CONFIG; None when it names no cluster."""
  try:
    config = json.loads(tf_config)
  except ValueError as e:
    raise ClusterError('TF_CONFIG is not valid JSON: %s' % e) from e
  cluster = {job: list(hosts) for job, hosts in config.get('cluster', {}).items()
             if job in ('ps',) + TRAINING_JOBS and hosts}
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
  cluster = {'ps': [h for h in ps_hosts.split(',') if h],
             'worker': [h for h in worker_hosts.split(',') if h]}
  return _role(cluster, job_name, task_index)


def resolve_role(tf_config, ps_hosts, worker_hosts, job_name, task_index):
  """The flags win over TF_CONFIG when both describe a cluster."""
  return (role_from_flags(ps_hosts, worker_hosts, job_name, task_index)
          or (role_from_tf_config(tf_config) if tf_config else None))


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
      cluster=tf.train.ClusterSpec(role.cluster), worker_device=device_of(role))


def _done_queue(ps_index, num_workers):
  with tf.device('/job:ps/task:%d' % ps_index):
    return tf.FIFOQueue(num_workers, tf.int32,
                        shared_name='done_queue_%d' % ps_index)


def run_parameter_server(role, session_config):
  """Serves variables until every training task has reported that it is done.

  A ps blocked in `server.join()` ignores SIGINT and never ends by itself;
  this one waits on a queue the workers enqueue into when they finish
  (`report_done`), so a finished job exits with status 0 on its own.
  """
  server = tf.train.Server(tf.train.ClusterSpec(role.cluster), job_name='ps',
                           task_index=role.task_index, config=session_config)
  # The dequeue below blocks inside TensorFlow, where Python signal handlers
  # never run: let SIGINT end the process at once, as SIGTERM does.
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  logging.info('Parameter server %d serving at %s; waiting for %d workers.',
               role.task_index, role.cluster['ps'][role.task_index],
               role.num_workers)
  with tf.Graph().as_default():
    done = _done_queue(role.task_index, role.num_workers).dequeue()
    with tf.Session(server.target, config=session_config) as session:
      for finished in range(1, role.num_workers + 1):
        worker = session.run(done)
        logging.info('Parameter server %d: worker %d is done (%d of %d).',
                     role.task_index, worker, finished, role.num_workers)


def report_done(role, target, session_config):
  """Tells every parameter server that this training task has finished."""
  with tf.Graph().as_default():
    reports = [_done_queue(ps_index, role.num_workers).enqueue(role.worker_index)
               for ps_index in range(len(role.cluster['ps']))]
    with tf.Session(target, config=session_config) as session:
      session.run(reports)


def wait_for_initialization(graph, uninitialized, target, session_config,
                            timeout_sec=600):
  """Polls until the chief has initialised the variables on the ps.

  Left to itself, a non-chief's session manager looks once and then sleeps
  30 s before looking again.

  Args:
    graph: the training graph.
    uninitialized: its `tf.report_uninitialized_variables()` op.
    target: this task's server target.
  """
  deadline = time.time() + timeout_sec
  with tf.Session(target, graph=graph, config=session_config) as session:
    while session.run(uninitialized).size:
      if time.time() > deadline:
        raise ClusterError('The chief did not initialise the model within %d s'
                           % timeout_sec)
      time.sleep(0.25)
