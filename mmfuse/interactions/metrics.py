"""Metrics for comparing a model with its EMAP projection: accuracy, AUC, MSE.

Host-side NumPy in float64: they run once per evaluation, on ``[N, C]`` outputs.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

NAMES = ("accuracy", "auc", "mse")


def _outputs(
    outputs: ArrayLike, labels: ArrayLike, name: str, *, finite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    outputs = np.asarray(outputs, dtype=np.float64)
    labels = np.asarray(labels)
    if outputs.ndim == 0 or labels.ndim == 0 or outputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: outputs {outputs.shape} and labels {labels.shape} must share their "
            "leading size N"
        )
    bad = ~np.isfinite(outputs) if finite else None
    if bad is not None and bad.any():  # NaN would silently rank first or predict class 0
        first = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"{name}: outputs hold {int(bad.sum())} non-finite value(s) (the first in example "
            f"{first}); a prediction needs finite logits"
        )
    return outputs, labels


def _classes(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    """``[N]`` class labels (``[N, 1]`` accepted)."""
    if labels.size != n:
        raise ValueError(f"{name}: labels must be [N] classes with N = {n}, got {labels.shape}")
    return labels.reshape(-1)


def _binary_scores(outputs: np.ndarray, name: str) -> np.ndarray:
    """``[N]`` scores of class 1: the logit itself, or ``z_1 − z_0`` for two logits."""
    if outputs.ndim == 1:
        return outputs
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    if outputs.ndim == 2 and outputs.shape[1] == 2:
        return outputs[:, 1] - outputs[:, 0]  # the log-odds of class 1 under a softmax
    raise ValueError(
        f"{name}: binary outputs must be [N], [N, 1] or [N, 2] logits, got {outputs.shape}"
    )


def accuracy(outputs: ArrayLike, labels: ArrayLike) -> float:
    """The fraction of correct predictions.

    Args:
      outputs: ``[N, C]`` logits (prediction: argmax; C = 1 is a binary logit), or
        ``[N]`` binary logits (prediction: 1 where the logit is > 0).
      labels: ``[N]`` classes in ``0..C-1`` (``0..1`` for binary logits), integers or
        integral floats.

    Raises:
      ValueError: a label is not one of the classes the outputs predict.
    """
    outputs, labels = _outputs(outputs, labels, "accuracy", finite=True)
    if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
        predictions, num_classes = (outputs.reshape(-1) > 0).astype(np.int64), 2
    elif outputs.ndim == 2:
        predictions, num_classes = np.argmax(outputs, axis=1), outputs.shape[1]
    else:
        raise ValueError(f"accuracy: outputs must be [N] or [N, C], got {outputs.shape}")
    labels = _classes(labels, outputs.shape[0], "accuracy")
    # a label no output can predict (a regression target, classes counted from 1, more
    # classes than logits) would only lower the score: name it instead
    valid = np.isin(labels, np.arange(num_classes))
    if not valid.all():
        raise ValueError(
            f"accuracy: labels must be classes 0..{num_classes - 1} for outputs of shape "
            f"{outputs.shape}, got {labels[~valid][:5].tolist()} (e.g. in example "
            f"{int(np.argmin(valid))}); regression outputs need metric='mse'"
        )
    return float(np.mean(predictions == labels))


def auc(outputs: ArrayLike, labels: ArrayLike) -> float:
    """The area under the ROC curve of a binary classifier, ties counting one half.

    Equals ``P(s⁺ > s⁻) + P(s⁺ = s⁻)/2`` over positive / negative pairs (the
    Mann–Whitney statistic), computed from average ranks in O(N log N).

    Args:
      outputs: ``[N]`` or ``[N, 1]`` scores or logits, or ``[N, 2]`` logits (score
        ``z_1 − z_0``).
      labels: ``[N]`` in {0, 1} (or booleans); both classes must occur.
    """
    outputs, labels = _outputs(outputs, labels, "auc", finite=True)
    scores = _binary_scores(outputs, "auc")
    labels = _classes(labels, outputs.shape[0], "auc")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"auc: labels must be 0 or 1, got values {np.unique(labels)[:5]}")
    positive = labels == 1
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    if num_pos == 0 or num_neg == 0:
        raise ValueError("auc: needs both positive and negative labels")
    # average 1-based ranks: tied scores share the mean of the ranks they span
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.shape[0]]
    ranks = np.empty(scores.shape[0])
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def mse(outputs: ArrayLike, labels: ArrayLike) -> float:
    """The mean squared error over all N·C entries.

    Args:
      outputs: ``[N]`` or ``[N, C]`` regression outputs.
      labels: targets with the same number of entries (e.g. ``[N]`` for ``[N, 1]``).
    """
    outputs, labels = _outputs(outputs, labels, "mse")
    if labels.size != outputs.size:
        raise ValueError(f"mse: outputs {outputs.shape} and labels {labels.shape} differ in size")
    return float(np.mean((outputs - labels.reshape(outputs.shape).astype(np.float64)) ** 2))


def compute(name: str, outputs: ArrayLike, labels: ArrayLike) -> float:
    """The metric ``name`` (one of ``NAMES``) of ``outputs`` against ``labels``."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(NAMES)}")
    return {"accuracy": accuracy, "auc": auc, "mse": mse}[name](outputs, labels)
