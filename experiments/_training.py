"""Optimizers, losses and ``mmfuse.train.fit``'s arguments from the ``optim`` and ``train``
sections of a config."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from experiments import _models, _tasks
from mmfuse import fusion, train

SCHEDULES = ("constant", "cosine", "warmup_cosine")


OPTIMIZERS = ("adam", "adamw", "sgd")


def build_optimizer(
    name: str,
    learning_rate: float,
    num_steps: int,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer with a learning-rate schedule and optional gradient clipping."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule: unknown {schedule!r}; schedules: {', '.join(SCHEDULES)}")
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown {name!r}; optimizers: {', '.join(OPTIMIZERS)}")
    if num_steps < 1:  # the schedules' length
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    # a negative rate or clipping norm would train by gradient ascent
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"optim.learning_rate must be finite and > 0, got {learning_rate!r}")
    for key, value in (
        ("clip_norm", clip_norm or 0.0),  # 0 or None: no clipping
        ("weight_decay", weight_decay),
        ("warmup_steps", warmup_steps),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"optim.{key} must be finite and >= 0, got {value!r}")
    # a setting the chosen optimizer or schedule would ignore is a mistake, not a no-op
    if weight_decay and name != "adamw":
        raise ValueError(
            f"optim.weight_decay={weight_decay} is used by optim.name='adamw' only, not {name!r}"
        )
    if warmup_steps and schedule != "warmup_cosine":
        raise ValueError(
            f"optim.warmup_steps={warmup_steps} is used by optim.schedule='warmup_cosine' "
            f"only, not {schedule!r}"
        )
    if schedule == "warmup_cosine" and warmup_steps >= num_steps:  # no steps left to decay
        raise ValueError(
            f"optim.warmup_steps={warmup_steps} must be smaller than the {num_steps} steps "
            "the schedule spans"
        )
    if schedule == "constant":
        lr: Any = learning_rate
    elif schedule == "cosine":
        lr = optax.cosine_decay_schedule(learning_rate, num_steps)
    else:
        lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, num_steps)
    if name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        opt = optax.adamw(lr, weight_decay=weight_decay)
    else:
        opt = optax.sgd(lr, momentum=0.9)
    return opt if not clip_norm else optax.chain(optax.clip_by_global_norm(clip_norm), opt)


def optimizer_from_config(
    cfg: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    return build_optimizer(
        cfg.name,
        cfg.learning_rate,
        num_steps,
        schedule=cfg.schedule,
        warmup_steps=cfg.get("warmup_steps", 0),
        weight_decay=cfg.get("weight_decay", 0.0),
        clip_norm=cfg.get("clip_norm"),
    )


def make_objective(task: _tasks.Task, stochastic: bool = False):
    """``(loss_fn, evaluate)`` for ``mmfuse.train.fit`` on ``task``.

    Classification: softmax cross-entropy; evaluation reports ``loss`` and ``accuracy``.
    Regression: mean squared error on the single output; ``loss``, ``mse`` and ``mae``.
    A stochastic model samples with the step's key in training; hard gates with the
    REINFORCE estimator add ``fusion.reinforce_surrogate`` to the loss, which
    is the only way their gate learns.
    """
    modalities = task.modalities

    def outputs(model, batch, key=None):
        xs = tuple(batch[m] for m in modalities)
        return model(xs, key=key) if (stochastic and key is not None) else model(xs)

    def per_example_loss(out, labels):  # [B]
        if task.num_classes is None:
            return jnp.square(out[..., 0] - labels)
        return optax.softmax_cross_entropy_with_integer_labels(out, labels)

    def loss_of(out, labels):
        return per_example_loss(out, labels).mean()

    def loss_fn(model, batch, key):
        if not (stochastic and _reinforce_gate(model) is not None):
            return loss_of(outputs(model, batch, key), batch["label"])
        # outputs with sampled gate choices, and the choices' log-probabilities [B, ...]
        out, aux = model(tuple(batch[m] for m in modalities), key=key, return_aux=True)
        losses = per_example_loss(out, batch["label"])  # [B]
        log_prob = jnp.reshape(aux.log_prob, (losses.shape[0], -1)).sum(-1)  # [B]: every choice
        surrogate = fusion.reinforce_surrogate(log_prob, losses)
        # the surrogate adds its gradient only: the loss reported stays the task's
        return losses.mean() + surrogate - jax.lax.stop_gradient(surrogate)

    def evaluate(model, batch):
        out = outputs(model, batch)
        labels = batch["label"]
        scores = {"loss": loss_of(out, labels)}
        if task.num_classes is None:
            scores["mse"] = scores["loss"]
            scores["mae"] = jnp.mean(jnp.abs(out[..., 0] - labels))
        else:
            scores["accuracy"] = jnp.mean(jnp.argmax(out, axis=-1) == labels)
        return scores

    return loss_fn, evaluate


def _reinforce_gate(model: nnx.Module) -> nnx.Module | None:
    """The model's fusion operator if it is a hard gate trained by REINFORCE."""
    op = getattr(model, "fusion", model)
    return op if getattr(op, "estimator", None) == "reinforce" else None


def monitor_for(task: _tasks.Task) -> tuple[str, str]:
    """The validation metric that selects the best step, and whether higher is better."""
    return ("loss", "min") if task.num_classes is None else ("accuracy", "max")


def fit_arguments(
    config: ml_collections.ConfigDict,
    task: _tasks.Task,
    model: nnx.Module,
    *,
    seed: int,
    objective: tuple[Any, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(loss_fn, fit_kwargs)`` of ``mmfuse.train.fit`` for ``model`` on ``task``:
    ``train.fit(model, loss_fn, train_data=..., workdir=..., **fit_kwargs)``.

    Reads the config's ``optim`` section and its ``fit_settings``; ``fit_kwargs`` holds
    every argument but the training data and the workdir, the optimizer included, all
    checked against ``task``'s training split. ``objective`` replaces
    ``make_objective``'s ``(loss_fn, evaluate)``.
    """
    optimizer = optimizer_from_config(config.optim, config.train.num_steps)
    num_examples = len(next(iter(task.splits["train"].values())))
    loss_fn, evaluate = objective or make_objective(task, _models.is_stochastic(model))
    monitor, mode = monitor_for(task)
    fit_kwargs = dict(
        fit_settings(config, num_examples=num_examples),
        optimizer=optimizer,
        seed=seed,
        evaluate=evaluate,
        eval_data=task.splits["validation"],
        monitor=monitor,
        mode=mode,
    )
    return loss_fn, fit_kwargs


def fit_settings(
    config: ml_collections.ConfigDict, num_examples: int | None = None
) -> dict[str, Any]:
    """``mmfuse.train.fit``'s step counts, batch size and device mesh, checked.

    Reads the config's ``train`` section (num_steps, batch_size, eval_every,
    checkpoint_every, log_every, patience) and, if present, ``mesh`` (``shape``,
    ``axes``, ``param_axis``: train on a device mesh, batches split over the first axis
    other than ``param_axis``; an empty shape trains on the default device).
    ``num_examples``: the training split's size, if known.
    """
    settings = dict(
        num_steps=config.train.num_steps,
        batch_size=config.train.batch_size,
        eval_every=config.train.eval_every,
        checkpoint_every=config.train.checkpoint_every,
        log_every=config.train.log_every,
        patience=config.train.get("patience"),
    )
    mesh = config.get("mesh")
    if mesh is not None and not tuple(mesh.shape):  # one device: the mesh settings are unused
        for key, unused in (
            ("axes", tuple(mesh.axes) != ("data",)),
            ("param_axis", mesh.get("param_axis") is not None),
        ):
            if unused:
                raise ValueError(
                    f"config.mesh.{key} is set but config.mesh.shape is empty (one device); "
                    "give the mesh a shape, e.g. --config.mesh.shape=(2,4)"
                )
    if mesh is not None and tuple(mesh.shape):
        axes, param_axis = tuple(mesh.axes), mesh.get("param_axis")
        # batches split over the first axis that does not split the parameters (on a
        # one-axis mesh with param_axis set, that axis splits both)
        data_axes = [axis for axis in axes if axis != param_axis] or axes[:1]
        settings.update(
            mesh=train.make_mesh(tuple(mesh.shape), axes),
            data_axis=data_axes[0],
            param_axis=param_axis,
        )
    train.check_fit_settings(**settings, num_examples=num_examples)
    return settings


def check_training(config: ml_collections.ConfigDict) -> None:
    """Refuses a config whose optimizer or ``fit`` settings cannot work (no data needed)."""
    optimizer_from_config(config.optim, config.train.num_steps)
    fit_settings(config)


def open_run(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, *, ignore: tuple[str, ...] = ()
) -> train.MetricWriter:
    """Readies ``workdir`` for a run of many sub-runs; returns its ``metrics.jsonl`` writer.

    The workdir resumes a run of the same config or is refused (``train.prepare_workdir``;
    ``resume`` and the keys in ``ignore`` may differ). The file gets one line per
    finished sub-run; a resumed run keeps the lines already written.
    """
    resuming = train.prepare_workdir(
        workdir, config.to_dict(), resume=config.resume, ignore=("resume", *ignore)
    )
    return train.MetricWriter(
        workdir / "metrics.jsonl", resume_step=sys.maxsize if resuming else None
    )
