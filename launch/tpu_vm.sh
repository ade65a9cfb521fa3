#!/usr/bin/env bash
# Runs a medjax experiment on every worker of a Cloud TPU VM (single host or pod).
#
#   TPU=my-tpu ZONE=us-central2-b CONFIG=configs/dcgan_brain.py \
#     WORKDIR=/mnt/shared/runs/dcgan_brain bash launch/tpu_vm.sh
#
# WORKDIR must be a directory every worker sees at the same path (Filestore/NFS
# or a gcsfuse mount): orbax writes one checkpoint from all hosts, and only
# process 0 writes summaries and sample grids. The data dir likewise
# (TFDS_DATA_DIR), prepared once beforehand, e.g. by a one-step run on worker 0.
# medjax must be installed on every worker (pip install -e . in $REPO).
# Extra arguments are passed to medjax.main (e.g. --config.batch_size=1024).
set -euo pipefail
: "${TPU:?set TPU}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
REPO="${REPO:-\$HOME/medjax}"
DATA="${TFDS_DATA_DIR:-\$HOME/tensorflow_datasets}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd $REPO && TFDS_DATA_DIR=$DATA python3 -m medjax.main --distributed \
    --config=$CONFIG --workdir=$WORKDIR $*"
