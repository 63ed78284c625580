#!/usr/bin/env bash
# Runs one experiment on every worker of a Cloud TPU VM slice, from your machine:
#   scripts/run_tpu.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
# The repository must be at the same path on every worker (e.g. cloned there), and
# WORKDIR a path on storage every worker can reach (a shared disk, or a bucket mounted
# at the same path on every worker, e.g. with gcsfuse; not a gs:// URL). Each
# worker runs the same command; with MMFUSE_DISTRIBUTED=1, experiments.main calls
# jax.distributed.initialize() (which finds the slice's coordinator by itself on TPU),
# and only process 0 writes files.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
tpu="$1"; zone="$2"; config="$3"; workdir="$4"; shift 4
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done
remote="cd $(printf '%q' "$repo_root") && python3 -m pip install --quiet -e . 'jax[tpu]' \
  && MMFUSE_DISTRIBUTED=1 python3 -m experiments.main --config=$(printf '%q' "$config") \
  --workdir=$(printf '%q' "$workdir")$extra"
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$remote"
