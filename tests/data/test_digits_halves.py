"""``digits_halves``: scikit-learn's digits cut into top and bottom halves, fixed splits."""

import numpy as np
from sklearn.datasets import load_digits

from mmfuse import data


def test_halves_rebuild_every_image_once_across_fixed_splits(data_dir):
    splits = {
        s: data.load("digits_halves", s, data_dir=data_dir) for s in ("train", "validation", "test")
    }
    assert {s: len(v["label"]) for s, v in splits.items()} == {
        "train": 1258,
        "validation": 180,
        "test": 359,
    }
    for split in splits.values():
        assert list(split) == ["top", "bottom", "label"]
        assert split["top"].shape[1:] == split["bottom"].shape[1:] == (32,)
        assert (
            split["top"].dtype == np.float32 and 0 <= split["top"].min() <= split["top"].max() <= 1
        )
    digits = load_digits()
    expected = sorted(
        (img.astype(np.float32) / 16).tobytes() + bytes([y])
        for img, y in zip(digits.images, digits.target, strict=True)
    )
    rebuilt = sorted(
        np.concatenate([t.reshape(4, 8), b.reshape(4, 8)]).tobytes() + bytes([int(y)])
        for s in splits.values()
        for t, b, y in zip(s["top"], s["bottom"], s["label"], strict=True)
    )
    assert rebuilt == expected
    # stratified: every class in every split, near its overall share
    for split in splits.values():
        share = np.bincount(split["label"], minlength=10) / len(split["label"])
        assert np.abs(share - np.bincount(digits.target) / len(digits.target)).max() < 0.02
