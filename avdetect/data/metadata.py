"""The one reader of a built dataset's avdetect metadata, and the per-split index it holds.

``avdetect.data.build`` records in every dataset's TFDS metadata the shard format, the
contract constants, the encoding and preprocessing parameters, the teacher, the method
vocabulary (``method_names``) and a per-split index (video id, length, labels, method,
identity, source: the loader counts windows and filters methods from it without reading
a record). Everything that reads those records goes through this module: the pipeline
(:func:`open_split`, :func:`method_names`), the protocols and teacher checks
(:func:`dataset_metadata`), the export's preprocessing record and the build's own
checks of an existing build (:func:`metadata_of`).

No config parsing here: functions take the dataset name and data dir
(``avdetect.data.pipeline`` reads them from ``config.data``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Mapping, Sequence

import numpy as np

from avdetect.data import codec
from avdetect.errors import ConfigError

log = logging.getLogger(__name__)


def metadata_of(obj: Any) -> dict[str, Any]:
    """The avdetect metadata of an opened TFDS builder (``.info``) or data source
    (``.dataset_info``) as a plain dict; ``{}`` when it has none."""
    info = getattr(obj, "info", None) or getattr(obj, "dataset_info", None)
    meta = getattr(info, "metadata", None)
    return dict(meta) if meta else {}


def dataset_metadata(name: str, data_dir: str | None) -> dict[str, Any]:
    """The avdetect metadata of built dataset ``name`` under ``data_dir`` (``{}`` for a
    dataset without any). Raises ConfigError, with the build command, when the dataset
    cannot be opened."""
    import tensorflow_datasets as tfds   # imported here: worker processes never need it

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:   # TFDS raises assorted errors for an unbuilt dataset
        raise ConfigError(f"cannot open dataset {name!r} under {data_dir}: {e}. Build it "
                          f"first: python -m avdetect.data.build {name} --data_dir "
                          f"{data_dir}") from e
    return metadata_of(builder)


def method_names(name: str, data_dir: str | None) -> tuple[str, ...]:
    """The dataset-wide method vocabulary (the batch ``method`` ids index it)."""
    meta = dataset_metadata(name, data_dir)
    if "method_names" not in meta:
        raise ConfigError(f"dataset {name!r} under {data_dir} has no method vocabulary in its "
                          "metadata (not built by avdetect.data.build?)")
    return tuple(meta["method_names"])


# ---------------------------------------------------------------------------------------
# Split index
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SplitIndex:
    """Per-record summary of one split, in record order (from the dataset metadata)."""

    video_id: tuple[str, ...]
    num_frames: np.ndarray          # int64 [N]
    label: np.ndarray               # int64 [N]
    category: np.ndarray            # int64 [N], index into contract.CATEGORIES
    method: tuple[str, ...]
    identity: tuple[str, ...]
    method_names: tuple[str, ...]   # the dataset-wide method vocabulary (batch 'method' ids)
    # where each clip comes from (the builder's optional 'source' column: a repository,
    # a sub-corpus; '' when the dataset records none), for leave-one-source-out runs
    source: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.video_id)

    @property
    def method_id(self) -> np.ndarray:
        lookup = {m: i for i, m in enumerate(self.method_names)}
        return np.array([lookup[m] for m in self.method], np.int64)

    @classmethod
    def from_columns(cls, cols: Mapping[str, Sequence[Any]],
                     method_names: Sequence[str] | None = None) -> "SplitIndex":
        methods = tuple(str(m) for m in cols["method"])
        names = tuple(method_names) if method_names else tuple(sorted(set(methods)))
        missing = set(methods) - set(names)
        if missing:
            raise ConfigError(f"split index has methods {sorted(missing)} that are not in the "
                              f"dataset's method_names {list(names)}")
        return cls(video_id=tuple(str(v) for v in cols["video_id"]),
                   num_frames=np.asarray(cols["num_frames"], np.int64),
                   label=np.asarray(cols["label"], np.int64),
                   category=np.asarray(cols["category"], np.int64),
                   method=methods,
                   identity=tuple(str(v) for v in cols["identity"]),
                   method_names=names,
                   source=_source_column(cols, len(methods)))

    @classmethod
    def from_examples(cls, source: Sequence[Mapping[str, Any]],
                      method_names: Sequence[str] | None = None) -> "SplitIndex":
        """Scan a source (reads every record: only for small or foreign datasets)."""
        cols: dict[str, list] = {k: [] for k in codec.INDEX_FIELDS}
        for i in range(len(source)):
            ex = source[i]
            for k in codec.INDEX_FIELDS:
                v = ex[k]
                cols[k].append(v.decode() if isinstance(v, bytes) else v)
        return cls.from_columns(cols, method_names)

    def select(self, include_methods: Sequence[str] = (),
               exclude_methods: Sequence[str] = (),
               exclude_sources: Sequence[str] = (),
               exclude_identities: Sequence[str] = ()) -> np.ndarray:
        """Record indices kept by a method / source / identity filter (int64 [M],
        ascending)."""
        unknown = (set(include_methods) | set(exclude_methods)) - set(self.method_names)
        if unknown:
            raise ConfigError(f"method filter names {sorted(unknown)} which this dataset does "
                              f"not have; its methods are {list(self.method_names)}")
        # A dataset that records no sources cannot honour the filter: refuse rather than
        # train on everything under a leave-one-source-out label.
        if exclude_sources and not any(self.source):
            raise ConfigError("train_exclude_sources is set but this dataset records no "
                              "clip sources (rebuild it with a builder that fills 'source')")
        keep = np.ones(len(self), bool)
        if exclude_sources:
            absent = sorted(set(exclude_sources) - set(self.source))
            if absent:   # a typo would otherwise silently exclude nothing
                log.warning("train_exclude_sources: no record of this split comes from %s",
                            absent)
            keep &= ~np.isin(np.array(self.source, dtype=object), list(exclude_sources))
        if exclude_identities:
            absent = sorted(set(exclude_identities) - set(self.identity))
            if absent:
                log.warning("train_exclude_identities: no record of this split shows %s",
                            absent)
            keep &= ~np.isin(np.array(self.identity, dtype=object), list(exclude_identities))
        if include_methods:
            keep &= np.isin(np.array(self.method, dtype=object), list(include_methods))
        if exclude_methods:
            keep &= ~np.isin(np.array(self.method, dtype=object), list(exclude_methods))
        return np.flatnonzero(keep)


def _source_column(cols: Mapping[str, Sequence[Any]], n: int) -> tuple[str, ...]:
    """The optional ``source`` column ('' for every record when the index has none)."""
    values = tuple(str(v) for v in cols.get("source", ()))
    if values and len(values) != n:
        raise ConfigError(f"split index: 'source' has {len(values)} entries for {n} records")
    return values or ("",) * n


_PLAIN_SPLITS = re.compile(r"^\w+(\+\w+)*$")


def union_parts(split: str) -> tuple[str, ...]:
    """The split names of ``split`` - a name or an ``a+b`` union; () for any other TFDS
    split expression (a slice)."""
    return tuple(split.split("+")) if _PLAIN_SPLITS.match(split) else ()


def index_from_metadata(meta: Mapping[str, Any], split: str) -> SplitIndex | None:
    """The stored index of ``split`` (a name or an ``a+b`` union), None when the metadata
    has none for it (or ``split`` is a slice expression)."""
    index = meta.get("index")
    parts = union_parts(split)
    if not index or not parts:
        return None
    if any(p not in index for p in parts):
        return None
    cols = {k: [v for p in parts for v in index[p][k]] for k in codec.INDEX_FIELDS}
    if all("source" in index[p] for p in parts):     # optional column (older builds lack it)
        cols["source"] = [v for p in parts for v in index[p]["source"]]
    return SplitIndex.from_columns(cols, meta.get("method_names"))


def check_shard_format(name: str, meta: dict) -> None:
    """Raise ConfigError when a build's shard format is not one this code reads
    (``codec.READABLE_SHARD_FORMATS``; builds that predate the field pass)."""
    version = meta.get("shard_format_version")
    if version is not None and version not in codec.READABLE_SHARD_FORMATS:
        raise ConfigError(f"{name} was built with shard format {version}; this code reads "
                          f"formats {codec.READABLE_SHARD_FORMATS}: rebuild the dataset")


def open_split(name: str, data_dir: str | None, split: str
               ) -> tuple[Sequence[dict], SplitIndex, dict]:
    """Open ``split`` of dataset ``name``: (data source, its index, metadata).

    Accepts plain split names and ``a+b`` unions; other TFDS split expressions (slices)
    work too but fall back to scanning the records for the index.
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises assorted errors for a missing/unbuilt dataset
        hint = ("" if "Unknown split" in str(e) else
                f" Build it first: python -m avdetect.data.build {name} --data_dir {data_dir}")
        raise ConfigError(f"cannot open split {split!r} of dataset {name!r} under "
                          f"{data_dir}: {str(e).strip()}{hint}") from e
    meta = metadata_of(source)
    check_shard_format(name, meta)
    index = index_from_metadata(meta, split)
    if index is None:
        log.warning("no stored index for split %r of %s: scanning %d records", split, name,
                    len(source))
        index = SplitIndex.from_examples(source, meta.get("method_names"))
    if len(index) != len(source):
        raise ConfigError(f"the stored index of {name}:{split} lists {len(index)} records but "
                          f"the shards hold {len(source)}: rebuild the dataset")
    return source, index, meta
