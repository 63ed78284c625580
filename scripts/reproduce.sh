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
  extra=()
  if [ "$name" = pid ]; then  # the fusion zoo's models (settings checked), not retrained
    extra=(--config.zoo_workdir="$runs/fusion_zoo")
  fi
  echo "[mmfuse] $name -> $runs/$name"
  python -m experiments.main --config="configs/$name.py" --workdir="$runs/$name" \
    ${extra[@]+"${extra[@]}"} "$@"
done
# The README's pre-trained encoder comparison on digits_halves: encoders learned with
# the fusion (joint) or pre-trained alone and frozen, tensor and additive fusion, 3 seeds.
for fusion in tensor additive; do
  for mode in joint frozen; do
    for seed in 0 1 2; do
      workdir="$runs/encoders/${fusion}_${mode}_seed$seed"
      echo "[mmfuse] supervised $fusion digits_halves encoders=$mode seed=$seed -> $workdir"
      python -m experiments.main --config="configs/supervised.py:$fusion,digits_halves" \
        --config.model.encoders.mode="$mode" --config.seed="$seed" --workdir="$workdir" "$@"
    done
  done
done
