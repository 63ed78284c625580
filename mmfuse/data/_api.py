"""``load``, ``batches``, ``info`` and ``options``: datasets by catalogue name.

tensorflow_datasets and grain are imported inside these functions, on first use.
"""

from __future__ import annotations

import numbers
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfuse.data._catalogue import Entry, resolve

if TYPE_CHECKING:
    import grain
    import tensorflow_datasets as tfds

PathLike = str | os.PathLike
_SPLIT_PART = re.compile(r"^(\w+)(\[[^\]]*\])?$")  # tfds takes no spaces around parts


def options(name: str) -> dict[str, Any]:
    """Every option ``load(name, ...)`` accepts, with its default for ``name``.

    Build options (seed, sizes, widths, noise, ...) choose the data and its cache
    folder; read options (``views``, ``label``) choose what is read from it.
    """
    entry = resolve(name)
    cls = entry.builder_class()
    return {**cls.VARIANTS[entry.variant], **cls.READ_OPTIONS, **entry.read}


def splits(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` has (``book_reviews``: ``train`` only); nothing is built.

    >>> splits("digits_halves")
    ('train', 'validation', 'test')
    """
    return tuple(resolve(name).builder_class().SPLITS)


def num_classes(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    **options: Any,
) -> int | None:
    """How many classes ``load(name, **options)["label"]`` has; None for a regression target.

    The count is declared by the dataset, not read off the data, so it holds for every
    split, even one (or a small source file) where some class never occurs. Nothing is
    built or read: ``data_dir`` and ``manual_dir`` are accepted so that the keyword
    arguments of a ``load`` call can be passed unchanged, and are not used.

    >>> num_classes("cmu_mosi/seven_class"), num_classes("book_reviews")
    (7, None)
    """
    cls, config, read = _configure(name, options)
    return cls.num_classes(config.params, read)


def _configure(name: str, overrides: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """The builder class of ``name``, its checked build config and its read options."""
    entry = resolve(name)
    cls = entry.builder_class()
    build, read = _split_options(name, entry, cls, overrides)
    config = cls.make_config(entry.variant, **build)
    return cls, config, cls.check_read(config.params, read)


def _split_options(
    name: str, entry: Entry, cls: Any, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    build_keys, read_keys = set(cls.VARIANTS[entry.variant]), set(cls.READ_OPTIONS)
    unknown = sorted(set(overrides) - build_keys - read_keys)
    if unknown:
        valid = sorted(build_keys | read_keys)
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(valid) or '(none)'}"
        )
    for key, value in entry.read.items():
        if key in overrides and overrides[key] != value:
            family = name.split("/")[0]
            raise ValueError(
                f"{name} fixes {key}={value!r}; for {key}={overrides[key]!r} use "
                f"{family!r} with {key}=... or another {family}/<{key}> name"
            )
    build = {k: v for k, v in overrides.items() if k in build_keys}
    read = {**entry.read, **{k: v for k, v in overrides.items() if k in read_keys}}
    return build, read


def _integer(value: Any) -> bool:
    """An integer, numpy's included (``True`` is not one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_split(name: str, splits: Sequence[str], split: Any) -> None:
    valid = (*splits, "all")
    parts = split.split("+") if isinstance(split, str) else [None]
    for part in parts:
        match = _SPLIT_PART.match(part) if isinstance(part, str) else None
        if match is None or match.group(1) not in valid:
            example = f"{splits[0]}[:10%]" + (f"+{splits[1]}" if len(splits) > 1 else "")
            raise ValueError(
                f"{name}: unknown split {split!r}; splits: {', '.join(splits)} (or 'all', or "
                f"tfds split expressions over them such as {example!r})"
            )
        if match.group(1) == "all" and match.group(2):
            raise ValueError(f"{name}: split {split!r}: 'all' takes no slice; slice each split")


def _data_dir(data_dir: PathLike | None) -> pathlib.Path:
    if data_dir is None or data_dir == "":  # "" as unset, as a config's data.data_dir
        data_dir = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(data_dir).expanduser()


_EVERY_SPLIT = object()  # ``info``'s split: a dict of every split's data source


def _open(
    name: str,
    split: Any,
    data_dir: PathLike | None,
    manual_dir: PathLike | None,
    overrides: Mapping[str, Any],
) -> tuple[Any, Any, tuple[str, ...]]:
    """Builds ``name`` if needed; returns its tfds data source(s), record view and modalities."""
    cls, config, read = _configure(name, overrides)
    if split is _EVERY_SPLIT:
        split = None  # tfds's "every split"
    else:
        _check_split(name, cls.SPLITS, split)

    import tensorflow_datasets as tfds

    root = _data_dir(data_dir)
    manual = root / "downloads" / "manual" if manual_dir is None else pathlib.Path(manual_dir)
    manual = manual.expanduser()
    preset = any(c.name == config.name for c in cls.BUILDER_CONFIGS)

    def make_builder() -> Any:
        return tfds.builder(
            cls.name,
            data_dir=os.fspath(root),
            config=config.name if preset else config,
            file_format="array_record",
            manual_dir=manual,
        )

    builder = make_builder()
    # a build from another version of a user-supplied file is replaced, not read stale
    stale = builder.is_prepared() and builder.is_stale()
    mode = tfds.download.GenerateMode
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual),
            download_mode=mode.REUSE_CACHE_IF_EXISTS if stale else mode.REUSE_DATASET_IF_EXISTS,
        )
    )
    if stale:  # read the new build's info
        builder = make_builder()
    # tfds fails obscurely on an empty slice ("train[:0]") or a reversed one ("train[5:2]")
    if split is not None and builder.info.splits[split].num_examples <= 0:
        raise ValueError(f"{name}: split {split!r} selects no examples")
    source = builder.as_data_source(split=split)
    first = source if split is not None else next(iter(source.values()))
    view = cls.view(config.params, read, first.dataset_info.metadata)
    return source, view, cls.modalities(config.params, read)


def info(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    **options: Any,
) -> tfds.core.DatasetInfo:
    """The tfds ``DatasetInfo`` of a dataset, building it on first use.

    ``info(name).metadata`` holds the variant, every generating parameter
    (``params``, seed included), the stored modalities and what the generator
    derived (e.g. class bins), so that results can cite them; ``.splits`` holds
    the split sizes, ``.citation`` the reference.
    """
    sources, _, _ = _open(name, _EVERY_SPLIT, data_dir, manual_dir, options)
    return next(iter(sources.values())).dataset_info


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """A whole split as numpy arrays, building the dataset on first use.

    Args:
      name: a name from ``names()``, e.g. ``"synthetic/xor"``.
      split: ``"train"``, ``"validation"``, ``"test"`` (``book_reviews``: ``"train"``
        only), ``"all"``, or a tfds split expression such as ``"train[:10%]+validation"``.
      data_dir: the cache folder; default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
        Built data is stored as ``<data_dir>/<dataset>/<config>/<version>/`` ArrayRecord files.
      manual_dir: where manually downloaded files are; default ``<data_dir>/downloads/manual``.
      **options: build options (e.g. ``seed``, ``sizes``, ``widths``, ``noise``) and read
        options (``views``, ``label``); ``options(name)`` lists them with defaults.

    Returns:
      ``{modality: [N, ...], ..., "label": [N]}``, modalities first in their order
      (e.g. ``x1, x2``; ``text, audio, vision``), float32 features, int64 class labels or
      float32 regression targets.

    Raises:
      ValueError: an unknown name, split or option (listing the valid ones), bad option
        values, or malformed source files (naming the key and example).
      FileNotFoundError: a required manual file is missing (saying where to put it and
        how to get it).
    """
    source, view, modalities = _open(name, split, data_dir, manual_dir, options)
    rows = [view(record) for record in source.__getitems__(list(range(len(source))))]
    return {key: np.stack([row[key] for row in rows]) for key in (*modalities, "label")}


def batches(
    name: str,
    split: str = "train",
    *,
    batch_size: int,
    shuffle_seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    drop_remainder: bool = False,
    shard_index: int = 0,
    shard_count: int = 1,
    num_threads: int = 2,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    **options: Any,
) -> grain.DatasetIterator:
    """A seeded, checkpointable iterator of per-modality batches (grain over tfds).

    Each epoch visits every example of the (shard of the) split exactly once, in a
    fresh order drawn from ``shuffle_seed`` and the epoch number; batches never span
    two epochs (the last one of an epoch is smaller unless ``drop_remainder``).
    ``it.get_state()`` returns a small JSON-able dict; ``it.set_state(state)`` on a
    new iterator with the same arguments resumes exactly where it was saved.

    Args:
      name, split, data_dir, manual_dir, **options: as for ``load``.
      batch_size: examples per batch, B.
      shuffle_seed: seeds the order (the data's own ``seed`` is a build option).
      shuffle: False keeps the stored order.
      num_epochs: epochs to run, or None for ever.
      drop_remainder: drop each epoch's last, smaller batch.
      shard_index, shard_count: read only examples ``shard_index::shard_count`` (one
        shard per host).
      num_threads: threads reading and decoding records ahead.

    Returns:
      A ``grain.DatasetIterator`` yielding ``{modality: [B, ...], ..., "label": [B]}``.
    """
    if not _integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not _integer(shard_count) or shard_count < 1:
        raise ValueError(f"shard_count must be a positive integer, got {shard_count!r}")
    if not _integer(shard_index) or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    if not _integer(shuffle_seed) or not 0 <= shuffle_seed < 2**32:
        raise ValueError(f"shuffle_seed must be an integer in [0, 2**32), got {shuffle_seed!r}")
    if num_epochs is not None and (not _integer(num_epochs) or num_epochs < 1):
        raise ValueError(f"num_epochs must be a positive integer or None, got {num_epochs!r}")
    source, view, modalities = _open(name, split, data_dir, manual_dir, options)

    import grain

    keys = (*modalities, "label")
    dataset = grain.MapDataset.source(source)
    if shard_count > 1:
        dataset = dataset[shard_index::shard_count]
    if len(dataset) == 0:
        raise ValueError(f"{name}: split {split!r} (shard {shard_index}) selects no examples")
    if drop_remainder and len(dataset) < batch_size:
        raise ValueError(
            f"{name}: split {split!r} has {len(dataset)} examples per shard, fewer than one "
            f"batch of {batch_size}, and drop_remainder=True"
        )
    dataset = dataset.map(view)
    if shuffle:
        dataset = dataset.shuffle(seed=shuffle_seed)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda batch: {key: batch[key] for key in keys})  # modality order
    # Repeating after the per-epoch shuffle reseeds it every epoch.
    dataset = dataset.repeat(num_epochs)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
    return iter(dataset.to_iter_dataset(read_options))
