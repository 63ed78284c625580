"""mmfuse benchmarks: one subcommand per benchmark, each writing a JSON record.

    python scripts/bench.py emap            # the full-size run (meant for a GPU)
    python scripts/bench.py emap --quick    # CPU-sized, also checks that the methods agree

Every record names the device, the jax / flax versions and the sizes, and holds the
median of repeated timings taken after a warm-up call (which compiles). Records go
to ``benchmarks/<name>-<platform>[-quick].json`` unless ``--out`` says otherwise.

Adding a benchmark: write a module (in ``scripts/`` or importable from the repository
root) that defines ``add_arguments(parser)`` and ``run(args, timer) -> dict`` and add
it to ``SUBCOMMANDS``. ``timer(fn, repeats)`` returns the median seconds of ``fn()``
(outputs blocked on) after one warm-up call, and the warm-up call's output. The dict
is merged into the record; ``"agree": false`` in it makes the command exit with 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
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

# subcommand -> module defining add_arguments(parser) and run(args, timer) -> dict
SUBCOMMANDS: dict[str, str] = {
    "emap": "bench_emap",
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

    device = jax.devices()[0]
    return {
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "host_cpus": os.cpu_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    for path in (str(SCRIPTS_DIR), str(REPO_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = modules[name] = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=(module.__doc__ or name).splitlines()[0])
        sub.add_argument("--quick", action="store_true", help="a small CPU-sized run")
        sub.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
        sub.add_argument("--out", type=pathlib.Path, default=None, help="the JSON record")
        module.add_arguments(sub)
    args = parser.parse_args(argv)

    record = {"benchmark": args.command, **environment(), "quick": args.quick}
    record.update(modules[args.command].run(args, median_time))
    out = args.out or REPO_ROOT / "benchmarks" / (
        f"{args.command}-{record['platform']}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if record.get("agree", True) else 1


if __name__ == "__main__":
    sys.exit(main())
