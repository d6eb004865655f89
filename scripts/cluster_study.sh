#!/usr/bin/env bash
# What the gap between asynchronous multi-worker training and one process is
# made of: the upstream preset (Adam 1e-3, batch 128, 8,580 updates) trained
#   one_process        one process (the reference)
#   staleness1/2       one process applying at each step the gradient computed
#                      1 (2) steps earlier (train.py --simulated_staleness):
#                      staleness alone, same seed and data order
#   async2             1 ps + 2 workers, asynchronous (8,580 global steps)
#   sync2_examples     1 ps + 2 workers, --sync_replicas, 4,290 updates of 2
#                      batches: as many examples as one process
#   sync2_updates      1 ps + 2 workers, --sync_replicas, 8,580 updates of 2
#                      batches: as many updates as one process
# each for --seeds seeds (sync2_updates: the first seed only, it costs twice),
# then prints the table and writes the validation curves
# (reporting/cluster_study.py).
#
# Usage:
#   scripts/cluster_study.sh                       # everything, 3 seeds (about 50 min on 2 cores)
#   scripts/cluster_study.sh --modes "async2 sync2_examples" --seeds 1
#   scripts/cluster_study.sh --smoke               # tiny runs: checks the script
#   scripts/cluster_study.sh --jobs 2              # two runs at once, the cores split
#
# Re-running resumes: finished runs are not re-run. --jobs N runs up to N
# trainings at once (--threads_per_job T threads each; default the cores
# split evenly), each one's output in RUNS_DIR/logs/.
set -euo pipefail

MNIST_DIR=../shared/mnist
DATA_DIR=data/mnist
RUNS_DIR=runs/cluster_study
SEEDS=3
MODES="one_process staleness1 staleness2 async2 sync2_examples sync2_updates"
FLAGFILE=configs/upstream.flags
STEPS=8580
EVAL_EVERY=500
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --threads_per_job) THREADS_PER_JOB=$2; shift 2 ;;
    --smoke)
      SEEDS=1; STEPS=40; EVAL_EVERY=20
      EXTRA=(--hidden_units=32 --log_every_n_steps=10 --save_checkpoint_steps=20)
      shift ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "cluster_study.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
source "$(dirname "$0")/lib/runs.sh"
check_jobs_flags cluster_study.sh
for mode in $MODES; do
  case "$mode" in
    one_process|staleness1|staleness2|async2|sync2_examples|sync2_updates) ;;
    *) echo "cluster_study.sh: unknown mode $mode" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
read -ra threads <<< "$(thread_flags)"
prepare_data

train_mode() {  # MODE DIR SEED
  local mode=$1 dir=$2 seed=$3
  local flags=(--flagfile="$FLAGFILE" --mnist_dir="$MNIST_DIR" --data_dir="$DATA_DIR"
               --train_dir="$dir" --seed="$seed" --image_every_n_steps=0
               "${threads[@]}" "${EXTRA[@]}")
  # Validation every 64,000 examples in every mode: a synchronous update
  # consumes two batches.
  case "$mode" in
    one_process)
      "$python" train.py "${flags[@]}" --max_steps="$STEPS" --eval_every_n_steps="$EVAL_EVERY" ;;
    staleness*)
      "$python" train.py "${flags[@]}" --max_steps="$STEPS" --eval_every_n_steps="$EVAL_EVERY" \
        --simulated_staleness="${mode#staleness}" ;;
    async2)
      scripts/run_local_cluster.sh --num_ps 1 --num_workers 2 -- "${flags[@]}" \
        --max_steps="$STEPS" --eval_every_n_steps="$EVAL_EVERY" ;;
    sync2_examples)
      scripts/run_local_cluster.sh --num_ps 1 --num_workers 2 -- "${flags[@]}" --sync_replicas \
        --max_steps=$((STEPS / 2)) --eval_every_n_steps=$((EVAL_EVERY / 2)) ;;
    sync2_updates)
      scripts/run_local_cluster.sh --num_ps 1 --num_workers 2 -- "${flags[@]}" --sync_replicas \
        --max_steps="$STEPS" --eval_every_n_steps=$((EVAL_EVERY / 2)) ;;
  esac
}

for mode in $MODES; do
  seeds=$SEEDS
  [[ $mode == sync2_updates ]] && seeds=1
  for ((seed = 0; seed < seeds; seed++)); do
    dir="$RUNS_DIR/$mode/seed$seed"
    echo "== $mode, seed $seed -> $dir"
    if training_finished "$dir"; then
      echo "   already trained: not re-run"
      continue
    fi
    pool_run "$mode seed $seed" "$RUNS_DIR/logs/$mode.seed$seed.log" \
      train_mode "$mode" "$dir" "$seed"
  done
done
if ! pool_wait_all; then
  echo "cluster_study.sh: a run failed (above); the others are kept. Re-run the" \
    "same command to resume." >&2
  exit 1
fi

"$python" -m reporting.cluster_study --runs_dir="$RUNS_DIR" --modes="$MODES"
