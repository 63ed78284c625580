"""Test metrics and EMAP scores of a trained model, as the trainers report them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from experiments import _tasks, _training
from mmfuse import interactions, models

# emap_scores: exact EMAP up to this many head evaluations (N^M), Monte-Carlo beyond
EXACT_EMAP_PAIRS = 10**9


EMAP_SAMPLES = 512  # sampled partners per example and modality in Monte-Carlo mode


def test_metrics(model: nnx.Module, task: _tasks.Task, split: str = "test") -> dict[str, float]:
    """The evaluation metrics of ``model`` on a whole split."""
    _, evaluate = _training.make_objective(task)
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
    task: _tasks.Task,
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
