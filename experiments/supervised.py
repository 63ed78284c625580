"""Trains one fusion model on one dataset; reports test metrics and the model's EMAP.

``train_and_evaluate(config, workdir)`` writes ``config.json``, ``metrics.jsonl``,
``checkpoints/``, ``results.json`` and ``plots/{learning_curves,emap}.png``; with
pre-trained encoders (``config.model.encoders.mode``: ``frozen`` or ``finetune``) also
``pretrain/<modality>/``, each branch's own fit, whose unimodal metrics go to
``results.json``'s ``encoders`` (unless ``init_from`` reads the branches from another
run). Rerunning it on the same workdir resumes from the
newest checkpoint and ends with the same ``results.json`` as an uninterrupted run
(timings go to ``metrics.jsonl`` only).
"""

from __future__ import annotations

import pathlib

import ml_collections

from experiments import _config, _evaluation, _models, _plots, _pretrain, _tasks, _training
from mmfuse import data, train


def run_config(config: ml_collections.ConfigDict):
    """The task, model and ``fit`` keyword arguments a config describes."""
    _tasks.check_splits(config.data.name)
    if config.emap.enabled:  # EMAP runs after training: its settings are checked first
        _config.check_count("emap.max_examples", config.emap.max_examples, 2)
        _config.check_count("emap.num_samples", config.emap.num_samples, 1)
    elif config.emap.num_samples is not None:  # a setting the run would ignore
        raise ValueError(
            f"config.emap.num_samples={config.emap.num_samples} is unused: "
            "config.emap.enabled is False"
        )
    kind, combine = config.model.kind, config.model.get("late_combine", "mean")
    if kind != "late" and combine != "mean":  # a setting the run would ignore
        raise ValueError(
            f"config.model.late_combine={combine!r} is unused: only model.kind='late' "
            f"combines per-modality predictions, not {kind!r}"
        )
    _pretrain.check_pretraining(config)
    task = _tasks.task_from_config(config.data, _tasks.SPLITS)
    if config.emap.enabled and len(task.modalities) < 2:
        raise ValueError(
            f"config.emap.enabled: EMAP measures interactions between modalities, but the "
            f"run has one ({task.modalities[0]}); set --config.emap.enabled=False"
        )
    model = _models.model_from_config(config.model, task, config.seed)
    loss_fn, fit_kwargs = _training.fit_arguments(config, task, model, seed=config.seed)
    if config.model.encoders.get("init_from"):  # branches pre-trained in another run
        _pretrain.load_branches(model, config.model, task.modalities)
    # pre-trained branches frozen or fine-tuned at their own rate (config.model.encoders)
    fit_kwargs["optimizer"] = _pretrain.branch_optimizer(
        fit_kwargs["optimizer"], model, config.model
    )
    return task, model, loss_fn, fit_kwargs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config.model`` on ``config.data``; returns (and writes) the results."""
    workdir = pathlib.Path(workdir)
    # the config is checked (task, model, optimizer built) before the workdir is touched,
    # so that a bad config run with resume=False leaves the previous run in place
    _config.check_seeds(config)
    _pretrain.check_source_outside(config.model, workdir)
    task, model, loss_fn, fit_kwargs = run_config(config)
    encoders = None
    if config.model.encoders.get("init_from"):  # read by run_config
        encoders = _pretrain.source_record(config.model)
    train.prepare_workdir(workdir, config.to_dict(), resume=config.resume, ignore=("resume",))
    if encoders is None and config.model.encoders.mode != "joint":  # here, first (checked)
        encoders = _pretrain.pretrain(model, config, task, workdir / "pretrain")
    result = train.fit(
        model, loss_fn, train_data=task.splits["train"], workdir=workdir, **fit_kwargs
    )
    metrics_path = workdir / "metrics.jsonl"
    if result.step_seconds is not None and not any(
        r["step"] == result.step and "train/step_seconds" in r
        for r in train.read_metrics(metrics_path)
    ):  # once, also when a run killed after its last checkpoint is resumed
        train.MetricWriter(metrics_path, resume_step=result.step).write(
            result.step, **{"train/step_seconds": result.step_seconds}
        )
    results = {
        "dataset": task.name,
        "modalities": list(task.modalities),
        "data_options": {**data.options(task.name), **_tasks.dataset_options(config.data)},
        "model": _config.plain(config.model),
        "params": _models.count_params(result.model),
        "steps": result.step,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "validation": {"best": result.best_metric},
        "test": _evaluation.test_metrics(result.model, task),
    }
    if encoders is not None:
        results["encoders"] = encoders
    if config.emap.enabled:
        results["emap"] = _evaluation.emap_scores(
            result.model,
            task,
            max_examples=config.emap.max_examples,
            num_samples=config.emap.num_samples,
            seed=config.seed,
        )
    train.write_json(workdir / "results.json", results)
    _plots.learning_curves(
        train.read_metrics(metrics_path),
        workdir / "plots" / "learning_curves.png",
        title=f"{config.model.kind}/{config.model.fusion} on {task.name}",
    )
    if "emap" in results:
        emap = results["emap"]
        _plots.emap_bars(
            [task.name],
            [emap["original"]],
            [emap["projected"]],
            workdir / "plots" / "emap.png",
            metric=emap["metric"],
            title=f"{config.model.kind}/{config.model.fusion}: model vs its EMAP projection",
        )
    return results
