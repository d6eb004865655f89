#!/usr/bin/env bash
# Out-of-distribution check: a model trained on MNIST scores the MNIST and the
# Fashion-MNIST test sets; writes the histogram of -log p(x) of both and the
# AUROC of telling them apart by it.
#
# Usage:
#   scripts/ood_fashion.sh --train_dir runs/upstream [--iw_samples 1000]
#       [--fashion_dir /usr/share/datasets/fashion-mnist] [--data_dir data/mnist]
#       [--out_dir reproduction]
#
# The Fashion-MNIST IDX files come from Debian's dataset-fashion-mnist package
# (apt-get install dataset-fashion-mnist) or `vae-convert-mnist --download
# --dataset fashion_mnist`.
set -euo pipefail

TRAIN_DIR=
DATA_DIR=data/mnist
FASHION_DIR=/usr/share/datasets/fashion-mnist
FASHION_RECORDS=data/fashion_mnist_test_only
OUT_DIR=reproduction
IW_SAMPLES=1000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --train_dir) TRAIN_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --fashion_dir) FASHION_DIR=$2; shift 2 ;;
    --fashion_records) FASHION_RECORDS=$2; shift 2 ;;
    --out_dir) OUT_DIR=$2; shift 2 ;;
    --iw_samples) IW_SAMPLES=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "ood_fashion.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z $TRAIN_DIR ]]; then
  echo "ood_fashion.sh: --train_dir (a run trained on MNIST) is required" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Only the test split is scored; the validation split size does not matter.
"$python" -m mnist_vae.data_prep.convert_to_records --dataset fashion_mnist \
  --mnist_dir "$FASHION_DIR" --output_dir "$FASHION_RECORDS" --validation_size 0
for name in mnist fashion; do
  data=$DATA_DIR
  [[ $name == fashion ]] && data=$FASHION_RECORDS
  "$python" evaluate.py --train_dir "$TRAIN_DIR" --data_dir "$data" --split test \
    --iw_samples "$IW_SAMPLES" --output "$work/$name.json" \
    --per_example_csv "$work/$name.csv"
done
"$python" -m reporting.ood --in_csv "$work/mnist.csv" \
  --out_csv "$work/fashion.csv" --figure "$OUT_DIR/ood_fashion_mnist.png" \
  --json "$OUT_DIR/ood_fashion_mnist.json"
