#!/usr/bin/env bash
# Alibaba Cloud PAI-TF (MaxCompute) submission: 1 parameter server + 2 workers.
#
#   scripts/cluster/pai_submit.sh --dry_run   # build the archive, print what would run
#   PAI_TF_RUNNER=... scripts/cluster/pai_submit.sh   # submit with odpscmd
#
# PAI's TensorFlow runner starts train.py in every task with the four classic
# flags (--ps_hosts, --worker_hosts, --job_name, --task_index; worker 0 is the
# chief), plus --buckets (the input location, read as --data_dir) and
# --checkpointDir (the output location, read as --train_dir), and its own
# --tables / --outputs, which train.py accepts and logs (train.LAUNCHER_FLAGS);
# any other unknown flag is an error. -Dbuckets must hold
# train/validation/test.tfrecords made beforehand with
#   vae-convert-mnist --mnist_dir DIR --output_dir DIR
# and uploaded there.
#
# WHICH RUNNER: this code needs TensorFlow >= 2.19. PAI-TF's MaxCompute
# runners (`pai -name tensorflow1120_ext`, `tensorflow1150`, ...) ship
# TensorFlow 1.x, which cannot run it, so this script names no runner: set
# PAI_TF_RUNNER to one whose TensorFlow is >= 2.19 if your region offers one.
# Otherwise submit through PAI-DLC with the project's Docker image (Dockerfile
# at the top of the repository; DLC sets TF_CONFIG, which train.py reads).
#
# EXPOSURE: TensorFlow's gRPC servers have no authentication; keep the job in
# a VPC/security group that only the job's own tasks can reach.
set -euo pipefail

dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "pai_submit.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

BUCKET=${BUCKET:-oss://YOUR_BUCKET}
ROLE_ARN=${ROLE_ARN:-acs:ram::YOUR_ACCOUNT:role/aliyunodpspaidefaultrole}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python}

# PAI takes the code as one archive, train.py at its top level beside every
# module of this project it imports (computed from the imports).
archive=${ARCHIVE:-$(mktemp -d)/tf1_mnist_vae.tar.gz}
mapfile -t code < <("$python" "$HERE/scripts/cluster/code_files.py" train.py)
tar -czf "$archive" -C "$HERE" "${code[@]}"
echo "archive: $archive (${#code[@]} files)"

runner=${PAI_TF_RUNNER:-}
command="pai -name ${runner:-<a PAI-TF runner with TensorFlow >= 2.19>}
  -Dscript='file://$archive'
  -DentryFile='train.py'
  -Dbuckets='${BUCKET}/mnist/?role_arn=${ROLE_ARN}'
  -DcheckpointDir='${BUCKET}/runs/vae-pai/?role_arn=${ROLE_ARN}'
  -Dcluster='{\"ps\":{\"count\":1},\"worker\":{\"count\":2}}'
  -DuserDefinedParameters='--optimizer=adam --max_steps=2000';"
if ((dry_run)); then
  echo "odpscmd -e \"$command\""
  exit 0
fi
if [[ -z $runner ]]; then
  echo "pai_submit.sh: PAI-TF's MaxCompute runners ship TensorFlow 1.x, which cannot" \
    "run this code (it needs >= 2.19). Set PAI_TF_RUNNER to a runner with" \
    "TensorFlow >= 2.19, or submit through PAI-DLC with the Docker image." >&2
  exit 1
fi
odpscmd -e "$command"
