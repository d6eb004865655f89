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
#   scripts/reproduce.sh --jobs 2                     # two runs at once, a core each
#   scripts/reproduce.sh --presets "cvae_tutorial kl_article" --iw_samples 100
#
# --seeds lists the seeds to run. The presets are configs/<preset>.flags plus
# latent2 (upstream with a 2-d latent, for the manifold figure) and
# upstream_binarized (upstream on dynamically binarized pixels); those two
# run with the first seed only. Re-running resumes: interrupted trainings
# continue from their checkpoint; finished ones are not re-run, only
# evaluated if their evaluation files are missing. About 2 hours on 2 cores
# with the defaults; the total time is printed at the end.
#
# --jobs N runs up to N trainings (each followed by its evaluations) at once,
# the cores split between them (--threads_per_job T to choose), each run's
# output in RUNS_DIR/logs/. Two one-thread runs side by side get more out of
# 2 cores than one two-thread run after another; a run's numbers depend on its
# seed and thread setting only, not on what runs beside it.
#
# A preset whose flag file names its own --data_dir (cvae_tutorial and
# kl_article train on all 60,000 training images; kl_article on
# Fashion-MNIST, read from --fashion_mnist_dir) gets its TFRecords beside
# --data_dir's, under that directory's name. A run without a validation
# split is evaluated on the test set only. The importance-weighted NLL of a
# convolutional preset costs much more than an MLP's: k = 1,000 over the
# test set is about 25 minutes of one core for cvae_tutorial.
set -euo pipefail

MNIST_DIR=../shared/mnist
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
DATA_DIR=data/mnist
RUNS_DIR=runs/reproduce
REPORT_DIR=reproduction
SEEDS="0 1 2"
PRESETS="original upstream long latent2 upstream_binarized"
IW_SAMPLES=1000
EXTRA=()
SMOKE_WIDTH=
command_line="scripts/reproduce.sh $*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --presets) PRESETS=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --fashion_mnist_dir) FASHION_MNIST_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    --iw_samples) IW_SAMPLES=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --threads_per_job) THREADS_PER_JOB=$2; shift 2 ;;
    --smoke)
      SEEDS="0 1"; PRESETS="original latent2 upstream_binarized"; IW_SAMPLES=5
      SMOKE_WIDTH=--hidden_units=32
      EXTRA=(--max_steps=30 --log_every_n_steps=10
             --image_every_n_steps=10 --eval_every_n_steps=10 --save_checkpoint_steps=10)
      shift ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "reproduce.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
source "$(dirname "$0")/lib/runs.sh"
check_jobs_flags reproduce.sh
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
read -ra threads <<< "$(thread_flags)"
prepare_data

declare -A preset_data_flags=()
for preset in $PRESETS; do
  preset_data_flags[$preset]=$(prepare_preset_data "$preset") || exit 1
done

# A run's flags after its flag file: the preset's own data, and in the smoke
# mode narrower hidden layers where the network has a width to choose
# (cvae_tutorial's has none).
preset_flags() {  # PRESET
  local flags=${preset_data_flags[$1]:-}
  if [[ -n $SMOKE_WIDTH && $(preset_setting "$1" architecture) != cvae_tutorial ]]; then
    flags+=" $SMOKE_WIDTH"
  fi
  echo "$flags"
}

train_and_evaluate() {  # DIR SEED [train.py flags...]
  local dir=$1 seed=$2
  shift 2
  if training_finished "$dir"; then
    echo "   already trained (its metrics.json has the final evaluation): not re-run"
  else
    "$python" train.py --mnist_dir="$MNIST_DIR" --data_dir="$DATA_DIR" --train_dir="$dir" \
      --seed="$seed" "${threads[@]}" "$@" "${EXTRA[@]}"
  fi
  local split
  for split in $(evaluated_splits "$dir"); do
    [[ -f "$dir/eval_$split.json" ]] && continue
    # evaluate.py reads the run's own --data_dir and --binarize.
    "$python" evaluate.py --train_dir="$dir" --split="$split" \
      --iw_samples="$IW_SAMPLES" --output="$dir/eval_$split.json" "${threads[@]}"
  done
}

# test, and validation first where the run has a validation split.
evaluated_splits() {  # DIR
  "$python" -c 'import json, sys
config = json.load(open(sys.argv[1]))
print("validation test" if config.get("validation_size", 1) else "test")' "$1/config.json"
}

# The runs, as "NAME SEED FLAGS...", the longest first so that, with --jobs,
# the short ones fill in around them.
runs=()

first_seed=${SEEDS%% *}
for preset in $PRESETS; do
  case "$preset" in
    # A 2-d latent model of the upstream preset, for the manifold figure.
    latent2)
      runs+=("latent2 $first_seed --flagfile=configs/upstream.flags --latent_dim=2 $SMOKE_WIDTH") ;;
    # The upstream preset on dynamically binarized pixels, to stand next to the
    # binarized-MNIST literature (evaluate.py reads the mode from metrics.json).
    upstream_binarized)
      flags="--flagfile=configs/upstream.flags --binarize=dynamic $SMOKE_WIDTH"
      runs+=("upstream_binarized $first_seed $flags") ;;
    long)
      for seed in $SEEDS; do
        runs=("long $seed --flagfile=configs/long.flags $SMOKE_WIDTH" "${runs[@]}")
      done ;;
    *)
      for seed in $SEEDS; do
        runs+=("$preset $seed --flagfile=configs/$preset.flags $(preset_flags "$preset")")
      done ;;
  esac
done

# A run's work, for the time left: its training steps (the last --max_steps
# of its flag file, flags and EXTRA; none when already trained) plus its
# missing evaluations in steps' worth (measured: k importance samples of the
# test set take about as long as 4k training steps, of the validation set 2k).
run_work() {  # DIR TRAIN_FLAGS...
  local dir=$1 steps=0 flag line
  shift
  if ! training_finished "$dir"; then
    for flag in "$@" "${EXTRA[@]}"; do
      case "$flag" in
        --flagfile=*)
          while read -r line; do
            [[ $line == --max_steps=* ]] && steps=${line#--max_steps=}
          done < "${flag#--flagfile=}" ;;
        --max_steps=*) steps=${flag#--max_steps=} ;;
      esac
    done
  fi
  [[ -f $dir/eval_validation.json ]] || ((steps += 2 * IW_SAMPLES))
  [[ -f $dir/eval_test.json ]] || ((steps += 4 * IW_SAMPLES))
  echo "$steps"
}

for run in "${runs[@]}"; do
  read -ra fields <<< "$run"
  progress_expect "${fields[0]} seed ${fields[1]}" \
    "$(run_work "$RUNS_DIR/${fields[0]}/seed${fields[1]}" "${fields[@]:2}")"
done

for run in "${runs[@]}"; do
  read -ra fields <<< "$run"
  name=${fields[0]} seed=${fields[1]}
  dir="$RUNS_DIR/$name/seed$seed"
  progress_next "$name seed $seed"
  echo "== $progress_line: $name, seed $seed -> $dir"
  pool_run "$name seed $seed" "$RUNS_DIR/logs/$name.seed$seed.log" \
    train_and_evaluate "$dir" "$seed" "${fields[@]:2}"
done
if ! pool_wait_all; then
  echo "reproduce.sh: a run failed (above); the others' results are kept. Re-run" \
    "the same command to resume." >&2
  exit 1
fi

"$python" -m reporting.report --runs_dir="$RUNS_DIR" --data_dir="$DATA_DIR" \
  --report_dir="$REPORT_DIR" --command="$command_line"
echo "Wrote $REPORT_DIR/REPRODUCTION.md"
echo "reproduce.sh: $((SECONDS - start_seconds)) s in total"
