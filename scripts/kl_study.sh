#!/usr/bin/env bash
# The two questions of the source articles, with numbers: what the KL term's
# weight (beta, train.py --kl_weight) does, and how far the aggregate
# posterior q(z) is from the prior N(0, I) that samples are drawn from.
#   latent2/beta{0,1,4,10}     the upstream preset with a 2-d latent, seed 0:
#                              the test set's posterior means by digit and
#                              the decoded manifold of each, side by side
#   latent20/beta{0.5,1,2}     the upstream preset (20-d) at three weights,
#   latent20/warmup            and beta 1 reached by a linear warm-up over the
#                              first half of training (--kl_warmup_steps)
# each 20-d configuration for --seeds seeds. Every run is scored: train.py's
# test figures (negative ELBO, reconstruction, KL, active units, mutual
# information + marginal KL, the Gaussian fit of q(z)) and sample_quality.py's
# Frechet distance and digit shares of prior and aggregate samples, judged
# by a digit classifier trained once (RUNS_DIR/classifier). Then
# reporting/kl_study.py writes the tables and figures to --report_dir.
#
# Usage:
#   scripts/kl_study.sh                    # everything, 3 seeds (about 40 min on 2 cores)
#   scripts/kl_study.sh --seeds 1          # one seed of each 20-d configuration
#   scripts/kl_study.sh --smoke            # tiny runs: checks the script
#   scripts/kl_study.sh --jobs 2           # two runs at once, the cores split
#
# Re-running resumes: finished trainings and scores are not redone. --jobs N
# runs up to N runs at once (--threads_per_job T threads each; default the
# cores split evenly), each one's output in RUNS_DIR/logs/.
set -euo pipefail

MNIST_DIR=../shared/mnist
DATA_DIR=data/mnist
RUNS_DIR=runs/kl_study
REPORT_DIR=reproduction/kl_study
SEEDS=3
FLAGFILE=configs/upstream.flags
STEPS=8580
LATENT2_BETAS="0 1 4 10"
LATENT20_BETAS="0.5 1 2"
CLASSIFIER_STEPS=3000
NUM_SAMPLES=10000
EXTRA=()
command_line="scripts/kl_study.sh $*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --threads_per_job) THREADS_PER_JOB=$2; shift 2 ;;
    --smoke)
      SEEDS=1; STEPS=40; CLASSIFIER_STEPS=50; NUM_SAMPLES=200
      EXTRA=(--hidden_units=32 --log_every_n_steps=10 --save_checkpoint_steps=20
             --eval_every_n_steps=20)
      shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kl_study.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ $SEEDS =~ ^[1-9][0-9]*$ ]]; then
  echo "kl_study.sh: --seeds takes a number of seeds (1, 2, ...), not '$SEEDS'" >&2
  exit 2
fi
source "$(dirname "$0")/lib/runs.sh"
check_jobs_flags kl_study.sh

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
read -ra threads <<< "$(thread_flags)"
CLASSIFIER_DIR=$RUNS_DIR/classifier

prepare_data
if [[ ! -f $CLASSIFIER_DIR/classifier.json ]]; then
  echo "== the digit classifier -> $CLASSIFIER_DIR"
  rm -rf "$CLASSIFIER_DIR"  # A training cut short left no classifier.json.
  "$python" sample_quality.py --train_classifier --classifier_dir="$CLASSIFIER_DIR" \
    --data_dir="$DATA_DIR" --classifier_steps="$CLASSIFIER_STEPS"
fi

train_and_score() {  # DIR SEED TRAIN_FLAGS...
  local dir=$1 seed=$2
  shift 2
  if ! training_finished "$dir"; then
    "$python" train.py --flagfile="$FLAGFILE" --mnist_dir="$MNIST_DIR" \
      --data_dir="$DATA_DIR" --train_dir="$dir" --seed="$seed" --max_steps="$STEPS" \
      --image_every_n_steps=0 "${threads[@]}" "${EXTRA[@]}" "$@"
  fi
  "$python" sample_quality.py --classifier_dir="$CLASSIFIER_DIR" --train_dir="$dir" \
    --data_dir="$DATA_DIR" --num_samples="$NUM_SAMPLES"
}

schedule() {  # NAME SEED TRAIN_FLAGS...
  local name=$1 seed=$2
  shift 2
  local dir="$RUNS_DIR/$name/seed$seed"
  echo "== $name, seed $seed -> $dir"
  if training_finished "$dir" && compgen -G "$dir/sample_quality_step_*.json" >/dev/null; then
    echo "   already trained and scored: not re-run"
    return
  fi
  pool_run "$name seed $seed" "$RUNS_DIR/logs/${name//\//.}.seed$seed.log" \
    train_and_score "$dir" "$seed" "$@"
}

for ((seed = 0; seed < SEEDS; seed++)); do
  for beta in $LATENT20_BETAS; do
    schedule "latent20/beta$beta" "$seed" --kl_weight="$beta"
  done
  schedule latent20/warmup "$seed" --kl_weight=1 --kl_warmup_steps=$((STEPS / 2))
done
for beta in $LATENT2_BETAS; do
  schedule "latent2/beta$beta" 0 --latent_dim=2 --kl_weight="$beta"
done
if ! pool_wait_all; then
  echo "kl_study.sh: a run failed (above); the others are kept. Re-run the" \
    "same command to resume." >&2
  exit 1
fi

"$python" -m reporting.kl_study --runs_dir="$RUNS_DIR" --data_dir="$DATA_DIR" \
  --report_dir="$REPORT_DIR" --command="$command_line"
