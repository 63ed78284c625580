"""Datasets in memory for the trainers: a config's ``data`` section turned into a ``Task``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments import _config
from mmfuse import data

# datasets whose views come in very different units: z-scored unless a config says otherwise
STANDARDIZED_BY_DEFAULT = ("uci_mfeat",)
# one training example: enough to learn a dataset's modalities, shapes and classes
PROBE_SPLIT = "train[:1]"
SPLITS = ("train", "validation", "test")  # what the trainers of models load


def check_splits(name: str) -> None:
    """Checks that dataset ``name`` has the ``SPLITS`` a trainer of models needs (a check
    of its catalogue entry: nothing is built)."""
    has = data.splits(name)
    if not set(SPLITS) <= set(has):
        raise ValueError(
            f"{name}: the trainers train on train, pick the best step on validation and "
            f"report test, but {name} has only {', '.join(has)}"
        )


@dataclasses.dataclass(frozen=True)
class Task:
    """A dataset's splits in memory and what is predicted.

    Attributes:
      name: the dataset's catalogue name.
      modalities: the modality keys, in order.
      splits: ``{split: {modality: [N, ...], ..., "label": [N]}}``.
      num_classes: the number of classes, or ``None`` for a regression target.
    """

    name: str
    modalities: tuple[str, ...]
    splits: dict[str, dict[str, np.ndarray]]
    num_classes: int | None

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes is None else self.num_classes

    @property
    def metric(self) -> str:
        """The headline metric: accuracy for classes, MSE for a regression target."""
        return "mse" if self.num_classes is None else "accuracy"

    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        return tuple(self.splits[split][m] for m in self.modalities)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-example shapes ``(..., d_m)`` of the modalities."""
        first = next(iter(self.splits.values()))
        return tuple(first[m].shape[1:] for m in self.modalities)


def load_task(
    name: str,
    *,
    splits: Sequence[str] = SPLITS,
    options: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    modalities: Sequence[str] | None = None,
) -> Task:
    """Loads ``splits`` of dataset ``name`` (built on first use) into memory.

    ``modalities`` keeps a subset of the stored modalities (e.g. two views of
    ``uci_mfeat``), in the order given.
    """
    options = dict(options or {})
    repeated = sorted({m for m in modalities or () if list(modalities).count(m) > 1})
    if repeated:
        raise ValueError(
            f"{name}: modalities {tuple(modalities)} list {', '.join(repeated)} more than once"
        )

    def load_splits() -> dict[str, dict[str, np.ndarray]]:
        return {
            s: data.load(name, s, data_dir=data_dir or None, **options)
            for s in dict.fromkeys(splits)
        }

    # In a multi-process run process 0 builds a missing dataset (the data folder is
    # usually shared) while the others wait, then they read it.
    first = jax.process_index() == 0
    loaded = load_splits() if first else None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"mmfuse: {name} built")
    if not first:
        loaded = load_splits()
    stored = tuple(k for k in next(iter(loaded.values())) if k != "label")
    if modalities:
        missing = [m for m in modalities if m not in stored]
        if missing:
            raise ValueError(
                f"{name}: no modality {', '.join(missing)}; its modalities: {', '.join(stored)}"
            )
        keep = tuple(modalities)
    else:
        keep = stored
    splits_out = {
        s: {**{m: arrays[m] for m in keep}, "label": arrays["label"]}
        for s, arrays in loaded.items()
    }
    # The declared count, not max(label) + 1: a split or a small file may lack the top class.
    return Task(name, keep, splits_out, data.num_classes(name, **options))


def standardized(task: Task, reference: str = "train") -> Task:
    """``task`` with each modality z-scored per feature by the ``reference`` split's statistics.

    Real views come in wildly different units (``uci_mfeat``'s morphological features
    reach 10^4, its Fourier coefficients stay below 1). Statistics are computed in
    float64; a feature constant on the reference split is only centred (it is 0 there),
    since its float32 standard deviation is rounding error, not a scale.
    In sequences ``[N, T, d]`` the all-zero steps are padding: they are left out of the
    statistics and stay zero, so that the encoders still see them as padding.
    """

    def steps(x: np.ndarray) -> np.ndarray:  # [N, ...]: which steps are real
        return np.any(x != 0, axis=-1) if x.ndim > 2 else np.ones(x.shape[:-1], bool)

    splits = {}
    ref = task.splits[reference]
    stats = {}
    for m in task.modalities:
        real = ref[m][steps(ref[m])].astype(np.float64)  # [steps, d_m]
        constant = real.min(axis=0) == real.max(axis=0)
        stats[m] = (real.mean(axis=0), np.where(constant, 1.0, real.std(axis=0)))
    for split, arrays in task.splits.items():
        scaled = {}
        for m, (mean, scale) in stats.items():
            z = (arrays[m] - mean) / scale
            scaled[m] = np.where(steps(arrays[m])[..., None], z, 0.0).astype(arrays[m].dtype)
        splits[split] = {**arrays, **scaled}
    return dataclasses.replace(task, splits=splits)


def dataset_options(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The options of dataset ``cfg.name`` that a config's ``data`` section sets.

    ``cfg.options`` entries left ``None`` keep the dataset's defaults; only options that
    differ from those are returned (the defaults keep the dataset's preset cache).

    Raises:
      ValueError: an option set that dataset ``cfg.name`` does not have.
    """
    defaults = data.options(cfg.name)
    set_here = {k: v for k, v in _config.plain(cfg.get("options", {})).items() if v is not None}
    foreign = sorted(set(set_here) - set(defaults))
    if foreign:
        raise ValueError(
            f"config.data.options sets {', '.join(foreign)}, not options of {cfg.name} (its "
            f"options: {', '.join(sorted(defaults)) or 'none'}); pick the dataset with the "
            "config's variant (e.g. configs/supervised.py:tensor,digits_halves) to get its "
            "options"
        )
    return {k: v for k, v in set_here.items() if v != defaults[k]}


def task_from_config(cfg: ml_collections.ConfigDict, splits: Sequence[str]) -> Task:
    """``load_task`` from a config's ``data`` section (name, options, data_dir, modalities),
    ``standardized`` by the first of ``splits`` where ``cfg.standardize`` is set (unset:
    for the datasets in ``STANDARDIZED_BY_DEFAULT``).

    ``cfg.options`` may list options unset (``None``: the dataset's default), so that a
    command line can set each; those set are passed on (``dataset_options``).
    """
    task = load_task(
        cfg.name,
        splits=splits,
        options=dataset_options(cfg),
        data_dir=cfg.get("data_dir"),
        modalities=tuple(cfg.get("modalities", ()) or ()),
    )
    standardize = cfg.get("standardize")
    if standardize is None:
        standardize = cfg.name in STANDARDIZED_BY_DEFAULT
    return standardized(task, splits[0]) if standardize else task
