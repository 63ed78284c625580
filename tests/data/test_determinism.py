"""The same seed gives byte-identical data; another seed gives other data."""

import pathlib

import numpy as np
import pytest

from mmfuse import data

SMALL = {"sizes": (300, 30, 60)}


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.array_record-*"))
    }


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("synthetic/xor", SMALL),
        ("synthetic/mix", {**SMALL, "widths": (8, 5, 3), "uniqueness": 1.0}),
        ("synthetic/synergy", {**SMALL, "num_classes": 4}),
        ("book_reviews", {}),
    ],
)
def test_same_seed_byte_identical_other_seed_different(tmp_path, name, options):
    split = "train"
    first = data.load(name, split, data_dir=tmp_path / "a", seed=11, **options)
    again = data.load(name, split, data_dir=tmp_path / "b", seed=11, **options)
    other = data.load(name, split, data_dir=tmp_path / "c", seed=12, **options)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a and files_a == files_b  # the ArrayRecord files themselves
    assert list(first) == list(again) == list(other)
    for key in first:
        assert first[key].tobytes() == again[key].tobytes()
    features = [k for k in first if k != "label"]
    assert all(not np.array_equal(first[k], other[k]) for k in features)
    assert list(_files(tmp_path / "c")) != list(files_a)  # another cache folder


def test_fixed_real_datasets_are_identical_across_builds(tmp_path):
    first = data.load("digits_halves", "test", data_dir=tmp_path / "a")
    again = data.load("digits_halves", "test", data_dir=tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    for key in first:
        assert first[key].tobytes() == again[key].tobytes()
