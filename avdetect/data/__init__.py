"""Datasets: the shard format (codec, features), the build machinery and command (clips,
build), and the Grain input pipelines (pipeline).

The pipeline names are imported lazily so that preprocessing worker processes, which
only need :mod:`avdetect.data.clips`, never pay for importing Grain.
"""

from __future__ import annotations

_PIPELINE_NAMES = ("SplitIndex", "label_vocabularies", "load_split_index", "make_eval_batches",
                   "make_train_iterator")
__all__ = list(_PIPELINE_NAMES)


def __getattr__(name: str):
    if name in _PIPELINE_NAMES:
        from avdetect.data import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'avdetect.data' has no attribute {name!r}")
