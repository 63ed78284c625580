"""EMAP evaluation: the metric of a model, of its projection and of its unimodal marginals."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from mmfuse.interactions import metrics
from mmfuse.interactions._checks import ModelFn
from mmfuse.interactions._emap import EmapDecomposition, emap_decompose
from mmfuse.interactions._model import emap_model
from mmfuse.models import PureModel


class EmapReport(NamedTuple):
    """A model's metric with and without cross-modal interactions (Hessel and Lee 2020).

    Attributes:
      metric: the metric's name (one of ``metrics.NAMES``).
      original: the metric of ``f`` on the N paired examples.
      projected: the metric of the EMAP projection ``f̃``: what the best additive
        model with the same marginal behaviour achieves. A drop from ``original``
        measures how much the model relies on interactions.
      marginals: M values, the metric of each ``E[f | x_m]``: the model's behaviour
        with all but modality m averaged out.
      residual: ``[N, *out]``, the per-example interaction residual ``f − f̃``.
      decomposition: the full ``EmapDecomposition``.
    """

    metric: str
    original: float
    projected: float
    marginals: tuple[float, ...]
    residual: jax.Array
    decomposition: EmapDecomposition


def emap_report(
    fn: ModelFn | nnx.Module | PureModel,
    inputs: Any,
    labels: ArrayLike,
    *,
    metric: str = "accuracy",
    block_size: int | None = None,
    num_samples: int | None = None,
    key: jax.Array | None = None,
) -> EmapReport:
    """Compares the metric of a model with that of its EMAP projection and marginals.

    Args:
      fn: ``fn(xs) -> [n, C]`` or ``[n]`` logits / outputs for a tuple of M batches
        ``[n, ...]``; or an mmfuse model (NNX module or ``PureModel``), whose EMAP is
        then computed by encoding each modality once (see ``emap_model``).
      inputs: M arrays ``[N, ...]`` paired along axis 0.
      labels: ``[N]`` classes for ``"accuracy"`` / ``"auc"`` (binary), targets of the
        outputs' size for ``"mse"``.
      metric: ``"accuracy"`` (argmax of ``[N, C]``, threshold 0 for ``[N]``), ``"auc"``
        (binary, ties count half) or ``"mse"``.
      block_size, num_samples, key: as for ``emap_decompose``.

    Returns:
      An ``EmapReport``.

    References:
      Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's
      harder to tell than you might think!", EMNLP 2020.
    """
    if metric not in metrics.NAMES:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(metrics.NAMES)}")
    labels = np.asarray(labels)
    if isinstance(inputs, (tuple, list)) and inputs and np.ndim(inputs[0]) > 0:
        n = np.shape(inputs[0])[0]  # checked before the N^M evaluations, not after
        if labels.ndim == 0 or labels.shape[0] != n:
            raise ValueError(
                f"emap_report: labels {labels.shape} must hold one entry per example, N = {n} "
                f"(modality 0 has shape {np.shape(inputs[0])})"
            )
    kw = {"block_size": block_size, "num_samples": num_samples, "key": key}
    if isinstance(fn, (nnx.Module, PureModel)):
        parts = emap_model(fn, inputs, decompose=True, **kw)
    else:
        parts = emap_decompose(fn, inputs, **kw)

    def score(outputs: jax.Array) -> float:
        return metrics.compute(metric, outputs, labels)

    return EmapReport(
        metric=metric,
        original=score(parts.original),
        projected=score(parts.projected),
        marginals=tuple(score(m) for m in parts.marginals),
        residual=parts.residual,
        decomposition=parts,
    )


def rank_interactions(residual: ArrayLike, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The examples that rely most on cross-modal interactions, most reliant first.

    An example's score is the size of its interaction residual ``f − f̃`` (the
    Euclidean norm over the output dims): how far the model's output is from the best
    additive model's. Ties keep the examples' order.

    Args:
      residual: ``[N]`` or ``[N, *out]``, e.g. ``EmapReport.residual`` or
        ``EmapDecomposition.residual``.
      k: return the top k (default: all N).

    Returns:
      ``(indices [k], scores [k])`` as NumPy arrays, scores non-increasing.
    """
    residual = np.asarray(residual, dtype=np.float64)
    if residual.ndim == 0:
        raise ValueError(f"rank_interactions: residual must be [N, ...], got {residual.shape}")
    scores = np.sqrt(np.sum(residual.reshape(residual.shape[0], -1) ** 2, axis=1))  # [N]
    order = np.argsort(-scores, kind="stable")
    if k is not None:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"rank_interactions: k must be a positive int, got {k!r}")
        order = order[:k]
    return order, scores[order]
