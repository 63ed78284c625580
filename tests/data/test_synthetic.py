"""Each synthetic kind has the structure it claims, shown with linear and quadratic probes."""

import numpy as np
import pytest

from mmfuse import data
from tests.data.helpers import probe_accuracy

SIZES = (3000, 100, 1000)
CHANCE = 0.06  # |accuracy - 0.5| allowed for a modality that carries no label information


@pytest.fixture(scope="module")
def accuracy(data_dir):
    cache = {}

    def run(kind, keys, features="linear", **options):
        key = (kind, keys, features, tuple(sorted(options.items())))
        if key not in cache:
            load = {"data_dir": data_dir, "sizes": SIZES, **options}
            train = data.load(f"synthetic/{kind}", "train", **load)
            test = data.load(f"synthetic/{kind}", "test", **load)
            cache[key] = probe_accuracy(train, test, keys, features=features)
        return cache[key]

    return run


def test_xor_each_modality_alone_at_chance_both_together_solve_it(accuracy):
    for keys in (("x1",), ("x2",)):
        for features in ("linear", "quadratic"):
            assert abs(accuracy("xor", keys, features) - 0.5) < CHANCE
    assert abs(accuracy("xor", ("x1", "x2"), "linear") - 0.5) < CHANCE  # no additive solution
    assert accuracy("xor", ("x1", "x2"), "quadratic") > 0.95


def test_synergy_each_modality_alone_at_chance(accuracy):
    for keys in (("x1",), ("x2",)):
        assert abs(accuracy("synergy", keys, "quadratic") - 0.5) < CHANCE
    assert accuracy("synergy", ("x1", "x2"), "quadratic") > 0.75


def test_redundancy_each_modality_alone_suffices(accuracy):
    both = accuracy("redundancy", ("x1", "x2"))
    for keys in (("x1",), ("x2",)):
        alone = accuracy("redundancy", keys)
        assert alone > 0.9 and alone > both - 0.03


def test_uniqueness_only_the_first_modality_carries_the_label(accuracy):
    assert accuracy("uniqueness", ("x1",)) > 0.9
    assert abs(accuracy("uniqueness", ("x2",), "quadratic") - 0.5) < CHANCE


def test_additive_needs_both_modalities_but_no_interaction(accuracy):
    both = accuracy("additive", ("x1", "x2"))
    assert both > 0.9
    for keys in (("x1",), ("x2",)):
        assert 0.6 < accuracy("additive", keys) < both - 0.1
    assert accuracy("additive", ("x1", "x2"), "quadratic") <= both + 0.01


def test_multiplicative_gains_from_a_product_term(accuracy):
    linear = accuracy("multiplicative", ("x1", "x2"))
    assert accuracy("multiplicative", ("x1", "x2"), "quadratic") > linear + 0.03
    assert linear > max(accuracy("multiplicative", ("x1",)), accuracy("multiplicative", ("x2",)))


def test_mix_both_modalities_beat_either(accuracy):
    both = accuracy("mix", ("x1", "x2"))
    assert both > max(accuracy("mix", ("x1",)), accuracy("mix", ("x2",))) + 0.05


def test_three_modality_xor_is_parity(data_dir):
    train = data.load(
        "synthetic/xor",
        "train",
        data_dir=data_dir,
        sizes=(400, 10, 10),
        widths=(6, 6, 6),
        uniqueness=0.0,
    )
    assert set(train) == {"x1", "x2", "x3", "label"}
    assert abs(train["label"].mean() - 0.5) < 0.1


def test_shapes_labels_and_recorded_parameters(data_dir):
    options = {"sizes": (500, 50, 100), "widths": (12, 7), "num_classes": 4, "noise": 0.3}
    train = data.load("synthetic/synergy", "train", data_dir=data_dir, **options)
    assert train["x1"].shape == (500, 12) and train["x2"].shape == (500, 7)
    assert train["x1"].dtype == np.float32 and train["label"].dtype == np.int64
    counts = np.bincount(train["label"], minlength=4)
    assert counts.min() > 90  # equal-frequency classes
    info = data.info("synthetic/synergy", data_dir=data_dir, **options)
    params = info.metadata["params"]
    assert params["noise"] == 0.3 and params["widths"] == [12, 7] and params["seed"] == 0
    assert params["synergy"] == 1.0 and params["latent"] == "gaussian"
    assert len(info.metadata["class_edges"]) == 3
    assert info.splits["test"].num_examples == 100
    assert "Liang" in info.citation


def test_more_classes_than_a_bit_score_can_bin_is_a_clear_error(tmp_path):
    # xor's score is ±1: quantile bins for 4 classes would leave classes 0 and 1 empty
    with pytest.raises(ValueError, match=r"num_classes=4 leaves class\(es\) 0, 1 empty: .* 2 "):
        data.load("synthetic/xor", sizes=(40, 10, 10), num_classes=4, data_dir=tmp_path)
    assert not list(tmp_path.glob("synthetic/*/1.0.0/*.array_record*"))


def test_three_widths_with_two_uniqueness_weights_suggest_one_per_modality(tmp_path):
    match = r"uniqueness has 2 weights for 3 modalities .* uniqueness=\(1.0, 0.0, 0.0\)"
    with pytest.raises(ValueError, match=match):
        data.load("synthetic/uniqueness", widths=(4, 4, 4), sizes=(40, 10, 10), data_dir=tmp_path)
