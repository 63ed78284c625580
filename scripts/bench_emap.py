"""Exact EMAP over all N² pairs: a reference-style row loop vs mmfuse (full and factorized).

The model is a two-modality fusion network with an MLP head, ``2×width → hidden →
hidden → classes`` (default 2×128 → 256 → 256 → 2), written so that it factorizes:
the first linear layer is split per modality (the encoders), then
``relu(h_a + h_b)`` → linear → relu → linear (the head). Three ways to compute its
EMAP at N paired examples are timed:

- ``reference``: the published procedure (Hessel and Lee, EMNLP 2020): every row
  ``F[i, :] = f(a_i, b_{0..N-1})`` by one jitted call, collected into the full
  N×N×C logits in host memory, then averaged (with NumPy, faster than the original
  release's Python loops over a dict of logits);
- ``mmfuse_full``: ``interactions.emap`` on the model's pure ``apply``, jitted;
- ``mmfuse_factorized``: ``interactions.emap_model``: the encoders once, the head on
  the N² cross pairs, jitted.

``--quick`` shrinks N so that the reference fits on a CPU and checks all three agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmfuse import interactions, models

# tolerance on max |difference| / max |EMAP| between methods, per dtype
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


class SumRelu(nnx.Module):
    """``relu(h_1 + ... + h_M)``: the first layer's nonlinearity after its per-modality parts."""

    def __call__(self, hs):
        return jax.nn.relu(sum(hs))


def build_model(width: int, hidden: int, classes: int, seed: int = 0) -> models.FusionModel:
    """``x_a, x_b: [B, width]`` -> ``[B, classes]``; first layer ``W_a x_a + W_b x_b + b``."""
    rngs = nnx.Rngs(seed)
    return models.FusionModel(
        [
            nnx.Linear(width, hidden, rngs=rngs),
            nnx.Linear(width, hidden, use_bias=False, rngs=rngs),
        ],
        SumRelu(),
        models.MLP(hidden, (hidden,), classes, rngs=rngs),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, nargs="+", default=None, help="N (default 16384; 256)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--width", type=int, default=128, help="each modality's width")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--skip-reference", action="store_true", help="time mmfuse only")


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


def measure(
    calls: dict[str, tuple[Callable[[], Any], int]],
    n: int,
    dtype_name: str,
    timer: Callable[[Callable[[], Any], int], tuple[float, Any]],
    repeats: int,
) -> dict:
    """Times each method, checks that their EMAPs agree; one record of the results."""
    methods, values = {}, {}
    for method, (call, flops) in calls.items():
        seconds, output = timer(call, repeats)
        values[method] = np.asarray(output, dtype=np.float64)  # [N, C]
        methods[method] = {
            "seconds": seconds,
            "pairs_per_second": n * n / seconds,
            "tflops": n * n * flops / seconds / 1e12,
        }
    if "reference" in methods:
        for method in ("mmfuse_full", "mmfuse_factorized"):
            methods[method]["speedup_vs_reference"] = (
                methods["reference"]["seconds"] / methods[method]["seconds"]
            )
    base = values.get("reference", values["mmfuse_full"])
    scale = float(np.max(np.abs(base)))
    diffs = {m: float(np.max(np.abs(v - base))) / scale for m, v in values.items()}
    agree = all(d <= TOLERANCE.get(dtype_name, 1e-4) for d in diffs.values())
    summary = ", ".join(
        f"{m} {r['seconds'] * 1e3:.1f} ms ({r['pairs_per_second']:.3g} pairs/s)"
        for m, r in methods.items()
    )
    print(f"emap N={n} {dtype_name}: {summary}; agree={agree}", flush=True)
    return {
        "n": n,
        "dtype": dtype_name,
        "pairs": n * n,
        "methods": methods,
        "max_relative_difference": diffs,
        "agree": agree,
    }


def run(
    args: argparse.Namespace, timer: Callable[[Callable[[], Any], int], tuple[float, Any]]
) -> dict:
    sizes = args.n or ([256] if args.quick else [16384])
    model = build_model(args.width, args.hidden, args.classes)
    pure = models.as_pure(model)
    # multiply-adds per pair, times 2: the full model also runs the first layer per pair
    head_flops = 2 * (args.hidden * args.hidden + args.hidden * args.classes)
    full_flops = head_flops + 2 * 2 * args.width * args.hidden

    @jax.jit
    def row(params, a, i, b):  # F[i, :]: [N, C]
        return pure.apply(params, (jnp.broadcast_to(a[i][None], b.shape), b))

    @jax.jit
    def full(params, xs):
        return interactions.emap(
            functools.partial(pure.apply, params), xs, block_size=args.block_size
        )

    @jax.jit
    def factorized(params, xs):
        return interactions.emap_model(
            dataclasses.replace(pure, params=params), xs, block_size=args.block_size
        )

    results = []
    for dtype_name in args.dtypes:
        dtype = jnp.dtype(dtype_name)
        params = jax.tree.map(
            lambda p, dtype=dtype: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
            pure.params,
        )
        for n in sizes:
            rng = np.random.default_rng(n)
            xs = tuple(
                jnp.asarray(rng.standard_normal((n, args.width)), dtype=dtype) for _ in range(2)
            )
            calls = {
                "mmfuse_full": (functools.partial(full, params, xs), full_flops),
                "mmfuse_factorized": (functools.partial(factorized, params, xs), head_flops),
            }
            if not args.skip_reference:
                reference = functools.partial(reference_emap, row, params, *xs)
                calls["reference"] = (reference, full_flops)
            results.append(measure(calls, n, dtype_name, timer, args.repeats))
    return {
        "model": {
            "layers": f"2x{args.width} -> {args.hidden} -> {args.hidden} -> {args.classes}",
            "block_size": args.block_size or "auto",
            "head_flops_per_pair": head_flops,
            "full_flops_per_pair": full_flops,
        },
        "accumulation": "float32",
        "results": results,
        "agree": all(r["agree"] for r in results),
    }
