"""Peak device memory of each fusion operator's train step, from XLA's compiled program.

The train step is ``bench_fusion``'s (forward, MSE, backward, Adam; parameters and
optimizer state donated). It is lowered on abstract values and compiled, never run,
so sizes that would not fit still get a figure; ``memory_analysis()`` of the compiled
program gives the bytes of its arguments, outputs (less those aliased to donated
arguments) and temporaries: ``peak = arguments + outputs - aliased + temporaries``,
the most the program holds at once (an upper bound: XLA may free arguments early).
Works on every backend, the CPU included.

Two tables: every operator at CMU-MOSI-like widths (text 300, audio 74, vision 35 →
128), and tensor fusion against low-rank tensor fusion (rank 4) as three equal
widths d grow: tensor fusion's kernel holds ``(d + 1)^3·C`` numbers, the low-rank
factors ``r·3·(d + 1)·C + r + C``. The sweep is compiled first, largest width first,
so that a ``--budget`` drops the small widths and the operators' table, not the sweep.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from bench_fusion import CMU_MOSI_DIMS, LEARNING_RATE, QUICK_DIMS, train_step_fns
from flax import nnx

from mmfuse import fusion

MIB = 2**20
DEFAULTS = {  # batch, sweep widths
    "quick": (8, [2, 4, 8]),
    "cpu": (256, [8, 16, 32, 64, 128]),
    "accelerator": (1024, [8, 16, 32, 64, 128]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", nargs="+", default=None, help="operators (default: all)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="text audio vision")
    parser.add_argument("--out-dim", type=int, default=None, help="default 128 (quick: 16)")
    parser.add_argument("--batch", type=int, default=None, help="B (default 1024 GPU, 256 CPU)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="sweep widths d")
    parser.add_argument("--rank", type=int, default=4, help="low-rank tensor fusion's rank")


def step_memory(name: str, dims: tuple[int, ...], out_dim: int, batch: int, **options) -> dict:
    """Compiled memory of one train step of ``name`` on ``[batch, d_m]`` inputs (MiB)."""
    abstract = nnx.eval_shape(
        lambda: fusion.create(name, dims, out_dim, rngs=nnx.Rngs(0), **options)
    )
    graphdef, state = nnx.split(abstract)
    opt_state = jax.eval_shape(optax.adam(LEARNING_RATE).init, state)
    xs = [jax.ShapeDtypeStruct((batch, d), jnp.float32) for d in dims]
    y = jax.ShapeDtypeStruct((batch, out_dim), jnp.float32)
    _, step = train_step_fns(graphdef, getattr(abstract, "stochastic", False))
    start = time.perf_counter()
    compiled = step.lower(state, opt_state, xs, y, jax.random.key(0)).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    params = sum(x.size for x in jax.tree.leaves(state))
    arguments = stats.argument_size_in_bytes
    outputs = stats.output_size_in_bytes
    aliased = stats.alias_size_in_bytes
    temporaries = stats.temp_size_in_bytes
    return {
        "op": name,
        "in_dims": list(dims),
        "parameters": int(params),
        "parameter_mib": params * 4 / MIB,
        "argument_mib": arguments / MIB,
        "output_mib": outputs / MIB,
        "aliased_mib": aliased / MIB,
        "temporary_mib": temporaries / MIB,
        "peak_mib": (arguments + outputs - aliased + temporaries) / MIB,
        "compile_seconds": seconds,
    }


def run(args: argparse.Namespace, timer: Callable) -> dict:
    del timer  # nothing is timed: the figures come from the compiled program
    platform = jax.devices()[0].platform
    kind = "quick" if args.quick else ("cpu" if platform == "cpu" else "accelerator")
    dims = tuple(args.dims or (QUICK_DIMS if args.quick else CMU_MOSI_DIMS))
    out_dim = args.out_dim or (16 if args.quick else 128)
    batch = args.batch or DEFAULTS[kind][0]
    widths = args.widths or DEFAULTS[kind][1]
    skipped: list[Any] = []
    operators, sweep = [], []
    summary = {
        "batch": batch,
        "dims": list(dims),
        "out_dim": out_dim,
        "dtype": "float32",
        "peak": "arguments + outputs - aliased + temporaries of the compiled train step",
        "operators": operators,
        "width_sweep": {"rank": args.rank, "modalities": 3, "results": sweep},
        "skipped_for_time": skipped,
    }

    for d in sorted(widths, reverse=True):
        if time.monotonic() > args.deadline:
            skipped.append({"sweep_width": d})
            continue
        tensor = step_memory("tensor", (d, d, d), out_dim, batch)
        low_rank = step_memory("low_rank_tensor", (d, d, d), out_dim, batch, rank=args.rank)
        sweep.append({"width": d, "tensor": tensor, "low_rank_tensor": low_rank})
        sweep.sort(key=lambda r: r["width"])
        args.save_partial(summary)

    for name in args.ops or fusion.names():
        if time.monotonic() > args.deadline:
            skipped.append({"op": name})
            continue
        try:
            operators.append(step_memory(name, dims, out_dim, batch))
        except ValueError:  # takes exactly two modalities: text and audio
            operators.append(step_memory(name, dims[:2], out_dim, batch))
        args.save_partial(summary)
    summary["measured"] = len(operators) + len(sweep)
    print(f"train-step memory (MiB), batch {batch}, widths {dims} -> {out_dim}")
    print(f"{'operator':16} {'params':>11} {'args':>9} {'out-alias':>9} {'temp':>9} {'peak':>9}")
    for r in operators:
        print(
            f"{r['op']:16} {r['parameters']:11d} {r['argument_mib']:9.2f} "
            f"{r['output_mib'] - r['aliased_mib']:9.2f} {r['temporary_mib']:9.2f} "
            f"{r['peak_mib']:9.2f}"
        )

    print(f"tensor vs low-rank (rank {args.rank}) fusion, 3 x d -> {out_dim}, batch {batch}")
    print(
        f"{'d':>5} {'tensor params':>14} {'peak MiB':>10} {'low-rank params':>16} {'peak MiB':>10}"
    )
    for r in sweep:
        t, lr = r["tensor"], r["low_rank_tensor"]
        print(
            f"{r['width']:5d} {t['parameters']:14d} {t['peak_mib']:10.2f} "
            f"{lr['parameters']:16d} {lr['peak_mib']:10.2f}"
        )
    return summary
