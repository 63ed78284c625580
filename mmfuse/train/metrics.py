"""``metrics.jsonl``: one JSON object per line, written by process 0 only."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

PathLike = str | os.PathLike


def _plain(value: Any) -> Any:
    """Numbers of any array type as Python scalars (JSON has no numpy types)."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, skipping a last line cut short by a kill."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricWriter:
    """Appends ``{"step": s, **scalars}`` lines to a JSON-lines file.

    Args:
      path: the file; its folder is created.
      resume_step: when resuming from the checkpoint of this step, records of later
        steps (written after that checkpoint by the interrupted run) are dropped, so
        the file reads as one uninterrupted run; ``None`` starts the file afresh.
      enabled: whether this process writes (default: process 0 only).
    """

    def __init__(
        self, path: PathLike, *, resume_step: int | None = None, enabled: bool | None = None
    ):
        self.path = pathlib.Path(path)
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            []
            if resume_step is None
            else [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        )
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, **scalars: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), **_plain(scalars)}) + "\n")
