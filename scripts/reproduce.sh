#!/usr/bin/env bash
# Runs every experiment whose results the README reports, each in runs/<name>/ (or under
# $MMFUSE_RUNS). Each command resumes where it stopped when rerun. Extra arguments go to
# every experiments.main call (e.g. --config.resume=False).
set -euo pipefail
source "$(dirname "$0")/_setup_env.sh" ""  # no extras (not this script's arguments)
cd "$repo_root"
runs="${MMFUSE_RUNS:-$repo_root/runs}"
for name in quickstart linear_case fusion_zoo emap_table pid mro; do
  if [ ! -f "configs/$name.py" ]; then
    echo "[mmfuse] skipping $name (no configs/$name.py)"
    continue
  fi
  echo "[mmfuse] $name -> $runs/$name"
  python -m experiments.main --config="configs/$name.py" --workdir="$runs/$name" "$@"
done
