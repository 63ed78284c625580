"""Multimodal residual optimization: interactions only where the unimodal branches fall short.

For every dataset of the config, per seed, a ``models.ResidualFusion`` (an MLP branch
per modality, per pair, and for M = 3 one for all three) is trained with
``models.residual_loss``: the unimodal sum fits the label, each higher order only what
the lower orders leave over, optionally with an L2 penalty on the interaction outputs.
On the test split it reports the accuracy (or MSE), ``interaction_share`` (the share of
the output variance carried by the interaction branches) and, for comparison, the
verdict of EMAP on the same model: the metric of the model and of its additive
projection. Both should agree: a share near 0 where EMAP loses nothing, a large share
where EMAP collapses.

Each (dataset, seed) run lives in ``runs/<dataset>/seed<k>/`` with its checkpoints and
a ``run.json`` once finished, so a rerun resumes where it stopped.

References:
  Wörtwein, Sheeber, Allen, Cohn and Morency, "Beyond Additive Fusion: Learning
  Non-Additive Multimodal Interactions", Findings of EMNLP 2022.
"""

from __future__ import annotations

import functools
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from experiments import _config, _evaluation, _models, _plots, _tasks, _training
from mmfuse import models, train

DATASET_KEYS = ("name", "modalities", "label")


def objective(task: _tasks.Task, penalty: float):
    """``(loss_fn, evaluate)`` for ``fit``: the MRO loss, and metrics of the summed output."""
    modalities = task.modalities
    regression = task.num_classes is None

    def base_loss(outputs, labels):
        if regression:
            return jnp.mean(jnp.square(outputs[..., 0] - labels))
        return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()

    def loss_fn(model, batch, key):
        del key  # deterministic model
        by_order = model.branch_outputs(tuple(batch[m] for m in modalities))
        return models.residual_loss(by_order, batch["label"], base_loss, penalty=penalty)

    def evaluate(model, batch):
        xs = tuple(batch[m] for m in modalities)
        by_order = model.branch_outputs(xs)
        outputs = model(xs)  # [B, C], the sum of all branches
        scores = {
            "loss": base_loss(outputs, batch["label"]),
            "interaction_share": models.interaction_share(by_order),
        }
        if not regression:
            scores["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == batch["label"])
        return scores

    return loss_fn, evaluate


def build_model(config, task: _tasks.Task, seed: int) -> models.ResidualFusion:
    shapes = dict(zip(task.modalities, task.shapes(), strict=True))
    sequences = {m: tuple(s) for m, s in shapes.items() if len(s) != 1}
    if sequences:
        # ResidualFusion would run per time step, giving [B, T, C] against [B] labels
        raise ValueError(
            f"mro: the residual model takes one vector per example, but {task.name}'s "
            f"modalities {sequences} are sequences [T, d]; use datasets of vector modalities"
        )
    return models.ResidualFusion(
        tuple(s[-1] for s in shapes.values()),
        task.num_outputs,
        hidden_dims=tuple(config.model.hidden_dims),
        max_order=config.model.get("max_order"),
        compute_dtype=config.model.get("compute_dtype"),
        rngs=nnx.Rngs(seed),
    )


def load_dataset(
    config, dataset: dict[str, Any], splits: Sequence[str] = _tasks.SPLITS
) -> _tasks.Task:
    """The task of one ``config.datasets`` entry (``name``, optionally ``modalities``)."""
    return _tasks.load_task(
        dataset["name"],
        splits=splits,
        data_dir=config.data_dir,
        modalities=tuple(dataset.get("modalities", ())),
    )


def check_config(config) -> list[str]:
    """Checks the datasets (known keys, a label each), the optimizer, the train settings
    and the model on every dataset (built from shapes alone) before the workdir is
    touched or anything is trained; the datasets' labels."""
    _training.check_training(config)
    _config.check_count("emap_max_examples", config.emap_max_examples, 2)
    _config.check_number("penalty", config.penalty, 0)
    datasets = _config.plain(config.datasets)
    labels = _config.check_entries("config.datasets", datasets, DATASET_KEYS, label="label")
    for dataset, label in zip(datasets, labels, strict=True):
        _tasks.check_splits(dataset["name"])
        task = load_dataset(config, dataset, splits=(_tasks.PROBE_SPLIT,))
        build = functools.partial(build_model, config, task, 0)
        _models.check_model(build, f"the model on {label}")
    return labels


def train_run(config, task: _tasks.Task, seed: int, run_dir: pathlib.Path) -> dict[str, Any]:
    """Trains (or resumes) one residual model; its test record, also written to run.json."""
    model = build_model(config, task, seed)
    objective_fns = objective(task, config.penalty)
    loss_fn, fit_kwargs = _training.fit_arguments(
        config, task, model, seed=seed, objective=objective_fns
    )
    result = train.fit(
        model,
        loss_fn,
        train_data=task.splits["train"],
        workdir=run_dir,
        description=f"{task.name} mro seed{seed}",
        **fit_kwargs,
    )
    evaluate = objective_fns[1]
    test = jax.jit(evaluate)(result.model, task.splits["test"])
    emap = _evaluation.emap_scores(result.model, task, max_examples=config.emap_max_examples)
    record = {
        "dataset": task.name,
        "seed": seed,
        "metric": task.metric,
        "test": {k: float(v) for k, v in test.items() if k != "interaction_share"},
        "interaction_share": float(test["interaction_share"]),
        "emap": emap,
        "params": _models.count_params(result.model),
    }
    train.write_json(run_dir / "run.json", record)
    return record


def summarize(records: list[dict[str, Any]], test_size: int) -> dict[str, Any]:
    """Means (and standard deviations) over seeds of one dataset's runs; the test metric
    is on the examples EMAP is computed on (``num_examples`` of the ``test_size``)."""

    def stats(values):
        values = list(values)
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    share, share_std = stats(r["interaction_share"] for r in records)
    original, _ = stats(r["emap"]["original"] for r in records)
    projected, _ = stats(r["emap"]["projected"] for r in records)
    return {
        "metric": records[0]["metric"],
        "interaction_share": share,
        "interaction_share_std": share_std,
        "test": original,
        "emap": projected,
        "seeds": [r["seed"] for r in records],
        "num_examples": min(r["emap"]["num_examples"] for r in records),
        "test_size": test_size,
    }


def format_table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| dataset | interaction share | test metric | EMAP of the model | EMAP drop |",
        "|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        share = f"{s['interaction_share']:.3f}"
        if s["interaction_share_std"]:
            share += f" ± {s['interaction_share_std']:.3f}"
        drop = s["test"] - s["emap"] if s["metric"] != "mse" else s["emap"] - s["test"]
        lines.append(
            f"| {name} | {share} | {s['test']:.3f} ({s['metric']}) | {s['emap']:.3f} | "
            f"{drop:+.3f} |"
        )
    sizes = {name: (s["num_examples"], s["test_size"]) for name, s in summaries.items()}
    note = _evaluation.emap_examples_note(sizes)
    return "\n".join(lines) + f"\n\nTest metric and EMAP on the same examples: {note}."


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    workdir = pathlib.Path(workdir)
    _config.check_seeds(config)
    labels = check_config(config)
    writer = _training.open_run(config, workdir)
    summaries = {}
    for dataset, label in zip(_config.plain(config.datasets), labels, strict=True):
        task = load_dataset(config, dataset)
        records = []
        for seed in config.seeds:
            run_dir = workdir / "runs" / label.replace("/", "_").replace(" ", "_") / f"seed{seed}"
            if (run_dir / "run.json").exists():
                records.append(train.read_json(run_dir / "run.json"))
                continue
            record = train_run(config, task, seed, run_dir)
            writer.write(0, dataset=label, seed=seed, interaction_share=record["interaction_share"])
            records.append(record)
        summaries[label] = summarize(records, int(task.splits["test"]["label"].shape[0]))
    table = format_table(summaries)
    results = {"datasets": summaries, "table": table, "penalty": config.penalty}
    train.write_json(workdir / "results.json", results)
    labels = list(summaries)
    _plots.grouped_bars(
        labels,
        {"interaction share": [summaries[k]["interaction_share"] for k in labels]},
        workdir / "plots" / "interaction_share.png",
        errors={"interaction share": [summaries[k]["interaction_share_std"] for k in labels]},
        ylabel="share of output variance",
        title="MRO: output variance carried by the interaction branches",
    )
    _plots.emap_bars(
        labels,
        [summaries[k]["test"] for k in labels],
        [summaries[k]["emap"] for k in labels],
        workdir / "plots" / "emap.png",
        metric=" / ".join(sorted({s["metric"] for s in summaries.values()})),
        title="MRO model vs its EMAP projection",
    )
    print(table)
    return results
