#!/usr/bin/env bash
# The three benchmarks at GPU sizes, in about 9 minutes on one H100 / H200:
#   scripts/bench_gpu.sh [OUT_DIR]        (default OUT_DIR: benchmarks/)
# Writes OUT_DIR/{memory,emap,emap-tiles,fusion,fusion-bf16}-gpu.json and one log of
# all five runs, OUT_DIR/bench-gpu.log: six files, few enough to copy off a machine
# that returns a handful. emap-tiles times five tilings of the fused EMAP kernel at
# the target size (bf16 MLP head, N = 32,768); fusion-bf16 times the train steps with
# bf16 matmuls (mmfuse compute_dtype vs torch.autocast) at B = 256 and 1024, [B, d]
# only, PyTorch eager only (torch.compile would not fit its minute). Every benchmark
# has a time budget: what would start after it is skipped and listed in its record
# ("skipped_for_time"), so a slow device still yields results. Needs jax with CUDA,
# flax, optax and torch (for the PyTorch twins); nothing else is imported.
set -uo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$repo_root/benchmarks}"
mkdir -p "$out_dir"
log="$out_dir/bench-gpu.log"
: >"$log"
cd "$repo_root"
python="${PYTHON:-python3}"  # hosts may have no plain `python`
# JAX must leave GPU memory to PyTorch, which `fusion` runs in the same process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
"$python" -c "import jax; print(jax.devices())" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$log"

status=0
run() {  # run BENCHMARK RECORD_NAME BUDGET_SECONDS [ARGS...]
  local name="$1" record="$2" budget="$3"
  shift 3
  echo "[bench_gpu] $record (budget ${budget}s)" | tee -a "$log"
  local start=$SECONDS
  "$python" scripts/bench.py "$name" --budget "$budget" --out "$out_dir/$record-gpu.json" "$@" \
    2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "[bench_gpu] $record: exit $rc after $((SECONDS - start))s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}
run memory memory 30
run emap emap-tiles 60 --heads mlp --dtypes bfloat16 --n 32768 --skip-reference \
  --repeats 3 --fused-tiles 64x2x8 64x1x4 128x1x8x32 64x2x8x128 128x2x8
run emap emap 170 --repeats 3
run fusion fusion 180 --repeats 5
run fusion fusion-bf16 60 --dtype bfloat16 --batches 256 1024 --seq-batches --no-compile \
  --repeats 3
exit $status
