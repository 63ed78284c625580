"""Seeded, stateless batch sampling over in-memory arrays: the batch is a function of the step."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np


def is_count(value: Any) -> bool:
    """An integer >= 1 (numpy's included; ``True`` is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


class EpochSampler:
    """Batches of example indices; every epoch is a fresh permutation of all examples.

    The batch of step ``s`` depends only on ``(seed, s)``: epoch ``s // steps_per_epoch``
    is permuted by a generator seeded with ``(seed, epoch)``, and step ``s`` takes its
    ``s % steps_per_epoch``-th slice. A resumed run therefore needs only its step to
    continue with exactly the batches an uninterrupted run would have seen; the
    sampler itself has no state to checkpoint. Each epoch drops its last
    ``num_examples % batch_size`` (differently chosen) examples so that every batch
    has the same shape (one compiled train step).

    Args:
      num_examples: N, the size of the training split.
      batch_size: B, at most N.
      seed: the data-order seed.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if not is_count(batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > num_examples:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training split ({num_examples} "
                "examples)"
            )
        self.num_examples = num_examples
        self.batch_size = int(batch_size)
        self.seed = seed
        self.steps_per_epoch = num_examples // batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng((self.seed, epoch))
            self._cached = (epoch, rng.permutation(self.num_examples))
        return self._cached[1]

    def indices(self, step: int) -> np.ndarray:
        """The example indices ``[B]`` of step ``step`` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]

    def batch(self, arrays: Mapping[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
        """``{key: array[indices(step)]}`` for every array ``[N, ...]`` in ``arrays``."""
        idx = self.indices(step)
        return {key: value[idx] for key, value in arrays.items()}
