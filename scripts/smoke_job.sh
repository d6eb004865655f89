#!/usr/bin/env bash
# A short job through everything a user touches, with the Python given: train
# 50 steps (the original MLP) and a fifth of an epoch of the IWAE preset's
# compiled loop, evaluate, export, and the Python API on a run, a checkpoint
# and an export. CI runs it on the oldest TensorFlow setup.cfg accepts.
#
# Usage:
#   scripts/smoke_job.sh [PYTHON] [WORK_DIR]     # defaults: python, a temporary directory
set -euo pipefail
python=${1:-python}
work=${2:-$(mktemp -d)}
mnist_dir=${MNIST_DIR:-../shared/mnist}
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
"$python" -c 'import tensorflow as tf; print("smoke job on TensorFlow", tf.__version__)'
"$python" train.py --mnist_dir="$mnist_dir" --data_dir="$work/data" --train_dir="$work/run" \
  --max_steps=50 --hidden_units=32
"$python" train.py --flagfile=configs/iwae_vae.flags --mnist_dir="$mnist_dir" \
  --data_dir="$work/data_last400" --train_dir="$work/iwae" --max_steps=596
"$python" evaluate.py --train_dir="$work/run" --iw_samples=10 --output="$work/eval.json" >/dev/null
"$python" export.py --train_dir="$work/run" --export_dir="$work/export"
"$python" - "$work" <<'PYTHON'
import sys

import numpy as np

import mnist_vae

work = sys.argv[1]
for path in (work + '/run', work + '/run/model.ckpt-50', work + '/export', work + '/iwae'):
  vae = mnist_vae.load(path)
  z_mean, _ = vae.encode(np.zeros([2, 28, 28], np.uint8))
  log_px = vae.log_likelihood(np.zeros([2, 784], np.float32), k=5)
  assert z_mean.shape[0] == 2 and np.isfinite(log_px).all(), path
  print('%s: encode %s, log p(x) %s' % (path, z_mean.shape, np.round(log_px, 2)))
PYTHON
echo "smoke job: done"
