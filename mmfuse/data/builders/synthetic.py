"""``synthetic/<kind>``: modalities with known interaction structure, randomly projected.

Generative model, for M modalities of widths ``d_1, ..., d_M`` and latent size k:

- latents, per example: a shared block ``c ~ N(0, I_k)`` and a unique block
  ``u_m ~ N(0, I_k)`` per modality; with ``latent="bits"`` the label-bearing
  coordinates ``c[0]``, ``u_m[0]``, ``u_m[1]`` are uniform ±1 bits instead (and
  ``b_m = (1 − u_m[1]) / 2`` is modality m's synergy bit);
- features: ``x_m = [c; u_m] P_m + noise · ε``, with a random projection
  ``P_m ~ N(0, 1 / 2k)`` of shape ``[2k, d_m]`` and ``ε ~ N(0, I)``;
- label score: ``s = redundancy · c[0] + Σ_m uniqueness_m · u_m[0] + synergy · Π_m u_m[1]``
  (a scalar ``uniqueness`` weighs every modality alike);
  the label is ``1[s > 0]`` for two classes, else the score's equal-frequency bin
  among ``num_classes`` (bins from the quantiles of all generated scores, recorded
  in the metadata).

So the redundant part is in every modality, a unique part only in its own, and the
synergistic part in no modality alone: ``Π_m u_m[1]`` is independent of each
``u_m[1]``. With bits, two modalities and one term, the latents' PID is exact:
redundancy 1 bit (``x1 = x2 = y``), uniqueness 1 bit (``y = x1``), synergy 1 bit (XOR).

Kinds (presets; every parameter can be overridden):

| kind | score | structure |
|---|---|---|
| ``additive`` | ``u_1[0] + u_2[0]`` | both modalities help; additive suffices |
| ``multiplicative`` | ``u_1[0] + u_2[0] + u_1[1]·u_2[1]`` | main effects plus a product |
| ``xor`` | ``−u_1[1]·u_2[1]`` on bits: ``y = b_1 XOR b_2`` | pure synergy; each alone at chance |
| ``redundancy`` | ``c[0]`` | each modality alone suffices |
| ``uniqueness`` | ``u_1[0]`` | only the first modality carries the label |
| ``synergy`` | ``u_1[1] · u_2[1]`` on Gaussians | pure synergy, continuous |
| ``mix`` | ``c[0] + u_1[0] + u_2[0] + u_1[1]·u_2[1]`` | all four interactions |

Stored features: ``x1, ..., xM`` float32 ``[d_m]`` and ``label`` int64 in ``[0, C)``.

References:
  Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
  Decomposition Framework", NeurIPS 2023 (generative synthetic PID sets).
  Bertschinger et al., "Quantifying Unique Information", Entropy 2014.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmfuse.data.builders._base import ArrayBuilder, Columns

_COMMON = {
    "widths": (16, 16),
    "latent_dim": 4,
    "noise": 0.1,
    "latent": "gaussian",
    "num_classes": 2,
    "sizes": (8000, 1000, 1000),
    "seed": 0,
}


def _kind(**weights: Any) -> dict[str, Any]:
    return {**_COMMON, "redundancy": 0.0, "uniqueness": 0.0, "synergy": 0.0, **weights}


# A scalar uniqueness weight applies to every modality.
KINDS = {
    "additive": _kind(uniqueness=1.0),
    "multiplicative": _kind(uniqueness=1.0, synergy=1.0),
    "xor": _kind(synergy=-1.0, latent="bits"),
    "redundancy": _kind(redundancy=1.0),
    "uniqueness": _kind(uniqueness=(1.0, 0.0)),
    "synergy": _kind(synergy=1.0),
    "mix": _kind(redundancy=1.0, uniqueness=1.0, synergy=1.0),
}
LATENTS = ("gaussian", "bits")
SPLITS = ("train", "validation", "test")


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"synthetic: {key} must be integers >= {minimum}, got {value!r}")
    return int(value)


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"synthetic: {key} must be a number, got {value!r}")
    return float(value)


def _ints(values: Any, key: str, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not np.iterable(values):
        raise ValueError(f"synthetic: {key} must be a sequence of integers, got {values!r}")
    return tuple(_int(v, key, minimum) for v in values)


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validates and normalizes synthetic parameters (see the module docstring)."""
    params = dict(params)
    widths = _ints(params["widths"], "widths", 1)
    if len(widths) < 2:
        raise ValueError(f"synthetic: widths needs at least 2 modalities, got {widths}")
    params["widths"] = widths
    params["latent_dim"] = _int(params["latent_dim"], "latent_dim", 2)
    params["num_classes"] = _int(params["num_classes"], "num_classes", 2)
    params["seed"] = _int(params["seed"], "seed", 0)
    params["sizes"] = _ints(params["sizes"], "sizes", 1)
    if len(params["sizes"]) != 3:
        raise ValueError(
            f"synthetic: sizes must be 3 counts (train, validation, test), got {params['sizes']}"
        )
    if params["latent"] not in LATENTS:
        raise ValueError(f"synthetic: latent must be one of {LATENTS}, got {params['latent']!r}")
    uniqueness = params["uniqueness"]
    uniqueness = tuple(uniqueness) if np.iterable(uniqueness) else (uniqueness,) * len(widths)
    if len(uniqueness) != len(widths):
        raise ValueError(
            f"synthetic: uniqueness has {len(uniqueness)} weights for {len(widths)} modalities "
            f"(widths={tuple(widths)}); give one per modality, e.g. "
            f"uniqueness={(1.0,) + (0.0,) * (len(widths) - 1)}"
        )
    params["uniqueness"] = tuple(_float(w, "uniqueness") for w in uniqueness)
    for key in ("redundancy", "synergy", "noise"):
        params[key] = _float(params[key], key)
    weights = (params["redundancy"], params["synergy"], *params["uniqueness"])
    if not all(math.isfinite(w) for w in (*weights, params["noise"])) or params["noise"] < 0:
        raise ValueError(
            "synthetic: the weights must be finite and the noise finite and >= 0, got "
            f"redundancy={params['redundancy']}, uniqueness={params['uniqueness']}, "
            f"synergy={params['synergy']}, noise={params['noise']}"
        )
    if not any(weights):
        raise ValueError("synthetic: redundancy, uniqueness and synergy are all zero")
    return params


def generate(params: Mapping[str, Any]) -> tuple[dict[str, Columns], dict[str, Any]]:
    """The splits of a synthetic set and the metadata it derives (class bins).

    Args:
      params: checked parameters (``check_params``).

    Returns:
      ``({split: {"x1": [N, d_1], ..., "label": [N]}}, metadata)``.
    """
    rng = np.random.default_rng(params["seed"])
    widths, k = params["widths"], params["latent_dim"]
    n = sum(params["sizes"])
    projections = [rng.standard_normal((2 * k, d)) / math.sqrt(2 * k) for d in widths]
    shared = rng.standard_normal((n, k))  # [N, k]
    unique = [rng.standard_normal((n, k)) for _ in widths]  # M x [N, k]
    if params["latent"] == "bits":
        shared[:, 0] = 2.0 * rng.integers(0, 2, n) - 1.0
        for u in unique:
            u[:, :2] = 2.0 * rng.integers(0, 2, (n, 2)) - 1.0
    score = params["redundancy"] * shared[:, 0] + params["synergy"] * np.prod(
        [u[:, 1] for u in unique], axis=0
    )
    for weight, u in zip(params["uniqueness"], unique, strict=True):
        score = score + weight * u[:, 0]  # [N]
    metadata: dict[str, Any] = {}
    if params["num_classes"] == 2:
        label = (score > 0).astype(np.int64)
    else:
        edges = np.quantile(score, np.arange(1, params["num_classes"]) / params["num_classes"])
        label = np.searchsorted(edges, score, side="right").astype(np.int64)
        empty = sorted(set(range(params["num_classes"])) - set(np.unique(label).tolist()))
        if empty:  # tied scores share a bin: bits make a score of few distinct values
            raise ValueError(
                f"synthetic: num_classes={params['num_classes']} leaves class(es) "
                f"{', '.join(map(str, empty))} empty: the label score takes only "
                f"{len(np.unique(score))} distinct values with latent={params['latent']!r}; "
                "use latent='gaussian' (equal-frequency bins of a continuous score) or fewer "
                "classes"
            )
        metadata["class_edges"] = [float(e) for e in edges]
    columns: dict[str, np.ndarray] = {}
    for m, (u, projection) in enumerate(zip(unique, projections, strict=True), start=1):
        clean = np.concatenate([shared, u], axis=1) @ projection  # [N, d_m]
        noise = params["noise"] * rng.standard_normal(clean.shape)
        columns[f"x{m}"] = (clean + noise).astype(np.float32)
    columns["label"] = label
    bounds = np.cumsum((0, *params["sizes"]))
    splits = {
        split: {key: value[lo:hi] for key, value in columns.items()}
        for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True)
    }
    return splits, metadata


class Synthetic(ArrayBuilder):
    """``synthetic/<kind>``: seeded sets with known redundancy, uniqueness and synergy.

    See the module docstring for the generative model and the kinds.
    """

    name = "synthetic"
    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = KINDS
    SUMMARY = (
        "Synthetic multimodal classification with known interactions: latent bits or "
        "Gaussians (shared, unique per modality, synergistic), randomly projected to each "
        "modality's width, with Gaussian feature noise."
    )
    CITATION = """@inproceedings{liang2023quantifying,
  title={Quantifying \\& Modeling Multimodal Interactions: An Information Decomposition Framework},
  author={Liang, Paul Pu and Cheng, Yun and Fan, Xiang and Ling, Chun Kai and Nie, Suzanne and
          Chen, Richard and Deng, Zihao and Allen, Nicholas and Auerbach, Randy and
          Mahmood, Faisal and Salakhutdinov, Ruslan and Morency, Louis-Philippe},
  booktitle={Advances in Neural Information Processing Systems},
  year={2023}
}"""

    @classmethod
    def check_params(cls, variant: str, params: dict[str, Any]) -> dict[str, Any]:
        return check_params(params)

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(f"x{m}" for m in range(1, len(params["widths"]) + 1))

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        return params["num_classes"]

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        features: dict[str, tfds.features.FeatureConnector] = {
            f"x{m}": tfds.features.Tensor(shape=(d,), dtype=np.float32)
            for m, d in enumerate(params["widths"], start=1)
        }
        features["label"] = tfds.features.ClassLabel(num_classes=params["num_classes"])
        return features

    def metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "score": "redundancy*c[0] + sum_m uniqueness[m]*u_m[0] + synergy*prod_m u_m[1]",
            "features": "x_m = [c; u_m] @ P_m + noise*eps, P_m ~ N(0, 1/(2*latent_dim))",
        }

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        splits, metadata = generate(params)
        self.info.metadata.update(metadata)
        return splits
