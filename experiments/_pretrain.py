"""Unimodal encoders learned jointly with the fusion, or pre-trained and then frozen or
fine-tuned (``config.model.encoders``).

``"joint"`` trains every parameter from scratch together. ``"frozen"`` and
``"finetune"`` first train each modality's branch alone on the task (an intermediate
fusion model's encoder under a linear head of its own; a late fusion model's
predictor) and copy it into the fusion model; the fusion model is then trained with
the branches frozen (an optimizer mask over their parameter paths) or fine-tuned
(at ``lr_scale`` times the learning rate).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import ml_collections
import optax
from flax import nnx

from experiments import _common
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
    # a setting the chosen mode ignores is a mistake, not a no-op
    if mode == "joint" and (steps is not None or scale is not None):
        raise ValueError(
            "model.encoders.pretrain_steps and lr_scale are used by mode 'frozen' or "
            "'finetune' only, not 'joint' (encoders learned with the fusion from scratch)"
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
        _common.check_count("model.encoders.pretrain_steps", steps, 1)
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
    """Checks ``config.model.encoders`` and, unless joint, that the branches' own fits
    (their optimizer and train settings at ``pretrain_steps``) can run."""
    if check_encoders(config.model) == "joint":
        return
    pre_config = pretrain_config(config)
    try:
        _common.check_training(pre_config)
    except ValueError as error:
        steps = pre_config.train.num_steps
        raise ValueError(f"pretraining the branches for {steps} steps: {error}") from error


def unimodal_models(
    model: nnx.Module, cfg: ml_collections.ConfigDict, task: _common.Task, seed: int
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
    task: _common.Task,
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
        loss_fn, fit_kwargs = _common.fit_arguments(pre_config, alone, start, seed=config.seed)
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
            "test": _common.test_metrics(result.model, alone),
        }
    return {"mode": cfg.encoders.mode, "pretrain_steps": steps, "unimodal": report}
