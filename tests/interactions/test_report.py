"""EMAP evaluation: metrics (AUC against a brute-force pair count), the report, rankings."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse import interactions
from mmfuse.interactions import metrics


def brute_force_auc(scores, labels):
    """P(s⁺ > s⁻) + P(s⁺ = s⁻)/2 over every positive / negative pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_brute_force_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40).astype(np.float32)  # many ties
    labels = (rng.random(40) < 0.4).astype(np.int32)
    np.testing.assert_allclose(metrics.auc(scores, labels), brute_force_auc(scores, labels))
    # two logits score z_1 − z_0; a shared per-example offset changes nothing
    two = np.stack([rng.normal(size=40), rng.normal(size=40) + scores], axis=1)
    want = brute_force_auc(two[:, 1] - two[:, 0], labels)
    np.testing.assert_allclose(metrics.auc(two, labels), want)


def test_auc_extremes_and_errors():
    labels = np.array([0, 0, 1, 1])
    assert metrics.auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert metrics.auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert metrics.auc(np.zeros(4), labels) == 0.5  # all tied
    with pytest.raises(ValueError, match="both positive and negative"):
        metrics.auc(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="binary"):
        metrics.auc(np.zeros((4, 3)), labels)


@pytest.mark.parametrize("name", ["accuracy", "auc", "mse"])
def test_scalar_labels_are_named_not_indexed(name):
    message = rf"{name}: outputs \(3,\) and labels \(\) must share their leading size N"
    with pytest.raises(ValueError, match=message):
        getattr(metrics, name)(np.ones(3), np.array(1))


@pytest.mark.parametrize("name", ["accuracy", "auc"])
def test_non_finite_outputs_are_an_error_not_a_prediction(name):
    outputs, labels = np.array([1.0, np.nan, 2.0, 3.0]), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=rf"{name}: outputs hold 1 non-finite .* example 1"):
        getattr(metrics, name)(outputs, labels)
    assert np.isnan(metrics.mse(outputs, labels))  # an error measure may be NaN


def test_report_labels_of_another_length_are_refused_before_emap_runs():
    def never(xs):
        raise AssertionError("fn was evaluated")

    xs = (np.ones((8, 2), np.float32), np.ones((8, 3), np.float32))
    with pytest.raises(ValueError, match=r"emap_report: labels \(5,\) must hold one entry per"):
        interactions.emap_report(never, xs, np.zeros(5, int))


def test_accuracy_and_mse():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    assert metrics.accuracy(logits, np.array([0, 1, 2, 2])) == 0.75  # argmax
    assert metrics.accuracy(np.array([-1.0, 2.0, 0.5]), np.array([0, 1, 0])) == 2 / 3  # > 0
    assert metrics.mse(np.array([[1.0], [3.0]]), np.array([0.0, 1.0])) == 2.5
    with pytest.raises(ValueError, match=r"labels must be \[N\] classes"):
        metrics.accuracy(logits, np.eye(3)[[0, 1, 2, 2]])  # one-hot labels
    assert metrics.accuracy(logits, np.array([0.0, 1.0, 2.0, 2.0])) == 0.75  # integral floats
    with pytest.raises(ValueError, match=r"classes 0..2 for outputs of shape \(4, 3\), got \[3\]"):
        metrics.accuracy(logits, np.array([1, 2, 3, 3]) - np.array([0, 0, 0, 1]))  # from 1
    with pytest.raises(ValueError, match=r"classes 0..1 .* got \[0.5, -1.5\].* metric='mse'"):
        metrics.accuracy(np.array([1.0, -1.0, 0.5]), np.array([1.0, 0.5, -1.5]))  # regression
    with pytest.raises(ValueError, match=r"classes 0..1 for outputs of shape \(3, 1\), got \[5\]"):
        metrics.accuracy(np.ones((3, 1)), np.array([0, 1, 5]))
    with pytest.raises(ValueError, match=r"unknown metric 'f1'; valid metrics: accuracy, auc, mse"):
        metrics.compute("f1", logits, np.zeros(4))


def test_report_metrics_of_model_projection_and_marginals():
    # f(a, b) = a + b + 3ab on balanced a, b ∈ {−1, 1}: EMAP maps 3ab to
    # 3(ā·b + a·b̄ − ā·b̄) = 0, so f̃ = a + b; the label f > 0 holds exactly where a = b
    a = jnp.array([-1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0])
    b = jnp.array([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])

    def fn(xs):
        return xs[0] + xs[1] + 3 * xs[0] * xs[1]  # [n]

    labels = (np.asarray(fn((a, b))) > 0).astype(np.int32)
    report = interactions.emap_report(fn, (a, b), labels)
    assert report.metric == "accuracy" and report.original == 1.0
    # ā = b̄ = 0: f̃ = a + b, which is 0 (predicts 0) wherever a ≠ b, where f = −3 < 0
    np.testing.assert_allclose(report.decomposition.projected, a + b, atol=1e-6)
    np.testing.assert_array_equal(labels, np.asarray(a == b))
    assert report.projected == 0.75  # f̃ = a + b misses (−1, −1) only
    assert report.marginals == (0.5, 0.5)  # E[f | a] = a and E[f | b] = b: right half the time
    np.testing.assert_allclose(report.residual, 3 * a * b, atol=1e-6)
    assert len(report.marginals) == 2
    # MSE against the original outputs: 0 for f, the residual's power for f̃
    mse = interactions.emap_report(fn, (a, b), np.asarray(fn((a, b))), metric="mse")
    assert mse.original == 0.0
    np.testing.assert_allclose(mse.projected, 9.0, rtol=1e-6)  # mean of (3ab)² = 9
    auc = interactions.emap_report(fn, (a, b), labels, metric="auc")
    # f̃ scores ±2 on positives and 0 on every negative: half the pairs ranked right
    assert auc.original == 1.0 and auc.projected == 0.5
    with pytest.raises(ValueError, match="valid metrics"):
        interactions.emap_report(fn, (a, b), labels, metric="f1")


def test_rank_interactions_orders_examples_by_residual_size():
    # f = a·b: the residual is (a_i − ā)(b_i − b̄), exactly
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=20).astype(np.float32), rng.normal(size=20).astype(np.float32)
    parts = interactions.emap_decompose(lambda xs: xs[0] * xs[1], (a, b))
    expected = np.abs((a - a.mean()) * (b - b.mean()))
    np.testing.assert_allclose(np.abs(parts.residual), expected, rtol=1e-4, atol=1e-6)
    order, scores = interactions.rank_interactions(parts.residual, k=5)
    np.testing.assert_array_equal(order, np.argsort(-expected)[:5])
    assert np.all(np.diff(scores) <= 0)
    # [N, C] residuals rank by their Euclidean norm
    residual = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 0.0]])
    order, scores = interactions.rank_interactions(residual)
    np.testing.assert_array_equal(order, [2, 0, 1])
    np.testing.assert_allclose(scores, [6.0, 5.0, 1.0])
