"""mmfuse benchmarks: one subcommand per benchmark, each writing a JSON record.

    python scripts/bench.py emap            # exact EMAP: row loop vs full, factorized, fused
    python scripts/bench.py fusion          # train steps of every operator vs PyTorch twins
    python scripts/bench.py memory          # compiled peak memory of every operator's step
    python scripts/bench.py emap --quick    # CPU-sized; every run checks what it times

Sizes default to the device: GPU-sized on an accelerator, smaller on a CPU, smaller
still with ``--quick``. ``--budget SECONDS`` skips (and lists) the measurements that
would start after that much time, so that a run fits a time slot.

Every record names the device, the jax / flax versions and the sizes, and holds the
median of repeated timings taken after a warm-up call (which compiles). Records go
to ``benchmarks/<name>-<platform>[-quick].json`` unless ``--out`` says otherwise
(``<name>``: the subcommand, or what its module's optional ``record_name(args)``
returns, e.g. ``fusion-bf16`` for ``fusion --dtype bfloat16``).

Adding a benchmark: write a module (in ``scripts/`` or importable from the repository
root) that defines ``add_arguments(parser)`` and ``run(args, timer) -> dict`` and add
it to ``SUBCOMMANDS``. ``timer(fn, repeats)`` returns the median seconds of ``fn()``
(outputs blocked on) after one warm-up call, and the warm-up call's output;
``args.deadline`` is the ``time.monotonic()`` after which to start nothing new;
``args.save_partial(fragment)`` writes the record so far (``"complete": false``, e.g.
after each result row), so a run killed at a time limit keeps what it measured. The
dict is merged into the record; ``"agree": false`` in it makes the command exit with 1,
and a record that measured nothing (empty ``"results"``, or ``"measured": 0``:
everything skipped for time) with 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

SCRIPTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"  # the results, and the PyTorch twins

# subcommand -> module defining add_arguments(parser) and run(args, timer) -> dict
SUBCOMMANDS: dict[str, str] = {
    "emap": "bench_emap",
    "fusion": "bench_fusion",
    "memory": "bench_memory",
}


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after one warm-up call
    (which compiles), and the warm-up call's output."""
    import jax

    output = jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def environment() -> dict[str, Any]:
    """The device and software a record was measured with."""
    import flax
    import jax
    import jaxlib
    import optax

    device = jax.devices()[0]
    return {
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "host_cpus": os.cpu_count(),
        "host_load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    for path in (str(SCRIPTS_DIR), str(REPO_ROOT), str(BENCHMARKS_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    # JAX would otherwise reserve most of the GPU's memory up front, leaving PyTorch
    # (timed in the same process by `fusion`) none; set before jax is first imported.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = modules[name] = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=(module.__doc__ or name).splitlines()[0])
        sub.add_argument("--quick", action="store_true", help="a small CPU-sized run")
        sub.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
        sub.add_argument("--out", type=pathlib.Path, default=None, help="the JSON record")
        sub.add_argument(
            "--budget", type=float, default=None, help="seconds after which to start nothing new"
        )
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    arguments = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    args.deadline = time.monotonic() + (math.inf if args.budget is None else args.budget)

    module = modules[args.command]
    record = {"benchmark": args.command, **environment(), "quick": args.quick}
    record["arguments"] = arguments  # the command line, defaults filled in
    stem = module.record_name(args) if hasattr(module, "record_name") else args.command
    out = args.out or BENCHMARKS_DIR / (
        f"{stem}-{record['platform']}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(fragment: dict[str, Any], complete: bool) -> None:
        partial = out.with_name(out.name + ".partial")  # then renamed: never half a file
        partial.write_text(
            json.dumps({**record, **fragment, "complete": complete}, indent=2) + "\n"
        )
        partial.replace(out)

    args.save_partial = lambda fragment: write(fragment, complete=False)
    record.update(module.run(args, median_time))
    write({}, complete=True)
    print(f"wrote {out}")
    measured = record.get("measured", len(record.get("results", [None])))
    if not measured:
        print("no results: every measurement was skipped for time", file=sys.stderr)
        return 2
    return 0 if record.get("agree", True) else 1


if __name__ == "__main__":
    sys.exit(main())
