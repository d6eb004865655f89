"""Submission scripts run for real: PAI's archive runs train.py as a cluster
with a Python that does not have this project installed."""

import json
import os
import re
import site
import socket
import subprocess
import sys
import tarfile

import tensorflow as tf
import yaml

from conftest import REPO_ROOT, run_process, start_process
from mnist_vae.data_prep import convert_to_records

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


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_pai_archive_runs_train_py_as_a_cluster_without_the_project(small_idx_dir,
                                                                    tmp_path):
  archive = tmp_path / 'code.tar.gz'
  env = dict(os.environ, ARCHIVE=str(archive), PYTHON=sys.executable)
  built = run_process(['bash', os.path.join(REPO_ROOT, 'scripts', 'cluster',
                                            'pai_submit.sh'), '--dry_run'], env=env)
  assert built.returncode == 0, built.stderr
  assert 'archive: %s' % archive in built.stdout
  assert re.search(r"odpscmd -e \"pai -name .*-DentryFile='train.py'", built.stdout, re.S)
  assert 'TensorFlow >= 2.16' in built.stdout  # No runner named that cannot run it.
  unpacked = tmp_path / 'unpacked'
  unpacked.mkdir()
  with tarfile.open(archive) as tar:
    names = tar.getnames()
    tar.extractall(unpacked)
  assert 'train.py' in names and 'mnist_vae/data_prep/records.py' in names
  assert not any(name.startswith(('tests', 'bench', 'reporting')) for name in names)

  data = str(tmp_path / 'data')
  convert_to_records.convert(small_idx_dir, data, validation_size=10)
  ps_port, worker_port = _free_ports(2)
  common = ['--buckets', data, '--checkpointDir', str(tmp_path / 'ckpt'),
            '--tables', 'odps://project/tables/x', '--outputs', 'odps://project/tables/y',
            '--ps_hosts', '127.0.0.1:%d' % ps_port,
            '--worker_hosts', '127.0.0.1:%d' % worker_port,
            '--max_steps', '20', '--batch_size', '10', '--hidden_units', '16',
            '--latent_dim', '2', '--log_every_n_steps', '5']
  bare_env = {'PATH': os.environ['PATH'], 'TF_CPP_MIN_LOG_LEVEL': '2',
              'HOME': os.environ.get('HOME', '/root')}
  site_packages = ':'.join(site.getsitepackages())
  processes = {
      role: start_process([sys.executable, '-S', '-c', _WITHOUT_THE_PROJECT,
                           site_packages] + common + ['--job_name', job, '--task_index', '0'],
                          cwd=str(unpacked), env=bare_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
      for role, job in (('ps', 'ps'), ('worker', 'worker'))}
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
  cluster = {replica_type.lower(): [hosts_of(replica_type.lower(), i)
                                    for i in range(spec['replicas'])]
             for replica_type, spec in tfjob['spec']['tfReplicaSpecs'].items()}
  return {(job, index): json.dumps({'cluster': cluster,
                                    'task': {'type': job, 'index': index},
                                    'environment': 'cloud'})
          for job, hosts in cluster.items() for index in range(len(hosts))}


def test_kubeflow_tfjob_replicas_run_to_the_end(small_mnist_records, tmp_path):
  with open(os.path.join(REPO_ROOT, 'scripts', 'cluster', 'kubeflow_tfjob.yaml')) as f:
    documents = list(yaml.safe_load_all(f))
  tfjob = next(d for d in documents if d['kind'] == 'TFJob')
  policy = next(d for d in documents if d['kind'] == 'NetworkPolicy')
  job_label = {'training.kubeflow.org/job-name': tfjob['metadata']['name']}
  assert policy['spec']['podSelector']['matchLabels'] == job_label
  assert policy['spec']['ingress'] == [{'from': [{'podSelector': {'matchLabels': job_label}}]}]

  specs = tfjob['spec']['tfReplicaSpecs']
  ports = iter(_free_ports(sum(spec['replicas'] for spec in specs.values())))
  hosts = {}
  configs = _tf_configs(tfjob, lambda job, i: hosts.setdefault(
      (job, i), '127.0.0.1:%d' % next(ports)))
  train_dir = tmp_path / 'train'
  rewrite = {'gs://BUCKET/mnist': small_mnist_records,
             'gs://BUCKET/runs/vae-cluster': str(train_dir)}
  processes = {}
  for (job, index), tf_config in configs.items():
    replica_type = next(name for name in specs if name.lower() == job)
    container = specs[replica_type]['template']['spec']['containers'][0]
    assert container['image'].endswith('/tf1-mnist-vae:latest')
    command = container['command'] + [
        arg.split('=', 1)[0] + '=' + rewrite.get(arg.split('=', 1)[1], arg.split('=', 1)[1])
        if '=' in arg else arg for arg in container['args']]
    assert command[:2] == ['python', 'train.py']
    env = dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL='2',
               PYTHONPATH=REPO_ROOT)
    log = open(tmp_path / ('%s%d.log' % (job, index)), 'w')
    processes[(job, index)] = start_process([sys.executable] + command[1:], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
  for key, process in processes.items():
    assert process.wait(timeout=600) == 0, (
        key, (tmp_path / ('%s%d.log' % key)).read_text()[-4000:])
  max_steps = int(next(a for a in specs['Worker']['template']['spec']['containers'][0][
      'args'] if a.startswith('--max_steps=')).split('=')[1])
  with open(train_dir / 'metrics.json') as f:
    assert json.load(f)['step'] >= max_steps
  chief_log = (tmp_path / 'worker0.log').read_text()
  assert 'Worker 0 of 2 (/job:worker/task:0), chief: True' in chief_log
