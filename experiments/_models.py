"""Models from a config's ``model`` section: the classic fusion stages around operators."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
from flax import nnx

from experiments import _config, _tasks
from mmfuse import fusion, models

MODEL_KINDS = ("intermediate", "early", "late", "raw")


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


def model_from_config(cfg: ml_collections.ConfigDict, task: _tasks.Task, seed: int) -> nnx.Module:
    for key in ("encoder_dim", "fused_dim"):  # named as the config has them
        _config.check_count(f"model.{key}", cfg[key], 1)
    for key in ("encoder_hidden", "head_hidden"):
        for i, width in enumerate(cfg[key]):
            _config.check_count(f"model.{key}[{i}]", width, 1)
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
    options = _config.plain(cfg.get("fusion_options", {}))
    return {k: v for k, v in options.items() if v is not None}


def is_stochastic(model: nnx.Module) -> bool:
    """Whether the model's fusion operator samples (hard gates) and takes ``key=``."""
    op = getattr(model, "fusion", model)
    return bool(getattr(op, "stochastic", False))


def count_params(model: nnx.Module) -> int:
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
