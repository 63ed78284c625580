"""The base of mmfuse's tfds builders: whole numpy columns per split, written to ArrayRecord.

Every mmfuse dataset is a ``tfds.core.GeneratorBasedBuilder`` that computes its splits
as numpy columns (``key -> [N, ...]``) and lets tfds serialize them to ArrayRecord files,
read back with ``tfds.data_source``. That path needs no TensorFlow: tfds serializes
examples with its own protobuf code and array_record writes the files.

A builder's ``BuilderConfig`` carries every generating parameter. The default
parameters of a variant are named after the variant (``xor``); any other parameters
are named ``<variant>-seed<seed>-<digest of all parameters>``, so that data built
from different parameters, seeds included, never share a cache folder. Changing a
variant's defaults or a generator therefore needs a new ``VERSION``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

Columns = Mapping[str, Any]  # key -> [N, ...] array, or a length-N sequence of arrays
Record = dict[str, np.ndarray]
View = Callable[[Mapping[str, Any]], Record]

DEFAULT_SPLITS = ("train", "validation", "test")
LABEL = "label"


@dataclasses.dataclass(eq=False)
class Config(tfds.core.BuilderConfig):
    """A builder config holding the variant and every generating parameter.

    Attributes:
      variant: the preset the parameters start from (``"xor"``, ``"default"``).
      params: JSON-able generating parameters (seed included), recorded in the
        dataset's metadata so that results can cite them.
    """

    variant: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_array(value: Any) -> np.ndarray:
    """A decoded value as float32 (floats) or int64 (integers): tfds decodes scalars to
    Python numbers."""
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    return array


def config_name(variant: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The variant for its default parameters, else ``<variant>-seed<seed>-<digest>``."""
    if _jsonable(params) == _jsonable(defaults):
        return variant
    canonical = json.dumps(_jsonable(params), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    seed = f"-seed{params['seed']}" if "seed" in params else ""
    return f"{variant}{seed}-{digest}"


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> tuple[np.ndarray, ...]:
    """Row indices of each part of a per-class split, each part sorted.

    Every class is shuffled with ``np.random.default_rng(seed)`` and cut in the given
    fractions (rounded per class; the last part takes the rest), so each part keeps
    the class proportions.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(rows)).astype(int)
        for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256 (``size`` and ``mtime_ns`` key the cache: a changed file is rehashed)."""
    del size, mtime_ns
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tfds builder whose splits are numpy columns; subclasses fill in the hooks.

    Subclass attributes: ``name`` (the tfds name), ``VARIANTS`` (variant -> default
    parameters), ``READ_OPTIONS`` (options applied when reading, with defaults),
    ``SPLITS``, ``SUMMARY``, ``CITATION``, ``HOMEPAGE``. Hooks: ``check_params``,
    ``features``, ``generate``, ``modalities``, ``num_classes`` and, where records
    need more than a selection of keys, ``view``.

    Args:
      manual_dir: where manually downloaded files are looked for; by default
        ``<data_dir>/downloads/manual``.
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``config``, ``data_dir``,
        ``file_format``, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    SPLITS: ClassVar[tuple[str, ...]] = DEFAULT_SPLITS
    VARIANTS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    READ_OPTIONS: ClassVar[Mapping[str, Any]] = {}
    SUMMARY: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.VARIANTS:
            cls.BUILDER_CONFIGS = [cls.make_config(v) for v in cls.VARIANTS]
        super().__init_subclass__(**kwargs)

    def __init__(self, *, manual_dir: str | pathlib.Path | None = None, **kwargs: Any):
        self._manual_dir = None if manual_dir is None else pathlib.Path(manual_dir)
        super().__init__(**kwargs)

    # -- configuration -------------------------------------------------------------

    @classmethod
    def check_params(cls, variant: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validates and normalizes build parameters (tuples, floats); subclasses extend."""
        return params

    @classmethod
    def check_read(cls, params: Mapping[str, Any], read: dict[str, Any]) -> dict[str, Any]:
        """Validates and normalizes read options; subclasses extend."""
        return read

    @classmethod
    def make_config(cls, variant: str, **overrides: Any) -> Config:
        """The config of ``variant`` with some parameters overridden."""
        defaults = cls.check_params(variant, dict(cls.VARIANTS[variant]))
        params = cls.check_params(variant, {**cls.VARIANTS[variant], **overrides})
        params = _jsonable(params)
        return Config(
            name=config_name(variant, params, defaults),
            description=f"{variant}: {json.dumps(params, sort_keys=True)}",
            variant=variant,
            params=params,
        )

    @property
    def params(self) -> dict[str, Any]:
        return self.builder_config.params

    @property
    def manual_dir(self) -> pathlib.Path:
        """Where manually downloaded files are looked for."""
        if self._manual_dir is not None:
            return self._manual_dir
        return pathlib.Path(self.data_dir_root) / "downloads" / "manual"

    # -- hooks ---------------------------------------------------------------------

    @classmethod
    def modalities(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> tuple[str, ...]:
        """The modality keys, in order, that reading yields besides ``label``."""
        raise NotImplementedError

    @classmethod
    def num_classes(cls, params: Mapping[str, Any], read: Mapping[str, Any]) -> int | None:
        """How many classes the read label has, or None for a regression target.

        Declared rather than counted, so that a split (or a small file) in which the
        last class happens not to occur still gets the full label set.
        """
        raise NotImplementedError

    def features(self, params: Mapping[str, Any]) -> dict[str, tfds.features.FeatureConnector]:
        """The stored features of one example."""
        raise NotImplementedError

    def generate(self, params: Mapping[str, Any], dl_manager: Any) -> dict[str, Columns]:
        """Every split as columns; may add entries to ``self.info.metadata``."""
        raise NotImplementedError

    def metadata(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Extra metadata known before generation."""
        return {}

    def source_file(self, params: Mapping[str, Any]) -> pathlib.Path | None:
        """The user-supplied file the data is built from, if any (``manual_dir`` builders).

        Its fingerprint is stored with the build; a build from a file of other contents
        (another ``manual_dir``, a replaced file) is rebuilt rather than read stale.
        """
        return None

    def source_fingerprint(self) -> dict[str, Any] | None:
        """The source file's size and SHA-256, or None if there is no such file.

        By contents, not by path or time: copies of one file on several hosts share a
        build. Each version of a file is hashed once per process.
        """
        path = self.source_file(self.params)
        if path is None or not path.is_file():
            return None
        stat = path.stat()
        digest = _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        return {"size": stat.st_size, "sha256": digest}

    def is_stale(self) -> bool:
        """Whether the stored build was made from another version of the source file."""
        current = self.source_fingerprint()
        return current is not None and self.info.metadata.get("source") != current

    @classmethod
    def view(
        cls, params: Mapping[str, Any], read: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> View:
        """Maps a stored record to ``{modality: array, ..., "label": array}``."""
        keys = (*cls.modalities(params, read), LABEL)
        return lambda record: {k: as_array(record[k]) for k in keys}

    # -- tfds ----------------------------------------------------------------------

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        stored = self.modalities(config.params, self.check_read(config.params, {}))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.SUMMARY}\n\nConfig {config.description}",
            features=tfds.features.FeaturesDict(self.features(config.params)),
            metadata=tfds.core.MetadataDict(
                variant=config.variant,
                params=config.params,
                modalities=list(stored),
                **self.metadata(config.params),
            ),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            disable_shuffling=True,  # examples keep their generation order
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, Record]]]:
        source = self.source_fingerprint()  # before reading: a file replaced meanwhile is stale
        splits = self.generate(self.params, dl_manager)
        if source is not None:
            self.info.metadata["source"] = source
            self.info.metadata["source_path"] = str(self.source_file(self.params))
        return {split: self._generate_examples(splits[split]) for split in self.SPLITS}

    def _generate_examples(self, columns: Columns) -> Iterator[tuple[int, dict[str, Any]]]:
        sizes = {len(v) for v in columns.values()}
        if len(sizes) != 1:
            raise ValueError(
                f"columns of different lengths: { {k: len(v) for k, v in columns.items()} }"
            )
        for i in range(sizes.pop()):
            yield i, {k: v[i] for k, v in columns.items()}
