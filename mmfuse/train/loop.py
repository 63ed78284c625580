"""``fit``: one jitted train step with donated state, evaluation, early stopping, resume."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import pathlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmfuse._mesh import auto_mesh, with_auto_axes
from mmfuse.train._step import Batch, LossFn, TrainStep
from mmfuse.train.checkpoint import Checkpointer
from mmfuse.train.metrics import MetricWriter
from mmfuse.train.sampler import EpochSampler, is_count
from mmfuse.train.sharding import batch_sharding, put_batch, state_shardings

PathLike = str | os.PathLike
EvalFn = Callable[[nnx.Module, Batch], dict[str, jax.Array]]


class NonFiniteLossError(FloatingPointError):
    """The training loss, its gradient or the updated parameters became NaN or infinite;
    the checkpoints hold only earlier steps.

    ``step`` counts as ``metrics.jsonl`` and the checkpoints do: the ``step``-th update,
    found non-finite, was not applied, so the state of ``step - 1`` is good.
    """

    def __init__(self, step: int, last_checkpoint: int | None, directory: str | None):
        self.step = step
        self.last_checkpoint = last_checkpoint
        where = (
            f"the last good checkpoint is step {last_checkpoint} in {directory}"
            if last_checkpoint is not None
            else "no checkpoint was written before it"
        )
        super().__init__(
            f"training loss (or its gradient) became non-finite at step {step}; {where}"
        )


def _train_arrays(train_data: Any) -> dict[str, Any]:
    """``train_data`` checked: a flat dict of arrays ``[N, ...]`` (lists of numbers become
    NumPy arrays; arrays on a mesh with ``Explicit`` axes go to its ``Auto`` version)."""
    if not isinstance(train_data, Mapping) or not train_data:
        raise ValueError(
            f"train_data must be a non-empty dict {{key: [N, ...] array}}, got "
            f"{type(train_data).__name__}"
        )
    arrays = {}
    for key, value in train_data.items():
        what = f"train_data[{key!r}]"
        if isinstance(value, Mapping):
            raise ValueError(
                f"{what} must be an array [N, ...] (the dict is flat: one key per array), "
                f"got {type(value).__name__}"
            )
        if isinstance(value, (list, tuple)):
            try:
                value = np.asarray(value)
            except ValueError:
                raise ValueError(
                    f"{what} must be an array [N, ...], got a {type(value).__name__} of "
                    "differently shaped parts"
                ) from None
        if np.ndim(value) == 0:
            raise ValueError(f"{what} must be an array [N, ...], got shape {np.shape(value)}")
        arrays[key] = with_auto_axes(value, what)
    return arrays


def _judged(
    meta: dict[str, Any],
    scores: Mapping[str, float],
    step: int,
    monitor: str,
    mode: str,
    patience: int | None,
) -> dict[str, Any]:
    """``fit``'s early-stopping record after the evaluation of ``step``: its ``best_step``
    and ``best_metric`` move there if ``scores[monitor]`` is finite and better (by
    ``mode``) than the best so far; otherwise ``bad_evals`` counts one more, and
    ``done`` is set once it reaches ``patience``."""
    value, best = scores[monitor], meta["best_metric"]
    sign = 1.0 if mode == "min" else -1.0
    if math.isfinite(value) and (best is None or sign * value < sign * best):
        return {**meta, "best_metric": value, "best_step": step, "bad_evals": 0}
    bad_evals = meta["bad_evals"] + 1
    done = patience is not None and bad_evals >= patience
    return {**meta, "bad_evals": bad_evals, "done": done}


def _scalars(scores: Any) -> dict[str, float]:
    """``evaluate``'s ``{name: scalar}`` as floats, or a ValueError naming what is not."""
    if not isinstance(scores, Mapping):
        raise ValueError(
            f"evaluate must return a dict {{name: scalar}}, got {type(scores).__name__}"
        )
    for key, value in scores.items():
        if np.size(value) != 1:
            raise ValueError(
                f"evaluate must return a dict {{name: scalar}}; {key!r} has shape {np.shape(value)}"
            )
    return {key: float(np.asarray(value).reshape(())) for key, value in scores.items()}


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
      model: the model with the selected parameters (the best evaluation's when
        ``evaluate`` and ``monitor`` are given, else the last step's; also the last
        step's, with a warning, when the monitored metric was never finite).
      params: those parameters (``nnx.State``).
      step: the number of train steps taken.
      best_step: the step whose parameters were selected.
      best_metric: the monitored validation metric at ``best_step``; ``None`` without
        a monitor or when it was never finite.
      stopped_early: whether patience ran out before ``num_steps``.
      step_seconds: median wall-clock seconds of a train step, measured over this
        process's logging intervals after the first (which compiles), without the time
        spent evaluating and checkpointing. It is saved with each checkpoint, so a
        resumed run that measures nothing (e.g. one already finished) reports the
        value saved with its checkpoint; ``None`` if no interval was ever measured.
    """

    model: nnx.Module
    params: nnx.State
    step: int
    best_step: int
    best_metric: float | None
    stopped_early: bool
    step_seconds: float | None


def check_fit_settings(
    *,
    num_steps: int,
    batch_size: int,
    num_examples: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    patience: int | None = None,
    mode: str = "min",
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
    param_axis: str | None = None,
) -> None:
    """Raises ``ValueError`` naming the first of ``fit``'s settings that cannot work.

    ``fit`` calls it before it reads a checkpoint; call it first to refuse a bad run
    before anything (a workdir, a dataset) is prepared. The arguments are ``fit``'s,
    with ``num_examples`` the size of the training split if known.
    """
    if not is_count(num_steps):
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if not is_count(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_examples is not None and batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} is larger than the training split ({num_examples} examples)"
        )
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not is_count(log_every):
        raise ValueError(f"log_every must be an integer >= 1, got {log_every!r}")
    for name, value in (
        ("eval_every", eval_every),
        ("checkpoint_every", checkpoint_every),
        ("patience", patience),  # 0 would act as 1: a stop at the first evaluation
    ):
        if value is not None and not is_count(value):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if mesh is None and param_axis is not None:
        raise ValueError(f"param_axis={param_axis!r} needs a mesh to split the parameters over")
    if mesh is not None:
        for name, axis in (("data_axis", data_axis), ("param_axis", param_axis)):
            if axis is not None and axis not in mesh.axis_names:
                raise ValueError(f"{name} {axis!r} is not a mesh axis {mesh.axis_names}")
        if batch_size % mesh.shape[data_axis]:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by the {mesh.shape[data_axis]} "
                f"devices of mesh axis {data_axis!r}"
            )


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    train_data: Batch,
    *,
    num_steps: int,
    batch_size: int,
    seed: int = 0,
    evaluate: EvalFn | None = None,
    eval_data: Batch | None = None,
    eval_every: int | None = None,
    monitor: str | None = None,
    mode: str = "min",
    patience: int | None = None,
    workdir: PathLike | None = None,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    progress: bool = True,
    description: str = "train",
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
    param_axis: str | None = None,
) -> FitResult:
    """Trains ``model`` on in-memory arrays; resumes from ``workdir``'s newest checkpoint.

    The model is split into ``(graphdef, params, rest)``: ``nnx.Param`` leaves are
    trained; the other variables (e.g. BatchNorm statistics, the counters of an
    ``nnx.Rngs`` the model holds) keep what the loss's call of the model leaves in them,
    and are checkpointed with the parameters (those of the best evaluation are returned
    with its parameters). One ``jax.jit`` train step, with
    the train state donated, computes the loss, its gradient and the optimizer update.
    Batch ``s`` and the random key of step ``s`` are functions of ``(seed, s)`` only
    (``EpochSampler``; ``fold_in(key(seed), s)``), and the checkpoint holds the
    parameters, optimizer state, best parameters so far and early-stopping state. A
    rerun with the same arguments therefore continues from the newest checkpoint and
    finishes exactly as an uninterrupted run would; a finished run returns at once, and
    one resumed with a larger ``num_steps`` trains on to it (with the optimizer it is
    given: a schedule over the old ``num_steps`` would not match). It ends as a run
    started with the larger ``num_steps`` when the old one is a multiple of
    ``eval_every``; otherwise the old run's final evaluation is an extra one, which may
    select other parameters and counts toward patience. A run that patience stopped
    stays stopped, also one stopped at its last step. A checkpoint beyond
    ``num_steps``, or one whose best step another ``monitor`` or ``mode`` chose, is
    refused rather than resumed, as is one of another model or optimizer (whose
    arrays differ in shape).

    A step whose loss, gradient or updated parameters hold a NaN or an infinity leaves
    the parameters unchanged; the next
    logging, evaluation or checkpoint boundary raises ``NonFiniteLossError`` naming the
    step, without writing a checkpoint, so the newest checkpoint is the last good one.

    Args:
      model: an NNX module (parameters are taken from it, it is not modified).
      loss_fn: ``loss_fn(model, batch, key) -> loss`` or ``(loss, aux)``, a scalar to
        minimize on a batch ``{key: [B, ...]}`` (``key``: a fresh PRNG key for the step,
        for dropout or stochastic gates).
      optimizer: an optax transformation (schedules and clipping included).
      train_data: ``{key: [N, ...]}`` arrays sharing N.
      num_steps: total train steps.
      batch_size: B (each epoch drops its last ``N % B`` examples).
      seed: seeds the batch order and the step keys.
      evaluate: ``evaluate(model, eval_data) -> {name: scalar}``, jitted, run every
        ``eval_every`` steps and at the end.
      eval_data: the validation arrays passed to ``evaluate``.
      eval_every: steps between evaluations (default: ``num_steps``, once at the end).
      monitor: the ``evaluate`` key that selects the best parameters and drives early
        stopping; ``None`` keeps the last parameters.
      mode: ``"min"`` or ``"max"``: whether lower or higher ``monitor`` is better.
      patience: stop after this many evaluations without improvement (``None``: never).
      workdir: where ``checkpoints/`` and ``metrics.jsonl`` go; ``None`` writes nothing.
      checkpoint_every: steps between checkpoints (default: ``eval_every``); a
        checkpoint is also written at the end.
      log_every: steps between ``train/loss`` records (the mean over the interval).
      progress: show a progress bar when stderr is a terminal.
      description: the progress bar's label.
      mesh: a device mesh (``mmfuse.train.make_mesh``) to train on: each batch is
        split over its ``data_axis`` (data parallelism; B must be divisible by that
        axis's size) and the train state is replicated, or split over ``param_axis``
        when given. ``None``: the default device. The results equal a one-device run
        up to float summation order, and checkpoints restore onto any mesh or device
        count. A mesh with ``Explicit`` axes (``jax.make_mesh``'s default) is used as
        the same mesh with ``Auto`` axes.
      data_axis: the mesh axis that splits batches.
      param_axis: the mesh axis that splits parameters and optimizer state, if any.

    Returns:
      A ``FitResult``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax transformation with init and update, e.g. "
            f"optax.adam(1e-3) rather than optax.adam; got {optimizer!r}"
        )
    train_data = _train_arrays(train_data)
    # arrays placed on a jax.make_mesh (Explicit axes) go to its Auto version, as the mesh
    eval_data = jax.tree.map(lambda x: with_auto_axes(x, "eval_data"), eval_data)
    sizes = {key: np.shape(value)[0] for key, value in train_data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"train_data arrays must share their first dimension, got {sizes}")
    check_fit_settings(
        num_steps=num_steps,
        batch_size=batch_size,
        num_examples=next(iter(sizes.values()), None),
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        patience=patience,
        mode=mode,
        mesh=mesh,
        data_axis=data_axis,
        param_axis=param_axis,
    )
    if monitor is not None and evaluate is None:
        raise ValueError(f"monitor={monitor!r} needs an evaluate function")
    if evaluate is not None and eval_data is None:
        raise ValueError("evaluate needs eval_data")
    if patience is not None and monitor is None:
        raise ValueError(f"patience={patience} needs a monitor (None: never stop early)")
    integer = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    if not (integer and 0 <= seed < 2**32):  # numpy's sampler refuses negative seeds
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    eval_every = num_steps if eval_every is None else eval_every
    checkpoint_every = eval_every if checkpoint_every is None else checkpoint_every
    if mesh is not None:  # e.g. jax.make_mesh's Explicit axes: XLA places what fit leaves
        mesh = auto_mesh(mesh)

    sampler = EpochSampler(next(iter(sizes.values())), batch_size, seed)
    trainer = TrainStep(model, loss_fn, optimizer, seed)
    if monitor is not None:  # known from a trace, not after eval_every steps of training
        scores = jax.eval_shape(
            lambda p, r: evaluate(trainer.merge(p, r), eval_data), trainer.params, trainer.rest
        )
        if isinstance(scores, Mapping) and monitor not in scores:
            raise ValueError(
                f"monitor {monitor!r} is not among the metrics evaluate returns {sorted(scores)}"
            )

    abstract_state = jax.eval_shape(trainer.init_state)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract_state)
        jit_step = jax.jit(trainer, donate_argnums=0)
        new_state = trainer.init_state
        place_batch = dict
    else:
        shardings = state_shardings(abstract_state, mesh, param_axis=param_axis)
        batches = batch_sharding(mesh, data_axis)
        jit_step = jax.jit(
            trainer, in_shardings=(shardings, batches), out_shardings=shardings, donate_argnums=0
        )
        new_state = jax.jit(trainer.init_state, out_shardings=shardings)
        place_batch = functools.partial(put_batch, sharding=batches)
        if eval_data is not None:  # replicated: every device evaluates on all of it
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            if isinstance(eval_data, Mapping):  # e.g. a read-only mapping: not a pytree
                eval_data = dict(eval_data)
            eval_data = jax.device_put(eval_data, replicated)
    # Under jit so that the fresh scalar gets the state's sharding (a host-local array
    # cannot be checkpointed in a multi-process run).
    reset_loss = jax.jit(
        lambda state: {**state, "loss_sum": jnp.zeros((), jnp.float32)},
        donate_argnums=0,
        out_shardings=None if mesh is None else shardings,
    )
    jit_eval = (
        None
        if evaluate is None
        else jax.jit(lambda p, r, data: evaluate(trainer.merge(p, r), data))
    )

    checkpointer = None if workdir is None else Checkpointer(pathlib.Path(workdir) / "checkpoints")
    # "done": patience stopped the run (one that reached num_steps can be asked for more)
    # "monitor", "mode": what chose best_step, so that a resumed run compares like with like
    meta: dict[str, Any] = {
        "best_step": 0,
        "best_metric": None,
        "bad_evals": 0,
        "done": False,
        "monitor": monitor,
        "mode": mode,
    }
    state = None
    if checkpointer is not None and checkpointer.latest_step() is not None:
        target = jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract_state,
            shardings,
        )
        try:
            state, meta = checkpointer.restore(target)
        except ValueError as error:  # its arrays are not this model's and optimizer's
            checkpointer.close()
            raise ValueError(
                f"{error}. It holds a run of another model or optimizer: resume with "
                "those, or start in a new workdir"
            ) from error
        saved = (meta.get("monitor", monitor), meta.get("mode", mode))  # older: unrecorded
        if saved[0] is not None and saved != (monitor, mode):
            checkpointer.close()
            raise ValueError(
                f"{checkpointer.directory} holds a run whose best step was chosen by "
                f"monitor={saved[0]!r}, mode={saved[1]!r}, not monitor={monitor!r}, "
                f"mode={mode!r}; resume with those, or start in a new workdir"
            )
    if state is None:
        state = new_state()
    start = int(state["step"])
    if start > num_steps:  # its parameters have trained longer than asked
        checkpointer.close()
        raise ValueError(
            f"num_steps={num_steps}, but {checkpointer.directory} holds a run at step {start}; "
            "ask for at least that many steps, or start in a new workdir"
        )
    writer = (
        None
        if workdir is None
        else MetricWriter(
            pathlib.Path(workdir) / "metrics.jsonl", resume_step=start if start else None
        )
    )

    def check_finite() -> None:
        bad = int(state["nan_step"])
        if bad >= 0:
            last = None if checkpointer is None else checkpointer.latest_step()
            raise NonFiniteLossError(
                bad, last, None if checkpointer is None else checkpointer.directory
            )

    interval_seconds: list[float] = []
    bar = _progress_bar(num_steps, start, description, progress and not meta["done"])
    step = start
    last_log, last_time = start, time.perf_counter()
    try:
        while step < num_steps and not meta["done"]:
            state = jit_step(state, place_batch(sampler.batch(train_data, step)))
            step += 1
            bar.update(1)
            is_last = step == num_steps
            evaluating = jit_eval is not None and (step % eval_every == 0 or is_last)
            saving = checkpointer is not None and (step % checkpoint_every == 0 or is_last)
            if step % log_every == 0 or evaluating or saving or is_last:
                check_finite()
                mean_loss = float(state["loss_sum"]) / (step - last_log)
                now = time.perf_counter()
                if last_log > start:  # the first interval includes compilation
                    interval_seconds.append((now - last_time) / (step - last_log))
                last_log, last_time = step, now
                state = reset_loss(state)
                if writer is not None:
                    writer.write(step, **{"train/loss": mean_loss})
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
            if evaluating:
                scores = _scalars(jit_eval(state["params"], trainer.variables(state), eval_data))
                if writer is not None:
                    writer.write(step, **{f"eval/{k}": v for k, v in scores.items()})
                if monitor is not None:
                    meta = _judged(meta, scores, step, monitor, mode, patience)
                    if meta["best_step"] == step:  # a new best
                        state = trainer.keep_best(state)
                    # a run that patience stops is checkpointed at its last step
                    saving = saving or (meta["done"] and checkpointer is not None)
            if saving:
                if interval_seconds:
                    meta = {**meta, "step_seconds": statistics.median(interval_seconds)}
                checkpointer.save(step, state, meta)
            if evaluating or saving:  # step times leave out evaluation and checkpointing
                last_time = time.perf_counter()
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()

    stopped_early = bool(meta["done"]) and int(state["step"]) < num_steps
    selected = monitor is not None and meta["best_metric"] is not None
    if monitor is not None and not selected:
        # (e.g. the correlation of constant predictions) best_params still holds the
        # untrained initial values, which no evaluation chose: the last ones it is
        warnings.warn(
            f"fit: the monitored metric {monitor!r} was never finite; returning the "
            f"parameters of the last step ({int(state['step'])})",
            RuntimeWarning,
            stacklevel=2,
        )
    if not selected:
        chosen, best_step = state["params"], int(state["step"])
    else:
        chosen, best_step = state["best_params"], int(meta["best_step"])
    return FitResult(
        model=trainer.merge(chosen, trainer.variables(state, best=selected)),
        params=chosen,
        step=int(state["step"]),
        best_step=best_step,
        best_metric=meta["best_metric"],
        stopped_early=stopped_early,
        step_seconds=(
            statistics.median(interval_seconds) if interval_seconds else meta.get("step_seconds")
        ),
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, description: str, enabled: bool) -> Any:
    """A tqdm bar on an interactive terminal (process 0), else nothing."""
    if not (enabled and sys.stderr.isatty() and jax.process_index() == 0):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True)
