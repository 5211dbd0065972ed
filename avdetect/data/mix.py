"""A mixed training source (``config.data.mix``): the training windows of the primary
dataset (``config.data.name``) mixed with those of other built datasets, by weight.

``config.data.mix`` is a tuple of entries ``(name, weight)`` or ``(name, weight, data_dir)``,
e.g. ``(('synthetic_av/demo', 0.25, '/data/synth'),)``: ``weight`` is the share of training
windows drawn from that dataset's TRAIN split (``config.data.train_split``), the primary
dataset gets the rest (``1 - sum(weights)``, which must stay positive); ``data_dir``
defaults to ``config.data.data_dir``. Evaluation never reads a mixed dataset: validation
and test stay on the primary dataset. The train filters (``train_include_manipulations``,
``train_exclude_manipulations``, ``train_exclude_sources``) name the primary dataset's
manipulations and sources and filter only it; a mixed dataset contributes its whole
train split.

One manipulation vocabulary (:func:`union_vocabulary`): the training batches' ``method``
ids index the primary dataset's ``method_names`` unchanged (so evaluation reports and
anything keyed by the primary's ids keep working), then each mixed dataset's manipulations
qualified by their dataset, ``'<name>:<method>'`` (``'synthetic_av/demo:desync'``), then the
on-the-fly kinds (``otf_*``). ``'real'`` stays ``'real'``: a real clip is real whichever
corpus it comes from. Two datasets' fakes are never merged under one id even when their
names agree: the synthetic benchmark's ``lipsync`` is not realtalk's ``Wav2Lip``.

Identity ids (swap donors, anything identity-keyed) are numbered per dataset and offset
(:func:`identity_ids`), so ``id00000`` of one corpus and a person of another never share
an id; record ids (training ``video_id``) are offset the same way.

On-the-fly swap donors stay within a dataset (the pipeline tags each window with its
dataset; :func:`avdetect.data.otf_fakes.swap_in_batch`): a synthetic identity's espeak
voice over a real face (or real speech over a rendered face) would be a fake that differs
from the reals by the corpus - voice and picture quality - not only by the mismatch, a
shortcut the realtalk evaluation swaps (``pf_swap``, real speech of another real person)
do not offer. The same-dataset swap teaches the mismatch alone.

Mixing is Grain's ``MapDataset.mix`` over the datasets' endless (shuffled, repeated)
window streams: a deterministic interleaving whose counts match the weights over every
window of the stream (up to rounding the weights to small integer proportions), and a
pure function of the stream position, so the trainer's checkpointed iterator state
resumes it exactly (:mod:`avdetect.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from avdetect.errors import ConfigError

REAL = "real"
_FORM = ("config.data.mix must be a tuple of (name, weight) or (name, weight, data_dir) "
         "entries, e.g. (('synthetic_av/demo', 0.25),)")


@dataclasses.dataclass(frozen=True)
class MixEntry:
    """One mixed dataset: its name, share of the training windows and data dir."""

    name: str
    weight: float
    data_dir: str | None


def parse(value: Any, primary: str, primary_data_dir: str | None) -> tuple[MixEntry, ...]:
    """``config.data.mix`` as entries; () when unset. Refuses an ill-formed value with a
    ConfigError that says what is wrong."""
    if value is None or (isinstance(value, (tuple, list)) and not value):
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"{_FORM}; got {value!r}")
    if value and isinstance(value[0], str):     # a single entry not wrapped in a tuple
        raise ConfigError(f"{_FORM}; got the bare entry {tuple(value)!r} (wrap it: "
                          f"({tuple(value)!r},))")
    entries = []
    for raw in value:
        if isinstance(raw, (str, bytes)) or not isinstance(raw, (tuple, list)) \
                or len(raw) not in (2, 3):
            raise ConfigError(f"{_FORM}; entry {raw!r} is not one")
        name, weight = raw[0], raw[1]
        data_dir = raw[2] if len(raw) == 3 else None
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"config.data.mix entry {tuple(raw)!r}: the dataset name must be "
                              "a non-empty string ('synthetic_av/demo')")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or not 0.0 < float(weight) < 1.0:
            raise ConfigError(f"config.data.mix entry {tuple(raw)!r}: the weight must be a "
                              "number in (0, 1), the share of training windows from "
                              f"{name!r}")
        if data_dir is not None and (not isinstance(data_dir, str) or not data_dir.strip()):
            raise ConfigError(f"config.data.mix entry {tuple(raw)!r}: data_dir must be a "
                              "non-empty string (or leave it out for config.data.data_dir)")
        entries.append(MixEntry(name.strip(), float(weight), data_dir or primary_data_dir))
    seen = {(primary, primary_data_dir)}
    for e in entries:
        if (e.name, e.data_dir) in seen:
            what = "the primary dataset (config.data.name)" if (e.name, e.data_dir) == (
                primary, primary_data_dir) else "listed twice"
            raise ConfigError(f"config.data.mix: {e.name!r} under {e.data_dir} is {what}")
        seen.add((e.name, e.data_dir))
    total = sum(e.weight for e in entries)
    if total >= 1.0:
        raise ConfigError(f"config.data.mix: the weights sum to {total:g}; they must sum to "
                          "less than 1 (the primary dataset gets 1 - sum)")
    return tuple(entries)


def weights(entries: Sequence[MixEntry]) -> tuple[float, ...]:
    """Every dataset's share of the training windows, the primary's first."""
    return (1.0 - sum(e.weight for e in entries),) + tuple(e.weight for e in entries)


def qualified(dataset: str, method: str) -> str:
    """A mixed dataset's manipulation name in the union vocabulary."""
    return method if method == REAL else f"{dataset}:{method}"


def union_vocabulary(primary_names: Sequence[str],
                     mixed: Sequence[tuple[str, Sequence[str]]]) -> tuple[str, ...]:
    """The primary dataset's names unchanged, then each mixed dataset's (``mixed``:
    (dataset name, its method_names)) qualified by :func:`qualified`, new names only."""
    union = list(primary_names)
    for dataset, names in mixed:
        for m in names:
            q = qualified(dataset, m)
            if q not in union:
                union.append(q)
    return tuple(union)


def method_ids(union: Sequence[str], dataset: str | None, names: Sequence[str]
               ) -> dict[str, int]:
    """A dataset's own method names -> union ids (``dataset`` None: the primary's)."""
    lookup = {m: i for i, m in enumerate(union)}
    return {m: lookup[m if dataset is None else qualified(dataset, m)] for m in names}


def identity_ids(identities: Sequence[Sequence[str]]) -> list[dict[str, int]]:
    """Per dataset (the primary first), its identities -> ints, numbered in sorted order
    and offset past the previous datasets' so no two datasets share an id."""
    out, offset = [], 0
    for ids in identities:
        names = sorted(set(ids))
        out.append({p: offset + i for i, p in enumerate(names)})
        offset += len(names)
    return out
