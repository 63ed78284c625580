"""``book_reviews``: the lecture's linear fusion case, 300 generated book reviews.

Each review has the reviewer's smiling ``x_A`` (the lecture's units, mean ≈ 0.97),
whether the reviewer is a professional critic ``x_B ∈ {0, 1}``, and the audience
score ``y``. The lecture fits three regressions:

| model | w0 | w1 | w2 | w3 |
|---|---|---|---|---|
| y ~ x_A | 4.63 | 1.20 | – | – |
| y ~ x_A + x_B | 5.29 | 1.19 | −1.69 | – |
| y ~ x_A + x_B + x_A·x_B | 5.79 | 0.68 | −2.94 | 1.29 |

Generator: the third row is the true model, ``y = 5.79 + 0.68 x_A − 2.94 x_B +
1.29 x_A x_B + ε`` with ``ε ~ N(0, noise²)``; ``x_A ~ Gamma(6, 0.97 / 6)``
independent of ``x_B``; exactly ``round(0.395 n)`` reviewers are critics. For
independent ``x_A`` and ``x_B`` the smaller models are the projections of the full
one: ``y ~ x_A + x_B`` has ``w0 = 5.79 − 1.29 p μ``, ``w1 = 0.68 + 1.29 p``,
``w2 = −2.94 + 1.29 μ``, and ``y ~ x_A`` has ``w0 = 5.79 − 2.94 p``, ``w1 = 0.68 + 1.29 p``,
with ``p = P(critic) = 0.395`` and ``μ = E[x_A] = 0.97``: 5.30, 1.19, −1.69 and
4.63, 1.19, the published rows up to rounding (the published 1.20 in the first row
suggests a slight correlation in the original data).

Stored features: ``smiling`` float32 ``[1]``, ``critic`` float32 ``[1]`` (0 or 1) and
``label`` float32 (the score). One split, ``train``.

References:
  P. Liang, Multimodal AI, Lecture 4.1 "Multimodal Fusion" (the linear fusion case).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmfuse.data.builders._base import ArrayBuilder, Columns

TRUE_WEIGHTS = {"intercept": 5.79, "smiling": 0.68, "critic": -2.94, "smiling_x_critic": 1.29}
P_CRITIC = 0.395
SMILING_MEAN = 0.97
SMILING_SHAPE = 6.0
PUBLISHED = {
    "y ~ x_A": (4.63, 1.20),
    "y ~ x_A + x_B": (5.29, 1.19, -1.69),
    "y ~ x_A + x_B + x_A*x_B": (5.79, 0.68, -2.94, 1.29),
}


def generate(n: int, noise: float, seed: int) -> dict[str, np.ndarray]:
    """``{"smiling": [n, 1], "critic": [n, 1], "label": [n]}`` from the true model."""
    rng = np.random.default_rng(seed)
    smiling = rng.gamma(SMILING_SHAPE, SMILING_MEAN / SMILING_SHAPE, n)  # [n]
    critic = np.zeros(n)
    critic[rng.permutation(n)[: round(P_CRITIC * n)]] = 1.0
    w = TRUE_WEIGHTS
    score = (
        w["intercept"]
        + w["smiling"] * smiling
        + w["critic"] * critic
        + w["smiling_x_critic"] * smiling * critic
        + noise * rng.standard_normal(n)
    )
    return {
        "smiling": smiling[:, None].astype(np.float32),
        "critic": critic[:, None].astype(np.float32),
        "label": score.astype(np.float32),
    }


class BookReviews(ArrayBuilder):
    """``book_reviews``: smiling and critic status vs audience score (see the module docstring)."""

    name = "book_reviews"
    SPLITS = ("train",)
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"default": {"n": 300, "noise": 0.5, "seed": 0}}
    SUMMARY = (
        "The lecture's linear fusion case: audience score of a book review against the "
        "reviewer's smiling and critic status, generated so that the lecture's three "
        "regressions come out near the published estimates."
    )
    CITATION = """@misc{liang2023multimodal,
  title={Multimodal AI, Lecture 4.1: Multimodal Fusion},
  author={Liang, Paul Pu},
  year={2023}
}"""

    @classmethod
    def check_params(cls, variant: str, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        for key, minimum in (("n", 4), ("seed", 0)):
            value = params[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < minimum
            ):
                raise ValueError(
                    f"book_reviews: {key} must be an integer >= {minimum}, got {value!r}"
                )
            params[key] = int(value)
        noise = params["noise"]
        if (
            isinstance(noise, bool)
            or not isinstance(noise, numbers.Real)
            or not noise >= 0
            or not np.isfinite(noise)
        ):
            raise ValueError(f"book_reviews: noise must be a finite number >= 0, got {noise!r}")
        params["noise"] = float(noise)
        return params

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        return ("smiling", "critic")

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        return None  # the audience score is a regression target

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "smiling": tfds.features.Tensor(shape=(1,), dtype=np.float32),
            "critic": tfds.features.Tensor(shape=(1,), dtype=np.float32),
            "label": tfds.features.Scalar(dtype=np.float32, doc="audience score"),
        }

    def metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "true_weights": TRUE_WEIGHTS,
            "p_critic": P_CRITIC,
            "smiling": f"Gamma(shape={SMILING_SHAPE}, scale={SMILING_MEAN}/{SMILING_SHAPE})",
            "published": {k: list(v) for k, v in PUBLISHED.items()},
        }

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        return {"train": generate(params["n"], params["noise"], params["seed"])}
