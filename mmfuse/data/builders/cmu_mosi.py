"""``cmu_mosi`` and ``cmu_mosei``: sentiment of opinion video segments from word-aligned features.

Built from the standard word-aligned features pickle (``mosi_data.pkl``,
``mosei_senti_data.pkl``), which has to be put in the manual directory: a dict with
splits ``train``, ``valid`` and ``test``, each holding

- ``text`` ``[N, T, 300]`` (GloVe word vectors), ``audio`` ``[N, T, d_a]`` (COVAREP),
  ``vision`` ``[N, T, d_v]`` (Facet), aligned to the words and left-padded with zeros
  to ``T`` steps (T = 50); ``d_a, d_v`` are 5, 20 for MOSI and 74, 35 for MOSEI;
- ``labels`` ``[N, 1, 1]``, the sentiment score in ``[-3, 3]``;
- ``id`` (optional) the segment ids.

Each example's leading steps before its first word (the first non-zero ``text``
step) are dropped, so the stored sequences are ``[L_i, d]`` with ``L_i ≤ T``; reading
left-pads them again with zeros to the longest ``L_i`` of the dataset (recorded as
``max_length`` in the metadata), so that arrays stack and ``SequenceEncoder`` can
mask the padding. Infinite feature values (the MOSI audio features have some −inf)
are set to 0, as the reference loaders do, and counted in the metadata; a NaN,
a missing key or ragged shapes raise an error naming the key and the example.

Splits: ``train``, ``validation`` (the pickle's ``valid``), ``test``. Stored
features: ``text``, ``audio``, ``vision`` float32 ``[L, d]``, ``score`` float32,
``id`` text. Label views (read option ``label``, or the catalogue names
``cmu_mosi/<view>``):

- ``regression``: the score, float32 in ``[-3, 3]``;
- ``binary``: 1 if the score is ≥ 0 (non-negative) else 0;
- ``seven_class``: ``round(clip(score, -3, 3)) + 3`` in ``[0, 7)`` (numpy rounding).

Reading the pickle unpickles it: only use files from a source you trust.

References:
  Zadeh, Zellers, Pincus & Morency, "Multimodal Sentiment Intensity Analysis in Videos:
  Facial Gestures and Verbal Messages", IEEE Intelligent Systems 31(6), 2016 (CMU-MOSI).
  Zadeh, Liang, Poria, Cambria & Morency, "Multimodal Language Analysis in the Wild:
  CMU-MOSEI Dataset and Interpretable Dynamic Fusion Graph", ACL 2018 (CMU-MOSEI).
  Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language Sequences",
  ACL 2019 (the aligned-features pickles).
"""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmfuse.data.builders._base import ArrayBuilder, Columns, View

MODALITIES = ("text", "audio", "vision")
PICKLE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
SCORE_RANGE = 3.0
# label view -> its class count (None: a regression target)
CLASSES = {"regression": None, "binary": 2, "seven_class": 2 * int(SCORE_RANGE) + 1}
LABEL_VIEWS = tuple(CLASSES)


def label_view(score: Any, view: str) -> np.ndarray:
    """The label of a score ``[...]`` under a label view."""
    score = np.asarray(score, np.float32)
    if view == "regression":
        return score
    if view == "binary":
        return (score >= 0).astype(np.int64)
    return (np.round(np.clip(score, -SCORE_RANGE, SCORE_RANGE)) + SCORE_RANGE).astype(np.int64)


def _stack(value: Any, where: str) -> np.ndarray:
    """A per-example array, or a sequence of them, as one float32 array; ragged raises."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.astype(np.float32, copy=False)
    if not isinstance(value, (Sequence, np.ndarray)) or isinstance(value, (str, bytes)):
        raise ValueError(f"{where} is a {type(value).__name__}, not an array of examples")
    first = None
    rows = []
    for i, item in enumerate(value):
        try:
            row = np.asarray(item, np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} example {i} is not numeric: {error}") from None
        if first is None:
            first = row.shape
        elif row.shape != first:
            raise ValueError(f"{where} example {i} has shape {row.shape}; example 0 has {first}")
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0,), np.float32)


def _ids(value: Any, n: int, where: str) -> list[str]:
    def text(part: Any) -> str:
        return part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part)

    if not isinstance(value, (Sequence, np.ndarray)) or isinstance(value, (str, bytes)):
        raise ValueError(f"{where} is a {type(value).__name__}, not one id per example")
    ids = []
    for item in value:
        parts = np.asarray(item, dtype=object).reshape(-1)
        ids.append("_".join(text(p) for p in parts))
    if len(ids) != n:
        raise ValueError(
            f"{where} has {len(ids)} examples but text has {n}: example {min(len(ids), n)} is "
            "missing from one of them"
        )
    return ids


def check_split(
    split: Mapping[str, Any], name: str, widths: Mapping[str, int]
) -> tuple[dict[str, Any], dict[str, int], int]:
    """Validates one pickle split and trims each example's leading padding.

    Args:
      split: the pickle's dict for one split.
      name: ``"<dataset> pickle: <split>"``, to name where an error is.
      widths: the expected feature width of each modality.

    Returns:
      ``(columns, infinite_counts, T)``: ``text/audio/vision`` as lists of ``[L_i, d]``
      arrays, ``score`` ``[N]`` and ``id``; how many infinite values were set to 0 per
      modality; the padded length T.
    """
    if not isinstance(split, Mapping):
        raise ValueError(f"{name} is a {type(split).__name__}, not a dict of arrays")
    for key in (*MODALITIES, "labels"):
        if key not in split:
            raise ValueError(f"{name}: key {key!r} is missing (keys: {', '.join(map(str, split))})")
    arrays = {key: _stack(split[key], f"{name}/{key}") for key in (*MODALITIES, "labels")}
    n, steps = len(arrays["text"]), None
    if n == 0:
        raise ValueError(f"{name} has no examples")
    for key, array in arrays.items():
        if len(array) != n:
            raise ValueError(
                f"{name}/{key} has {len(array)} examples but {name}/text has {n}: example "
                f"{min(len(array), n)} is missing from one of them"
            )
        if key == "labels":
            continue
        if array.ndim != 3 or array.shape[-1] != widths[key]:
            raise ValueError(
                f"{name}/{key} has shape {array.shape}; expected [N, T, {widths[key]}] "
                f"(a file with other widths: pass {key}_dim=...)"
            )
        if steps is not None and array.shape[1] != steps:
            raise ValueError(f"{name}/{key} has {array.shape[1]} steps; text has {steps}")
        steps = array.shape[1]
    counts = {}
    for key, array in arrays.items():
        nan = np.isnan(array).reshape(n, -1).any(axis=1)
        if nan.any():
            raise ValueError(f"{name}/{key} example {int(np.flatnonzero(nan)[0])} has NaN values")
        if key != "labels":
            infinite = np.isinf(array)
            counts[key] = int(infinite.sum())
            arrays[key] = np.where(infinite, np.float32(0), array)
    labels = arrays["labels"]
    if labels.size != n:
        raise ValueError(f"{name}/labels has shape {labels.shape}; expected [N, 1, 1]")
    score = labels.reshape(n)
    outside = np.flatnonzero(~(np.abs(score) <= SCORE_RANGE))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"{name}/labels example {i} is {score[i]}, outside [-3, 3]")
    ids = _ids(split["id"], n, f"{name}/id") if "id" in split else [str(i) for i in range(n)]
    spoken = np.any(arrays["text"] != 0, axis=2)  # [N, T]
    starts = np.where(spoken.any(axis=1), spoken.argmax(axis=1), steps or 0)  # [N]
    columns: dict[str, Any] = {
        key: [arrays[key][i, s:] for i, s in enumerate(starts)] for key in MODALITIES
    }
    columns["score"] = score.astype(np.float32)
    columns["id"] = ids
    return columns, counts, steps or 0


def read_pickle(path: Any) -> Any:
    """Unpickles the features file (Python 2 pickles too).

    Raises:
      ValueError: the file is not a pickle, or is cut short (naming the file).
    """
    with open(path, "rb") as f:
        try:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:
                f.seek(0)
                return pickle.load(f, encoding="latin1")
        except Exception as error:  # unpickling a foreign file can raise almost anything
            raise ValueError(
                f"{path} is not a readable pickle ({type(error).__name__}: {error}); a "
                "truncated download, or a file of another format?"
            ) from error


class _CmuBuilder(ArrayBuilder, skip_registration=True):
    """Shared by ``cmu_mosi`` and ``cmu_mosei``: build from the aligned-features pickle."""

    TITLE: str = ""
    READ_OPTIONS: ClassVar[dict[str, Any]] = {"label": "regression"}

    @classmethod
    def check_params(cls, variant: str, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        if not isinstance(params["filename"], str) or not params["filename"]:
            raise ValueError(
                f"{cls.name}: filename must be a file name, got {params['filename']!r}"
            )
        for key in MODALITIES:
            dim = params[f"{key}_dim"]
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
                raise ValueError(f"{cls.name}: {key}_dim must be a positive integer, got {dim!r}")
            params[f"{key}_dim"] = int(dim)
        return params

    @classmethod
    def check_read(cls, params: Mapping[str, Any], read: dict[str, Any]) -> dict[str, Any]:
        view = read.get("label", "regression")
        if view not in LABEL_VIEWS:
            raise ValueError(
                f"{cls.name}: label must be one of {', '.join(LABEL_VIEWS)}; got {view!r}"
            )
        return {**read, "label": view}

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        return MODALITIES

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        return CLASSES[read["label"]]

    @classmethod
    def view(
        cls, params: Mapping[str, Any], read: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> View:
        length, labels = int(metadata["max_length"]), read["label"]

        def apply(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
            out = {}
            for key in MODALITIES:
                x = np.asarray(record[key], np.float32)  # [L, d]
                pad = np.zeros((length - len(x), x.shape[1]), np.float32)
                out[key] = np.concatenate([pad, x])  # [max_length, d]
            out["label"] = label_view(record["score"], labels)
            return out

        return apply

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        features: dict[str, tfds.features.FeatureConnector] = {
            key: tfds.features.Tensor(shape=(None, params[f"{key}_dim"]), dtype=np.float32)
            for key in MODALITIES
        }
        features["score"] = tfds.features.Scalar(dtype=np.float32, doc="sentiment in [-3, 3]")
        features["id"] = tfds.features.Text()
        return features

    def missing_file_message(self, path: Any) -> str:
        return (
            f"{self.name}: the aligned-features pickle {path} does not exist.\n"
            f"Put {self.params['filename']} in {self.manual_dir} (or pass "
            "manual_dir=<folder holding it> to mmfuse.data.load / batches / info; "
            "filename=... for another name).\n"
            f"How to get it: {self.TITLE} word-aligned features are distributed as "
            f"{self.params['filename']} with the Multimodal Transformer (MulT, Tsai et al. "
            "2019) code release (its data archive of aligned features), and can be rebuilt "
            "with the CMU-MultimodalSDK (github.com/A2Zadeh/CMU-MultimodalSDK): GloVe text, "
            "COVAREP audio and Facet vision features aligned to the words, 50 steps, splits "
            "train/valid/test."
        )

    def source_file(self, params: Mapping[str, Any]) -> pathlib.Path:
        return self.manual_dir / params["filename"]

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        path = self.source_file(params)
        if not path.is_file():
            raise FileNotFoundError(self.missing_file_message(path))
        data = read_pickle(path)
        where = f"{self.name} pickle {path.name}"
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} holds a {type(data).__name__}, not a dict of splits")
        widths = {key: params[f"{key}_dim"] for key in MODALITIES}
        splits, infinite, steps = {}, {}, 0
        for split, key in PICKLE_SPLITS.items():
            if key not in data:
                raise ValueError(
                    f"{where}: split {key!r} is missing (keys: {', '.join(map(str, data))})"
                )
            splits[split], infinite[split], t = check_split(data[key], f"{where}: {key}", widths)
            steps = max(steps, t)
        lengths = [len(x) for columns in splits.values() for x in columns["text"]]
        self.info.metadata.update(
            max_length=max(lengths, default=0),
            sequence_length=steps,
            infinite_values_set_to_zero=infinite,
        )
        return splits


class CmuMosi(_CmuBuilder):
    """``cmu_mosi``: CMU-MOSI, 2,199 opinion segments (module docstring)."""

    name = "cmu_mosi"
    TITLE = "CMU-MOSI"
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {"filename": "mosi_data.pkl", "text_dim": 300, "audio_dim": 5, "vision_dim": 20}
    }
    SUMMARY = (
        "CMU-MOSI: sentiment intensity in [-3, 3] of 2,199 opinion video segments, with "
        "word-aligned text (GloVe), audio (COVAREP) and vision (Facet) features."
    )
    HOMEPAGE = "http://multicomp.cs.cmu.edu/resources/cmu-mosi-dataset/"
    CITATION = """@article{zadeh2016mosi,
  title={Multimodal Sentiment Intensity Analysis in Videos: Facial Gestures and Verbal Messages},
  author={Zadeh, Amir and Zellers, Rowan and Pincus, Eli and Morency, Louis-Philippe},
  journal={IEEE Intelligent Systems},
  volume={31},
  number={6},
  pages={82--88},
  year={2016}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put mosi_data.pkl (word-aligned CMU-MOSI features) here."


class CmuMosei(_CmuBuilder):
    """``cmu_mosei``: CMU-MOSEI, about 23,000 opinion segments (module docstring)."""

    name = "cmu_mosei"
    TITLE = "CMU-MOSEI"
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {
            "filename": "mosei_senti_data.pkl",
            "text_dim": 300,
            "audio_dim": 74,
            "vision_dim": 35,
        }
    }
    SUMMARY = (
        "CMU-MOSEI: sentiment intensity in [-3, 3] of about 23,000 opinion video segments "
        "from 1,000 speakers, with word-aligned text, audio and vision features."
    )
    HOMEPAGE = "http://multicomp.cs.cmu.edu/resources/cmu-mosei-dataset/"
    CITATION = """@inproceedings{zadeh2018mosei,
  title={Multimodal Language Analysis in the Wild: {CMU-MOSEI} Dataset and Interpretable
         Dynamic Fusion Graph},
  author={Zadeh, AmirAli Bagher and Liang, Paul Pu and Poria, Soujanya and Cambria, Erik and
          Morency, Louis-Philippe},
  booktitle={Proceedings of the 56th Annual Meeting of the Association for Computational
             Linguistics},
  pages={2236--2246},
  year={2018}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put mosei_senti_data.pkl (word-aligned CMU-MOSEI features) here."
    )
