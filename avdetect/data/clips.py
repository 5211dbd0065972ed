"""Clips to preprocess and the per-video preprocessing cache (the worker-side half of the
dataset build; no TensorFlow Datasets or Grain import, so worker processes start fast).

A builder lists :class:`ClipTask` s; :func:`preprocess_all` runs :func:`process_clip` over
them in a process pool. Each result is one ``.npz`` per video under the cache dir, named
by sha256(file bytes) (+ the bytes of a borrowed audio file) and a hash of every
parameter (:meth:`PreprocessSpec.key`: face size, encoding, teacher, contract constants,
and for the default preprocessing the source code of ``avdetect/media`` and
``avdetect/preprocess``). Entries are written atomically, so an interrupted build leaves
no half-written file and a re-run skips every clip already done.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import tempfile
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tqdm

from avdetect import contract
from avdetect.data import codec
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
TeacherFn = Callable[[Any, Mapping[str, Any]], "tuple[np.ndarray, np.ndarray] | None"]

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


def borrowed_logmel(audio_path: str, num_frames: int) -> np.ndarray:
    """Log-mel float32 [4T, 80] of another file's audio, fitted to ``num_frames`` frames."""
    return borrowed_audio(audio_path, num_frames)[0]


def borrowed_audio(audio_path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel float32 [4T, 80], int16 waveform [640 T]) of another file's audio, fitted
    to ``num_frames`` frames."""
    from avdetect.media.decode import load_audio
    from avdetect.preprocess.logmel import log_mel

    audio = load_audio(audio_path, num_frames=num_frames)
    return np.asarray(log_mel(audio, num_frames=num_frames), np.float32), to_int16(audio)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1] -> int16 PCM (the shards' 'audio' stream)."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def clip_waveform(path: str, num_frames: int) -> np.ndarray:
    """The clip's own audio as int16 [640 T] (zeros when the file has no audio stream)."""
    from avdetect.media.decode import load_audio

    try:
        return to_int16(load_audio(path, num_frames=num_frames))
    except MediaError:
        return np.zeros(num_frames * contract.SAMPLES_PER_FRAME, np.int16)


def _with_audio(clip, logmel: np.ndarray, waveform: np.ndarray | None = None):
    extra = {} if waveform is None else {"audio": waveform}
    if dataclasses.is_dataclass(clip) and not extra:
        return dataclasses.replace(clip, logmel=logmel, has_audio=True)
    if dataclasses.is_dataclass(clip):
        clip = {f.name: getattr(clip, f.name) for f in dataclasses.fields(clip)}
    clip = dict(clip) if isinstance(clip, Mapping) else dict(vars(clip))
    clip.update(logmel=logmel, has_audio=True, **extra)
    return clip


def _get(clip: Any, name: str, default: Any = None) -> Any:
    if isinstance(clip, Mapping):
        return clip.get(name, default)
    return getattr(clip, name, default)


def callable_id(fn: Callable | None) -> str | None:
    """A stable name of a preprocess/teacher callable for cache keys and metadata: its
    ``cache_key`` attribute when it has one, else its qualified name."""
    if fn is None:
        return None
    key = getattr(fn, "cache_key", None)
    if key:
        return str(key)
    target = getattr(fn, "func", fn)                     # functools.partial
    name = getattr(target, "__qualname__", type(target).__qualname__)
    return f"{getattr(target, '__module__', '?')}.{name}"


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


@dataclasses.dataclass
class Outcome:
    """What happened to one clip in the preprocessing pass."""

    key: str
    status: str                    # 'done' | 'cached' | 'skipped' | 'error'
    cache_file: str = ""
    kind: str = ""
    reason: str = ""
    num_frames: int = 0
    params: dict | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0


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


def _pack(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8) if blobs else np.zeros(0, np.uint8)
    return data, offsets


def unpack_frames(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    raw = data.tobytes()
    return np.array([raw[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)],
                    dtype=object)


def teacher_row(task: ClipTask, audio_file: str | None = None) -> dict[str, Any]:
    """The row a teacher sees: the listing row with ``path`` = the absolute video file and
    ``audio_path`` = the file whose audio the clip carries (the borrowed file, else the
    video). Listing rows may name files relative to a CSV (FakeAVCeleb) or not at all
    (CMDFD); a teacher reading the audio needs the real file."""
    row = dict(task.row)
    row["path"] = task.path
    row["audio_path"] = audio_file or task.path
    return row


def run_teacher(teacher: TeacherFn, clip: Any, row: Mapping[str, Any], num_frames: int,
                teacher_dim: int) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """(audio [T, K], video [T, K], audio filled, video filled) of one clip.

    Posteriors are kept in float32: float16 flushes probabilities below 6e-8 to 0 and
    rounds confident rows (a teacher's 1 - 1e-4 becomes 1), which makes divergence
    targets infinite. A side the teacher does not fill (``sides``) or a clip it says
    nothing about (None) is stored as zeros with its flag False, never as a uniform row
    that would pass for real evidence."""
    from avdetect.teachers import teacher_sides

    shape = (num_frames, teacher_dim)
    zeros = np.zeros(shape, np.float32)
    post = teacher(clip, row)
    if post is None:
        return zeros, zeros.copy(), False, False
    pa, pv = (np.asarray(p, np.float32) for p in post)
    if pa.shape != shape or pv.shape != shape:
        raise ValueError(f"teacher {callable_id(teacher)} returned shapes {pa.shape}, "
                         f"{pv.shape}; expected {shape}")
    sides = teacher_sides(teacher)
    has_a, has_v = "audio" in sides, "video" in sides
    return (pa if has_a else zeros), (pv if has_v else zeros.copy()), has_a, has_v


def _encode_clip(task: ClipTask, clip: Any, spec: PreprocessSpec,
                 audio_source: str = "", audio_file: str | None = None
                 ) -> tuple[dict, list[str]]:
    """ClipFeatures (or an equivalent mapping) -> the arrays stored in the cache."""
    mouth = np.asarray(_get(clip, "mouth"))
    face = np.asarray(_get(clip, "face"))
    T = mouth.shape[0]
    logmel = np.asarray(_get(clip, "logmel"), np.float32)
    face_found = np.asarray(_get(clip, "face_found"), bool)
    boxes = np.asarray(_get(clip, "boxes"), np.float32)
    lips = _get(clip, "lips", None)       # None: a preprocessing without landmarks
    has_lips = lips is not None
    lips = (np.asarray(lips, np.float32) if has_lips
            else np.zeros((T, contract.NUM_LIPS, 2), np.float32))
    m = contract.MEL_PER_FRAME
    checks = [(mouth.shape == (T, contract.MOUTH_SIZE, contract.MOUTH_SIZE), "mouth", mouth.shape),
              (face.shape == (T, spec.face_size, spec.face_size, 3), "face", face.shape),
              (logmel.shape == (m * T, contract.N_MELS), "logmel", logmel.shape),
              (face_found.shape == (T,), "face_found", face_found.shape),
              (boxes.shape == (T, 4), "boxes", boxes.shape),
              (lips.shape == (T, contract.NUM_LIPS, 2), "lips", lips.shape)]
    for ok, name, shape in checks:
        if not ok:
            raise ValueError(f"preprocessing returned {name} of shape {shape} for a {T}-frame "
                             f"clip (face_size={spec.face_size})")
    if T == 0:
        raise ValueError("preprocessing returned 0 frames")
    notes = []
    has_audio = bool(_get(clip, "has_audio", True))
    if not has_audio:
        notes.append("no usable audio: logmel is zeros, has_audio=False")
    if audio_source:
        notes.append(f"audio taken from {audio_source}")
    found = float(face_found.mean())
    if found < 0.5:
        notes.append(f"face found in only {100 * found:.0f}% of frames")
    teacher_a = np.zeros((T, spec.teacher_dim), np.float32)
    teacher_v = np.zeros((T, spec.teacher_dim), np.float32)
    has_a = has_v = False
    if spec.teacher is not None:
        teacher_a, teacher_v, has_a, has_v = run_teacher(
            spec.teacher, clip, teacher_row(task, audio_file), T, spec.teacher_dim)
    info = _get(clip, "info")
    enc = spec.encoding
    mouth_data, mouth_off = _pack(codec.encode_frames(mouth, enc.mouth_codec,
                                                     jpeg_quality=enc.jpeg_quality,
                                                     png_compression=enc.png_compression))
    face_data, face_off = _pack(codec.encode_frames(face, enc.face_codec,
                                                   jpeg_quality=enc.jpeg_quality,
                                                   png_compression=enc.png_compression))
    # The raw waveform (Whisper's input): from the preprocessing when it kept one, else
    # decoded again from the clip's file (audio decoding is cheap next to face tracking).
    wave = _get(clip, "audio")
    if wave is None:
        wave = (clip_waveform(task.path, T) if has_audio
                else np.zeros(T * contract.SAMPLES_PER_FRAME, np.int16))
    wave = np.asarray(wave)
    if wave.dtype != np.int16:
        wave = to_int16(wave)
    if wave.shape != (T * contract.SAMPLES_PER_FRAME,):
        raise ValueError(f"audio waveform of shape {wave.shape} for a {T}-frame clip")
    params = _get(clip, "params") or {}
    arrays = {
        "mouth_data": mouth_data, "mouth_offsets": mouth_off,
        "face_data": face_data, "face_offsets": face_off,
        "logmel": logmel.astype(np.float16), "audio": wave, "face_found": face_found, "boxes": boxes,
        "lips": lips, "has_lips": np.bool_(has_lips),
        "has_audio": np.bool_(has_audio),
        "teacher_audio": teacher_a, "teacher_video": teacher_v,
        "has_teacher": np.bool_(has_a and has_v),
        "has_teacher_audio": np.bool_(has_a), "has_teacher_video": np.bool_(has_v),
        "src_fps": np.float32(_get(info, "src_fps", 0.0) or 0.0),
        "src_sample_rate": np.int32(_get(info, "src_sample_rate", 0) or 0),
        "duration_s": np.float32(_get(info, "duration_s", T / contract.VIDEO_FPS) or 0.0),
        "params_json": np.array(json.dumps(params, sort_keys=True, default=str)),
        "notes_json": np.array(json.dumps(notes)),
        "audio_source": np.array(audio_source),
    }
    return arrays, notes


def _write_npz_atomic(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)           # a crash never leaves a half-written cache entry
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_cached(key: str, path: str, t0: float) -> Outcome | None:
    """The outcome of a cache hit, or None if the entry is missing or unreadable."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as z:
            return Outcome(key, "cached", path, num_frames=len(z["mouth_offsets"]) - 1,
                           params=json.loads(str(z["params_json"])),
                           notes=tuple(json.loads(str(z["notes_json"]))),
                           seconds=time.perf_counter() - t0)
    except Exception:
        # A damaged entry (disk full, foreign file): drop it and recompute.
        os.remove(path)
        return None


def locate(task: ClipTask, cache_dir: str, spec_key: str) -> tuple[str, Outcome | None]:
    """Hash the clip's file(s): (cache file path, the outcome if already decided: a cache
    hit, or a missing file)."""
    t0 = time.perf_counter()
    try:
        path = cache_path(cache_dir, task, spec_key)
    except MediaError as e:
        return "", Outcome(task.key, "skipped", kind=e.kind, reason=e.reason)
    return path, _read_cached(task.key, path, t0)


def _make_entry(task: ClipTask, path: str, make: Callable[[], tuple[dict, list[str]]]
                ) -> Outcome:
    """Write the cache entry ``make()`` returns (arrays, notes) to ``path`` unless another
    build made it meanwhile. Never raises for bad input: a ``MediaError`` becomes a
    'skipped' outcome, anything else an 'error' outcome."""
    t0 = time.perf_counter()
    try:
        hit = _read_cached(task.key, path, t0)   # another build may have made it meanwhile
        if hit is not None:
            return hit
        arrays, notes = make()
        _write_npz_atomic(path, arrays)
        return Outcome(task.key, "done", path, num_frames=len(arrays["mouth_offsets"]) - 1,
                       params=json.loads(str(arrays["params_json"])), notes=tuple(notes),
                       seconds=time.perf_counter() - t0)
    except MediaError as e:
        return Outcome(task.key, "skipped", kind=e.kind, reason=e.reason,
                       seconds=time.perf_counter() - t0)
    except Exception as e:  # a bug or an unforeseen library failure: report, don't lose the build
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return Outcome(task.key, "error", kind="internal_error", reason=tb,
                       seconds=time.perf_counter() - t0)


def process_clip(task: ClipTask, spec: PreprocessSpec, path: str) -> Outcome:
    """Preprocess one clip into cache file ``path`` (see :func:`_make_entry`)."""
    def make():
        clip = (spec.preprocess or default_preprocess)(task, spec.face_size)
        audio_source, audio_file = "", None
        if task.audio_path and not (task.audio_if_missing and _get(clip, "has_audio", True)):
            num_frames = int(np.asarray(_get(clip, "mouth")).shape[0])
            clip = _with_audio(clip, *borrowed_audio(task.audio_path, num_frames))
            audio_source, audio_file = task.audio_source or task.audio_path, task.audio_path
        return _encode_clip(task, clip, spec, audio_source, audio_file)
    return _make_entry(task, path, make)


# ---------------------------------------------------------------------------------------
# Derived clips (pseudo-fakes): made from the source's cache entry, never from the video
# ---------------------------------------------------------------------------------------

def derived_cache_path(cache_dir: str, task: ClipTask, spec_key: str, source_file: str,
                       donor_file: str = "") -> str:
    """Cache file of a derived task: hash of the derivation spec, the source's (and the
    donor's) cache entry names (content + parameters) and the derivation code."""
    from avdetect.data import pseudo_fakes

    blob = json.dumps({"derive": task.derive, "source": os.path.basename(source_file),
                       "donor": os.path.basename(donor_file) if donor_file else "",
                       "code": pseudo_fakes.code_hash()}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return os.path.join(cache_dir, "derived", digest[:2], f"{digest}-{spec_key}.npz")


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _is_window(index: np.ndarray) -> bool:
    """True when a frame map is a contiguous window of its source (t -> s0 + t)."""
    return bool(index.size and index[0] >= 0 and np.all(np.diff(index) == 1))


def _carry_teacher(src: Mapping[str, np.ndarray], donor: Mapping[str, np.ndarray] | None,
                   out: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Teacher posteriors of a derived clip without running the teacher again: a side is
    kept where the derived stream is a contiguous window of the source's (or, for the
    audio, the donor's) stream, re-indexed to it; any other side is zeros, flagged
    absent (a frozen, blended, reversed or re-voiced stream has no posteriors)."""
    T = len(out["face_found"])
    res: dict[str, np.ndarray] = {}
    valid = {}
    for side, index_key in (("audio", "audio_src"), ("video", "face_src")):
        index = np.asarray(out[index_key])
        ok = _is_window(index) and (side != "video" or _is_window(np.asarray(out["mouth_src"])))
        origin = donor if (side == "audio" and out.get("audio_from") == "donor") else src
        flag = f"has_teacher_{side}"
        had = bool(origin[flag]) if flag in origin else bool(origin["has_teacher"])
        arr = origin[f"teacher_{side}"]
        valid[side] = ok and had
        res[f"teacher_{side}"] = (arr[index] if valid[side]
                                  else np.zeros((T,) + arr.shape[1:], arr.dtype))
        if flag in src:
            res[flag] = np.bool_(valid[side])
    res["has_teacher"] = np.bool_(valid["audio"] and valid["video"])
    kept = [s for s in ("audio", "video") if valid[s]]
    note = ("teacher posteriors carried over: " + (", ".join(kept) or "none")
            if "has_teacher" in src and (bool(src["has_teacher"]) or any(
                bool(src.get(f"has_teacher_{s}", False)) for s in ("audio", "video")))
            else "")
    return res, note


def derive_arrays(task: ClipTask, spec: PreprocessSpec, source_file: str,
                  donor_file: str = "", transcripts_dir: str = "") -> tuple[dict, list[str]]:
    """The cache arrays of a derived task: the source's entry with the derivation applied.
    Frames the derivation copies keep the source's encoded bytes (no re-encoding)."""
    from avdetect.data import pseudo_fakes as pf

    d = task.derive
    kind, info = d["kind"], pf.KINDS[d["kind"]]
    src = _load_npz(source_file)
    donor = _load_npz(donor_file) if donor_file else None
    mouth_blobs = unpack_frames(src["mouth_data"], src["mouth_offsets"])
    face_blobs = unpack_frames(src["face_data"], src["face_offsets"])
    clip = {"audio": src["audio"], "logmel": src["logmel"].astype(np.float32),
            "face_found": src["face_found"], "boxes": src["boxes"]}
    if "lips" in src:
        clip["lips"] = src["lips"]
    if info.needs_mouth:
        clip["mouth"] = codec.decode_frames(list(mouth_blobs), color=False)
    transcript = (pf.transcript_of(src["audio"], transcripts_dir) if kind == "pf_tts"
                  else "")
    out = pf.apply(kind, d["params"], clip,
                   donor_audio=None if donor is None else donor["audio"],
                   transcript=transcript, min_frames=int(d.get("min_frames", 1)),
                   path=task.path)
    enc = spec.encoding

    def blobs_of(name: str, source_blobs: np.ndarray, codec_name: str) -> list[bytes]:
        src_index = np.asarray(out[f"{name}_src"])
        new = np.flatnonzero(src_index < 0)
        made = (codec.encode_frames(out[name][new], codec_name, jpeg_quality=enc.jpeg_quality,
                                    png_compression=enc.png_compression) if new.size else [])
        made_at = dict(zip(new.tolist(), made))
        return [made_at[i] if s < 0 else source_blobs[s] for i, s in enumerate(src_index)]

    T = len(out["face_found"])
    mouth_data, mouth_off = _pack(blobs_of("mouth", mouth_blobs, enc.mouth_codec))
    face_data, face_off = _pack(blobs_of("face", face_blobs, enc.face_codec))
    teacher, teacher_note = _carry_teacher(src, donor, out)
    notes = []                  # kind, source and donor are in the example's attributes
    if kind == "pf_tts":
        notes.append(f"transcript: {transcript[:80]!r}")
    if teacher_note:
        notes.append(teacher_note)
    arrays = dict(src)          # every other field (params, source info) is the source's
    arrays.update(teacher)
    arrays.update({
        "mouth_data": mouth_data, "mouth_offsets": mouth_off,
        "face_data": face_data, "face_offsets": face_off,
        "logmel": np.asarray(out["logmel"], np.float16), "audio": out["audio"],
        "face_found": out["face_found"], "boxes": out["boxes"],
        **({"lips": np.asarray(out["lips"], np.float32)} if "lips" in out else {}),
        "duration_s": np.float32(T / contract.VIDEO_FPS),
        "notes_json": np.array(json.dumps(notes)),
        "audio_source": np.array(d.get("donor") or (f"tts:{d['params'].get('voice')}"
                                                    if kind == "pf_tts" else "")),
    })
    return arrays, notes


def process_derived(task: ClipTask, spec: PreprocessSpec, path: str, source_file: str,
                    donor_file: str = "", transcripts_dir: str = "") -> Outcome:
    """Make one derived clip into cache file ``path``; never raises for bad input (as
    :func:`process_clip`: a MediaError, e.g. a clip too short for the shift, becomes a
    'skipped' outcome)."""
    return _make_entry(task, path, lambda: derive_arrays(task, spec, source_file, donor_file,
                                                         transcripts_dir))


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
                done = _read_cached(t.key, path, time.perf_counter())
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
