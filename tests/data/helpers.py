"""Tiny inputs and probes shared by the dataset tests."""

import pathlib
import pickle

import numpy as np

MOSI_WIDTHS = {"text": 300, "audio": 5, "vision": 20}
MOSEI_WIDTHS = {"text": 300, "audio": 74, "vision": 35}


def aligned_split(rng, n, steps=6, widths=MOSI_WIDTHS):
    """One split of the aligned-features layout: left-padded [n, T, d] and [n, 1, 1] labels."""
    lengths = rng.integers(1, steps + 1, n)
    lengths[0] = steps  # one example fills every step
    split = {}
    for key, width in widths.items():
        x = rng.standard_normal((n, steps, width)).astype(np.float32)
        for i, length in enumerate(lengths):
            x[i, : steps - length] = 0.0
        split[key] = x
    split["labels"] = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
    split["id"] = np.array([[f"video{i}".encode(), str(i).encode(), b"0"] for i in range(n)])
    return split


def aligned_pickle(seed=0, sizes=(10, 4, 5), widths=MOSI_WIDTHS):
    """A whole aligned-features dict with splits train / valid / test."""
    rng = np.random.default_rng(seed)
    return {
        key: aligned_split(rng, n, widths=widths)
        for key, n in zip(("train", "valid", "test"), sizes, strict=True)
    }


def write_pickle(folder: pathlib.Path, content, filename="mosi_data.pkl") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / filename, "wb") as f:
        pickle.dump(content, f)
    return folder


def quadratic(x):
    """``[N, d]`` -> ``[N, d + d(d+1)/2]``: the features and their pairwise products."""
    i, j = np.triu_indices(x.shape[1])
    return np.concatenate([x, x[:, i] * x[:, j]], axis=1)


def probe_accuracy(train, test, keys, *, features="linear", ridge=1e-3):
    """Test accuracy of a ridge least-squares classifier on the chosen modalities."""

    def design(split):
        x = np.concatenate([split[k] for k in keys], axis=1).astype(np.float64)
        return quadratic(x) if features == "quadratic" else x

    a, b = design(train), design(test)
    mean, scale = a.mean(0), a.std(0) + 1e-8
    a = np.c_[(a - mean) / scale, np.ones(len(a))]
    b = np.c_[(b - mean) / scale, np.ones(len(b))]
    targets = np.eye(int(train["label"].max()) + 1)[train["label"]]
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ targets)
    return float(np.mean((b @ w).argmax(axis=1) == test["label"]))
