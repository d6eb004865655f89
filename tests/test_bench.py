"""The benchmark's smoke mode runs every measurement, so the bench never rots."""

import json

from conftest import run_python


def test_smoke_run_measures_everything(tmp_path):
  result = run_python(['bench/throughput.py', '--smoke', '--json',
                       str(tmp_path / 'bench.json')], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'bench.json').read_text())
  rates = results['examples_per_sec']
  assert set(rates) == {
      'train.py loop, TFRecords, sgd', 'train.py loop, TFRecords, adam',
      'train.py loop, TFRecords, sgd, bfloat16 matmuls',
      'train.py loop, memory, sgd', 'input pipeline alone',
      'TF2 peer (tf.function), sgd', 'matmul ceiling'}
  assert all(rate > 0 for rate in rates.values())
  assert results['matmul_gflops'] > 0
  assert results['conversion_records_per_sec'] > 0
  assert results['evaluation_examples_per_sec'] > 0
  assert 100 < results['train_peak_rss_mib'] < 4096
  assert results['iw_nll_test_sec'] > 0 and results['iw_samples'] == 20
  assert 'TFRecord loop / TF2 peer >= 1.2' in result.stdout
