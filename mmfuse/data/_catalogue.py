"""The dataset catalogue: name -> (tfds builder, variant, preset read options).

Builders are named by module and class and imported only when a dataset is used, so
that importing ``mmfuse.data`` never imports tensorflow_datasets.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

SYNTHETIC_KINDS = {
    "additive": "each modality carries part of the label; an additive model suffices",
    "multiplicative": "main effects plus a product interaction of the modalities",
    "xor": "label = XOR of one latent bit per modality (pure synergy)",
    "redundancy": "every modality carries the same label information",
    "uniqueness": "only the first modality carries the label",
    "synergy": "label = sign of a product of Gaussian latents (pure synergy)",
    "mix": "redundancy, uniqueness in each modality and synergy together",
}
CMU_LABEL_VIEWS = {
    "regression": "sentiment score in [-3, 3]",
    "binary": "sentiment >= 0",
    "seven_class": "rounded sentiment, 7 classes",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One catalogue name.

    Attributes:
      builder: ``"<module>:<class>"`` in ``mmfuse.data.builders``.
      variant: the builder's preset config.
      read: read options the name fixes (e.g. a label view).
      summary: one line on what the dataset is.
    """

    builder: str
    variant: str
    summary: str
    read: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def builder_class(self) -> Any:
        """Imports and returns the tfds builder class."""
        module, name = self.builder.split(":")
        return getattr(importlib.import_module(f"mmfuse.data.builders.{module}"), name)


def _catalogue() -> dict[str, Entry]:
    entries = {
        f"synthetic/{kind}": Entry("synthetic:Synthetic", kind, f"synthetic: {summary}")
        for kind, summary in SYNTHETIC_KINDS.items()
    }
    entries["book_reviews"] = Entry(
        "book_reviews:BookReviews",
        "default",
        "the lecture's linear case: 300 reviews, score ~ smiling, critic",
    )
    entries["digits_halves"] = Entry(
        "digits_halves:DigitsHalves", "default", "scikit-learn digits, top / bottom halves"
    )
    entries["uci_mfeat"] = Entry(
        "uci_mfeat:UciMfeat", "default", "UCI Multiple Features: 2,000 digits, 6 views"
    )
    for family, cls, title in (
        ("cmu_mosi", "CmuMosi", "CMU-MOSI"),
        ("cmu_mosei", "CmuMosei", "CMU-MOSEI"),
    ):
        builder = f"cmu_mosi:{cls}"
        entries[family] = Entry(builder, "default", f"{title}, label view chosen by label=...")
        for view, summary in CMU_LABEL_VIEWS.items():
            entries[f"{family}/{view}"] = Entry(
                builder, "default", f"{title}: {summary}", read={"label": view}
            )
    return entries


CATALOGUE = _catalogue()


def names() -> tuple[str, ...]:
    """The dataset names, sorted."""
    return tuple(sorted(CATALOGUE))


def resolve(name: str) -> Entry:
    """The catalogue entry of ``name``; an unknown name raises, listing the valid ones."""
    if name not in CATALOGUE:
        raise ValueError(f"unknown dataset {name!r}; datasets: {', '.join(names())}")
    return CATALOGUE[name]
