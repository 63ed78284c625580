"""Exact EMAP over all N² pairs: a reference-style row loop vs mmfuse (full and factorized).

Two two-modality fusion models, both factorizing as ``head(enc_a(x_a), enc_b(x_b))``:

- ``mlp``: ``2×width → hidden → hidden → classes`` (default 2×128 → 256 → 256 → 2), the
  early-fusion model ``FusionModel([None, None], nonlinear fusion)``: one MLP on the
  concatenated inputs. ``emap_model`` splits its first layer per modality
  (``relu(x_a W_a + x_b W_b + b)``), computes the parts once per example and pairs
  only the rest of the network;
- ``tensor``: per-modality linear encoders ``width → tensor_dim``, tensor fusion
  ``W · vec([h_a; 1] ⊗ [h_b; 1])`` to ``tensor_out`` features, relu, linear to
  ``classes`` (the head: fusion and classifier). ``emap_model`` contracts the kernel
  with each row's ``[h_a; 1]`` once, leaving a ``[K] · [K, F]`` product per pair.

The ways to compute a model's EMAP at N paired examples that are timed:

- ``reference``: the published procedure (Hessel and Lee, EMNLP 2020): every row
  ``F[i, :] = f(a_i, b_{0..N-1})`` by one jitted call, collected into the full
  N×N×C logits in host memory, then averaged (with NumPy, faster than the original
  release's Python loops over a dict of logits);
- ``mmfuse_full``: ``interactions.emap`` on the model's pure ``apply``, jitted;
- ``mmfuse_factorized``: ``interactions.emap_model``: the encoders (and for the mlp
  head the first layer's parts, for the tensor head the kernel contracted with each
  row) once, the rest of the head on the N² cross pairs, jitted;
- ``mmfuse_fused`` (mlp head; on a GPU, or with ``--fused on``):
  ``emap_model(..., kernel="pallas")``, the pair pass as one Pallas kernel that keeps
  every pair's activations on chip. ``--fused-tiles COLSxROWSxWARPS[xCHUNK] ...`` times more
  tilings of the kernel (``mmfuse_fused_COLSxROWSxWARPS``); the first is
  ``mmfuse_fused``.

Precision: ``float32``, or ``bfloat16`` compute with float32 accumulation: the
factorized and fused methods pass ``compute_dtype=bfloat16`` to ``emap_model`` (bf16
matmul operands, float32 accumulation and layer outputs); the reference and full
methods run the model on bf16 copies of its parameters and inputs (XLA accumulates
each bf16 matmul in float32 and rounds its output to bf16). EMAP sums in float32.

``tflops`` counts the head's FLOPs per pair (analytically, ``head_flops_per_pair``:
what evaluating the head on one pair costs) for every method, so it is pairs/second
in other units. ``executed_tflops`` counts what each method executes per pair
(``executed_flops_per_pair``): the reference and full methods run the whole model
(encoders too) on every pair; the factorized tensor head contracts its kernel once
per row, leaving ``2·(K·F + F·C)`` per pair. ``fraction_of_peak`` divides
``executed_tflops`` by the device's dense peak (a small table of known chips, or
``--peak-tflops``). Fused methods also report ``speedup_vs_factorized`` (the plain XLA
pass at the same size).

Sizes run largest first (on a GPU 32,768 down to 4,096), every head and dtype at one
N before the next, so that a ``--budget`` drops the smallest sizes. ``--quick`` shrinks
N so that the reference fits on a CPU; every run checks that the methods agree:
float32 within 1e-4 of the largest EMAP value on a CPU, 5e-3 on a GPU (whose float32
matmuls use TF32 at the default precision, in XLA and in the Triton kernel alike).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse import fusion, interactions, models

HEADS = ("mlp", "tensor")
# tolerance on max |difference| / max |EMAP| between methods, per dtype ("tf32": float32
# where matmuls round their operands to TF32's 10-bit mantissa, as GPUs do by default)
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "bfloat16": 2e-2}
DEFAULT_N = {"quick": [256], "cpu": [2048, 1024, 512], "accelerator": [32768, 16384, 8192, 4096]}
# the row loop is slow by design: above this N it is skipped unless --reference-max-n says
DEFAULT_REFERENCE_MAX_N = {"cpu": 2048, "accelerator": 16384}

# Dense (no sparsity) peak TFLOP/s per chip, from the vendors' data sheets, matched
# against jax.Device.device_kind. "float32" is the CUDA-core rate; "tf32" the tensor-core
# rate that XLA uses for float32 matmuls at the default precision on these GPUs.
PEAK_TFLOPS = {
    "H100 PCIe": {"bfloat16": 756.0, "tf32": 378.0, "float32": 51.0},
    "H100 NVL": {"bfloat16": 835.0, "tf32": 418.0, "float32": 60.0},
    "H200 NVL": {"bfloat16": 835.0, "tf32": 418.0, "float32": 60.0},
    "H100": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},
}


def device_peaks(device_kind: str, override: float | None) -> dict[str, float] | None:
    """The known dense peaks of a chip (``None`` when unknown), or ``--peak-tflops``."""
    if override is not None:
        return {"bfloat16": override, "float32": override}
    for name, peaks in PEAK_TFLOPS.items():  # most specific names first
        if name.lower() in device_kind.lower():
            return dict(peaks)
    return None


def fraction_of_peak(tflops: float, dtype_name: str, peaks: dict[str, float] | None) -> Any:
    """``tflops`` over each peak that applies to ``dtype_name`` (None without a peak)."""
    if peaks is None:
        return None
    names = ["bfloat16"] if dtype_name == "bfloat16" else ["float32", "tf32"]
    return {k: tflops / peaks[k] for k in names if k in peaks}


def build_model(args: argparse.Namespace, head: str) -> models.FusionModel:
    """``x_a, x_b: [B, width]`` -> ``[B, classes]``, in float32 (the methods apply bf16).

    The parameters depend on the seed only.
    """
    rngs = nnx.Rngs(args.seed)
    w = args.width
    if head == "mlp":  # early fusion: one MLP on the concatenated inputs
        h = args.hidden
        op = fusion.create("nonlinear", (w, w), args.classes, hidden_dims=(h, h), rngs=rngs)
        return models.FusionModel([None, None], op)
    e, f = args.tensor_dim, args.tensor_out
    encoders = [nnx.Linear(w, e, rngs=rngs), nnx.Linear(w, e, rngs=rngs)]
    op = fusion.create("tensor", (e, e), f, rngs=rngs)
    classifier = nnx.Sequential(jax.nn.relu, nnx.Linear(f, args.classes, rngs=rngs))
    return models.FusionModel(encoders, op, classifier)


def flops_per_pair(args: argparse.Namespace, head: str) -> tuple[int, int]:
    """FLOPs (2 per multiply-add) of the head and of the whole model for one pair
    evaluated alone."""
    if head == "mlp":
        h = args.hidden
        head_flops = 2 * (h * h + h * args.classes)
        return head_flops, head_flops + 2 * 2 * args.width * h
    e, f = args.tensor_dim + 1, args.tensor_out
    # contract [h_a; 1] with the [e, e, f] kernel, then [h_b; 1]; then the classifier
    head_flops = 2 * e * e * f + 2 * e * f + 2 * f * args.classes
    return head_flops, head_flops + 2 * 2 * args.width * args.tensor_dim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=None,
        help="N, in the order run (default: 32768..4096 GPU; 2048..512 CPU)",
    )
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16")
    )
    parser.add_argument("--width", type=int, default=128, help="each modality's width")
    parser.add_argument("--hidden", type=int, default=256, help="the mlp head's width")
    parser.add_argument("--tensor-dim", type=int, default=32, help="encodings of the tensor head")
    parser.add_argument("--tensor-out", type=int, default=128, help="tensor fusion's output")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--skip-reference", action="store_true", help="time mmfuse only")
    parser.add_argument(
        "--reference-max-n", type=int, default=None, help="largest N for the row loop"
    )
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="timed runs of the row loop"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak (CPU: no default)"
    )
    parser.add_argument(
        "--fused",
        choices=("auto", "on", "off"),
        default="auto",
        help="time the fused Pallas kernel (mlp head); auto: on a GPU or with --quick "
        "(elsewhere it runs in the slow Pallas interpreter)",
    )
    parser.add_argument(
        "--fused-tiles",
        nargs="+",
        default=["64x2x8"],
        help="the fused kernel's tilings to time, COLSxROWSxWARPS[xCHUNK] (columns per tile, "
        "rows per step, Triton warps, hidden units per slice); the first is reported as "
        "mmfuse_fused",
    )


def parse_tile(text: str) -> dict[str, int]:
    """``"64x2x8"`` (or ``"64x2x8x128"``) -> the ``kernel_options`` of that tiling."""
    try:
        cols, rows, warps, *chunk = (int(part) for part in text.lower().split("x"))
        if len(chunk) > 1:
            raise ValueError(text)
    except ValueError:
        raise SystemExit(
            f"--fused-tiles: {text!r} is not COLSxROWSxWARPS[xCHUNK], e.g. 64x2x8"
        ) from None
    options = {"block_cols": cols, "rows_per_step": rows, "num_warps": warps}
    return options | ({"hidden_chunk": chunk[0]} if chunk else {})


def reference_emap(row: Callable, params: Any, a: jax.Array, b: jax.Array) -> np.ndarray:
    """Every row of the N×N×C logits by one call into host memory, then their means."""
    n = a.shape[0]
    grid = None
    for i in range(n):
        logits = np.asarray(row(params, a, i, b), dtype=np.float32)  # [N, C]
        if grid is None:
            grid = np.empty((n, *logits.shape), np.float32)  # [N, N, C]
        grid[i] = logits
    return grid.mean(axis=1) + grid.mean(axis=0) - grid.mean(axis=(0, 1))  # [N, C]


def time_reference(
    row: Callable, params: Any, xs: tuple[jax.Array, jax.Array], repeats: int
) -> tuple[float, np.ndarray]:
    """Median seconds of the row loop after compiling ``row`` (one row, not a whole pass)."""
    jax.block_until_ready(row(params, xs[0], 0, xs[1]))
    times, output = [], None
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        output = reference_emap(row, params, *xs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def executed_flops_per_pair(args: argparse.Namespace, head: str, method: str, n: int) -> float:
    """FLOPs ``method`` executes per pair at N (per-example work shared over N pairs)."""
    head_flops, full_flops = flops_per_pair(args, head)
    if method in ("reference", "mmfuse_full"):
        return float(full_flops)
    encode = 2 * args.width * (args.hidden if head == "mlp" else args.tensor_dim)
    if head == "mlp":  # the first layer's two parts once per example
        return head_flops + 2 * encode / n
    k, f = args.tensor_dim + 1, args.tensor_out
    # per pair: [h_b; 1] against the row's [K, F], the classifier; per row: the kernel
    # contracted with [h_a; 1]; per example: the encoders
    return 2 * k * f + 2 * f * args.classes + (2 * k * k * f + 2 * encode) / n


def agreement(values: dict[str, np.ndarray], tolerance: float) -> tuple[dict[str, float], bool]:
    """Max |difference| / max |EMAP| of each method against the reference (else full),
    and whether all are within ``tolerance``."""
    base = values.get("reference", values["mmfuse_full"])
    scale = float(np.max(np.abs(base)))
    diffs = {m: float(np.max(np.abs(v - base))) / scale for m, v in values.items()}
    return diffs, all(d <= tolerance for d in diffs.values())


def run(
    args: argparse.Namespace, timer: Callable[[Callable[[], Any], int], tuple[float, Any]]
) -> dict:
    platform = jax.devices()[0].platform
    kind = "quick" if args.quick else ("cpu" if platform == "cpu" else "accelerator")
    sizes = args.n or DEFAULT_N[kind]
    reference_max_n = args.reference_max_n or DEFAULT_REFERENCE_MAX_N.get(kind, max(sizes))
    peaks = device_peaks(getattr(jax.devices()[0], "device_kind", platform), args.peak_tflops)
    use_fused = args.fused == "on" or (args.fused == "auto" and (args.quick or platform == "gpu"))
    for tile in args.fused_tiles:
        parse_tile(tile)

    heads, setups = {}, {}
    for head in args.heads:
        head_flops, full_flops = flops_per_pair(args, head)
        pure = models.as_pure(build_model(args, head))
        heads[head] = {
            "layers": (
                f"2x{args.width} -> {args.hidden} -> {args.hidden} -> {args.classes}"
                if head == "mlp"
                else f"2x{args.width} -> 2x{args.tensor_dim} -> tensor "
                f"{args.tensor_dim + 1}x{args.tensor_dim + 1}x{args.tensor_out} -> relu -> "
                f"{args.classes}"
            ),
            "head_flops_per_pair": head_flops,
            "full_flops_per_pair": full_flops,
        }
        for dtype_name in args.dtypes:
            setups[head, dtype_name] = methods_of(args, pure, head, dtype_name, use_fused)

    results, skipped = [], []
    summary = {
        "heads": heads,
        "block_size": args.block_size or "auto",
        "fused_tiles": args.fused_tiles if use_fused else None,
        "precision": {
            "float32": "float32 throughout (XLA's default matmul precision)",
            "bfloat16": "mlp head: factorized and fused bf16 operands with float32 "
            "accumulation and layer outputs, reference and full on bf16 parameters and inputs; "
            "tensor head: bf16 operands, float32 accumulation and layer outputs; float32 EMAP "
            "sums; float32 master parameters",
        },
        "tolerance": {
            "float32": TOLERANCE["float32" if platform == "cpu" else "tf32"],
            "bfloat16": TOLERANCE["bfloat16"],
        },
        "peak_tflops": peaks,
        "results": results,
        "skipped_for_time": skipped,
    }
    for n in sizes:  # largest first by default: a budget drops the smallest
        for (head, dtype_name), (candidates, row, run_params) in setups.items():
            item = {"head": head, "dtype": dtype_name, "n": n}
            if time.monotonic() > args.deadline:
                skipped.append(item)
                continue
            rng = np.random.default_rng(n)
            # inputs stay float32: the model casts them where it computes in bf16
            xs = tuple(
                jnp.asarray(rng.standard_normal((n, args.width)), jnp.float32) for _ in range(2)
            )
            timings, values, failures = {}, {}, {}
            for method, fn, method_params in candidates:
                extra = method.startswith("mmfuse_fused_")  # more tilings: if time allows
                if extra and time.monotonic() > args.deadline:
                    skipped.append({**item, "method": method})
                    continue
                call = functools.partial(fn, method_params, xs)
                try:
                    timings[method], out = timer(call, args.repeats)
                except Exception as error:
                    if not method.startswith("mmfuse_fused"):
                        raise
                    # a tiling the GPU cannot compile (e.g. out of shared memory) is a
                    # finding to record, not a reason to lose the rest of the run
                    failures[method] = f"{type(error).__name__}: {str(error)[:500]}"
                    print(f"{method} failed: {failures[method]}", flush=True)
                    continue
                values[method] = np.asarray(out, np.float64)  # [N, C]
            if not args.skip_reference and n <= reference_max_n:
                timings["reference"], out = time_reference(
                    row, run_params, xs, args.reference_repeats
                )
                values["reference"] = np.asarray(out, np.float64)
            diffs, agree = agreement(values, summary["tolerance"][dtype_name])
            methods = {}
            for method, seconds in timings.items():
                executed = executed_flops_per_pair(args, head, method, n)
                executed_tflops = n * n * executed / seconds / 1e12
                methods[method] = {
                    "seconds": seconds,
                    "pairs_per_second": n * n / seconds,
                    "tflops": n * n * heads[head]["head_flops_per_pair"] / seconds / 1e12,
                    "executed_flops_per_pair": executed,
                    "executed_tflops": executed_tflops,
                    "fraction_of_peak": fraction_of_peak(executed_tflops, dtype_name, peaks),
                }
                if "reference" in timings and method != "reference":
                    methods[method]["speedup_vs_reference"] = timings["reference"] / seconds
                if method.startswith("mmfuse_fused") and "mmfuse_factorized" in timings:
                    methods[method]["speedup_vs_factorized"] = (
                        timings["mmfuse_factorized"] / seconds
                    )
            results.append(
                {
                    **item,
                    "pairs": n * n,
                    "methods": methods,
                    "max_relative_difference": diffs,
                    "failed": failures,
                    "agree": agree,
                }
            )
            print(format_row(results[-1]), flush=True)
            args.save_partial(summary | {"agree": all(r["agree"] for r in results)})
    print_table(results)
    return summary | {"agree": all(r["agree"] for r in results)}


def methods_of(
    args: argparse.Namespace, pure: Any, head: str, dtype_name: str, use_fused: bool
) -> tuple[list[tuple[str, Callable, Any]], Callable, Any]:
    """The timed methods ``(name, jitted fn(params, xs), params)`` of one head and dtype,
    the reference's jitted row function and the parameters it runs on."""
    dtype = None if dtype_name == "float32" else jnp.dtype(dtype_name)
    # float32 master weights; the reference and full methods run the model on bf16
    # copies, emap_model takes compute_dtype
    params = pure.params
    lowp = dtype is not None
    run_params = jax.tree.map(lambda p: p.astype(dtype), params) if lowp else params

    def cast(x):
        return x.astype(dtype) if lowp else x

    @jax.jit
    def row(params, a, i, b):  # F[i, :]: [N, C]
        return pure.apply(params, (jnp.broadcast_to(cast(a[i])[None], b.shape), cast(b)))

    @jax.jit
    def full(params, xs):
        def apply(xs):
            return pure.apply(params, tuple(cast(x) for x in xs))

        return interactions.emap(apply, xs, block_size=args.block_size)

    @jax.jit
    def factorized(params, xs):
        bound = dataclasses.replace(pure, params=params)
        return interactions.emap_model(bound, xs, block_size=args.block_size, compute_dtype=dtype)

    def fused(options):
        @jax.jit
        def compute(weights, inputs):
            bound = dataclasses.replace(pure, params=weights)
            return interactions.emap_model(
                bound, inputs, kernel="pallas", kernel_options=options, compute_dtype=dtype
            )

        return compute

    candidates = [("mmfuse_full", full, run_params), ("mmfuse_factorized", factorized, params)]
    if head == "mlp" and use_fused:
        for i, tile in enumerate(args.fused_tiles):
            name = "mmfuse_fused" if i == 0 else f"mmfuse_fused_{tile}"
            candidates.append((name, fused(parse_tile(tile)), params))
    return candidates, row, run_params


def format_row(r: dict) -> str:
    parts = []
    for method in ("reference", "mmfuse_full", "mmfuse_factorized", "mmfuse_fused"):
        if method in r["methods"]:
            t = r["methods"][method]
            ratio = t.get("speedup_vs_reference")
            parts.append(
                f"{t['seconds']:9.3f} s {t['pairs_per_second']:9.3g}/s {t['tflops']:7.3f}"
                + (f" x{ratio:5.1f}" if ratio else "      ")
            )
        else:
            parts.append(f"{'-':>42}")
    return f"{r['head']:6} {r['dtype']:8} {r['n']:6} | " + " | ".join(parts) + f" | {r['agree']}"


def print_table(results: list[dict]) -> None:
    cell = "seconds, pairs/s, TFLOP/s, xref"
    print(
        f"{'head':6} {'dtype':8} {'N':>6} | {'reference':^42} | {'mmfuse full':^42} | "
        f"{'mmfuse factorized':^42} | {'mmfuse fused':^42} | agree\n{'':23}| {cell:^42} |"
    )
    for r in results:
        print(format_row(r))
