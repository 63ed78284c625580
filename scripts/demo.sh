#!/usr/bin/env bash
# Sets up an environment (the active one, else .venv), then runs the quickstart experiment
# (configs/quickstart.py): trains a handful of fusion models on a synthetic dataset that
# needs a cross-modal interaction (XOR) and on a real one (digits halves), and prints the
# EMAP table. The run's files go to $MMFUSE_WORKDIR (default runs/quickstart); rerunning
# resumes (a finished run just prints its table). Extra arguments go to experiments.main,
# e.g. scripts/demo.sh --config.seeds='(0,1)' --config.resume=False
set -euo pipefail
source "$(dirname "$0")/_setup_env.sh" ""  # no extras (not this script's arguments)
cd "$repo_root"
workdir="${MMFUSE_WORKDIR:-$repo_root/runs/quickstart}"
echo "[mmfuse] quickstart -> $workdir"
python -m experiments.main --config=configs/quickstart.py --workdir="$workdir" "$@"
