"""Checks and conversions of config values that every trainer shares.

The library never reads a config; the experiments turn config values into keyword
arguments of ``mmfuse`` calls here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np


def plain(value: Any) -> Any:
    """A ConfigDict (or any nested value) as plain dicts, lists and scalars."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def check_entries(
    what: str,
    entries: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    required: Sequence[str] = ("name",),
    label: str = "name",
) -> list[str]:
    """Checks the dict entries of a config list (e.g. ``config.datasets``); their names.

    Each entry has only ``keys``, all of ``required``, and a name no other entry has:
    its ``label``, else its ``"name"``.
    """
    for entry in entries:
        unknown = sorted(set(entry) - set(keys))
        missing = [k for k in required if k not in entry]
        if unknown or missing:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else f"no {missing[0]!r}"
            raise ValueError(
                f"{what}: {dict(entry)!r} has {problem}; keys: {', '.join(keys)} "
                f"({', '.join(required)} required)"
            )
    names = [entry.get(label, entry["name"]) for entry in entries]
    repeated = sorted({n for n in names if names.count(n) > 1}, key=str)
    if repeated:
        raise ValueError(
            f"{what}: {', '.join(map(repr, repeated))} names more than one entry; give each "
            f"a {label!r} of its own"
        )
    return names


def _is_int(value: Any) -> bool:
    """A Python or numpy integer (``True`` is not one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_count(key: str, value: Any, minimum: int) -> None:
    """Checks a config count: ``None`` (unset) or an int ``>= minimum``."""
    if value is not None and (not _is_int(value) or value < minimum):
        raise ValueError(f"config.{key} must be an int >= {minimum}, got {value!r}")


def check_number(key: str, value: Any, minimum: float) -> None:
    """Checks a config number: a finite int or float ``>= minimum``."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not (number and np.isfinite(value) and value >= minimum):
        raise ValueError(f"config.{key} must be a finite number >= {minimum}, got {value!r}")


# jax keeps a seed's low 32 bits: 2**32 would initialize like 0
SEED_LIMIT = 2**32


def check_seeds(config: ml_collections.ConfigDict, where: str = "config") -> None:
    """Checks every ``seed`` (an int) and ``seeds`` (ints) of a config, at any depth.

    Each must lie in ``[0, 2**32)``: numpy's generators refuse negative seeds (only
    once training has begun) and jax would silently wrap larger ones. ``None`` (a
    dataset's default seed) passes.
    """
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            check_seeds(value, f"{where}.{key}")
        elif key in ("seed", "seeds") and value is not None:
            listed = key == "seeds" and isinstance(value, (list, tuple))
            for i, seed in enumerate(value if listed else (value,)):
                if not (_is_int(seed) and 0 <= seed < SEED_LIMIT):
                    name = f"{where}.{key}" + (f"[{i}]" if listed else "")
                    raise ValueError(f"{name} must be an int in [0, 2**32), got {seed!r}")
