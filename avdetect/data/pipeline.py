"""Grain input pipelines over the video-level shards (the windows themselves are cut by
:mod:`avdetect.data.windows`; split indices and metadata come from
:mod:`avdetect.data.metadata`).

Training: ``tfds.data_source`` -> per-host shard (host ``p`` of ``P`` reads records
``p, p+P, ...`` of the selected records) -> seeded shuffle, reshuffled every epoch
(``shuffle(seed).repeat()``) -> one random window of T frames per video, with the
per-video augmentation (:mod:`avdetect.data.augment`) -> batch -> optional worker
processes (``mp_prefetch``). The returned iterator is a ``grain.DatasetIterator``: its
``get_state()`` / ``set_state()`` resume exactly (the trainer stores the state in its
checkpoint).

Evaluation: every window of every video (stride T; the last, partial window is padded and
masked), in a fixed order; each batch carries ``video_id`` (the record index in the split;
:func:`load_split_index` names it) and ``window_start`` for video-level aggregation. Every
host yields the same number of batches; the last ones are padded with ``valid == 0``
examples, so a jitted multi-host eval step never waits on a host that ran out. With
``trim_silence`` (``config.eval.trim_silence``) the windows of each video's span without
leading/trailing digital silence follow its own, tagged with a ``view`` mask
(:meth:`WindowMaker.eval_windows`); the hosts' batch counts may then differ.

Batch layout (B = local batch, T = window, S = face side, K = teacher classes)::

    mouth          uint8   [B, T, 88, 88]
    face           uint8   [B, T, S, S, 3]
    logmel         float32 [B, 4T, 80]
    teacher_audio  float32 [B, T, K]     teacher_video float32 [B, T, K]
    frame_mask     float32 [B, T]        1 for real frames, 0 for padding
    audio          float32 [B, 640T]     lips float32 [B, T, 20, 2]   (opt-in: inputs)
    face_found     float32 [B, T]
    label, video_fake, audio_fake, category, method, has_audio, has_teacher   int32 [B]
    has_teacher_audio, has_teacher_video   int32 [B]   which teacher sides the clip has
    video_id, window_start   int32 [B]   (video_id = -1 on padding examples)
    valid          int32   [B]           0 on eval padding examples
    view, trim_lead, trim_trail, all_silent   int32 [B]   eval with trim_silence only
                                         (WindowMaker.eval_windows)

``category`` indexes ``contract.CATEGORIES``; ``method`` indexes the dataset's
``method_names`` (:func:`label_vocabularies`, :func:`load_split_index`). When
``data_cfg.inputs`` lists the batch keys a method reads, the streams among mouth, face,
logmel, teacher_audio, teacher_video that it does not list are neither decoded nor
batched (labels, masks and ids always are).

``data_cfg`` keys (ml_collections ConfigDict, dict or any attribute object):
required ``name`` ('synthetic_av/tiny'), ``data_dir``, ``window``, ``batch_size`` (global);
optional, with defaults: ``face_size`` None (= as stored; otherwise resized),
``num_workers`` 0 (0 = in-process), ``read_threads`` 2, ``prefetch_batches`` 2,
``train_split`` 'train', ``eval_split`` 'test', ``val_split`` 'test', ``inputs`` ()
(= every stream), ``augment`` True,
``aug_ops`` ('orig', 'flip', 'crop', 'rotate'), ``aug_crop_min`` 0.7,
``aug_max_rotate_deg`` 15.0, ``train_include_manipulations`` () and ``train_exclude_manipulations`` ()
(leave-one-method-out: e.g. exclude ('wav2lip',) from 'train', evaluate on
'method_wav2lip'), ``train_exclude_sources`` () (leave-one-source-out: drops the training
records whose index ``source`` - realtalk's source repository, inherited by the build-time
pseudo-fakes of its clips - is listed; the training split only, validation and test are
never filtered), ``train_exclude_identities`` () (the same by the index ``identity``: the
identity folds of :mod:`avdetect.identity_cv`), ``pseudo_fakes`` {} (kind -> probability), ``pf_shift_min`` 2,
``pf_shift_max`` 12, and the older ``sync_negatives`` 0.0 / ``sync_min_shift`` 3 (below),
``real_share`` 0.0 (> 0: that share of the primary dataset's training windows is drawn from
its real clips, the rest from the others; 0 = every selected clip equally likely) and
``real_share_weighting`` True (each window then carries ``sample_weight``, float32 [B]: its
kind's natural / drawn probability - 1 for a mixed dataset's windows - which the detection
loss weights by, so only the losses on real windows see the extra reals),
``synced_manipulations`` () (names or ``fnmatch`` patterns of manipulations whose lips are
driven by their own audio - audio-driven talking-face generators such as Wav2Lip: their
windows also train the synchrony losses, flagged by the batch key ``av_synced``, int32
[B], 1 as well on every untouched real window; () = no flag, the losses use real windows),
``mix`` () (a mixed training source: other datasets' train splits mixed in by weight, under
one manipulation vocabulary; evaluation stays on ``name``: :mod:`avdetect.data.mix`),
``lips_augment`` / ``audio_augment`` {} (training-time lip-point / waveform augmentation,
``enable`` plus parameters: :mod:`avdetect.data.stream_augment`), ``cache_mb`` 1024 (the
training records kept decoded in memory, per training dataset and worker process, without
the image / log-mel / teacher fields of streams the windows do not read: :class:`RecordCache`;
0 = read every window's record from the shards).

On-the-fly pseudo-fakes (training only, :mod:`avdetect.data.otf_fakes`): with the
probabilities of ``pseudo_fakes`` a window of a *real* video gets its audio streams
(log-mel, waveform, ASR posteriors) shifted in time, swapped with another identity's
(a donor from the same batch) or reversed, and is labelled fake (``audio_fake`` 1, method
``otf_<kind>`` appended to the dataset's vocabulary: :func:`train_method_names`).
``sync_negatives = p`` is ``shift`` with probability p and lag >= ``sync_min_shift``
anywhere in the clip: the out-of-sync negative of active-speaker pre-training (TalkSet),
which the reference's student starts from and a from-scratch student lacks (METHODS.md);
the teachers' correlation follows on its own, the ASR posteriors moving with the audio.
It teaches exactly the benchmark's ``desync`` fake, so a leave-one-method-out run that
holds ``desync`` out should keep it at 0.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from avdetect import contract
from avdetect.data import augment as aug_lib
from avdetect.data import metadata
from avdetect.data import mix as mix_lib
from avdetect.data import otf_fakes
from avdetect.data import stream_augment
from avdetect.data.metadata import SplitIndex
from avdetect.data.windows import WindowMaker, window_starts
from avdetect.errors import ConfigError

if TYPE_CHECKING:       # grain is imported where a pipeline is built (see _TrainWindow)
    import grain

_DEFAULTS: dict[str, Any] = {
    "face_size": None,
    "num_workers": 0,
    "read_threads": 2,
    "prefetch_batches": 2,
    "train_split": "train",
    "eval_split": "test",
    "val_split": "test",
    "augment": True,
    "aug_ops": aug_lib.AUG_OPS,
    "aug_crop_min": 0.7,
    "aug_max_rotate_deg": 15.0,
    "train_include_manipulations": (),
    "train_exclude_manipulations": (),
    "train_exclude_sources": (),
    "train_exclude_identities": (),
    "inputs": (),
    "sync_negatives": 0.0,
    "sync_min_shift": 3,
    "pseudo_fakes": {},
    "pf_shift_min": 2,
    "pf_shift_max": 12,
    "mix": (),
    "real_share": 0.0,
    "real_share_weighting": True,
    "synced_manipulations": (),
    "lips_augment": {},
    "audio_augment": {},
    "cache_mb": 1024.0,
}
_REQUIRED = ("name", "data_dir", "window", "batch_size")
RENAMED_KEYS = {"train_include_methods": "train_include_manipulations",
                "train_exclude_methods": "train_exclude_manipulations"}


def cfg_get(cfg: Any, key: str) -> Any:
    """Read ``key`` from a ConfigDict / dict / attribute object, falling back to defaults."""
    if isinstance(cfg, Mapping):
        value = cfg.get(key, _DEFAULTS.get(key))
    else:
        value = getattr(cfg, key, _DEFAULTS.get(key))
    if value is None and key in _REQUIRED:
        raise ConfigError(f"config.data.{key} is required by the data pipeline")
    return value


# ---------------------------------------------------------------------------------------
# Split index (read from the dataset metadata: avdetect.data.metadata)
# ---------------------------------------------------------------------------------------

def open_split(data_cfg: Any, split: str) -> tuple[Sequence[dict], SplitIndex, dict]:
    """Open ``split`` of the configured dataset: (data source, its index, metadata)
    (:func:`avdetect.data.metadata.open_split`)."""
    return metadata.open_split(cfg_get(data_cfg, "name"), cfg_get(data_cfg, "data_dir"), split)


def label_vocabularies(data_cfg: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the batch ``category`` and ``method`` ids of the configured dataset."""
    return tuple(contract.CATEGORIES), metadata.method_names(cfg_get(data_cfg, "name"),
                                                             cfg_get(data_cfg, "data_dir"))


def load_split_index(data_cfg: Any, split: str) -> SplitIndex:
    """The index of a split: maps batch ``video_id`` / ``method`` ids to names."""
    return open_split(data_cfg, split)[1]


# ---------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------

# Heavy record fields the windows read only when their stream is decoded (the raw
# ``audio`` is always kept: an on-the-fly reverse recomputes the log-mel from it).
_DROPPABLE = ("mouth", "face", "logmel") + contract.TEACHER_STREAMS


class RecordCache:
    """The training split's records decoded once and kept in memory, up to ``max_mb``
    megabytes (``config.data.cache_mb``; 0 = off), without the heavy fields of the streams
    the windows do not read (``streams``: :attr:`WindowMaker.streams`).

    Why: a training window reads its whole video-level record - an array_record read, a
    zstd decompression and a proto parse of ~1 MB, ~7 ms of CPU on the 2-core machine, for
    a window that costs the step far less - and epochs over a small split (realtalk:
    ~500 videos) read every record again and again. Records are kept first come, first
    served until the budget is full; the rest are read each time, so a large dataset only
    caches its first part. Cached arrays are read-only (a window that wrote into its
    record would fail loudly instead of changing later epochs). A hit and a miss return
    the same fields, so the batches do not depend on the budget (tests/test_pipeline_grain.py).
    Each Grain worker process (``num_workers`` > 0) keeps its own cache."""

    def __init__(self, source: Sequence[Mapping[str, Any]], streams: Iterable[str],
                 max_mb: float):
        self._source = source
        self._drop = frozenset(_DROPPABLE) - frozenset(streams)
        self._max = float(max_mb) * 2**20
        self._empty()

    def _empty(self) -> None:
        self._records: dict[int, dict[str, Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._source)

    def __getstate__(self) -> dict[str, Any]:
        # A worker process starts with an empty cache (and its own lock).
        return {"source": self._source, "drop": self._drop, "max": self._max}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._source, self._drop, self._max = state["source"], state["drop"], state["max"]
        self._empty()

    @property
    def cached(self) -> tuple[int, int]:
        """(records held, their bytes)."""
        return len(self._records), self._bytes

    def __getitem__(self, r: int) -> Mapping[str, Any]:
        hit = self._records.get(r)
        if hit is not None:
            return hit
        ex = {k: v for k, v in self._source[r].items() if k not in self._drop}
        if self._max > 0:
            size = sum(_nbytes(v) for v in ex.values())
            with self._lock:
                if r not in self._records and self._bytes + size <= self._max:
                    ex = {k: _read_only(v) for k, v in ex.items()}
                    self._records[r] = ex
                    self._bytes += size
        return ex


def _read_only(v: Any) -> Any:
    if not isinstance(v, np.ndarray):
        return v
    v = v.view()              # the source's own array stays as it was
    v.flags.writeable = False
    return v


def _nbytes(v: Any) -> int:
    if isinstance(v, np.ndarray):
        if v.dtype == object:                   # per-frame encoded images
            return v.nbytes + sum(len(b) for b in v.ravel())
        return v.nbytes
    return len(v) if isinstance(v, (bytes, str)) else 8


class _RecordSource:
    """Random access to selected records of a source; tags each with its record index."""

    def __init__(self, source: Sequence[Mapping[str, Any]], records: np.ndarray,
                 offset: int = 0):
        self._source = source
        self._records = np.asarray(records, np.int64)
        self._offset = int(offset)      # a mixed dataset's record ids follow the primary's

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = int(self._records[i])
        ex = dict(self._source[r])
        ex["_record"] = r + self._offset
        return ex


def _padding_window(template: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: np.zeros_like(v) for k, v in template.items()}
    out["video_id"] = np.int32(-1)
    return out


def stack_examples(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch from examples of equal keys and shapes (every key stacked on a new
    leading axis); also the random data's batcher."""
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


# Plain callables rather than grain.transforms subclasses (grain calls both the same
# way): subclassing would import grain with this module, 1-2 s that `avdetect detect`,
# which needs only WindowMaker, would pay at start-up.
class _TrainWindow:
    def __init__(self, maker: WindowMaker, augment: bool, group: int | None = None,
                 weight: float | None = None):
        self._maker = maker
        self._augment = augment
        self._group = group             # the dataset of a mixed source (swap donors)
        self._weight = weight           # the detection loss's 'sample_weight' (real_share)

    def __call__(self, element, rng: np.random.Generator):
        out = self._maker.random_window(element, rng, self._augment)
        if self._group is not None and otf_fakes.SWAP_FLAG in out:
            out[otf_fakes.GROUP] = np.int32(self._group)
        if self._weight is not None:
            out[contract.SAMPLE_WEIGHT] = np.float32(self._weight)
        return out


class _SwapInBatch:
    def __init__(self, method_id: int):
        self._method_id = method_id

    def __call__(self, batch, rng: np.random.Generator):
        return otf_fakes.swap_in_batch(batch, rng, self._method_id)


class _SyncedFlag:
    def __init__(self, method_ids: Sequence[int]):
        self._ids = np.asarray(sorted(method_ids), np.int32)

    def __call__(self, batch):
        # After the in-batch swap: a swapped window is labelled fake with an otf method,
        # so it is never flagged.
        synced = (batch["label"] == 0) | np.isin(batch["method"], self._ids)
        return {**batch, contract.AV_SYNCED: synced.astype(np.int32)}


def synced_method_ids(data_cfg: Any, names: Sequence[str]) -> tuple[int, ...]:
    """The ids among ``names`` (the training batches' method vocabulary) that
    ``config.data.synced_manipulations`` selects; every pattern must match a manipulation,
    and none may match a pseudo-fake (its audio is not its lips' own)."""
    import fnmatch

    from avdetect.data import pseudo_fakes

    patterns = tuple(cfg_get(data_cfg, "synced_manipulations") or ())
    if isinstance(patterns, str):
        patterns = (patterns,)
    unsynced = set(pseudo_fakes.KINDS) | set(otf_fakes.method_names())
    ids: set[int] = set()
    for pat in patterns:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ConfigError(f"config.data.synced_manipulations: {pat!r} matches no "
                              f"manipulation of the training data ({', '.join(names)})")
        bad = sorted(names[i] for i in hits if names[i] in unsynced)
        if bad:
            raise ConfigError(f"config.data.synced_manipulations: {pat!r} matches the "
                              f"pseudo-fakes {bad}, whose audio does not drive their lips")
        ids.update(i for i in hits if names[i] != "real")
    return tuple(sorted(ids))


class _EvalWindows:
    def __init__(self, maker: WindowMaker, trim_silence: bool = False):
        self._maker = maker
        self._trim = trim_silence

    def __call__(self, element):
        return self._maker.eval_windows(element, self._trim)


# ---------------------------------------------------------------------------------------
# Public pipelines
# ---------------------------------------------------------------------------------------

def _local_batch(data_cfg: Any, process_count: int, local_batch_size: int | None) -> int:
    if local_batch_size is not None:
        if local_batch_size <= 0:
            raise ConfigError(f"local_batch_size must be positive, got {local_batch_size}")
        return int(local_batch_size)
    global_bs = int(cfg_get(data_cfg, "batch_size"))
    if global_bs <= 0 or global_bs % process_count:
        raise ConfigError(f"config.data.batch_size={global_bs} must be a positive multiple of "
                          f"the process count {process_count}")
    return global_bs // process_count


def _check_host(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ConfigError(f"bad host sharding: process_index={process_index}, "
                          f"process_count={process_count}")


def host_records(records: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """The records host ``process_index`` reads: a disjoint, strided share of ``records``."""
    _check_host(process_index, process_count)
    return np.asarray(records)[process_index::process_count]


def _ensure_absl_flags_parsed() -> None:
    # Grain worker processes read absl flags; a library caller (a benchmark, a notebook)
    # may not have parsed them, which would crash the workers.
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _maker(data_cfg: Any, index: SplitIndex, method_ids: Mapping[str, int] | None = None,
           identity_ids: Mapping[str, int] | None = None) -> WindowMaker:
    """The window maker of a dataset; ``method_ids`` / ``identity_ids`` default to the
    dataset's own vocabulary (+ the on-the-fly kinds) and identities (a mixed source
    passes the union's: :mod:`avdetect.data.mix`)."""
    window = int(cfg_get(data_cfg, "window"))
    if window <= 0:
        raise ConfigError(f"config.data.window must be positive, got {window}")
    inputs = tuple(cfg_get(data_cfg, "inputs") or ())
    streams = frozenset(contract.streams_for(inputs))
    otf = _otf_spec(data_cfg)
    if otf.active and not streams & set(otf_fakes.AUDIO_STREAMS):
        raise ConfigError(f"config.data.pseudo_fakes turns windows by their audio, but "
                          f"config.data.inputs {inputs} has no audio stream "
                          f"({', '.join(otf_fakes.AUDIO_STREAMS)}): the 'fakes' would be "
                          "the real windows relabelled")
    stream_aug = stream_augment.parse(cfg_get(data_cfg, "lips_augment"),
                                      cfg_get(data_cfg, "audio_augment"))
    stream_augment.check_streams(stream_aug, streams)
    if method_ids is None:
        method_ids = {m: i for i, m in enumerate(train_method_names(data_cfg, index))}
    if identity_ids is None:
        identity_ids = mix_lib.identity_ids([index.identity])[0]
    return WindowMaker(window=window,
                       method_ids=method_ids,
                       streams=streams,
                       face_size=cfg_get(data_cfg, "face_size"),
                       aug_ops=tuple(cfg_get(data_cfg, "aug_ops")),
                       aug_crop_min=float(cfg_get(data_cfg, "aug_crop_min")),
                       aug_max_rotate_deg=float(cfg_get(data_cfg, "aug_max_rotate_deg")),
                       otf=otf if otf.active else None,
                       identity_ids=identity_ids,
                       stream_aug=stream_aug if stream_aug.active else None)


def _otf_spec(data_cfg: Any) -> otf_fakes.OtfSpec:
    return otf_fakes.parse({k: cfg_get(data_cfg, k) for k in (
        "pseudo_fakes", "pf_shift_min", "pf_shift_max", "sync_negatives", "sync_min_shift")})


def train_method_names(data_cfg: Any, index: SplitIndex,
                       mixed: Sequence[tuple[str, Sequence[str]]] = ()) -> tuple[str, ...]:
    """The names of training batches' ``method`` ids: the dataset's vocabulary, then the
    mixed datasets' (``mixed``: (name, method_names) per ``config.data.mix`` entry,
    qualified: :func:`avdetect.data.mix.union_vocabulary`), then the on-the-fly
    pseudo-fake kinds (``otf_shift``, ...) when ``pseudo_fakes`` is on."""
    names = mix_lib.union_vocabulary(index.method_names, mixed)
    if not _otf_spec(data_cfg).active:
        return names
    clash = sorted(set(names) & set(otf_fakes.method_names()))
    if clash:
        raise ConfigError(f"dataset {cfg_get(data_cfg, 'name')} already has methods {clash}, "
                          "the names of the on-the-fly pseudo-fakes")
    return names + otf_fakes.method_names()


def mix_entries(data_cfg: Any) -> tuple[mix_lib.MixEntry, ...]:
    """The parsed ``config.data.mix`` (:func:`avdetect.data.mix.parse`; () when unset)."""
    return mix_lib.parse(cfg_get(data_cfg, "mix"), cfg_get(data_cfg, "name"),
                         cfg_get(data_cfg, "data_dir"))


def open_mixed(data_cfg: Any) -> list[tuple[Sequence[Mapping[str, Any]], SplitIndex]]:
    """The train split (``config.data.train_split``) of every ``config.data.mix`` dataset,
    as (source, index), in entry order."""
    split = cfg_get(data_cfg, "train_split")
    return [metadata.open_split(e.name, e.data_dir, split)[:2] for e in mix_entries(data_cfg)]


def _check_same_layout(parts: Sequence[tuple[str, Sequence, np.ndarray]],
                       makers: Sequence[WindowMaker]) -> None:
    """Refuse a mix whose datasets' windows differ in keys, shapes or dtypes (Grain's
    batching would fail later on an array it cannot stack): cut one window of each."""
    layouts = []
    for (name, source, records), maker in zip(parts, makers):
        try:
            w = maker.cut(_RecordSource(source, records[:1])[0], 0)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"config.data.mix: cannot cut a training window of {name}: "
                              f"{e}") from e
        layouts.append({k: (np.shape(v), np.asarray(v).dtype) for k, v in w.items()})
    for (name, _, _), layout in zip(parts[1:], layouts[1:]):
        if layout != layouts[0]:
            diff = sorted(k for k in set(layout) | set(layouts[0])
                          if layout.get(k) != layouts[0].get(k))
            raise ConfigError(
                f"config.data.mix: the training windows of {name} differ from those of "
                f"{parts[0][0]} in {[(k, layout.get(k), layouts[0].get(k)) for k in diff]} "
                "((shape, dtype) of the mixed dataset, then the primary's): build both with "
                "the same preprocessing, or set config.data.face_size to resize faces")


def build_train_dataset(source: Sequence[Mapping[str, Any]], index: SplitIndex, data_cfg: Any,
                        *, seed: int, process_index: int = 0, process_count: int = 1,
                        local_batch_size: int | None = None,
                        mixed: Sequence[tuple[Sequence[Mapping[str, Any]], SplitIndex]] | None
                        = None) -> grain.IterDataset:
    """The training pipeline over an already opened source (see the module docstring).

    With ``config.data.mix`` (:mod:`avdetect.data.mix`) the windows of each mixed
    dataset's train split - ``mixed``, (source, index) per entry, opened here when None -
    are mixed in by weight (Grain ``MapDataset.mix`` of the per-dataset window streams,
    before batching), under the union manipulation vocabulary and offset identity and
    record ids; swap donors stay within a dataset."""
    import grain

    bs = _local_batch(data_cfg, process_count, local_batch_size)
    for old in RENAMED_KEYS:   # a config written before the rename must not be ignored
        if cfg_get(data_cfg, old):
            raise ConfigError(f"config.data.{old} was renamed config.data.{RENAMED_KEYS[old]} "
                              "('method' there meant the manipulation: README's glossary)")
    entries = mix_entries(data_cfg)
    if mixed is None:
        mixed = open_mixed(data_cfg) if entries else []
    if len(mixed) != len(entries):
        raise ConfigError(f"config.data.mix lists {len(entries)} datasets but {len(mixed)} "
                          "mixed sources were given")
    records = training_filter(data_cfg, index)
    # (name, source, index, selected records) per dataset, the primary first; the filters
    # name the primary's manipulations and sources, a mixed dataset is read whole.
    parts = [(str(cfg_get(data_cfg, "name")), source, index, records)] + [
        (e.name, s, i, np.arange(len(i))) for e, (s, i) in zip(entries, mixed)]
    union = train_method_names(data_cfg, index,
                               [(e.name, i.method_names) for e, (_, i) in zip(entries, mixed)])
    otf_ids = {m: union.index(m) for m in otf_fakes.method_names() if m in union}
    identities = mix_lib.identity_ids([i.identity for _, _, i, _ in parts])
    augment = bool(cfg_get(data_cfg, "augment"))
    share = float(cfg_get(data_cfg, "real_share"))
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"config.data.real_share={share} must be in [0, 1): the share of "
                          "training windows drawn from real clips (0 = every clip alike)")
    reweight = bool(cfg_get(data_cfg, "real_share_weighting"))
    cache_mb = float(cfg_get(data_cfg, "cache_mb"))
    if cache_mb < 0:
        raise ConfigError(f"config.data.cache_mb={cache_mb:g} must be >= 0: the megabytes of "
                          "training records kept decoded in memory (0 = off)")
    seed = int(seed) % 2**32
    streams, makers, mine_parts, offset = [], [], [], 0
    for k, (name, src, idx, recs) in enumerate(parts):
        mine = host_records(recs, process_index, process_count)
        if len(mine) == 0:
            raise ConfigError(f"host {process_index}/{process_count} has no training videos of "
                              f"{name} ({len(recs)} selected in total)")
        # Dataset 0 keeps the single-dataset seeds (a mix leaves the primary's stream as
        # it was); the others get their own.
        seed_k = seed if k == 0 else (seed + 1_000_003 * k) % 2**32
        maker = _maker(data_cfg, idx,
                       method_ids={**mix_lib.method_ids(union, name if k else None,
                                                        idx.method_names), **otf_ids},
                       identity_ids=identities[k])
        group = k if entries and maker.otf is not None and maker.otf.prob("swap") > 0 \
            else None
        src = RecordCache(src, maker.streams, cache_mb)
        if share > 0 and k == 0:
            # Real clips drawn with probability `share` (the rest from the other clips):
            # only a real window trains the sync loss and gives the on-the-fly fakes, and
            # drawn by clip they are ~10% of realtalk's training windows.
            real = idx.label[mine] == 0
            if real.all() or not real.any():
                raise ConfigError(
                    f"config.data.real_share={share} needs real and fake training clips of "
                    f"{name} on host {process_index}, which has {int(real.sum())} real and "
                    f"{int((~real).sum())} fake: set config.data.real_share=0")
            # With real_share_weighting, each window's detection-loss weight is its kind's
            # natural / drawn probability: the classifier's expected loss is that of
            # drawing every clip alike, and only the real-window losses see more reals.
            natural = float(real.mean())
            w_real, w_other = ((natural / share, (1 - natural) / (1 - share)) if reweight
                               else (1.0, 1.0))
            ds = grain.MapDataset.mix(
                [_window_stream(src, mine[real], offset, (seed_k + 5_000_011) % 2**32,
                                _TrainWindow(maker, augment, group, w_real), process_index),
                 _window_stream(src, mine[~real], offset, seed_k,
                                _TrainWindow(maker, augment, group, w_other), process_index)],
                [share, 1.0 - share])
        else:
            window_fn = _TrainWindow(maker, augment, group, 1.0 if share > 0 else None)
            ds = _window_stream(src, mine, offset, seed_k, window_fn, process_index)
        streams.append(ds)
        makers.append(maker)
        mine_parts.append((name, src, mine))
        offset += len(idx)
    if entries:
        _check_same_layout(mine_parts, makers)
        ds = grain.MapDataset.mix(streams, mix_lib.weights(entries))
    else:
        ds = streams[0]
    ds = ds.batch(bs, drop_remainder=True)
    maker = makers[0]
    if maker.otf is not None and maker.otf.prob("swap") > 0:
        # Swap donors are the batch's other real windows: a per-batch RNG, no state.
        ds = ds.random_map(_SwapInBatch(maker.method_ids[otf_fakes.method_name("swap")]),
                           seed=(seed * 31 + 104729 + 7919 * process_index) % 2**32)
    if cfg_get(data_cfg, "synced_manipulations"):
        ds = ds.map(_SyncedFlag(synced_method_ids(data_cfg, union)))
    it = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=int(cfg_get(data_cfg, "read_threads")),
        prefetch_buffer_size=int(cfg_get(data_cfg, "prefetch_batches"))))
    workers = int(cfg_get(data_cfg, "num_workers"))
    if workers > 0:
        _ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return it


def _window_stream(src, records: np.ndarray, offset: int, seed: int, window_fn: _TrainWindow,
                   process_index: int) -> grain.MapDataset:
    """One random training window per element over ``records``, endlessly."""
    import grain

    ds = grain.MapDataset.source(_RecordSource(src, records, offset))
    # shuffle-then-repeat: a fresh permutation every epoch (epoch e uses seed + e).
    ds = ds.shuffle(seed=seed).repeat()
    # Per-element RNG is derived from (seed, element index): windows and augmentations
    # are a pure function of the position in the stream, hence reproducible and
    # resumable (a mix's interleaving is one too: the iterator state is one position).
    return ds.random_map(window_fn, seed=(seed + 7919 * process_index) % 2**32)


def make_train_iterator(data_cfg: Any, *, seed: int, process_index: int = 0,
                        process_count: int = 1,
                        local_batch_size: int | None = None) -> grain.DatasetIterator:
    """Endless iterator of training batches for this host (the primary dataset mixed with
    ``config.data.mix``'s); checkpointable via ``get_state()`` / ``set_state()``."""
    source, index, _ = open_split(data_cfg, cfg_get(data_cfg, "train_split"))
    ds = build_train_dataset(source, index, data_cfg, seed=seed, process_index=process_index,
                             process_count=process_count, local_batch_size=local_batch_size)
    return iter(ds)


def eval_batches_from_source(source: Sequence[Mapping[str, Any]], index: SplitIndex,
                             data_cfg: Any, *, process_index: int = 0, process_count: int = 1,
                             local_batch_size: int | None = None, trim_silence: bool = False,
                             records: np.ndarray | None = None
                             ) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation batches over an already opened source (see the module docstring);
    ``trim_silence`` adds the silence-trimmed windows (:meth:`WindowMaker.eval_windows`);
    ``records``: only these record indices (default: every record)."""
    bs = _local_batch(data_cfg, process_count, local_batch_size)
    _check_host(process_index, process_count)
    maker = _maker(data_cfg, index)
    all_records = np.arange(len(index)) if records is None else np.asarray(records, np.int64)
    # Every host must run the same number of steps: count the windows of every host from
    # the index (no record is read for that) and pad the short hosts. The trimmed windows
    # are known only once a record's audio is read: with trim_silence the hosts' counts
    # may differ (the trainer's predict_split pads a host that runs out early).
    per_host_windows = [
        sum(len(window_starts(int(index.num_frames[r]), maker.window))
            for r in host_records(all_records, p, process_count))
        for p in range(process_count)]
    num_batches = max(math.ceil(w / bs) for w in per_host_windows)
    mine = host_records(all_records, process_index, process_count)
    return _eval_batch_stream(source, mine, maker, bs, num_batches, data_cfg, trim_silence)


def _eval_batch_stream(source, records, maker: WindowMaker, bs: int, num_batches: int,
                       data_cfg: Any, trim_silence: bool = False
                       ) -> Iterator[dict[str, np.ndarray]]:
    template = None
    pending: list[dict[str, np.ndarray]] = []
    emitted = 0
    if len(records):
        import grain

        ds = grain.MapDataset.source(_RecordSource(source, records)).map(
            _EvalWindows(maker, trim_silence))
        threads = int(cfg_get(data_cfg, "read_threads"))
        # Elements are whole videos here (all their windows): keep only a few in flight.
        it = ds.to_iter_dataset(grain.ReadOptions(
            num_threads=threads,
            prefetch_buffer_size=max(threads, int(cfg_get(data_cfg, "prefetch_batches")))))
        workers = int(cfg_get(data_cfg, "num_workers"))
        if workers > 0:
            _ensure_absl_flags_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
        for windows in it:
            template = template or windows[0]
            pending.extend(windows)
            while len(pending) >= bs:
                yield stack_examples(pending[:bs])
                pending = pending[bs:]
                emitted += 1
    if template is None:
        # This host has no video at all: build the padding from the first record's shape.
        template = (maker.eval_windows(_RecordSource(source, [0])[0], trim_silence)[0]
                    if len(source) else None)
    while emitted < num_batches or pending:
        if template is None:
            raise ConfigError("cannot evaluate an empty split")
        pad = _padding_window(template)
        yield stack_examples(pending + [pad] * (bs - len(pending)))
        pending = []
        emitted += 1


def make_eval_batches(data_cfg: Any, split: str, *, process_index: int = 0,
                      process_count: int = 1, local_batch_size: int | None = None,
                      trim_silence: bool = False, trained_reals: bool = False
                      ) -> Iterator[dict[str, np.ndarray]]:
    """Every window of every video of ``split`` for this host, in a fixed order, in
    fixed-size batches (padding examples have ``valid == 0`` and ``video_id == -1``);
    ``trim_silence`` adds the silence-trimmed windows (:meth:`WindowMaker.eval_windows`);
    ``trained_reals``: only the real clips the training filters keep
    (:func:`trained_real_records`)."""
    source, index, _ = open_split(data_cfg, split)
    return eval_batches_from_source(source, index, data_cfg, process_index=process_index,
                                    process_count=process_count,
                                    local_batch_size=local_batch_size,
                                    trim_silence=trim_silence,
                                    records=trained_real_records(data_cfg, index)
                                    if trained_reals else None)


def training_filter(data_cfg: Any, index: SplitIndex) -> np.ndarray:
    """The records of the training split that training reads: those the config's
    manipulation, source and identity filters keep (ascending record indices)."""
    return index.select(tuple(cfg_get(data_cfg, "train_include_manipulations")),
                        tuple(cfg_get(data_cfg, "train_exclude_manipulations")),
                        tuple(cfg_get(data_cfg, "train_exclude_sources")),
                        tuple(cfg_get(data_cfg, "train_exclude_identities")))


def trained_real_records(data_cfg: Any, index: SplitIndex) -> np.ndarray:
    """The real clips among :func:`training_filter`'s records: what a clip-score
    calibration fitted on "the training reals" reads (an identity cross-validation's
    held-out people are not among them)."""
    kept = training_filter(data_cfg, index)
    kept = kept[index.label[kept] == 0]
    if not len(kept):
        raise ConfigError(f"{cfg_get(data_cfg, 'name')}: the training filters keep no real clip "
                          "of the training split")
    return kept
