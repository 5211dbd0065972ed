"""The trainer's input: this process's train and eval batch iterators for ``config.data``.

``config.data.name == 'random'`` reads the synthetic batches of
:mod:`avdetect.data.random_batches` (no dataset needed); any other name is a built
dataset read by the Grain pipelines of :mod:`avdetect.data.pipeline`. Each process reads
its own part of every global batch (``process_index`` of ``process_count``); the trainer
assembles the parts into global arrays (``sharding.host_to_global``).
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import ml_collections

from avdetect import contract, sharding
from avdetect.data import random_batches
from avdetect.errors import ConfigError

Batch = dict[str, Any]


def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> int:
    """This process's share of a global batch; checks it splits over processes and
    over the data axis."""
    n_proc, n_data = jax.process_count(), mesh.shape[sharding.DATA_AXIS]
    if global_batch % n_proc or global_batch % n_data:
        raise ConfigError(f"{what}={global_batch} must be divisible by the process count "
                          f"({n_proc}) and the mesh data axis ({n_data})")
    return global_batch // n_proc


def make_train_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """This process's train batch iterator (with get_state/set_state): config.data.name's
    train split, mixed with config.data.mix's datasets (avdetect/data/mix.py)."""
    b = local_batch_size(int(config.data.batch_size), mesh, "config.data.batch_size")
    if config.data.name == "random":
        if config.data.get("mix", ()):
            raise ConfigError("config.data.mix mixes built datasets into a built primary "
                              "dataset; config.data.name 'random' is none")
        return random_batches.RandomBatches(config, seed=int(config.seed),
                                            process_index=jax.process_index(), local_batch_size=b)
    from avdetect.data import pipeline
    return pipeline.make_train_iterator(config.data, seed=int(config.seed), process_index=jax.process_index(),
                                        process_count=jax.process_count(), local_batch_size=b)


def make_eval_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, split: str,
                       trained_reals: bool = False) -> Iterator[Batch]:
    """This process's eval batches of ``split`` (every window, ``valid`` marks padding);
    ``trained_reals``: only the real clips training reads (``pipeline.trained_real_records``)."""
    gb = int(config.data.get("eval_batch_size", None) or config.data.batch_size)
    b = local_batch_size(gb, mesh, "config.data.eval_batch_size")
    if config.data.name == "random":
        if trained_reals:
            raise ConfigError("the 'random' dataset has no real clips to fit a clip score on")
        return random_batches.random_eval_batches(config, split, process_index=jax.process_index(),
                                                  process_count=jax.process_count(), local_batch_size=b)
    from avdetect.data import pipeline
    # A clip-score fit reads the as-is view only: no silence-trimmed windows for it.
    trim = bool(config.get("eval", {}).get("trim_silence", False)) and not trained_reals
    return iter(pipeline.make_eval_batches(config.data, split, process_index=jax.process_index(),
                                           process_count=jax.process_count(), local_batch_size=b,
                                           trim_silence=trim, trained_reals=trained_reals))


def label_vocabularies(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the category and method ids in eval batches."""
    if config.data.name == "random":
        return tuple(contract.CATEGORIES), random_batches.RANDOM_METHODS
    from avdetect.data import pipeline
    return pipeline.label_vocabularies(config.data)
