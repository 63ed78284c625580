"""``cmu_mosi`` / ``cmu_mosei`` from a tiny pickle in the aligned-features layout."""

import numpy as np
import pytest

from mmfuse import data
from tests.data.helpers import MOSEI_WIDTHS, aligned_pickle, write_pickle


@pytest.fixture
def mosi(tmp_path):
    content = aligned_pickle(seed=3)
    manual = write_pickle(tmp_path / "manual", content)
    return content, {"data_dir": tmp_path / "tfds", "manual_dir": manual}


def _start(text_row):
    spoken = np.flatnonzero(np.any(text_row != 0, axis=1))
    return spoken[0] if spoken.size else len(text_row)


def test_splits_shapes_and_trimmed_left_padding(mosi):
    content, where = mosi
    splits = {"train": "train", "validation": "valid", "test": "test"}
    max_length = max(len(row) - _start(row) for split in content.values() for row in split["text"])
    assert max_length == 6
    for split, key in splits.items():
        loaded = data.load("cmu_mosi", split, **where)
        source = content[key]
        n = len(source["labels"])
        assert list(loaded) == ["text", "audio", "vision", "label"]
        assert loaded["text"].shape == (n, max_length, 300)
        assert loaded["audio"].shape == (n, max_length, 5)
        assert loaded["vision"].shape == (n, max_length, 20)
        np.testing.assert_allclose(loaded["label"], source["labels"].reshape(n))
        for i in range(n):
            start = _start(source["text"][i])
            length = 6 - start
            for modality in ("text", "audio", "vision"):
                row = loaded[modality][i]
                np.testing.assert_array_equal(
                    row[max_length - length :], source[modality][i, start:]
                )
                assert not row[: max_length - length].any()  # zeros left of the first word


def test_leading_steps_are_trimmed_by_the_text_start(tmp_path):
    content = aligned_pickle(seed=4)
    for split in content.values():  # no example uses the first two steps for words
        split["text"][:, :2] = 0.0
        split["audio"][:, :2] = 7.0  # non-text padding steps are dropped with them
    manual = write_pickle(tmp_path / "manual", content)
    loaded = data.load("cmu_mosi", "train", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert loaded["text"].shape[1] == 4
    assert not (loaded["audio"] == 7.0).any()
    info = data.info("cmu_mosi", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert info.metadata["max_length"] == 4 and info.metadata["sequence_length"] == 6


def test_label_views(mosi):
    content, where = mosi
    score = content["test"]["labels"].reshape(-1)
    regression = data.load("cmu_mosi/regression", "test", **where)["label"]
    binary = data.load("cmu_mosi/binary", "test", **where)["label"]
    seven = data.load("cmu_mosi", "test", label="seven_class", **where)["label"]
    assert regression.dtype == np.float32 and binary.dtype == seven.dtype == np.int64
    np.testing.assert_allclose(regression, score)
    np.testing.assert_array_equal(binary, score >= 0)
    np.testing.assert_array_equal(seven, np.round(np.clip(score, -3, 3)) + 3)
    assert seven.min() >= 0 and seven.max() <= 6
    batch = next(data.batches("cmu_mosi/seven_class", "test", batch_size=2, **where))
    assert batch["text"].shape == (2, 6, 300) and batch["label"].dtype == np.int64


def test_infinite_features_are_zeroed_and_counted(tmp_path):
    content = aligned_pickle(seed=5)
    content["train"]["audio"][1, -1, 0] = -np.inf
    manual = write_pickle(tmp_path / "manual", content)
    loaded = data.load("cmu_mosi", "train", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert np.isfinite(loaded["audio"]).all() and loaded["audio"][1, -1, 0] == 0
    info = data.info("cmu_mosi", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert info.metadata["infinite_values_set_to_zero"]["train"]["audio"] == 1


def test_mosei_widths(tmp_path):
    manual = write_pickle(
        tmp_path / "manual", aligned_pickle(widths=MOSEI_WIDTHS), "mosei_senti_data.pkl"
    )
    loaded = data.load(
        "cmu_mosei/binary", "validation", data_dir=tmp_path / "tfds", manual_dir=manual
    )
    assert loaded["audio"].shape == (4, 6, 74) and loaded["vision"].shape == (4, 6, 35)
    assert "Zadeh" in data.info("cmu_mosei", data_dir=tmp_path / "tfds", manual_dir=manual).citation


def test_missing_file_says_where_to_put_it_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.load("cmu_mosi", data_dir=tmp_path / "tfds")
    message = str(error.value)
    assert str(tmp_path / "tfds" / "downloads" / "manual") in message
    assert "mosi_data.pkl" in message and "manual_dir=" in message and "MulT" in message
    # once the file is there, the same call builds: nothing half-built was kept
    write_pickle(tmp_path / "tfds" / "downloads" / "manual", aligned_pickle())
    assert data.load("cmu_mosi", data_dir=tmp_path / "tfds")["label"].shape == (10,)


@pytest.mark.parametrize("content", [b"not a pickle", None], ids=["foreign", "truncated"])
def test_a_file_that_is_no_pickle_is_named(tmp_path, content):
    manual = write_pickle(tmp_path / "manual", aligned_pickle())
    path = manual / "mosi_data.pkl"
    path.write_bytes(content if content is not None else path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{path} is not a readable pickle \((Unpickling|EOF)"):
        data.load("cmu_mosi", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_a_changed_source_file_is_rebuilt_not_read_stale(tmp_path, monkeypatch):
    from mmfuse.data.builders.cmu_mosi import CmuMosi

    builds = []
    generate = CmuMosi.generate
    monkeypatch.setattr(
        CmuMosi, "generate", lambda self, *a: builds.append(1) or generate(self, *a)
    )
    a = aligned_pickle(seed=1)
    b = aligned_pickle(seed=2, sizes=(7, 3, 3))
    folder_a = write_pickle(tmp_path / "a", a)
    folder_b = write_pickle(tmp_path / "b", b)

    def labels(folder):
        loaded = data.load("cmu_mosi", data_dir=tmp_path / "tfds", manual_dir=folder)
        return loaded["label"]

    def score(content):
        return content["train"]["labels"].reshape(-1)

    np.testing.assert_array_equal(labels(folder_a), score(a))
    np.testing.assert_array_equal(labels(folder_a), score(a))
    assert len(builds) == 1  # an unchanged file: the build is read
    np.testing.assert_array_equal(labels(folder_b), score(b))  # another manual_dir
    assert len(builds) == 2
    c = aligned_pickle(seed=3)
    write_pickle(folder_b, c)  # the file replaced in place
    np.testing.assert_array_equal(labels(folder_b), score(c))
    assert len(builds) == 3
    copy = write_pickle(tmp_path / "copy", c)  # the same contents elsewhere (another host)
    np.testing.assert_array_equal(labels(copy), score(c))
    assert len(builds) == 3


def _broken(change):
    content = aligned_pickle(seed=6)
    change(content)
    return content


def _drop(split, key):
    def change(content):
        del content[split][key]

    return change


def _ragged(content):
    audio = list(content["train"]["audio"])
    audio[4] = audio[4][:-1]
    content["train"]["audio"] = audio


def _short_labels(content):
    content["test"]["labels"] = content["test"]["labels"][:-1]


def _nan(content):
    content["valid"]["vision"][2, -1, 3] = np.nan


def _wide(content):
    content["train"]["vision"] = np.zeros((10, 6, 21), np.float32)


def _out_of_range(content):
    content["train"]["labels"][7] = 3.5


def _empty(content):
    content["test"] = {key: value[:0] for key, value in content["test"].items()}


def _scalar_id(content):
    content["train"]["id"] = 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop("valid", "audio"), r"pickle mosi_data.pkl: valid: key 'audio' is missing"),
        (_drop("test", "text"), r"test: key 'text' is missing"),
        (lambda c: c.pop("valid"), r"split 'valid' is missing"),
        (_ragged, r"train/audio example 4 has shape \(5, 5\); example 0 has \(6, 5\)"),
        (_short_labels, r"test/labels has 4 examples but .*test/text has 5: example 4"),
        (_nan, r"valid/vision example 2 has NaN"),
        (_wide, r"train/vision has shape \(10, 6, 21\).*vision_dim"),
        (_out_of_range, r"train/labels example 7 is 3.5, outside \[-3, 3\]"),
        (_empty, r"pickle mosi_data.pkl: test has no examples"),
        (_scalar_id, r"train/id is a int, not one id per example"),
    ],
)
def test_malformed_pickles_name_the_key_and_example(tmp_path, change, message):
    manual = write_pickle(tmp_path / "manual", _broken(change))
    with pytest.raises(ValueError, match=message):
        data.load("cmu_mosi", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert not list((tmp_path / "tfds").rglob("*.array_record-*"))  # never a partial dataset
