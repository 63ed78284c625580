"""``digits_halves``: scikit-learn's handwritten digits, top and bottom halves as two modalities.

The 1,797 8×8 digit images bundled with scikit-learn (UCI "Optical Recognition of
Handwritten Digits", 32×32 bitmaps of 43 writers downsampled to 4×4-block counts
0..16) are cut into their top four rows and bottom four rows. Each half alone leaves
some digits ambiguous, so the halves carry unique as well as redundant information
about the label.

Stored features: ``top`` and ``bottom`` float32 ``[32]`` (four image rows, row-major,
scaled to [0, 1] by 1/16) and ``label`` int64 in ``[0, 10)``. Splits, fixed: per
class 70% / 10% / 20% (train 1,258, validation 180, test 359), drawn with
``np.random.default_rng(0)``.

References:
  Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
  Learning Repository, 1998. Pedregosa et al., "Scikit-learn: Machine Learning in
  Python", JMLR 2011 (``sklearn.datasets.load_digits``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmfuse.data.builders._base import ArrayBuilder, Columns, stratified_split

NUM_CLASSES = 10
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 0


def generate() -> dict[str, Columns]:
    """``{split: {"top": [N, 32], "bottom": [N, 32], "label": [N]}}``."""
    from sklearn.datasets import load_digits  # imported here: only this dataset needs it

    digits = load_digits()
    images = np.asarray(digits.images, np.float32) / 16.0  # [1797, 8, 8]
    labels = np.asarray(digits.target, np.int64)
    columns = {
        "top": images[:, :4].reshape(len(images), 32),  # [N, 32]
        "bottom": images[:, 4:].reshape(len(images), 32),  # [N, 32]
        "label": labels,
    }
    parts = stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED)
    return {
        split: {k: v[rows] for k, v in columns.items()}
        for split, rows in zip(("train", "validation", "test"), parts, strict=True)
    }


class DigitsHalves(ArrayBuilder):
    """``digits_halves``: the top and bottom halves of scikit-learn's digits (module docstring)."""

    name = "digits_halves"
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    SUMMARY = (
        "scikit-learn's 8x8 handwritten digits split into top and bottom halves as two "
        "modalities; fixed stratified train/validation/test splits."
    )
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
    CITATION = """@misc{alpaydin1998optical,
  title={Optical Recognition of Handwritten Digits},
  author={Alpaydin, E. and Kaynak, C.},
  howpublished={UCI Machine Learning Repository},
  year={1998}
}
@article{pedregosa2011scikit,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}"""

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        return ("top", "bottom")

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        return NUM_CLASSES

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "top": tfds.features.Tensor(shape=(32,), dtype=np.float32),
            "bottom": tfds.features.Tensor(shape=(32,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }

    def metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"split_fractions": list(SPLIT_FRACTIONS), "split_seed": SPLIT_SEED}

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        return generate()
