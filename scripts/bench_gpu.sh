#!/usr/bin/env bash
# The three benchmarks at GPU sizes on one H100 / H200, within a time slot:
#   scripts/bench_gpu.sh [OUT_DIR]        (default OUT_DIR: benchmarks/)
#   BENCH_SLOT_SECONDS=540 (default): the whole script's time, start-up included.
# Writes OUT_DIR/{memory,emap-tiles,fusion,emap,fusion-bf16}-gpu.json and one log of all
# five runs, OUT_DIR/bench-gpu.log: six files, few enough to copy off a machine that
# returns a handful. In order of what the slot must not lose:
#   memory       compiled peak memory: tensor vs low-rank fusion as widths grow, then
#                every operator;
#   emap-tiles   the EMAP target: bf16 MLP head at N = 32,768, the row-by-row reference,
#                the plain XLA passes and five tilings of the fused kernel;
#   fusion       train steps vs the PyTorch twins (eager; torch.compile on [B, d]) at
#                B = 1024, 256, then 32, and on [B, T, d] sequences at B = 256;
#   emap         both heads, float32 and bf16, N = 32,768 down to 4,096;
#   fusion-bf16  the train steps with bf16 matmuls (mmfuse compute_dtype vs
#                torch.autocast), PyTorch eager only.
# Each benchmark has a budget after which it starts nothing new (what it skips is listed
# in its record, "skipped_for_time"), capped by what is left of the slot; each record is
# rewritten after every result row ("complete": false until the end), so a run stopped
# by `timeout` keeps what it measured. Needs jax with CUDA, flax, optax and torch (for
# the PyTorch twins); nothing else is imported.
set -uo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$repo_root/benchmarks}"
slot="${BENCH_SLOT_SECONDS:-540}"
mkdir -p "$out_dir"
log="$out_dir/bench-gpu.log"
: >"$log"
cd "$repo_root"
python="${PYTHON:-python3}"  # hosts may have no plain `python`
# JAX must leave GPU memory to PyTorch, which `fusion` runs in the same process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Programs compiled by one benchmark are reused by the next (emap-tiles -> emap).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/mmfuse-jax-cache}"

# Refuse to start on the CPU (a broken CUDA install still lists CPU devices, and the GPU
# sizes would then run for hours); report a PyTorch without CUDA, which times nothing.
timeout 180 "$python" - <<'EOF' 2>&1 | tee -a "$log"
import sys
import jax
print(jax.devices(), "jax", jax.__version__)
if jax.default_backend() != "gpu":
    sys.exit(f"bench_gpu: jax runs on {jax.default_backend()!r}, not a GPU")
try:
    import torch
except ImportError as error:
    print(f"bench_gpu: no PyTorch ({error}); the fusion benchmarks time JAX only")
else:
    print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
    if not torch.cuda.is_available():
        print("bench_gpu: PyTorch has no CUDA; the PyTorch twins will not be timed")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
timeout 30 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 |
  tee -a "$log"

status=0
run() {  # run BENCHMARK RECORD_NAME BUDGET_SECONDS [ARGS...]
  local name="$1" record="$2" budget="$3"
  shift 3
  local left=$((slot - SECONDS))
  if [ "$left" -lt 30 ]; then
    echo "[bench_gpu] $record: skipped, ${left}s of the slot left" | tee -a "$log"
    status=1
    return
  fi
  # the budget leaves 30 s for the item in progress; `timeout` ends the run at the slot
  [ "$budget" -gt $((left - 30)) ] && budget=$((left - 30))
  echo "[bench_gpu] $record (budget ${budget}s, ${left}s of the slot left)" | tee -a "$log"
  local start=$SECONDS
  timeout --kill-after=10 "$left" "$python" scripts/bench.py "$name" --budget "$budget" \
    --out "$out_dir/$record-gpu.json" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "[bench_gpu] $record: exit $rc after $((SECONDS - start))s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}
run memory memory 45
run emap emap-tiles 90 --heads mlp --dtypes bfloat16 --n 32768 --reference-max-n 32768 \
  --repeats 3 --fused-tiles 64x2x8 64x1x4 128x1x8x32 64x2x8x128 128x2x8
run fusion fusion 200 --repeats 5 --batches 1024 256 32 --seq-batches 256
run emap emap 120 --repeats 3
run fusion fusion-bf16 60 --dtype bfloat16 --batches 1024 256 --seq-batches --no-compile \
  --repeats 3
exit $status
