"""Datasets: the shard format (features), the builder machinery and build command (build),
and the Grain input pipelines (pipeline)."""

from avdetect.data.pipeline import (SplitIndex, load_split_index, make_eval_batches,
                                    make_train_iterator)

__all__ = ["SplitIndex", "load_split_index", "make_eval_batches", "make_train_iterator"]
