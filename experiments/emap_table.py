"""The lecture's EMAP table on mmfuse's datasets (Hessel and Lee, EMNLP 2020).

For every dataset (columns) it trains, per seed:

- ``additive``: a linear model, ``Σ_m W_m x_m + b`` (the additive operator on the raw
  modalities), whose EMAP projection is itself;
- ``nonlinear``: a neural net on the concatenated modalities (early fusion);
- ``polynomial``: tensor fusion on the raw modalities, ``W vec(⊗_m [x_m; 1])``, a
  degree-M polynomial model;
- ``+ linear logits``: a neural net that learns the residual of the trained linear
  model, whose logits are added and held fixed;
- any extra rows the config lists (e.g. an intermediate low-rank fusion model);

then reports each model's test metric, ``best`` (the model with the best validation
metric) and ``best + EMAP``: the test metric of the best model's EMAP projection, the
best additive function with the same marginal behaviour. A large drop means the best
model relies on cross-modal interactions; a small one that an additive model would do.

Each (dataset, model, seed) run lives in ``runs/<dataset>/<model>/seed<k>/`` with its
checkpoints and a ``run.json`` once finished, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments import _config, _evaluation, _models, _plots, _tasks, _training
from mmfuse import train

PLUS_LINEAR = "+ linear logits"
DATASET_KEYS = ("name", "options", "modalities", "label", "standardize")
ROW_KEYS = ("name", "kind", "fusion", "fusion_options")


class FixedLogits(nnx.Variable):
    """Parameters held fixed: ``mmfuse.train.fit`` trains ``nnx.Param`` leaves only."""


class PlusFixedModel(nnx.Module):
    """``base(xs) + residual(xs)`` with ``base`` frozen: a model of ``base``'s residual.

    Since the fixed ``base`` is additive (a linear model), EMAP of the sum is
    ``base + EMAP(residual)``: the residual network is where any interaction lives.
    """

    def __init__(self, base: nnx.Module, residual: nnx.Module):
        graphdef, state = nnx.split(base)
        self.base_graphdef = graphdef
        self.base_state = FixedLogits(nnx.to_pure_dict(state))
        self.residual = residual

    def __call__(self, xs, **kwargs: Any) -> jax.Array:
        base = nnx.merge(self.base_graphdef, self.base_state.get_value())
        return jax.lax.stop_gradient(base(xs)) + self.residual(xs, **kwargs)  # [B, C]


def row_models(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The table's model rows: name plus ``build_model`` arguments (plain dicts)."""
    rows = [
        {"name": "nonlinear", "kind": "early"},
        {"name": "polynomial", "kind": "raw", "fusion": "tensor"},
        {"name": PLUS_LINEAR, "kind": "early"},  # needs the trained additive model
        {"name": "additive", "kind": "raw", "fusion": "additive"},
    ]
    return rows + [dict(r) for r in _config.plain(config.get("extra_models", ()))]


def _build(row: Mapping[str, Any], config, task: _tasks.Task, seed: int) -> nnx.Module:
    m = config.model
    return _models.build_model(
        row["kind"],
        task.shapes(),
        task.num_outputs,
        seed=seed,
        fusion_name=row.get("fusion", "nonlinear"),
        fusion_options=row.get("fusion_options", {}),
        encoder_hidden=tuple(m.encoder_hidden),
        encoder_dim=m.encoder_dim,
        fused_dim=m.fused_dim,
        head_hidden=tuple(m.head_hidden),
        compute_dtype=m.get("compute_dtype"),
    )


def _train_row(row, config, task, seed, run_dir, linear: nnx.Module | None):
    model = _build(row, config, task, seed)
    if row["name"] == PLUS_LINEAR:
        model = PlusFixedModel(linear, model)
    loss_fn, kwargs = _training.fit_arguments(config, task, model, seed=seed)
    return train.fit(
        model,
        loss_fn,
        train_data=task.splits["train"],
        workdir=run_dir,
        description=f"{task.name} {row['name']} seed{seed}",
        **kwargs,
    )


def load_dataset(
    config, dataset: Mapping[str, Any], splits: Sequence[str] = _tasks.SPLITS
) -> _tasks.Task:
    """The task of one ``config.datasets`` entry (``name``, and optionally ``options``,
    ``modalities``, ``label``, ``standardize``: z-score each modality by the train split)."""
    task = _tasks.load_task(
        dataset["name"],
        splits=splits,
        options=dataset.get("options", {}),
        data_dir=config.data_dir,
        modalities=tuple(dataset.get("modalities", ())),
    )
    return _tasks.standardized(task, splits[0]) if dataset.get("standardize", False) else task


def check_config(config) -> None:
    """Checks what the table will train before the workdir is touched or anything trained.

    Every ``config.datasets`` and ``config.extra_models`` entry holds known keys and a
    name of its own (an extra row's differs from the built-in rows' too), the optimizer
    and the train settings work, and every row's model builds (from shapes alone) on
    every dataset's modalities, read from one training example.
    """
    _training.check_training(config)
    _config.check_count("emap_max_examples", config.emap_max_examples, 2)
    datasets = _config.plain(config.datasets)
    labels = _config.check_entries("config.datasets", datasets, DATASET_KEYS, label="label")
    rows = row_models(config)
    _config.check_entries("config.extra_models", rows, ROW_KEYS, required=("name", "kind"))
    for dataset, label in zip(datasets, labels, strict=True):
        _tasks.check_splits(dataset["name"])
        task = load_dataset(config, dataset, splits=(_tasks.PROBE_SPLIT,))
        for row in rows:
            build = functools.partial(_build, row, config, task, 0)
            _models.check_model(build, f"model {row['name']!r} on {label}")


def run_dataset(
    config, dataset: Mapping[str, Any], workdir: pathlib.Path, writer: train.MetricWriter
) -> dict[str, Any]:
    """Trains every row on one dataset for every seed; its label, metric and run records."""
    task = load_dataset(config, dataset)
    label = dataset.get("label", dataset["name"])
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in config.seeds:
        linear = None
        rows = row_models(config)
        # The linear model first: the residual row is built on it.
        for row in sorted(rows, key=lambda r: r["name"] != "additive"):
            name = row["name"]
            run_dir = workdir / "runs" / label.replace("/", "_") / name.replace(" ", "_")
            record_path = run_dir / f"seed{seed}" / "run.json"
            # The residual row needs the trained linear model, so that fit is always
            # called: on a finished run it restores the model and returns at once.
            if record_path.exists() and name != "additive":
                records.setdefault(name, {})[seed] = train.read_json(record_path)
                continue
            result = _train_row(row, config, task, seed, record_path.parent, linear)
            if name == "additive":
                linear = result.model
            if record_path.exists():
                record = train.read_json(record_path)
            else:
                record = {
                    "validation": result.best_metric,
                    "best_step": result.best_step,
                    "params": _models.count_params(result.model),
                    "test": _evaluation.test_metrics(result.model, task),
                    "emap": _evaluation.emap_scores(
                        result.model, task, max_examples=config.emap_max_examples
                    ),
                }
                train.write_json(record_path, record)
                writer.write(0, dataset=label, model=name, seed=seed, test=record["test"])
            records.setdefault(name, {})[seed] = record
    test_size = int(task.splits["test"]["label"].shape[0])
    return {"label": label, "metric": task.metric, "records": records, "test_size": test_size}


def summarize(run: Mapping[str, Any]) -> dict[str, Any]:
    """Mean test metric per row, the best row (by validation) and its EMAP projection.

    Every cell is on the test examples EMAP is computed on (``num_examples`` of the
    ``test_size``), so that the best model and its projection compare like for like.
    """
    metric = run["metric"]
    sign = -1.0 if metric == "mse" else 1.0  # after the sign, higher is better
    rows = {}
    for name, by_seed in run["records"].items():
        seeds = list(by_seed.values())
        rows[name] = {
            "test": float(np.mean([r["emap"]["original"] for r in seeds])),
            "test_std": float(np.std([r["emap"]["original"] for r in seeds])),
            "emap": float(np.mean([r["emap"]["projected"] for r in seeds])),
            "validation": float(np.mean([r["validation"] for r in seeds])),
        }
    # Validation scores are the monitored metric: accuracy, or the loss (MSE) to minimize.
    best = max(rows, key=lambda n: sign * rows[n]["validation"])
    sizes = {r["emap"]["num_examples"] for seeds in run["records"].values() for r in seeds.values()}
    return {
        "metric": metric,
        "rows": rows,
        "best": best,
        "best_test": rows[best]["test"],
        "best_emap": rows[best]["emap"],
        "num_examples": min(sizes),
        "test_size": run["test_size"],
    }


def format_table(summaries: Mapping[str, Mapping[str, Any]], row_names: list[str]) -> str:
    labels = list(summaries)
    header = "| model | " + " | ".join(labels) + " |"
    lines = [header, "|---|" + "---|" * len(labels)]
    for name in row_names:
        cells = []
        for label in labels:
            row = summaries[label]["rows"][name]
            cells.append(
                f"{row['test']:.3f}" + (f" ± {row['test_std']:.3f}" if row["test_std"] else "")
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| best | "
        + " | ".join(f"{s['best_test']:.3f} ({s['best']})" for s in summaries.values())
        + " |"
    )
    lines.append(
        "| best + EMAP | " + " | ".join(f"{s['best_emap']:.3f}" for s in summaries.values()) + " |"
    )
    metrics = sorted({s["metric"] for s in summaries.values()})
    sizes = {label: (s["num_examples"], s["test_size"]) for label, s in summaries.items()}
    return (
        "\n".join(lines)
        + f"\n\nTest {' / '.join(metrics)} of each model and of the best model's EMAP "
        + f"projection on the same examples: {_evaluation.emap_examples_note(sizes)}."
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    workdir = pathlib.Path(workdir)
    _config.check_seeds(config)
    check_config(config)
    writer = _training.open_run(config, workdir)
    summaries = {}
    for dataset in _config.plain(config.datasets):
        run = run_dataset(config, dataset, workdir, writer)
        summaries[run["label"]] = summarize(run)
    names = [r["name"] for r in row_models(config)]
    table = format_table(summaries, names)
    results = {"datasets": summaries, "table": table}
    train.write_json(workdir / "results.json", results)
    labels = list(summaries)
    _plots.emap_bars(
        labels,
        [summaries[k]["best_test"] for k in labels],
        [summaries[k]["best_emap"] for k in labels],
        workdir / "plots" / "emap.png",
        metric=" / ".join(sorted({s["metric"] for s in summaries.values()})),
        title="best model vs its EMAP projection",
    )
    header = ["model", *labels]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:] if line.startswith("|")]
    _plots.table_figure(
        header,
        [[c.strip() for c in r] for r in rows],
        workdir / "plots" / "table.png",
        title="EMAP table",
    )
    print(table)
    return results
