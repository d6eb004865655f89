"""The benchmark's smoke mode runs every measurement, so the bench never rots."""

import json
import os

import pytest

from helpers import REPO_ROOT
from helpers import run_python

# Every test here starts processes, a cluster or a server.
pytestmark = pytest.mark.large


def test_smoke_run_measures_everything(tmp_path):
  original = os.path.join(REPO_ROOT, os.pardir, 'shared', 'reference', 'original_vae_tf1.py')
  result = run_python([
      'bench/throughput.py', '--smoke', '--sections=core,cvae', '--json',
      str(tmp_path / 'bench.json'), '--original_script', original, '--end_to_end'
  ],
                      timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'bench.json').read_text())
  rates = results['examples_per_sec']
  assert set(rates) == {
      'train.py loop, TFRecords, adam',
      'train.py loop, TFRecords, sgd',
      'train.py loop, TFRecords, adam, bfloat16',
      'train.py loop, memory, adam',
      'input pipeline alone',
      'TF2 peer (tf.function), adam',
      'TF2 peer (tf.function), sgd',
      'Keras 3 fit, adam',
      'matmul ceiling',
      'matmul ceiling, bfloat16',
      'fast TF2 peer, 1 step(s) per call',
      'fast TF2 peer, 10 step(s) per call',
      # CI installs the bench extra, so the JAX peer is measured too.
      'JAX jit peer, 1 step(s) per call',
      'JAX jit peer, 10 step(s) per call'
  }
  assert all(rate > 0 for rate in rates.values())
  processes = results['process_examples_per_sec']
  assert set(processes) == {
      'train.py --optimizer=adam', 'fast TF2 peer, 1 step(s) per call',
      'fast TF2 peer, 10 step(s) per call', 'JAX jit peer, 10 step(s) per call'
  }
  assert all(rate > 0 for rate in processes.values())
  assert results['matmul_gflops'] > 0
  assert 'iwae' not in results  # test_the_iwae_section_alone measures it.
  cvae = results['cvae_tutorial']
  assert all(rate > 0 for rate in cvae['process_examples_per_sec'].values())
  assert cvae['training_flops_per_example'] > 1e6 and cvae['convolution_gflops'] > 0
  assert 'CVAE tutorial preset: ' in result.stdout
  for precision in ('float32', 'bfloat16'):
    nll = results['nll'][precision]
    assert nll['seconds'] > 0 and nll['floor_seconds'] > 0 and nll['iw_nll'] > 0
  parts = results['nll']['float32']['parts_seconds']
  assert set(parts) == {'decoder', 'likelihood', 'draws'}
  assert all(seconds > 0 for seconds in parts.values())
  assert 'float32 NLL, its parts timed alone: decoder' in result.stdout
  assert results['conversion_records_per_sec'] > 0
  assert results['evaluation_examples_per_sec'] > 0
  assert 100 < results['train_peak_rss_mib'] < 4096
  assert results['original_script']['original_sec'] > 0
  assert results['original_script']['train_py_sec'] > 0
  assert results['end_to_end']['here']['test_iw_nll'] > 0
  for target in ('training loop (adam, TFRecords) / best peer',
                 'train.py --optimizer=adam, whole process / best peer process',
                 'training / matmul ceiling >= 0.65', 'NLL seconds / its multiply floor <= 1.25',
                 'bfloat16 training / float32', 'train.py original preset / original script < 1'):
    assert target in result.stdout, target


def test_the_iwae_section_alone(tmp_path):
  result = run_python(
      ['bench/throughput.py', '--smoke', '--sections=iwae', '--json',
       str(tmp_path / 'bench.json')],
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'bench.json').read_text())
  assert 'examples_per_sec' not in results and 'cvae_tutorial' not in results
  iwae = results['iwae']
  assert set(iwae['process_examples_per_sec']) == {
      'train.py --flagfile=configs/iwae_vae.flags',
      'JAX jit peer, iwae_mlp, batch 20, 596 steps per call'
  }
  assert all(rate > 0 for rate in iwae['process_examples_per_sec'].values())
  # Tiny smoke steps are too short to order K = 1 and K = 5 on a busy machine.
  assert set(iwae['step_ms']) == {'1', '5'} and min(iwae['step_ms'].values()) > 0
  assert iwae['nll']['seconds'] > 0 and iwae['nll']['floor_seconds'] > 0
  assert 'IWAE preset (batch 20), whole process' in result.stdout
  assert 'IWAE preset, whole process / JAX peer (batch 20) >= 1' in result.stdout
  assert 'training loop (adam, TFRecords)' not in result.stdout


def test_an_unknown_section_is_one_line_and_exit_1(tmp_path):
  result = run_python(['bench/throughput.py', '--sections=iwae,gpu'], timeout=120)
  assert result.returncode == 1
  assert '--sections takes one or more of core,iwae,cvae' in result.stderr
  assert 'Traceback' not in result.stderr


def test_cluster_scaling_measures_the_traffic_and_projects_the_table(small_mnist_records, tmp_path):
  result = run_python([
      'bench/cluster_scaling.py', '--data_dir', small_mnist_records, '--short_steps', '5',
      '--long_steps', '20', '--step_samples', '20', '--adam_updates', '10', '--json',
      str(tmp_path / 'scaling.json')
  ],
                      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads((tmp_path / 'scaling.json').read_text())
  model_bytes = sum(figures['bytes_per_ps']['1'])
  assert model_bytes == 4 * 1316824  # The 784-500-500-20 model, float32.
  for num_ps in ('2', '4'):
    shares = figures['bytes_per_ps'][num_ps]
    assert sum(shares) == model_bytes and len(shares) == int(num_ps)
    assert max(shares) < 0.7 * model_bytes  # Spread by bytes.
  # Each step a worker runs pulls the variables and pushes the gradients:
  # twice the model's bytes cross the (namespace's own) loopback, plus
  # framing. The figure is the difference of two jobs, divided by the
  # difference of the steps their workers logged (two asynchronous workers
  # often run one step past --max_steps); the jobs' other traffic (start-up
  # polls, session set-up) differs by up to about 1% of 15 steps' bytes.
  for workers in ('1_workers', '2_workers'):
    short_job_steps, long_job_steps = figures[workers]['local_steps']
    assert short_job_steps >= 5 and long_job_steps - short_job_steps >= 15
    assert (0.97 * 2 * model_bytes <= figures[workers]['wire_bytes_per_step'] <
            1.5 * 2 * model_bytes)
  rows = [
      line for line in result.stdout.splitlines()
      if line.startswith('| ') and ('| async |' in line or '| sync |' in line)
  ]
  assert len(rows) == 4 * 2 * 2, result.stdout


def test_side_by_side_measures_one_process_against_one_thread_processes(tmp_path):
  result = run_python([
      'bench/side_by_side.py', '--seconds', '1', '--rounds', '1', '--processes', '2', '--json',
      str(tmp_path / 'side.json')
  ],
                      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads((tmp_path / 'side.json').read_text())
  (alone,), (side,) = figures['one_process'], figures['side_by_side']
  assert alone > 1 and len(side) == 2 and all(rate > 1 for rate in side)
  assert abs(figures['ratio'] - sum(side) / alone) < 1e-9
  # Two cores at most double what two threads of one process reach.
  assert 0.3 < figures['ratio'] < 3
  assert 'side by side / one process (median of 1 rounds)' in result.stdout


def test_side_by_side_rejects_an_unknown_flag():
  result = run_python(['bench/side_by_side.py', '--second', '1'], timeout=120)
  assert result.returncode != 0
  assert "Unknown command line flag 'second'" in result.stderr
