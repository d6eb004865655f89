#!/usr/bin/env bash
# The convolutional presets beside their sources' programs (docs/architectures.md):
#   cvae_tutorial: configs/cvae_tutorial.flags and bench/cvae_tutorial_program.py,
#                  --seeds seeds each, the test -ELBO after every epoch
#   kl_article:    configs/kl_article.flags and bench/kl_article_program.py at
#                  the article's beta = 10 and beta = 0, --kl_epochs epochs each,
#                  the final loss terms (the last weights over the training
#                  images) and the test reconstruction and KL
# then reporting/architectures.py writes the tables to --report_dir. Every
# run uses one thread in and one between ops, as a fair pair. Re-running
# resumes: finished runs are not redone.
#
# Usage:
#   scripts/architectures_study.sh                  # about 3 hours of one core
#   scripts/architectures_study.sh --parts cvae_tutorial --seeds 1
#   scripts/architectures_study.sh --smoke          # tiny runs: checks the script
set -euo pipefail

MNIST_DIR=../shared/mnist
FASHION_DIR=/usr/share/datasets/fashion-mnist
RUNS_DIR=runs/architectures
REPORT_DIR=reproduction/architectures
SEEDS=3
PARTS="cvae_tutorial kl_article"
KL_EPOCHS=20
TUTORIAL_EPOCHS=10
STEPS_PER_EPOCH=1875
KL_STEPS_PER_EPOCH=468.75
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --kl_epochs) KL_EPOCHS=$2; shift 2 ;;
    --mnist_dir) MNIST_DIR=$2; shift 2 ;;
    --fashion_mnist_dir) FASHION_DIR=$2; shift 2 ;;
    --runs_dir) RUNS_DIR=$2; shift 2 ;;
    --report_dir) REPORT_DIR=$2; shift 2 ;;
    --smoke) SEEDS=1; KL_EPOCHS=1; TUTORIAL_EPOCHS=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "architectures_study.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ $SEEDS =~ ^[1-9][0-9]*$ && $KL_EPOCHS =~ ^[1-9][0-9]*$ ]]; then
  echo "architectures_study.sh: --seeds and --kl_epochs take whole numbers >= 1" >&2
  exit 2
fi
for part in $PARTS; do
  if [[ $part != cvae_tutorial && $part != kl_article ]]; then
    echo "architectures_study.sh: --parts takes cvae_tutorial and/or kl_article, not '$part'" >&2
    exit 2
  fi
done
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
one_thread=(--intra_op_threads=1 --inter_op_threads=1)

for part in $PARTS; do
  case "$part" in
    cvae_tutorial)
      for ((seed = 0; seed < SEEDS; seed++)); do
        dir=$RUNS_DIR/cvae_tutorial/preset/seed$seed
        echo "== cvae_tutorial preset, seed $seed -> $dir"
        "$python" train.py --flagfile=configs/cvae_tutorial.flags --mnist_dir="$MNIST_DIR" \
          --train_dir="$dir" --seed="$seed" --max_steps=$((TUTORIAL_EPOCHS * STEPS_PER_EPOCH)) \
          "${one_thread[@]}"
        for ((epoch = 1; epoch <= TUTORIAL_EPOCHS; epoch++)); do
          checkpoint=$dir/kept/model.ckpt-$((epoch * STEPS_PER_EPOCH))
          output=$dir/eval_test_epoch$epoch.json
          [[ -f $output ]] || "$python" evaluate.py --train_dir="$dir" --checkpoint="$checkpoint" \
            --split=test --iw_samples=0 --aggregate_draws=0 --output="$output" \
            "${one_thread[@]}" >/dev/null
        done
        program=$RUNS_DIR/cvae_tutorial/program/seed$seed.json
        echo "== the tutorial's program, seed $seed -> $program"
        mkdir -p "$(dirname "$program")"
        [[ -f $program ]] || "$python" bench/cvae_tutorial_program.py --mnist_dir="$MNIST_DIR" \
          --seed="$seed" --epochs="$TUTORIAL_EPOCHS" --threads=1 --json="$program"
      done ;;
    kl_article)
      steps=$("$python" -c "print(round($KL_EPOCHS * $KL_STEPS_PER_EPOCH))")
      for beta in 10 0; do
        weight=$("$python" -c "print($beta / 2)")  # The article's mean over z's 2 dimensions.
        dir=$RUNS_DIR/kl_article/preset/beta$beta
        echo "== kl_article preset, beta $beta (--kl_weight=$weight) -> $dir"
        "$python" train.py --flagfile=configs/kl_article.flags --mnist_dir="$FASHION_DIR" \
          --train_dir="$dir" --kl_weight="$weight" --max_steps="$steps" "${one_thread[@]}"
        # Its final loss terms: the last weights over the training images, as
        # the program reports its own.
        [[ -f $dir/eval_train.json ]] || "$python" evaluate.py --train_dir="$dir" --split=train \
          --iw_samples=0 --aggregate_draws=0 --output="$dir/eval_train.json" \
          "${one_thread[@]}" >/dev/null
        program=$RUNS_DIR/kl_article/program/beta$beta.json
        echo "== the article's program, beta $beta -> $program"
        mkdir -p "$(dirname "$program")"
        [[ -f $program ]] || "$python" bench/kl_article_program.py --mnist_dir="$FASHION_DIR" \
          --beta="$beta" --epochs="$KL_EPOCHS" --threads=1 --json="$program"
      done ;;
  esac
done
"$python" -m reporting.architectures --runs_dir="$RUNS_DIR" --report_dir="$REPORT_DIR"
