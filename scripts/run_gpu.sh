#!/usr/bin/env bash
# Runs one experiment on a GPU host: every local GPU, one process.
#   scripts/run_gpu.sh configs/emap_table.py /data/runs/emap_table [--config.x=y ...]
# Installs mmfuse into the active environment if needed (a CUDA jax must already be
# installed there, e.g. pip install "jax[cuda12]"). Keeps XLA from grabbing all GPU
# memory up front so that several runs can share a host; set
# XLA_PYTHON_CLIENT_PREALLOCATE=true to undo.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config="$1"; workdir="$2"; shift 2
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo_root"
python="${PYTHON:-python3}"  # hosts may have no plain `python`
"$python" -c "import mmfuse" 2>/dev/null || "$python" -m pip install --quiet -e "$repo_root"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
"$python" -c "import jax; print('[mmfuse] devices:', jax.devices())"
exec "$python" -m experiments.main --config="$config" --workdir="$workdir" "$@"
