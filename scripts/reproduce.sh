#!/usr/bin/env bash
# Reproduces the MLP VAE results: each preset for several seeds, each final
# checkpoint evaluated on the validation and test sets (negative ELBO and the
# importance-weighted NLL), then REPRODUCTION.md and its figures.
#
# Usage:
#   scripts/reproduce.sh                              # 3 seeds of original, upstream, long
#   scripts/reproduce.sh --seeds 5 --presets "original upstream"
#   scripts/reproduce.sh --smoke                      # tiny runs: checks the pipeline
#
# Re-running resumes: interrupted trainings continue from their checkpoint;
# finished ones are not re-run, only evaluated if their evaluation files are
# missing. About 2 hours on 2 cores with the defaults.
set -euo pipefail

MNIST_DIR=../shared/mnist
DATA_DIR=data/mnist
RUNS_DIR=runs/reproduce
REPORT_DIR=reproduction
SEEDS=3
PRESETS="original upstream long"
IW_SAMPLES=1000
EXTRA=()
command_line="scripts/reproduce.sh $*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --presets) PRESETS=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    --iw_samples) IW_SAMPLES=$2; shift 2 ;;
    --smoke)
      SEEDS=2; PRESETS=original; IW_SAMPLES=5
      EXTRA=(--max_steps=30 --hidden_units=32 --log_every_n_steps=10
             --image_every_n_steps=10 --eval_every_n_steps=10 --save_checkpoint_steps=10)
      shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2

source scripts/lib/runs.sh

train_and_evaluate() {  # NAME SEED [train.py flags...]
  local name=$1 seed=$2
  shift 2
  local dir="$RUNS_DIR/$name/seed$seed"
  echo "== $name, seed $seed -> $dir"
  if training_finished "$dir"; then
    echo "   already trained (its metrics.json has the final evaluation): not re-run"
  else
    "$python" train.py --mnist_dir="$MNIST_DIR" --data_dir="$DATA_DIR" --train_dir="$dir" \
      --seed="$seed" "$@" "${EXTRA[@]}"
  fi
  local split
  for split in validation test; do
    [[ -f "$dir/eval_$split.json" ]] && continue
    "$python" evaluate.py --data_dir="$DATA_DIR" --train_dir="$dir" --split="$split" \
      --iw_samples="$IW_SAMPLES" --output="$dir/eval_$split.json"
  done
}

for preset in $PRESETS; do
  for ((seed = 0; seed < SEEDS; seed++)); do
    train_and_evaluate "$preset" "$seed" --flagfile="configs/$preset.flags"
  done
done
# A 2-d latent model of the upstream preset, for the manifold figure.
train_and_evaluate latent2 0 --flagfile=configs/upstream.flags --latent_dim=2
# The upstream preset on dynamically binarized pixels, to stand next to the
# binarized-MNIST literature (evaluate.py reads the mode from metrics.json).
train_and_evaluate upstream_binarized 0 --flagfile=configs/upstream.flags --binarize=dynamic

"$python" -m reporting.report --runs_dir="$RUNS_DIR" --data_dir="$DATA_DIR" \
  --report_dir="$REPORT_DIR" --command="$command_line"
echo "Wrote $REPORT_DIR/REPRODUCTION.md"
