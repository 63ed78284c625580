"""What the trainers share: config sections unpacked into data, models, optimizers, losses.

The library never reads a config; these functions are where the experiments turn config
values into keyword arguments of ``mmfuse`` calls.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from mmfuse import data, fusion, interactions, models, train

MODEL_KINDS = ("intermediate", "early", "late", "raw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
# datasets whose views come in very different units: z-scored unless a config says otherwise
STANDARDIZED_BY_DEFAULT = ("uci_mfeat",)
# emap_scores: exact EMAP up to this many head evaluations (N^M), Monte-Carlo beyond
EXACT_EMAP_PAIRS = 10**9
EMAP_SAMPLES = 512  # sampled partners per example and modality in Monte-Carlo mode
# one training example: enough to learn a dataset's modalities, shapes and classes
PROBE_SPLIT = "train[:1]"


def plain(value: Any) -> Any:
    """A ConfigDict (or any nested value) as plain dicts, lists and scalars."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Task:
    """A dataset's splits in memory and what is predicted.

    Attributes:
      name: the dataset's catalogue name.
      modalities: the modality keys, in order.
      splits: ``{split: {modality: [N, ...], ..., "label": [N]}}``.
      num_classes: the number of classes, or ``None`` for a regression target.
    """

    name: str
    modalities: tuple[str, ...]
    splits: dict[str, dict[str, np.ndarray]]
    num_classes: int | None

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes is None else self.num_classes

    @property
    def metric(self) -> str:
        """The headline metric: accuracy for classes, MSE for a regression target."""
        return "mse" if self.num_classes is None else "accuracy"

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        return tuple(self.splits[split][m] for m in self.modalities)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-example shapes ``(..., d_m)`` of the modalities."""
        first = next(iter(self.splits.values()))
        return tuple(first[m].shape[1:] for m in self.modalities)


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


def load_task(
    name: str,
    *,
    splits: Sequence[str] = ("train", "validation", "test"),
    options: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    modalities: Sequence[str] | None = None,
) -> Task:
    """Loads ``splits`` of dataset ``name`` (built on first use) into memory.

    ``modalities`` keeps a subset of the stored modalities (e.g. two views of
    ``uci_mfeat``), in the order given.
    """
    options = dict(options or {})
    repeated = sorted({m for m in modalities or () if list(modalities).count(m) > 1})
    if repeated:
        raise ValueError(
            f"{name}: modalities {tuple(modalities)} list {', '.join(repeated)} more than once"
        )

    def load_splits() -> dict[str, dict[str, np.ndarray]]:
        return {
            s: data.load(name, s, data_dir=data_dir or None, **options)
            for s in dict.fromkeys(splits)
        }

    # In a multi-process run process 0 builds a missing dataset (the data folder is
    # usually shared) while the others wait, then they read it.
    first = jax.process_index() == 0
    loaded = load_splits() if first else None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"mmfuse: {name} built")
    if not first:
        loaded = load_splits()
    stored = tuple(k for k in next(iter(loaded.values())) if k != "label")
    if modalities:
        missing = [m for m in modalities if m not in stored]
        if missing:
            raise ValueError(
                f"{name}: no modality {', '.join(missing)}; its modalities: {', '.join(stored)}"
            )
        keep = tuple(modalities)
    else:
        keep = stored
    splits_out = {
        s: {**{m: arrays[m] for m in keep}, "label": arrays["label"]}
        for s, arrays in loaded.items()
    }
    # The declared count, not max(label) + 1: a split or a small file may lack the top class.
    return Task(name, keep, splits_out, data.num_classes(name, **options))


def standardized(task: Task, reference: str = "train") -> Task:
    """``task`` with each modality z-scored per feature by the ``reference`` split's statistics.

    Real views come in wildly different units (``uci_mfeat``'s morphological features
    reach 10^4, its Fourier coefficients stay below 1). Statistics are computed in
    float64; a feature constant on the reference split is only centred (it is 0 there),
    since its float32 standard deviation is rounding error, not a scale.
    In sequences ``[N, T, d]`` the all-zero steps are padding: they are left out of the
    statistics and stay zero, so that the encoders still see them as padding.
    """

    def steps(x: np.ndarray) -> np.ndarray:  # [N, ...]: which steps are real
        return np.any(x != 0, axis=-1) if x.ndim > 2 else np.ones(x.shape[:-1], bool)

    splits = {}
    ref = task.splits[reference]
    stats = {}
    for m in task.modalities:
        real = ref[m][steps(ref[m])].astype(np.float64)  # [steps, d_m]
        constant = real.min(axis=0) == real.max(axis=0)
        stats[m] = (real.mean(axis=0), np.where(constant, 1.0, real.std(axis=0)))
    for split, arrays in task.splits.items():
        scaled = {}
        for m, (mean, scale) in stats.items():
            z = (arrays[m] - mean) / scale
            scaled[m] = np.where(steps(arrays[m])[..., None], z, 0.0).astype(arrays[m].dtype)
        splits[split] = {**arrays, **scaled}
    return dataclasses.replace(task, splits=splits)


def dataset_options(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The options of dataset ``cfg.name`` that a config's ``data`` section sets.

    ``cfg.options`` entries left ``None`` keep the dataset's defaults; only options that
    differ from those are returned (the defaults keep the dataset's preset cache).

    Raises:
      ValueError: an option set that dataset ``cfg.name`` does not have.
    """
    defaults = data.options(cfg.name)
    set_here = {k: v for k, v in plain(cfg.get("options", {})).items() if v is not None}
    foreign = sorted(set(set_here) - set(defaults))
    if foreign:
        raise ValueError(
            f"config.data.options sets {', '.join(foreign)}, not options of {cfg.name} (its "
            f"options: {', '.join(sorted(defaults)) or 'none'}); pick the dataset with the "
            "config's variant (e.g. configs/supervised.py:tensor,digits_halves) to get its "
            "options"
        )
    return {k: v for k, v in set_here.items() if v != defaults[k]}


def task_from_config(cfg: ml_collections.ConfigDict, splits: Sequence[str]) -> Task:
    """``load_task`` from a config's ``data`` section (name, options, data_dir, modalities),
    ``standardized`` by the first of ``splits`` where ``cfg.standardize`` is set (unset:
    for the datasets in ``STANDARDIZED_BY_DEFAULT``).

    ``cfg.options`` may list options unset (``None``: the dataset's default), so that a
    command line can set each; those set are passed on (``dataset_options``).
    """
    task = load_task(
        cfg.name,
        splits=splits,
        options=dataset_options(cfg),
        data_dir=cfg.get("data_dir"),
        modalities=tuple(cfg.get("modalities", ()) or ()),
    )
    standardize = cfg.get("standardize")
    if standardize is None:
        standardize = cfg.name in STANDARDIZED_BY_DEFAULT
    return standardized(task, splits[0]) if standardize else task


# --------------------------------------------------------------------------- models


def _sequence_encoder(
    in_dim: int, width: int, rngs: nnx.Rngs, compute_dtype: Any
) -> models.SequenceEncoder:
    # sequence datasets (cmu_mosi) left-pad with all-zero steps: the GRU skips them
    return models.SequenceEncoder(
        in_dim, width, pad_value=0.0, compute_dtype=compute_dtype, rngs=rngs
    )


def _encoder(
    shape: Sequence[int], hidden: Sequence[int], width: int, rngs: nnx.Rngs, compute_dtype: Any
) -> nnx.Module:
    if len(shape) == 2:  # [T, d]: a recurrent encoder pooled over time
        return _sequence_encoder(shape[-1], width, rngs, compute_dtype)
    return models.MLP(shape[-1], tuple(hidden), width, compute_dtype=compute_dtype, rngs=rngs)


class _SequencePredictor(nnx.Module):
    """Late fusion's predictor of a ``[T, d]`` modality: the recurrent encoder's pooled
    state ``[B, width]``, then a linear readout to the ``C`` outputs (the state alone is
    bounded by the GRU's tanh: no prediction beyond ±1)."""

    input_rank = 2

    def __init__(
        self, in_dim: int, width: int, num_outputs: int, rngs: nnx.Rngs, compute_dtype: Any
    ):
        self.encoder = _sequence_encoder(in_dim, width, rngs, compute_dtype)
        self.readout = models.MLP(width, (), num_outputs, compute_dtype=compute_dtype, rngs=rngs)
        self.in_dim = self.encoder.in_dim

    def __call__(self, x: jax.typing.ArrayLike, mask: jax.typing.ArrayLike | None = None):
        return self.readout(self.encoder(x, mask=mask))  # [B, C]


def build_model(
    kind: str,
    shapes: Sequence[Sequence[int]],
    num_outputs: int,
    *,
    seed: int,
    fusion_name: str = "tensor",
    fusion_options: Mapping[str, Any] | None = None,
    encoder_hidden: Sequence[int] = (32,),
    encoder_dim: int = 16,
    fused_dim: int = 32,
    head_hidden: Sequence[int] = (32,),
    late_combine: str = "mean",
    compute_dtype: Any = None,
) -> nnx.Module:
    """One of the classic fusion stages around ``mmfuse`` operators.

    Args:
      kind: ``"intermediate"`` (encoder per modality -> ``fusion_name`` -> MLP head),
        ``"early"`` (the concatenated raw features -> one MLP: the ``nonlinear``
        operator), ``"late"`` (a predictor per modality: an MLP, or for a sequence the
        recurrent encoder then a linear readout; predictions combined by
        ``late_combine``), or ``"raw"`` (the operator maps the raw modalities straight to
        the outputs, so only its equation can combine them).
      shapes: per-example shapes of the M modalities, ``(d_m,)`` or ``(T, d_m)``.
      num_outputs: C.
      seed: initialization seed.
      compute_dtype: the matmul operand dtype of every encoder, operator and head,
        e.g. ``"bfloat16"`` (float32 accumulation and parameters); None: float32.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind: unknown kind {kind!r}; kinds: {', '.join(MODEL_KINDS)}")
    rngs = nnx.Rngs(seed)
    options = {"compute_dtype": compute_dtype, **(fusion_options or {})}
    dims = tuple(s[-1] for s in shapes)
    if kind == "raw":
        if any(len(s) != 1 for s in shapes):
            raise ValueError(f"model.kind='raw' needs vector modalities, got shapes {shapes}")
        return fusion.create(fusion_name, dims, num_outputs, rngs=rngs, **options)
    if kind == "late":
        if fusion_options:  # a setting the run would ignore
            raise ValueError(
                f"model.fusion_options {dict(fusion_options)} are unused: model.kind='late' "
                "combines per-modality predictions, with no fusion operator"
            )
        predictors = [
            _SequencePredictor(s[-1], encoder_dim, num_outputs, rngs, compute_dtype)
            if len(s) == 2
            else _encoder(s, encoder_hidden, num_outputs, rngs, compute_dtype)
            for s in shapes
        ]
        return models.LateFusion(predictors, combine=late_combine)
    head = models.MLP(
        fused_dim, tuple(head_hidden), num_outputs, compute_dtype=compute_dtype, rngs=rngs
    )
    if kind == "early":
        if any(len(s) != 1 for s in shapes):
            raise ValueError(f"model.kind='early' needs vector modalities, got shapes {shapes}")
        try:
            op = fusion.create("nonlinear", dims, fused_dim, rngs=rngs, **options)
        except ValueError as error:
            raise ValueError(
                f"model.kind='early' fuses with the nonlinear operator, whatever model.fusion "
                f"says: {error}"
            ) from None
        return models.FusionModel([None] * len(dims), op, head)
    encoders = [_encoder(s, encoder_hidden, encoder_dim, rngs, compute_dtype) for s in shapes]
    op = fusion.create(fusion_name, (encoder_dim,) * len(dims), fused_dim, rngs=rngs, **options)
    return models.FusionModel(encoders, op, head)


def model_from_config(cfg: ml_collections.ConfigDict, task: Task, seed: int) -> nnx.Module:
    for key in ("encoder_dim", "fused_dim"):  # named as the config has them
        check_count(f"model.{key}", cfg[key], 1)
    for key in ("encoder_hidden", "head_hidden"):
        for i, width in enumerate(cfg[key]):
            check_count(f"model.{key}[{i}]", width, 1)
    return build_model(
        cfg.kind,
        task.shapes(),
        task.num_outputs,
        seed=seed,
        fusion_name=cfg.fusion,
        fusion_options=fusion_options(cfg),
        encoder_hidden=tuple(cfg.encoder_hidden),
        encoder_dim=cfg.encoder_dim,
        fused_dim=cfg.fused_dim,
        head_hidden=tuple(cfg.head_hidden),
        late_combine=cfg.get("late_combine", "mean"),
        compute_dtype=cfg.get("compute_dtype"),
    )


def _is_int(value: Any) -> bool:
    """A Python or numpy integer (``True`` is not one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_count(key: str, value: Any, minimum: int) -> None:
    """Checks a config count: ``None`` (unset) or an int ``>= minimum``."""
    if value is not None and (not _is_int(value) or value < minimum):
        raise ValueError(f"config.{key} must be an int >= {minimum}, got {value!r}")


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


def check_model(build: Callable[[], nnx.Module], where: str) -> None:
    """Builds a model from shapes alone (``nnx.eval_shape``: no parameter is allocated).

    Trainers of many runs check every model this way before they touch the workdir or
    train anything, so that a bad setting of the last run fails at once; a ``ValueError``
    is raised again prefixed with ``where`` (e.g. the model's row and dataset).
    """
    try:
        nnx.eval_shape(build)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


def fusion_options(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The options in ``cfg.fusion_options`` that are set (an unset option, ``None``,
    leaves the operator's default; see ``configs._sections.fusion_options_section``)."""
    options = plain(cfg.get("fusion_options", {}))
    return {k: v for k, v in options.items() if v is not None}


def is_stochastic(model: nnx.Module) -> bool:
    """Whether the model's fusion operator samples (hard gates) and takes ``key=``."""
    op = getattr(model, "fusion", model)
    return bool(getattr(op, "stochastic", False))


def count_params(model: nnx.Module) -> int:
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


# --------------------------------------------------------------------------- optimization


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


def make_objective(task: Task, stochastic: bool = False):
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


def monitor_for(task: Task) -> tuple[str, str]:
    """The validation metric that selects the best step, and whether higher is better."""
    return ("loss", "min") if task.num_classes is None else ("accuracy", "max")


def fit_arguments(
    config: ml_collections.ConfigDict,
    task: Task,
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
    loss_fn, evaluate = objective or make_objective(task, is_stochastic(model))
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


# --------------------------------------------------------------------------- evaluation


def test_metrics(model: nnx.Module, task: Task, split: str = "test") -> dict[str, float]:
    """The evaluation metrics of ``model`` on a whole split."""
    _, evaluate = make_objective(task)
    pure = models.as_pure(model)
    batch = task.splits[split]
    scores = jax.jit(lambda p, b: evaluate(nnx.merge(pure.graphdef, p), b))(pure.params, batch)
    return {k: float(v) for k, v in scores.items()}


def emap_examples_note(sizes: Mapping[str, tuple[int, int]]) -> str:
    """Which test examples a table's EMAP cells come from, for its caption.

    Args:
      sizes: ``{dataset label: (examples EMAP was computed on, test split size)}``.
    """
    partial = [
        f"{label}: the first {n} of {total}" for label, (n, total) in sizes.items() if n < total
    ]
    return "every test example" + (f" (except {'; '.join(partial)})" if partial else "")


def emap_scores(
    model: nnx.Module,
    task: Task,
    split: str = "test",
    *,
    max_examples: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The model's headline metric, its EMAP projection's, and each unimodal marginal's.

    Accuracy for class logits, MSE for a regression output ``[N, 1]``; at most
    ``max_examples`` examples of the split. Exact EMAP costs N^M head evaluations: with
    ``num_samples`` unset it is exact up to ``EXACT_EMAP_PAIRS`` of them (two modalities
    up to 31,622 examples, three up to 1,000) and Monte-Carlo with ``EMAP_SAMPLES``
    partners beyond (e.g. uci_mfeat's six views); ``num_samples`` asks for Monte-Carlo
    mode with that many partners, its key drawn from ``seed``. The record's
    ``num_samples`` says which mode ran (``None``: exact).
    """
    xs = task.inputs(split)
    labels = task.splits[split]["label"]
    if max_examples is not None and labels.shape[0] > max_examples:
        xs, labels = tuple(x[:max_examples] for x in xs), labels[:max_examples]
    n = int(labels.shape[0])
    if num_samples is None and n ** len(xs) > EXACT_EMAP_PAIRS:
        num_samples = EMAP_SAMPLES
    kw = {} if num_samples is None else {"num_samples": num_samples, "key": jax.random.key(seed)}
    report = interactions.emap_report(model, xs, labels, metric=task.metric, **kw)
    return {
        "metric": task.metric,
        "original": float(report.original),
        "projected": float(report.projected),
        "marginals": [float(v) for v in report.marginals],
        "num_examples": n,
        "num_samples": num_samples,
    }
