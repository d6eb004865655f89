#!/usr/bin/env bash
# Reproduces the MLP VAE results: each preset for several seeds, each final
# checkpoint evaluated on the validation and test sets (negative ELBO and the
# importance-weighted NLL), then REPRODUCTION.md and its figures.
#
# Usage:
#   scripts/reproduce.sh                              # seeds 0 1 2 of original, upstream, long
#   scripts/reproduce.sh --seeds "0 1 2 3 4" --presets "original upstream"
#   scripts/reproduce.sh --presets upstream --seeds 0 # one run: train + k=1000 evaluations
#   scripts/reproduce.sh --smoke                      # tiny runs: checks the pipeline
#
# --seeds lists the seeds to run. The presets are configs/<preset>.flags plus
# latent2 (upstream with a 2-d latent, for the manifold figure) and
# upstream_binarized (upstream on dynamically binarized pixels); those two
# run with the first seed only. Re-running resumes: interrupted trainings
# continue from their checkpoint; finished ones are not re-run, only
# evaluated if their evaluation files are missing. About 2 hours on 2 cores
# with the defaults; the total time is printed at the end.
set -euo pipefail

MNIST_DIR=../shared/mnist
DATA_DIR=data/mnist
RUNS_DIR=runs/reproduce
REPORT_DIR=reproduction
SEEDS="0 1 2"
PRESETS="original upstream long latent2 upstream_binarized"
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
      SEEDS="0 1"; PRESETS="original latent2 upstream_binarized"; IW_SAMPLES=5
      EXTRA=(--max_steps=30 --hidden_units=32 --log_every_n_steps=10
             --image_every_n_steps=10 --eval_every_n_steps=10 --save_checkpoint_steps=10)
      shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for seed in $SEEDS; do
  if ! [[ $seed =~ ^[0-9]+$ ]]; then
    echo "reproduce.sh: --seeds takes seed numbers (\"0 1 2\"), not '$seed'" >&2
    exit 2
  fi
done
for preset in $PRESETS; do
  case "$preset" in
    latent2|upstream_binarized) ;;
    *) if [[ ! -f "$(dirname "$0")/../configs/$preset.flags" ]]; then
         echo "reproduce.sh: unknown preset $preset (no configs/$preset.flags)" >&2
         exit 2
       fi ;;
  esac
done
start_seconds=$SECONDS

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

first_seed=${SEEDS%% *}
for preset in $PRESETS; do
  case "$preset" in
    # A 2-d latent model of the upstream preset, for the manifold figure.
    latent2)
      train_and_evaluate latent2 "$first_seed" --flagfile=configs/upstream.flags --latent_dim=2 ;;
    # The upstream preset on dynamically binarized pixels, to stand next to the
    # binarized-MNIST literature (evaluate.py reads the mode from metrics.json).
    upstream_binarized)
      train_and_evaluate upstream_binarized "$first_seed" --flagfile=configs/upstream.flags \
        --binarize=dynamic ;;
    *)
      for seed in $SEEDS; do
        train_and_evaluate "$preset" "$seed" --flagfile="configs/$preset.flags"
      done ;;
  esac
done

"$python" -m reporting.report --runs_dir="$RUNS_DIR" --data_dir="$DATA_DIR" \
  --report_dir="$REPORT_DIR" --command="$command_line"
echo "Wrote $REPORT_DIR/REPRODUCTION.md"
echo "reproduce.sh: $((SECONDS - start_seconds)) s in total"
