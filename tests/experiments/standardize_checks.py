"""A toy task in very different units, and what standardizing it must give."""

import numpy as np

from experiments import _tasks


def toy_task() -> _tasks.Task:
    """One modality ``a`` of three features spanning six orders of magnitude."""
    rng = np.random.default_rng(0)
    scale = np.array([1e-2, 1.0, 1e4], np.float32)
    splits = {
        s: {
            "a": (rng.normal(5.0, 1.0, size=(n, 3)) * scale).astype(np.float32),
            "label": np.zeros(n),
        }
        for s, n in (("train", 300), ("test", 40))
    }
    return _tasks.Task("toy", ("a",), splits, num_classes=2)


def assert_standardized(task: _tasks.Task, raw: _tasks.Task) -> None:
    """Train features have mean 0 and std 1; the test split is scaled by train statistics."""
    train = task.splits["train"]["a"]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, rtol=1e-4)
    raw_train, raw_test = raw.splits["train"]["a"], raw.splits["test"]["a"]
    want = (raw_test - raw_train.mean(0)) / raw_train.std(0)
    np.testing.assert_allclose(task.splits["test"]["a"], want, rtol=1e-4, atol=1e-4)
