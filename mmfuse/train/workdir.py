"""The working folder of a run: its recorded configuration decides whether a rerun resumes."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import jax

PathLike = str | os.PathLike
CONFIG_FILE = "config.json"
# Written by a run (the trainers' records included: per-model runs, PID records,
# markdown tables); a fresh start (resume=False) removes them.
RUN_OUTPUTS = (
    "checkpoints",
    "metrics.jsonl",
    "results.json",
    "results.md",
    "table.md",
    "plots",
    "runs",
    "pid",
    "pretrain",
)


class WorkdirConflictError(RuntimeError):
    """The workdir holds a run with another configuration."""


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def prepare_workdir(
    workdir: PathLike, config: Mapping[str, Any], *, resume: bool = True, ignore: tuple = ()
) -> bool:
    """Makes ``workdir`` ready for a run of ``config``; returns whether it resumes one.

    A new or empty folder gets ``config.json``. A folder holding a run of the same
    configuration (compared as JSON, keys in ``ignore`` left out) is resumed. A run of
    another configuration is refused unless ``resume`` is False, which removes its
    outputs and starts afresh. Only process 0 writes.

    Args:
      workdir: the run's folder.
      config: the configuration as plain, JSON-able values (``config.to_dict()``).
      resume: False starts afresh whatever the folder holds.
      ignore: top-level keys that may differ between the runs (e.g. ``"resume"``).

    Raises:
      WorkdirConflictError: the folder holds a run of another configuration, listing
        the differing keys.
    """
    workdir = pathlib.Path(workdir)
    recorded_path = workdir / CONFIG_FILE
    current = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    compared = {k: v for k, v in current.items() if k not in ignore}
    writer = jax.process_index() == 0
    resuming = False
    if not resume:  # also the outputs of a run that recorded no config (e.g. a bare fit)
        if writer:
            for name in RUN_OUTPUTS:
                path = workdir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    elif recorded_path.exists():
        recorded = json.loads(recorded_path.read_text())
        recorded = {k: v for k, v in recorded.items() if k not in ignore}
        if recorded != compared:
            changes = "; ".join(_differences(recorded, compared))
            raise WorkdirConflictError(
                f"{workdir} holds a run with a different configuration ({changes}); use a new "
                "workdir, or --config.resume=False to discard that run and start afresh"
            )
        else:
            resuming = True
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = recorded_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, recorded_path)
    return resuming


def write_json(path: PathLike, value: Any) -> None:
    """Writes ``value`` as indented JSON atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: PathLike) -> Any:
    """The value of a JSON file written by ``write_json``."""
    return json.loads(pathlib.Path(path).read_text())
