"""Clips to preprocess and the per-video preprocessing cache (the worker-side half of the
dataset build; no TensorFlow Datasets or Grain import, so worker processes start fast).

A builder lists :class:`ClipTask` s; :func:`preprocess_all` runs :func:`process_clip` over
them in a process pool. Each result is one ``.npz`` per video under the cache dir, named
by sha256(file bytes) (+ the bytes of a borrowed audio file) and a hash of every
parameter (:meth:`PreprocessSpec.key`: face size, encoding, teacher, contract constants,
and for the default preprocessing the source code of ``avdetect/media`` and
``avdetect/preprocess``). Entries are written atomically, so an interrupted build leaves
no half-written file and a re-run skips every clip already done.

What an entry holds: :mod:`avdetect.data.cache_entry`; derived clips (pseudo-fakes),
made from their source's entry in a second pass: :mod:`avdetect.data.derived_clips`.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tqdm

from avdetect import contract
from avdetect.data import codec
# The cache entry format (and Outcome, TeacherFn, callable_id) lives in cache_entry.
from avdetect.data.cache_entry import (Outcome, TeacherFn, callable_id, clip_field, encode_clip,
                                       make_entry, read_cached)
from avdetect.errors import FileMissingError, MediaError

CACHE_FORMAT_VERSION = 4   # 2: int16 waveform "audio"; 3: float32 posteriors, per-side flags;
                           # 4: "lips" [T, 20, 2] + "has_lips"


# ---------------------------------------------------------------------------------------
# What a builder lists
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClipTask:
    """One source video to turn into one example.

    key:        unique id of the clip in the dataset (the example's ``video_id``).
    path:       absolute path of the video file.
    rel_path:   the path recorded in the example (relative to the dataset root).
    audio_path: take the audio from this file instead (CMDFD W2L clips have none).
    audio_source: recorded in the example when the audio is taken from ``audio_path``.
    audio_if_missing: use ``audio_path`` only when the clip has no audio of its own.
    attributes: dataset-specific row fields, stored as JSON.
    derive:     a clip derived from another clip's cached preprocessing instead of decoded
                from ``path`` (a pseudo-fake, :mod:`avdetect.data.pseudo_fakes`):
                {'kind', 'source': key, 'donor': key or '', 'params': {...},
                'min_frames'}, part of its cache key; ``path`` is the source's file.
    row:        the raw listing row, handed to the teacher (e.g. a ground-truth file),
                with ``path`` set to the absolute video path and ``audio_path`` to the
                file the clip's audio was taken from (see :func:`teacher_row`).
    """

    key: str
    path: str
    rel_path: str
    label: int
    video_fake: bool
    audio_fake: bool
    method: str
    identity: str
    audio_path: str | None = None
    audio_source: str = ""
    audio_if_missing: bool = False
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    row: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    derive: Mapping[str, Any] | None = None

    @property
    def category(self) -> str:
        return contract.category_of(self.video_fake, self.audio_fake)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A file (or listing row) that does not become an example, and why."""

    path: str
    kind: str
    reason: str
    key: str = ""
    splits: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Listing:
    """A builder's listing: tasks by key, split -> keys (write order), listing problems.

    A clip may belong to several splits (CMDFD's shared real clips); it is preprocessed
    once. ``notes`` are per-clip remarks for the report (e.g. borrowed audio).
    """

    tasks: dict[str, ClipTask] = dataclasses.field(default_factory=dict)
    splits: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[dict[str, str]] = dataclasses.field(default_factory=list)
    source_info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, task: ClipTask, *splits: str) -> None:
        old = self.tasks.get(task.key)
        if old is not None and old != task:
            raise ValueError(f"two different clips share the key {task.key!r}: "
                             f"{old.path} and {task.path}")
        self.tasks[task.key] = task
        for s in splits:
            keys = self.splits.setdefault(s, [])
            if task.key not in keys:
                keys.append(task.key)

    def splits_of(self, key: str) -> tuple[str, ...]:
        return tuple(s for s, keys in self.splits.items() if key in keys)


# ---------------------------------------------------------------------------------------
# Preprocessing (runs in worker processes)
# ---------------------------------------------------------------------------------------

PreprocessFn = Callable[[ClipTask, int], Any]

# Source files whose content is part of the cache key of the default preprocessing: any
# change to decoding, face tracking, cropping or the log-mel invalidates cached results.
_PREPROCESS_CODE = ("avdetect/contract.py", "avdetect/media", "avdetect/preprocess")


def _code_hash(paths: Iterable[str]) -> str:
    root = pathlib.Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in paths:
        p = root / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def default_preprocess(task: ClipTask, face_size: int):
    """The project's per-video preprocessing (``avdetect.preprocess.pipeline``)."""
    from avdetect.preprocess.pipeline import preprocess_video

    return preprocess_video(task.path, face_size=face_size)


def borrowed_audio(audio_path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel float32 [4T, 80], float32 waveform [640 T]) of another file's audio,
    fitted to ``num_frames`` frames (the waveform goes on to the teacher and, as int16,
    into the cache entry: decoded once)."""
    from avdetect.media.decode import load_audio
    from avdetect.preprocess.logmel import log_mel

    audio = load_audio(audio_path, num_frames=num_frames)
    return np.asarray(log_mel(audio, num_frames=num_frames), np.float32), audio


def _with_audio(clip, logmel: np.ndarray, waveform: np.ndarray):
    """``clip`` carrying another file's audio: its log-mel and its waveform."""
    new = {"logmel": logmel, "has_audio": True, "audio": waveform}
    if dataclasses.is_dataclass(clip):
        if {f.name for f in dataclasses.fields(clip)} >= set(new):
            return dataclasses.replace(clip, **new)
        clip = {f.name: getattr(clip, f.name) for f in dataclasses.fields(clip)}
    clip = dict(clip) if isinstance(clip, Mapping) else dict(vars(clip))
    clip.update(new)
    return clip


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Everything a worker needs besides the task; its ``key()`` is the parameter half of
    every cache key."""

    face_size: int
    encoding: codec.EncodingParams
    teacher_dim: int
    preprocess: PreprocessFn | None = None       # None = default_preprocess
    teacher: TeacherFn | None = None

    def key(self) -> str:
        pre = self.preprocess
        pre_id = (f"default:{_code_hash(_PREPROCESS_CODE)}" if pre is None else callable_id(pre))
        blob = json.dumps({"cache_format": CACHE_FORMAT_VERSION,
                           "shard_format": codec.SHARD_FORMAT_VERSION,
                           "face_size": self.face_size, "encoding": self.encoding.as_dict(),
                           "teacher_dim": self.teacher_dim, "preprocess": pre_id,
                           "teacher": callable_id(self.teacher),
                           "contract": codec.contract_constants()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_path(cache_dir: str, task: ClipTask, spec_key: str) -> str:
    """Cache file of a task: content hash of its file(s) + the parameter hash."""
    if not os.path.isfile(task.path):
        raise FileMissingError(task.path, "does not exist")
    digest = file_sha256(task.path)
    if task.audio_path:
        if not os.path.isfile(task.audio_path):
            raise FileMissingError(task.audio_path, "(borrowed audio) does not exist")
        digest = hashlib.sha256((digest + file_sha256(task.audio_path)).encode()).hexdigest()
    return os.path.join(cache_dir, digest[:2], f"{digest}-{spec_key}.npz")


def locate(task: ClipTask, cache_dir: str, spec_key: str) -> tuple[str, Outcome | None]:
    """Hash the clip's file(s): (cache file path, the outcome if already decided: a cache
    hit, or a missing file)."""
    t0 = time.perf_counter()
    try:
        path = cache_path(cache_dir, task, spec_key)
    except MediaError as e:
        return "", Outcome(task.key, "skipped", kind=e.kind, reason=e.reason)
    return path, read_cached(task.key, path, t0)


def process_clip(task: ClipTask, spec: PreprocessSpec, path: str) -> Outcome:
    """Preprocess one clip into cache file ``path`` (see :func:`avdetect.data.cache_entry.make_entry`)."""
    def make():
        clip = (spec.preprocess or default_preprocess)(task, spec.face_size)
        audio_source, audio_file = "", None
        if task.audio_path and not (task.audio_if_missing and clip_field(clip, "has_audio", True)):
            num_frames = int(np.asarray(clip_field(clip, "mouth")).shape[0])
            clip = _with_audio(clip, *borrowed_audio(task.audio_path, num_frames))
            audio_source, audio_file = task.audio_source or task.audio_path, task.audio_path
        return encode_clip(task, clip, spec, audio_source, audio_file)
    return make_entry(task, path, make)


def _worker_init() -> None:
    # One OpenCV thread per worker: the pool already uses every core.
    try:
        import cv2
        cv2.setNumThreads(1)
    except Exception:
        pass


def preprocess_all(tasks: Sequence[ClipTask], spec: PreprocessSpec, cache_dir: str, *,
                   workers: int, desc: str = "preprocessing",
                   known: Mapping[str, Outcome] | None = None) -> dict[str, Outcome]:
    """Preprocess every task not already in the cache, in ``workers`` processes (0 = in
    this process), with a progress bar. Returns outcomes by task key.

    Cache lookups (hashing the files) happen here first, so a re-run whose clips are all
    cached starts no worker at all. Derived tasks (``task.derive``) run in a second pass,
    from the cache entries of their source (and donor) clips, looked up among these
    tasks' outcomes and ``known`` (an earlier call's); one whose source or donor is
    unusable is skipped too, with that reason.
    """
    # imported here: derived_clips builds on this module
    from avdetect.data.derived_clips import derived_cache_path, process_derived

    spec_key = spec.key()
    outcomes: dict[str, Outcome] = {}
    bar = tqdm.tqdm(total=len(tasks), desc=desc, unit="clip", dynamic_ncols=True)

    def record(o: Outcome) -> None:
        outcomes[o.key] = o
        bar.update(1)
        bad = sum(x.status in ("skipped", "error") for x in outcomes.values())
        cached = sum(x.status == "cached" for x in outcomes.values())
        bar.set_postfix(cached=cached, skipped=bad, refresh=False)

    try:
        todo: list[tuple] = []
        for t in tasks:
            if t.derive is None:
                path, done = locate(t, cache_dir, spec_key)
                if done is not None:
                    record(done)
                else:
                    todo.append((t, spec, path))
        _run_all(process_clip, todo, workers, record)
        todo = []
        transcripts = os.path.join(cache_dir, "transcripts")
        for t in tasks:
            if t.derive is None:
                continue
            files = []
            for role in ("source", "donor"):
                ref = t.derive.get(role) or ""
                o = (outcomes.get(ref) or (known or {}).get(ref)) if ref else None
                if ref and (o is None or o.status not in ("done", "cached")):
                    why = o.reason if o is not None else "not in the listing"
                    record(Outcome(t.key, "skipped", kind=f"{role}_unusable",
                                   reason=f"its {role} clip {ref} is unusable ({why})"))
                    break
                files.append(o.cache_file if o is not None else "")
            else:
                path = derived_cache_path(cache_dir, t, spec_key, *files)
                done = read_cached(t.key, path, time.perf_counter())
                if done is not None:
                    record(done)
                else:
                    todo.append((t, spec, path, *files, transcripts))
        _run_all(process_derived, todo, workers, record)
    finally:
        bar.close()
    return outcomes


def _run_all(fn: Callable[..., Outcome], todo: Sequence[tuple], workers: int,
             record: Callable[[Outcome], None]) -> None:
    """``record(fn(*args))`` for every args tuple of ``todo`` (first element: the task), in
    ``workers`` spawned processes (in this process for 0 workers or a single job)."""
    if workers <= 0 or len(todo) <= 1:
        for args in todo:
            record(fn(*args))
        return
    ctx = multiprocessing.get_context("spawn")   # no fork of a threaded parent
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                initializer=_worker_init) as pool:
        futures = {pool.submit(fn, *args): args[0] for args in todo}
        try:
            for fut in cf.as_completed(futures):
                task = futures[fut]
                try:
                    record(fut.result())
                except Exception as e:   # the worker process itself died
                    record(Outcome(task.key, "error", kind="worker_crashed",
                                   reason=f"{type(e).__name__}: {e}"))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
