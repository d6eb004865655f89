#!/usr/bin/env bash
# Alibaba Cloud PAI (MaxCompute) submission: 1 parameter server + 2 workers.
#
#   bash scripts/cluster/pai_submit.sh     # needs odpscmd configured for your project
#
# PAI's TensorFlow runner starts train.py in every task with the four classic
# flags (--ps_hosts, --worker_hosts, --job_name, --task_index; worker 0 is the
# chief), plus --buckets (the input location, read as --data_dir) and
# --checkpointDir (the output location, read as --train_dir), and often more of
# its own (--tables, --outputs), which train.py accepts and logs
# (train.LAUNCHER_FLAGS); any other unknown flag is an error.
# The oss:// paths need PAI's TensorFlow build (it registers OSS in tf.io.gfile);
# -Dbuckets must hold train/validation/test.tfrecords made beforehand with
#   vae-convert-mnist --mnist_dir DIR --output_dir DIR
# and uploaded there.
set -euo pipefail

BUCKET=${BUCKET:-oss://YOUR_BUCKET}
ROLE_ARN=${ROLE_ARN:-acs:ram::YOUR_ACCOUNT:role/aliyunodpspaidefaultrole}
HERE=$(cd "$(dirname "$0")/../.." && pwd)

# PAI takes the code as one archive; train.py at its top level, beside the
# package it imports.
tar -czf /tmp/tf1_mnist_vae.tar.gz -C "$HERE" --exclude=__pycache__ \
  train.py mnist_vae

# -name names the runner's TensorFlow version; pick one your region offers.
odpscmd -e "pai -name tensorflow1150
  -Dscript='file:///tmp/tf1_mnist_vae.tar.gz'
  -DentryFile='train.py'
  -Dbuckets='${BUCKET}/mnist/?role_arn=${ROLE_ARN}'
  -DcheckpointDir='${BUCKET}/runs/vae-pai/?role_arn=${ROLE_ARN}'
  -Dcluster='{\"ps\":{\"count\":1},\"worker\":{\"count\":2}}'
  -DuserDefinedParameters='--optimizer=adam --max_steps=2000';"
