"""Unimodal encoders learned jointly with the fusion, or pre-trained and then frozen or
fine-tuned (``config.model.encoders``).

``"joint"`` trains every parameter from scratch together. ``"frozen"`` and
``"finetune"`` start the fusion model from pre-trained branches: each modality's
branch (an intermediate fusion model's encoder; a late fusion model's predictor) is
either trained alone on the task first (under a linear head of its own, for an
encoder), or read from another finished run (``init_from``: its workdir) by modality
name. The fusion model is then trained with the branches frozen (an optimizer mask
over their parameter paths) or fine-tuned (at ``lr_scale`` times the learning rate).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import _config, _evaluation, _tasks, _training
from mmfuse import train

ENCODER_MODES = ("joint", "frozen", "finetune")
# the model attribute holding the per-modality branches, by model kind
BRANCHES = {"intermediate": "encoders", "late": "predictors"}


class Unimodal(nnx.Module):
    """``head(branch(x))`` on a one-modality input tuple ``(x,)``: a branch trained alone."""

    def __init__(self, branch: nnx.Module, head: nnx.Module | None):
        self.branch = branch
        self.head = head

    def __call__(self, xs: tuple[jax.Array]) -> jax.Array:
        (x,) = xs
        out = self.branch(x)
        return out if self.head is None else self.head(out)


def check_encoders(cfg: ml_collections.ConfigDict) -> str:
    """Checks ``config.model.encoders`` against the model kind; returns the mode."""
    encoders = cfg.get("encoders")
    if encoders is None:
        return "joint"
    mode = encoders.mode
    if mode not in ENCODER_MODES:
        raise ValueError(
            f"model.encoders.mode: unknown {mode!r}; modes: {', '.join(ENCODER_MODES)}"
        )
    steps, scale = encoders.get("pretrain_steps"), encoders.get("lr_scale")
    source = encoders.get("init_from")
    # a setting the chosen mode ignores is a mistake, not a no-op
    if mode == "joint" and (steps is not None or scale is not None or source):
        raise ValueError(
            "model.encoders.pretrain_steps, lr_scale and init_from are used by mode "
            "'frozen' or 'finetune' only, not 'joint' (encoders learned with the fusion "
            "from scratch)"
        )
    if source and steps is not None:
        raise ValueError(
            "model.encoders.pretrain_steps: the branches come from model.encoders.init_from "
            f"({source}), nothing is pre-trained here"
        )
    if mode == "frozen" and scale is not None:
        raise ValueError("model.encoders.lr_scale is used by mode 'finetune' only, not 'frozen'")
    if mode == "joint":
        return mode
    if cfg.kind not in BRANCHES:
        raise ValueError(
            f"model.encoders.mode={mode!r} needs per-modality branches: model.kind "
            f"'intermediate' (encoders) or 'late' (predictors), not {cfg.kind!r}"
        )
    if mode == "frozen" and cfg.kind == "late" and cfg.get("late_combine", "mean") == "mean":
        raise ValueError(
            "model.encoders.mode='frozen' with model.kind='late' and late_combine='mean' "
            "leaves nothing to train; use late_combine='weighted' or mode='finetune'"
        )
    if steps is not None:
        _config.check_count("model.encoders.pretrain_steps", steps, 1)
    if scale is not None and not (isinstance(scale, int | float) and 0 < scale < float("inf")):
        raise ValueError(
            f"model.encoders.lr_scale must be finite and > 0 (mode 'frozen' freezes), got {scale!r}"
        )
    return mode


def pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config of the branches' own fits: the run's, for ``pretrain_steps`` steps."""
    pre_config = config.copy_and_resolve_references()
    steps = config.model.encoders.get("pretrain_steps") or config.train.num_steps
    pre_config.train.num_steps = steps
    return pre_config


def check_pretraining(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.model.encoders`` and, where branches are pre-trained here, that
    their own fits (their optimizer and train settings at ``pretrain_steps``) can run."""
    if check_encoders(config.model) == "joint" or config.model.encoders.get("init_from"):
        return
    pre_config = pretrain_config(config)
    try:
        _training.check_training(pre_config)
    except ValueError as error:
        steps = pre_config.train.num_steps
        raise ValueError(f"pretraining the branches for {steps} steps: {error}") from error


def _saved_path(path: tuple[Any, ...]) -> str:
    """A restored checkpoint leaf's parameter path (an ``nnx.Variable``'s ``value`` dropped)."""
    name = train.param_path(path)
    return name.removesuffix("/value")


def check_source_outside(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Refuses an ``init_from`` run inside ``workdir``: a fresh start would delete it."""
    source = cfg.get("encoders", {}).get("init_from")
    if not source:
        return
    source, workdir = pathlib.Path(source).resolve(), workdir.resolve()
    if source == workdir or workdir in source.parents:
        raise ValueError(
            f"model.encoders.init_from={str(source)!r} is (inside) this run's workdir; "
            "give another run's workdir"
        )


def load_branches(
    model: nnx.Module, cfg: ml_collections.ConfigDict, modalities: Sequence[str]
) -> None:
    """Copies each modality's branch from the finished run in ``cfg.encoders.init_from``
    into ``model`` (in place), matched by modality name (``source_record``: what was read).

    The source is a finished ``supervised`` run of the same ``model.kind`` (its
    ``results.json`` names its modalities); its selected parameters (the best
    validation step's) are read from its newest checkpoint. Every branch parameter
    must have the source's shape.
    """
    source = pathlib.Path(cfg.encoders.init_from)
    where = f"model.encoders.init_from={str(source)!r}"
    try:
        record = train.read_json(source / "config.json")
        results = train.read_json(source / "results.json")
    except FileNotFoundError as error:
        raise ValueError(
            f"{where}: not a finished run ({error.filename} is missing); give the workdir "
            "of a finished supervised run"
        ) from None
    if record.get("trainer") != "supervised" or "modalities" not in results:
        raise ValueError(
            f"{where}: not a finished supervised run of this version (trainer "
            f"{record.get('trainer')!r}; its results.json must list its modalities)"
        )
    kind = record.get("model", {}).get("kind")
    if kind != cfg.kind:
        raise ValueError(f"{where}: its model.kind is {kind!r}, this run's {cfg.kind!r}")
    saved_modalities = list(results["modalities"])
    missing = [name for name in modalities if name not in saved_modalities]
    if missing:
        raise ValueError(
            f"{where}: modality {', '.join(missing)} is not among its modalities "
            f"({', '.join(saved_modalities)})"
        )
    if not (source / "checkpoints").is_dir():  # a Checkpointer would create the folder
        raise ValueError(f"{where}: it has no checkpoints/ folder to read its model from")
    try:
        with train.Checkpointer(source / "checkpoints") as checkpointer:
            state, _ = checkpointer.restore_saved()
    except FileNotFoundError as error:
        raise ValueError(f"{where}: {error}") from None
    saved = {
        _saved_path(path): np.asarray(value)
        for path, value in jax.tree_util.tree_flatten_with_path(state["best_params"])[0]
    }
    attribute = BRANCHES[cfg.kind]
    for name, branch in zip(modalities, getattr(model, attribute), strict=True):
        prefix = f"{attribute}/{saved_modalities.index(name)}"
        params = nnx.state(branch, nnx.Param)
        here = {
            f"{prefix}/{train.param_path(path)}": np.shape(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        there = {key: value.shape for key, value in saved.items() if key.startswith(f"{prefix}/")}
        if here != there:  # same paths and shapes, or the layers would not line up
            differ = sorted(
                f"{key} {here.get(key, 'absent')} here, {there.get(key, 'absent')} there"
                for key in set(here) | set(there)
                if here.get(key) != there.get(key)
            )
            raise ValueError(
                f"{where}: modality {name!r}: the branches differ in architecture: "
                + "; ".join(differ)
            )

        def read(path: tuple[Any, ...], leaf: Any, prefix=prefix) -> np.ndarray:
            value = saved[f"{prefix}/{train.param_path(path)}"]
            return value.astype(np.asarray(leaf).dtype)

        nnx.update(branch, jax.tree_util.tree_map_with_path(read, params))


def source_record(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """``results.json``'s ``encoders`` for branches read from ``cfg.encoders.init_from``."""
    source = pathlib.Path(cfg.encoders.init_from)
    results = train.read_json(source / "results.json")
    return {
        "mode": cfg.encoders.mode,
        "init_from": str(source),
        "source": {"dataset": results.get("dataset"), "modalities": results["modalities"]},
    }


def unimodal_models(
    model: nnx.Module, cfg: ml_collections.ConfigDict, task: _tasks.Task, seed: int
) -> list[Unimodal]:
    """Each modality's branch of ``model`` (a copy, same initial weights) under its own
    linear head (an encoder) or alone (a late fusion predictor, already a predictor)."""
    branches = getattr(model, BRANCHES[cfg.kind])
    out = []
    for m, branch in enumerate(branches):
        head = None
        if cfg.kind == "intermediate":
            rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(seed), m))
            head = nnx.Linear(cfg.encoder_dim, task.num_outputs, rngs=rngs)
        out.append(Unimodal(nnx.clone(branch), head))
    return out


def branch_optimizer(
    optimizer: optax.GradientTransformation, model: nnx.Module, cfg: ml_collections.ConfigDict
) -> optax.GradientTransformation:
    """The fusion model's optimizer: pre-trained branches frozen or at ``lr_scale``."""
    mode = check_encoders(cfg)
    if mode == "joint":
        return optimizer
    factor = 0.0 if mode == "frozen" else cfg.encoders.get("lr_scale") or 1.0
    if factor == 1.0:
        return optimizer
    attribute = BRANCHES[cfg.kind]
    branches = getattr(model, attribute)
    scales = {f"{attribute}/{m}": factor for m in range(len(branches))}
    return train.scale_by_path(optimizer, scales, nnx.state(model, nnx.Param))


def pretrain(
    model: nnx.Module,
    config: ml_collections.ConfigDict,
    task: _tasks.Task,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    """Trains each branch of ``model`` alone and copies it into ``model`` (in place).

    Each modality's fit has its own folder ``workdir/<modality>`` (checkpoints, metrics),
    so a rerun resumes it or finds it finished. Returns each modality's unimodal
    validation (best) and test metrics: the unimodal baselines of the fusion model.
    """
    cfg = config.model
    pre_config = pretrain_config(config)
    steps = pre_config.train.num_steps
    branches = getattr(model, BRANCHES[cfg.kind])
    unimodal = unimodal_models(model, cfg, task, config.seed)
    report = {}
    for m, (name, start) in enumerate(zip(task.modalities, unimodal, strict=True)):
        alone = dataclasses.replace(task, modalities=(name,))
        loss_fn, fit_kwargs = _training.fit_arguments(pre_config, alone, start, seed=config.seed)
        result = train.fit(
            start,
            loss_fn,
            train_data=task.splits["train"],
            workdir=workdir / name,
            description=f"pretrain {name}",
            **fit_kwargs,
        )
        nnx.update(branches[m], nnx.state(result.model.branch))
        report[name] = {
            "steps": result.step,
            "best_step": result.best_step,
            "validation": {"best": result.best_metric},
            "test": _evaluation.test_metrics(result.model, alone),
        }
    return {"mode": cfg.encoders.mode, "pretrain_steps": steps, "unimodal": report}
