"""Submission scripts run for real: PAI's archive runs train.py as a cluster
with a Python that does not have this project installed."""

import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import time

import pytest
import tensorflow as tf
import yaml

from helpers import REPO_ROOT
from helpers import checkpoint_step
from helpers import free_ports
from helpers import run_process
from helpers import start_process
from helpers import wait_for
from mnist_vae.data_prep import convert_to_records

# Every test here starts processes, a cluster or a server.
pytestmark = pytest.mark.large

# Runs the unpacked train.py with site-packages on the path but none of their
# .pth files, so this project's (editable) installation is invisible.
_WITHOUT_THE_PROJECT = r'''
import importlib.util, os, runpy, sys
site_packages, args = sys.argv[1].split(':'), sys.argv[2:]
sys.path[:] = [os.getcwd()] + [p for p in sys.path if p] + site_packages
origin = importlib.util.find_spec('mnist_vae').origin
assert origin.startswith(os.getcwd()), 'mnist_vae from ' + origin
sys.argv = ['train.py'] + args
runpy.run_path('train.py', run_name='__main__')
'''


def test_pai_archive_runs_train_py_as_a_cluster_without_the_project(small_idx_dir, tmp_path):
  archive = tmp_path / 'code.tar.gz'
  env = dict(os.environ, ARCHIVE=str(archive), PYTHON=sys.executable)
  built = run_process(
      ['bash', os.path.join(REPO_ROOT, 'scripts', 'cluster', 'pai_submit.sh'), '--dry_run'],
      env=env)
  assert built.returncode == 0, built.stderr
  assert 'archive: %s' % archive in built.stdout
  assert re.search(r"odpscmd -e \"pai -name .*-DentryFile='train.py'", built.stdout, re.S)
  assert 'TensorFlow >= 2.19' in built.stdout  # No runner named that cannot run it.
  unpacked = tmp_path / 'unpacked'
  unpacked.mkdir()
  with tarfile.open(archive) as tar:
    names = tar.getnames()
    tar.extractall(unpacked)
  assert 'train.py' in names and 'mnist_vae/data_prep/records.py' in names
  assert not any(name.startswith(('tests', 'bench', 'reporting')) for name in names)

  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  ps_port, worker_port = free_ports(2)
  common = [
      '--buckets', data, '--checkpointDir',
      str(tmp_path / 'ckpt'), '--tables', 'odps://project/tables/x', '--outputs',
      'odps://project/tables/y', '--ps_hosts',
      '127.0.0.1:%d' % ps_port, '--worker_hosts',
      '127.0.0.1:%d' % worker_port, '--max_steps', '20', '--batch_size', '10', '--hidden_units',
      '16', '--latent_dim', '2', '--log_every_n_steps', '5'
  ]
  bare_env = {
      'PATH': os.environ['PATH'],
      'TF_CPP_MIN_LOG_LEVEL': '2',
      'HOME': os.environ.get('HOME', '/root')
  }
  site_packages = ':'.join(site.getsitepackages())
  processes = {
      role:
          start_process(
              [sys.executable, '-S', '-c', _WITHOUT_THE_PROJECT, site_packages] + common
              + ['--job_name', job, '--task_index', '0'],
              cwd=str(unpacked),
              env=bare_env,
              stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT,
              text=True) for role, job in (('ps', 'ps'), ('worker', 'worker'))
  }
  worker_log = processes['worker'].communicate(timeout=300)[0]
  assert processes['worker'].returncode == 0, worker_log[-4000:]
  ps_log = processes['ps'].communicate(timeout=60)[0]
  assert processes['ps'].returncode == 0, ps_log[-4000:]
  assert 'Launcher flag --tables=odps://project/tables/x accepted' in worker_log
  checkpoint = tf.train.latest_checkpoint(str(tmp_path / 'ckpt'))
  assert int(tf.train.load_variable(checkpoint, 'global_step')) == 20


def _tf_configs(tfjob, hosts_of):
  """The TF_CONFIG the training operator gives each replica of `tfjob`:
  {(job, index): json text}; job names are the replica types, lower-cased."""
  cluster = {
      replica_type.lower(): [hosts_of(replica_type.lower(), i) for i in range(spec['replicas'])]
      for replica_type, spec in tfjob['spec']['tfReplicaSpecs'].items()
  }
  return {
      (job, index):
          json.dumps({
              'cluster': cluster,
              'task': {
                  'type': job,
                  'index': index
              },
              'environment': 'cloud'
          }) for job, hosts in cluster.items() for index in range(len(hosts))
  }


def test_kubeflow_tfjob_replicas_run_to_the_end(small_mnist_records, tmp_path):
  with open(os.path.join(REPO_ROOT, 'scripts', 'cluster', 'kubeflow_tfjob.yaml')) as f:
    documents = list(yaml.safe_load_all(f))
  tfjob = next(d for d in documents if d['kind'] == 'TFJob')
  policy = next(d for d in documents if d['kind'] == 'NetworkPolicy')
  job_label = {'training.kubeflow.org/job-name': tfjob['metadata']['name']}
  assert policy['spec']['podSelector']['matchLabels'] == job_label
  assert policy['spec']['ingress'] == [{'from': [{'podSelector': {'matchLabels': job_label}}]}]

  specs = tfjob['spec']['tfReplicaSpecs']
  ports = iter(free_ports(sum(spec['replicas'] for spec in specs.values())))
  hosts = {}
  configs = _tf_configs(tfjob, lambda job, i: hosts.setdefault(
      (job, i), '127.0.0.1:%d' % next(ports)))
  train_dir = tmp_path / 'train'
  # The file's own arguments, its data and run directory moved here and its
  # 1,000 synchronous updates cut to 100: the same job, a tenth of the steps.
  max_steps = 100
  moved = {
      '--data_dir=gs://BUCKET/mnist': '--data_dir=%s' % small_mnist_records,
      '--train_dir=gs://BUCKET/runs/vae-cluster': '--train_dir=%s' % train_dir,
      '--max_steps=1000': '--max_steps=%d' % max_steps
  }
  processes = {}
  for (job, index), tf_config in configs.items():
    replica_type = next(name for name in specs if name.lower() == job)
    container = specs[replica_type]['template']['spec']['containers'][0]
    assert container['image'].endswith('/tf1-mnist-vae:latest')
    assert set(moved) <= set(container['args']), container['args']
    command = container['command'] + [moved.get(arg, arg) for arg in container['args']]
    assert command[:2] == ['python', 'train.py']
    env = dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT)
    log = open(tmp_path / ('%s%d.log' % (job, index)), 'w')
    processes[(job, index)] = start_process(
        [sys.executable] + command[1:], env=env, stdout=log, stderr=subprocess.STDOUT)
  for key, process in processes.items():
    assert process.wait(timeout=600) == 0, (key, (tmp_path /
                                                  ('%s%d.log' % key)).read_text()[-4000:])
  with open(train_dir / 'metrics.json') as f:
    assert json.load(f)['step'] >= max_steps
  chief_log = (tmp_path / 'worker0.log').read_text()
  assert 'Worker 0 of 2 (/job:worker/task:0), chief: True' in chief_log


_SLURM_CONF = '''ClusterName=vaetest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=node[1-3] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[{slurmd_ports}] CPUs=8 \
State=UNKNOWN
PartitionName=debug Nodes=node[1-3] Default=YES OverSubscribe=FORCE MaxTime=INFINITE State=UP
'''
_SLURM_DAEMONS = ('munged', 'slurmctld', 'slurmd')


def _consecutivefree_ports(count):
  """`count` consecutive ports that are free now, above the ephemeral range."""
  for base in range(20000 + os.getpid() % 5000, 32000, 7):
    sockets = []
    try:
      for port in range(base, base + count):
        s = socket.socket()
        sockets.append(s)
        s.bind(('127.0.0.1', port))
      return base
    except OSError:
      continue
    finally:
      for s in sockets:
        s.close()
  raise AssertionError('no %d consecutive free ports' % count)


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
  """A real Slurm on this machine: munged, slurmctld and three slurmd (nodes
  node1-3, all 127.0.0.1) in a temp dir, with ports of their own; stopped by
  their pids when the module's tests are done."""
  missing = [d for d in _SLURM_DAEMONS + ('sbatch', 'mungekey') if not shutil.which(d)]
  reason = None
  if missing:
    reason = 'Slurm is not installed (no %s): apt-get install slurmctld slurmd ' \
             'slurm-client munge' % ', '.join(missing)
  elif os.geteuid() != 0:
    reason = 'starting slurmd needs root'
  if reason:
    if os.environ.get('CI'):
      pytest.fail(reason)
    pytest.skip(reason)
  root = tmp_path_factory.mktemp('slurm')
  for name in ('state', 'spool/node1', 'spool/node2', 'spool/node3'):
    (root / name).mkdir(parents=True)
  ctld_port = _consecutivefree_ports(4)
  conf = root / 'slurm.conf'
  conf.write_text(
      _SLURM_CONF.format(
          root=root, ctld_port=ctld_port, slurmd_ports='%d-%d' % (ctld_port + 1, ctld_port + 3)))
  env = dict(os.environ, SLURM_CONF=str(conf))
  subprocess.run(
      ['mungekey', '-c', '-f', '-k', str(root / 'munge.key')], check=True, capture_output=True)
  daemons = [
      subprocess.Popen([
          'munged', '--foreground', '--force', '--socket',
          str(root / 'munge.socket'), '--key-file',
          str(root / 'munge.key'), '--pid-file',
          str(root / 'munged.pid'), '--seed-file',
          str(root / 'munge.seed'), '--log-file',
          str(root / 'munged.log')
      ],
                       stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT)
  ]
  try:
    wait_for(lambda: (root / 'munge.socket').exists(), 'munged socket', daemons, 30)
    daemons.append(
        subprocess.Popen(['slurmctld', '-D', '-f', str(conf)],
                         env=env,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.STDOUT))
    for node in ('node1', 'node2', 'node3'):
      daemons.append(
          subprocess.Popen(['slurmd', '-D', '-f', str(conf), '-N', node],
                           env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT))

    def all_idle():
      info = subprocess.run(['sinfo', '-h', '-o', '%T %D'], env=env, capture_output=True,
                            text=True).stdout.split()
      return info == ['idle', '3']

    wait_for(all_idle, 'three idle Slurm nodes', daemons, 60)
    yield env, root
  finally:
    # Cancel what is left and let slurmd see it end: a daemon stopped under a
    # running job leaves its slurmstepd and tasks behind.
    subprocess.run(['scancel', '--full', '--quiet', '-u', 'root'], env=env, capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(
        ['squeue', '-h', '-o', '%i'], env=env, capture_output=True, text=True).stdout.strip():
      time.sleep(0.5)
    for daemon in reversed(daemons):
      daemon.terminate()
    for daemon in reversed(daemons):
      try:
        daemon.wait(timeout=30)
      except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def _job_completion(root, job_id):
  """The first jobcomp record of job_id as a dict, or None while it runs."""
  records = _job_records(root, job_id)
  return records[0] if records else None


@pytest.mark.parametrize(
    'layout', [[], ['--nodes=1', '--ntasks=3', '--ntasks-per-node=3']],
    ids=['three_nodes', 'one_node'])
def test_slurm_batch_script_completes(slurm, small_mnist_records, tmp_path, layout):
  env, root = slurm
  env = dict(
      env,
      DATA_DIR=small_mnist_records,
      TRAIN_DIR=str(tmp_path / 'train'),
      PORT_BASE=str(_consecutivefree_ports(3)),
      PYTHON=sys.executable,
      TF_CPP_MIN_LOG_LEVEL='2',
      PATH=os.path.dirname(sys.executable) + ':' + os.environ['PATH'],
      PYTHONPATH=REPO_ROOT)
  submitted = subprocess.run(
      ['sbatch', '--parsable', '--output',
       str(tmp_path / 'job-%j.log')] + layout + [
           os.path.join(REPO_ROOT, 'scripts', 'cluster', 'slurm_train.sbatch'), '--max_steps=300',
           '--hidden_units=64', '--latent_dim=8', '--batch_size=32', '--eval_batch_size=200'
       ],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True)
  assert submitted.returncode == 0, submitted.stderr
  job_id = submitted.stdout.strip().split(';')[0]
  wait_for(lambda: _job_completion(root, job_id), 'the end of Slurm job %s' % job_id, timeout=400)
  record = _job_completion(root, job_id)
  log = (tmp_path / ('job-%s.log' % job_id)).read_text()
  assert record['JobState'] == 'COMPLETED', log[-4000:]
  assert record['ExitCode'] == '0:0'  # srun --kill-on-bad-exit: every task exited 0.
  assert record['NodeCnt'] == ('1' if layout else '3')
  assert 'Parameter server 0: worker' in log and '(2 of 2)' in log
  assert checkpoint_step(tmp_path / 'train') >= 300
  with open(tmp_path / 'train' / 'metrics.json') as f:
    assert json.load(f)['step'] >= 300


def _job_records(root, job_id):
  """Every jobcomp record of job_id (one per run of a requeued job)."""
  path = root / 'jobcomp.txt'
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    fields = dict(field.split('=', 1) for field in line.split() if '=' in field)
    if fields.get('JobId') == str(job_id):
      records.append(fields)
  return records


def test_slurm_requeue_resumes_from_the_checkpoint_of_the_signal(slurm, small_mnist_records,
                                                                 tmp_path):
  env, root = slurm
  train_dir = tmp_path / 'train'
  env = dict(
      env,
      DATA_DIR=small_mnist_records,
      TRAIN_DIR=str(train_dir),
      PORT_BASE=str(_consecutivefree_ports(3)),
      PYTHON=sys.executable,
      TF_CPP_MIN_LOG_LEVEL='2',
      PATH=os.path.dirname(sys.executable) + ':' + os.environ['PATH'],
      PYTHONPATH=REPO_ROOT)
  max_steps = 800
  submitted = subprocess.run([
      'sbatch', '--parsable', '--output',
      str(tmp_path / 'job-%j.log'), '--nodes=1', '--ntasks=3', '--ntasks-per-node=3',
      os.path.join(REPO_ROOT, 'scripts', 'cluster', 'slurm_train.sbatch'),
      '--max_steps=%d' % max_steps, '--hidden_units=64', '--latent_dim=8', '--batch_size=32',
      '--eval_batch_size=200', '--save_checkpoint_steps=100000', '--log_every_n_steps=20'
  ],
                             cwd=REPO_ROOT,
                             env=env,
                             capture_output=True,
                             text=True)
  assert submitted.returncode == 0, submitted.stderr
  job_id = submitted.stdout.strip().split(';')[0]
  log_path = tmp_path / ('job-%s.log' % job_id)
  # Checkpoints are saved only at the start and on the way out: the step
  # resumed from is the one the chief reached when SIGTERM came.
  wait_for(
      lambda: re.search(r'step (2\d\d|[3-9]\d\d)[^:]*: neg_elbo',
                        log_path.read_text() if log_path.exists() else ''),
      'training past step 200',
      timeout=300)
  requeued = subprocess.run(['scontrol', 'requeue', job_id],
                            env=env,
                            capture_output=True,
                            text=True)
  assert requeued.returncode == 0, requeued.stderr

  def eligible_now():
    # Slurm holds a requeued job back for a while (its BeginTime); once it
    # is pending again, let it start at once.
    state = subprocess.run(['squeue', '-h', '-j', job_id, '-o', '%T'],
                           env=env,
                           capture_output=True,
                           text=True).stdout.strip()
    if state == 'PENDING':
      subprocess.run(['scontrol', 'update', 'JobId=' + job_id, 'StartTime=now'],
                     env=env,
                     capture_output=True,
                     check=True)
      return True
    return state == 'RUNNING' and 'run 2 of' in log_path.read_text()

  wait_for(eligible_now, 'the requeued job pending', timeout=120)
  wait_for(
      lambda: any(r['JobState'] == 'COMPLETED' for r in _job_records(root, job_id)),
      'the requeued job %s to complete' % job_id,
      timeout=600)
  log = log_path.read_text()
  assert 'run 1 of job %s' % job_id in log and 'run 2 of job %s' % job_id in log
  assert 'Received SIGTERM' in log
  stopped = re.search(r'Stopped by SIGTERM at step (\d+); checkpoint (\S+)\.', log)
  assert stopped, log[-4000:]
  assert int(stopped.group(1)) > 200
  assert 'Resuming from %s (step %s)' % (stopped.group(2), stopped.group(1)) in log
  records = _job_records(root, job_id)
  assert records[-1]['JobState'] == 'COMPLETED' and records[-1]['ExitCode'] == '0:0'
  assert checkpoint_step(train_dir) == max_steps
  with open(train_dir / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['step'] == max_steps and metrics['interrupted_by'] is None
