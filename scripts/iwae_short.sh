#!/usr/bin/env bash
# The IWAE against the VAE on a shortened schedule, equal for both: the first
# stages of the IWAE paper's schedule (default 4: 40 epochs), configs/iwae_vae.flags
# trained with k = 1 (the VAE) and with the k = 5 importance-weighted bound
# (configs/iwae_k5.flags), each evaluated on the test set with k = 5,000.
# Writes REPORT_DIR/short_schedule.json and .md. Re-running resumes.
#
# Usage:
#   scripts/iwae_short.sh                          # 4 stages, about an hour on 2 cores
#   scripts/iwae_short.sh --stages 2 --iw_samples 100   # minutes: a quick look
#
# --max_steps N stops both runs at step N (a smoke test of the script).
set -euo pipefail

MNIST_DIR=../shared/mnist
RUNS_DIR=runs/iwae_short
REPORT_DIR=reproduction/iwae
STAGES=4
IW_SAMPLES=5000
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --stages) STAGES=$2; shift 2 ;;
    --iw_samples) IW_SAMPLES=$2; shift 2 ;;
    --max_steps) EXTRA=(--max_steps="$2"); shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "iwae_short.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ $STAGES =~ ^[1-8]$ ]]; then
  echo "iwae_short.sh: --stages takes 1 to 8, not '$STAGES'" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
# The paper's stages, the first STAGES of them.
schedule=$(echo "1:1e-3,3:7.2e-4,9:5.2e-4,27:3.7e-4,81:2.7e-4,243:1.9e-4,729:1.4e-4,2187:1e-4" \
  | cut -d, -f1-"$STAGES")
for model in vae iwae_k5; do
  dir=$RUNS_DIR/$model
  flagfile=configs/iwae_vae.flags
  [[ $model == iwae_k5 ]] && flagfile=configs/iwae_k5.flags
  echo "== $model: $flagfile, --learning_rate_schedule=$schedule -> $dir"
  "$python" train.py --flagfile="$flagfile" --mnist_dir="$MNIST_DIR" --train_dir="$dir" \
    --learning_rate_schedule="$schedule" "${EXTRA[@]}"
  [[ -f $dir/eval_test.json ]] || "$python" evaluate.py --train_dir="$dir" --split=test \
    --iw_samples="$IW_SAMPLES" --output="$dir/eval_test.json" > /dev/null
done
"$python" -m reporting.iwae_short --runs_dir="$RUNS_DIR" --report_dir="$REPORT_DIR" \
  --schedule="$schedule"
