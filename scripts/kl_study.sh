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
#   conv/{article_beta0,elbo,article_beta10}
#                              the KL article's network (configs/kl_article.flags,
#                              2-d, Fashion-MNIST) for --conv_epochs epochs at
#                              its beta = 0 and 10 (--kl_weight 0 and 5: its
#                              mean over z's 2 dimensions halves the sum) and
#                              at the true ELBO (--kl_weight 1), seed 0
# each 20-d configuration for --seeds seeds. Every run is scored: train.py's
# test figures (negative ELBO, reconstruction, KL, active units, mutual
# information + marginal KL, the Gaussian fit of q(z)) and sample_quality.py's
# Frechet distance and class shares of prior and aggregate samples, judged
# by a classifier trained once on each dataset (RUNS_DIR/classifier on
# MNIST, RUNS_DIR/classifier_fashion_mnist on Fashion-MNIST). Then
# reporting/kl_study.py writes the tables and figures to --report_dir.
#
# Usage:
#   scripts/kl_study.sh                    # everything, 3 seeds (about 40 min on 2 cores)
#   scripts/kl_study.sh --seeds 1          # one seed of each 20-d configuration
#   scripts/kl_study.sh --smoke            # tiny runs: checks the script
#   scripts/kl_study.sh --jobs 2           # two runs at once, the cores split
#   scripts/kl_study.sh --parts conv       # the convolutional part alone (about 1 h of a core)
#
# Re-running resumes: finished trainings and scores are not redone. --jobs N
# runs up to N runs at once (--threads_per_job T threads each; default the
# cores split evenly), each one's output in RUNS_DIR/logs/.
set -euo pipefail

MNIST_DIR=../shared/mnist
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
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
PARTS="mlp conv"
CONV_EPOCHS=20
CONV_STEPS_PER_EPOCH=468.75  # 60,000 images in batches of 128.
EXTRA=()
CONV_EXTRA=()
command_line="scripts/kl_study.sh $*"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --fashion_mnist_dir) FASHION_MNIST_DIR=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --conv_epochs) CONV_EPOCHS=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --threads_per_job) THREADS_PER_JOB=$2; shift 2 ;;
    --smoke)
      SEEDS=1; STEPS=40; CLASSIFIER_STEPS=50; NUM_SAMPLES=200; LATENT2_BETAS="0 10"
      LATENT20_BETAS=1
      EXTRA=(--hidden_units=32 --log_every_n_steps=10 --save_checkpoint_steps=20
             --eval_every_n_steps=20)
      CONV_EXTRA=(--max_steps=40 --log_every_n_steps=10 --save_checkpoint_steps=20)
      shift ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "kl_study.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ $SEEDS =~ ^[1-9][0-9]*$ ]]; then
  echo "kl_study.sh: --seeds takes a number of seeds (1, 2, ...), not '$SEEDS'" >&2
  exit 2
fi
if ! [[ $CONV_EPOCHS =~ ^[1-9][0-9]*$ ]]; then
  echo "kl_study.sh: --conv_epochs takes a number of epochs (1, 2, ...), not '$CONV_EPOCHS'" >&2
  exit 2
fi
for part in $PARTS; do
  if [[ $part != mlp && $part != conv ]]; then
    echo "kl_study.sh: --parts takes mlp and/or conv, not '$part'" >&2
    exit 2
  fi
done
source "$(dirname "$0")/lib/runs.sh"
check_jobs_flags kl_study.sh

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
read -ra threads <<< "$(thread_flags)"

# The classifier of the Frechet distances, trained once on DATA's training
# split, into DIR.
train_classifier() {  # DIR DATA
  [[ -f $1/classifier.json ]] && return 0
  echo "== the classifier of $2 -> $1"
  rm -rf "$1"  # A training cut short left no classifier.json.
  "$python" sample_quality.py --train_classifier --classifier_dir="$1" --data_dir="$2" \
    --classifier_steps="$CLASSIFIER_STEPS"
}

train_and_score() {  # DIR SEED CLASSIFIER_DIR DATA_DIR TRAIN_FLAGS...
  local dir=$1 seed=$2 classifier_dir=$3 data_dir=$4
  shift 4
  if ! training_finished "$dir"; then
    "$python" train.py --train_dir="$dir" --seed="$seed" "${threads[@]}" "$@" \
      --image_every_n_steps=0
  fi
  "$python" sample_quality.py --classifier_dir="$classifier_dir" --train_dir="$dir" \
    --data_dir="$data_dir" --num_samples="$NUM_SAMPLES"
}

schedule() {  # NAME SEED CLASSIFIER_DIR DATA_DIR TRAIN_FLAGS...
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

if [[ " $PARTS " == *" mlp "* ]]; then
  prepare_data
  train_classifier "$RUNS_DIR/classifier" "$DATA_DIR"
  mlp=("$RUNS_DIR/classifier" "$DATA_DIR" --flagfile="$FLAGFILE" --mnist_dir="$MNIST_DIR"
       --data_dir="$DATA_DIR" --max_steps="$STEPS" "${EXTRA[@]}")
  for ((seed = 0; seed < SEEDS; seed++)); do
    for beta in $LATENT20_BETAS; do
      schedule "latent20/beta$beta" "$seed" "${mlp[@]}" --kl_weight="$beta"
    done
    schedule latent20/warmup "$seed" "${mlp[@]}" --kl_weight=1 --kl_warmup_steps=$((STEPS / 2))
  done
  for beta in $LATENT2_BETAS; do
    schedule "latent2/beta$beta" 0 "${mlp[@]}" --latent_dim=2 --kl_weight="$beta"
  done
fi
if [[ " $PARTS " == *" conv "* ]]; then
  fashion_flags=$(prepare_preset_data kl_article) || exit 1
  read -ra fashion_flags <<< "$fashion_flags"
  fashion_data_dir=${fashion_flags[1]#--data_dir=}
  train_classifier "$RUNS_DIR/classifier_fashion_mnist" "$fashion_data_dir"
  conv_steps=$("$python" -c "print(round($CONV_EPOCHS * $CONV_STEPS_PER_EPOCH))")
  conv=("$RUNS_DIR/classifier_fashion_mnist" "$fashion_data_dir" --flagfile=configs/kl_article.flags
        "${fashion_flags[@]}" --max_steps="$conv_steps" "${CONV_EXTRA[@]}")
  schedule conv/article_beta0 0 "${conv[@]}" --kl_weight=0
  schedule conv/elbo 0 "${conv[@]}" --kl_weight=1
  schedule conv/article_beta10 0 "${conv[@]}" --kl_weight=5
fi
if ! pool_wait_all; then
  echo "kl_study.sh: a run failed (above); the others are kept. Re-run the" \
    "same command to resume." >&2
  exit 1
fi

"$python" -m reporting.kl_study --runs_dir="$RUNS_DIR" --report_dir="$REPORT_DIR" \
  --command="$command_line"
