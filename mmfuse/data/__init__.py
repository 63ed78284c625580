"""Datasets as tfds builders written to ArrayRecord and read without TensorFlow.

- ``names()``: the catalogue: ``synthetic/<kind>`` (additive, multiplicative, xor,
  redundancy, uniqueness, synergy, mix), ``book_reviews``, ``digits_halves``,
  ``uci_mfeat``, ``cmu_mosi`` and ``cmu_mosei`` (with ``/regression``, ``/binary``,
  ``/seven_class`` label views);
- ``load(name, split="train", *, data_dir=None, **options)``: a split as numpy arrays
  ``{modality: [N, ...], ..., "label": [N]}``, built on first use and cached under
  ``data_dir`` (default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``);
- ``batches(name, split, *, batch_size, shuffle_seed, ...)``: a seeded grain iterator of
  per-modality batches whose state (``get_state`` / ``set_state``) resumes exactly;
- ``info(name, **options)``: the tfds ``DatasetInfo``; its ``metadata`` records every
  generating parameter, seed included;
- ``options(name)``: the options a dataset accepts, with defaults;
- ``num_classes(name, **options)``: the label's class count (None for regression);
- ``splits(name)``: the dataset's split names.

Every dataset's module in ``mmfuse.data.builders`` documents its shapes and sources.
tensorflow_datasets and grain are imported on first use, not by ``import mmfuse``.

>>> from mmfuse import data
>>> xs = data.load("synthetic/xor", "train", sizes=(512, 64, 64), data_dir="/tmp/tfds")
>>> xs["x1"].shape, xs["x2"].shape, xs["label"].shape
((512, 16), (512, 16), (512,))
"""

from mmfuse.data._api import batches, info, load, num_classes, options, splits
from mmfuse.data._catalogue import names

__all__ = ["batches", "info", "load", "names", "num_classes", "options", "splits"]
