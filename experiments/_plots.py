"""Figures of a run (matplotlib, written to files; never shown)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import jax

PathLike = str | os.PathLike


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training host
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: PathLike) -> None:
    path = pathlib.Path(path)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def learning_curves(records: Sequence[dict], path: PathLike, *, title: str = "") -> None:
    """``train/loss`` and every ``eval/*`` series of ``metrics.jsonl`` records against step."""
    plt = _pyplot()
    series: dict[str, tuple[list, list]] = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(value)
    names = sorted(series, key=lambda k: (not k.startswith("train/"), k))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3))
    axes = [axes] if len(names) <= 1 else list(axes)
    for ax, name in zip(axes, names, strict=False):
        steps, values = series[name]
        ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def table_figure(
    header: Sequence[str], rows: Sequence[Sequence[str]], path: PathLike, *, title: str = ""
) -> None:
    """A results table rendered as a figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 1.5 * len(header), 0.6 + 0.32 * (len(rows) + 1)))
    ax.axis("off")
    table = ax.table(cellText=[list(r) for r in rows], colLabels=list(header), loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(col=list(range(len(header))))  # long model names fit
    table.scale(1.0, 1.3)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def emap_bars(
    names: Sequence[str],
    original: Sequence[float],
    projected: Sequence[float],
    path: PathLike,
    *,
    metric: str,
    title: str = "",
) -> None:
    """Side-by-side bars of each model's metric and its EMAP projection's."""
    import numpy as np

    plt = _pyplot()
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.2))
    ax.bar(x - 0.2, original, width=0.4, label="model")
    ax.bar(x + 0.2, projected, width=0.4, label="EMAP (additive projection)")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    _save(fig, path)


def grouped_bars(
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    path: PathLike,
    *,
    errors: dict[str, Sequence[float]] | None = None,
    ylabel: str = "",
    title: str = "",
) -> None:
    """One bar per (group, series), e.g. test accuracy per dataset and model, with error bars."""
    import numpy as np

    plt = _pyplot()
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(2.0 + 1.2 * len(groups) * max(1, len(series) / 6), 3.6))
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        ax.bar(x - 0.4 + (i + 0.5) * width, values, width=width, yerr=err, label=name)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=7, ncol=max(1, len(series) // 8), bbox_to_anchor=(1.0, 1.0), loc="upper left"
    )
    if title:
        ax.set_title(title)
    _save(fig, path)
