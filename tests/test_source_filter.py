"""Leave-one-source-out filter (``config.data.train_exclude_sources``): the split index
reads the build's optional ``source`` column, ``SplitIndex.select`` drops exactly the
records of the listed sources, and the training pipeline never yields one of them."""

from __future__ import annotations

import numpy as np
import pytest

from avdetect.data import pipeline as pl
from avdetect.data.metadata import SplitIndex, index_from_metadata, union_parts
from avdetect.errors import ConfigError
from test_pipeline_grain import cfg, make_example, take

SOURCES = ("repo/a", "repo/b", "repo/c")
N = 12


def _source_of(v: int) -> str:
    return SOURCES[(v * 7) % 5 % 3]       # an uneven, interleaved assignment


def _columns(n: int, with_source: bool = True) -> dict[str, list]:
    cols = {"video_id": [f"vid{v:03d}" for v in range(n)], "num_frames": [8] * n,
            "label": [v % 2 for v in range(n)], "category": [0] * n,
            "method": ["real" if v % 2 == 0 else "wav2lip" for v in range(n)],
            "identity": [f"id{v % 4}" for v in range(n)]}
    if with_source:
        cols["source"] = [_source_of(v) for v in range(n)]
    return cols


def test_select_drops_exactly_the_listed_sources():
    index = SplitIndex.from_columns(_columns(N))
    for drop in [("repo/a",), ("repo/b", "repo/c"), ()]:
        expected = [v for v in range(N) if _source_of(v) not in drop]
        assert index.select(exclude_sources=drop).tolist() == expected
    # combined with a method filter: both apply
    both = index.select(exclude_methods=("wav2lip",), exclude_sources=("repo/a",))
    assert both.tolist() == [v for v in range(N) if v % 2 == 0 and _source_of(v) != "repo/a"]


def test_metadata_index_carries_the_source_column_across_split_unions():
    meta = {"method_names": ["real", "wav2lip"],
            "index": {"train": _columns(5), "validation": _columns(3)}}
    index = index_from_metadata(meta, "train+validation")
    assert index.source == tuple(_source_of(v) for v in range(5)) + tuple(
        _source_of(v) for v in range(3))
    del meta["index"]["validation"]["source"]        # an older build: no column anywhere
    assert index_from_metadata(meta, "train+validation").source == ("",) * 8
    # the union's parts: a name, a union, and a slice (no stored index for it)
    assert union_parts("train") == ("train",)
    assert union_parts("train+validation") == ("train", "validation")
    assert union_parts("train[:50%]") == () and index_from_metadata(meta, "train[:50%]") is None


def test_dataset_without_sources_refuses_the_filter():
    index = SplitIndex.from_columns(_columns(4, with_source=False))
    assert index.source == ("",) * 4
    assert index.select().tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="records no clip sources"):
        index.select(exclude_sources=("repo/a",))
    bad = _columns(4)
    bad["source"] = bad["source"][:3]
    with pytest.raises(ConfigError, match="'source' has 3 entries for 4 records"):
        SplitIndex.from_columns(bad)


def test_training_pipeline_never_yields_an_excluded_source():
    source = [make_example(v, 8, "real" if v % 2 == 0 else "wav2lip") for v in range(N)]
    base = SplitIndex.from_examples(source)
    index = SplitIndex.from_columns({"video_id": base.video_id, "num_frames": base.num_frames,
                                     "label": base.label, "category": base.category,
                                     "method": base.method, "identity": base.identity,
                                     "source": [_source_of(v) for v in range(N)]},
                                    base.method_names)
    it = iter(pl.build_train_dataset(source, index, cfg(train_exclude_sources=("repo/b",),
                                                        augment=False), seed=3))
    seen = {int(v) for b in take(it, 9) for v in b["video_id"]}   # 36 windows: > 3 epochs
    assert seen == {v for v in range(N) if _source_of(v) != "repo/b"}
