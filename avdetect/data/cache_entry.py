"""One clip's preprocessing cache entry: what it holds and how it is written and read.

An entry is one ``.npz`` (written atomically: an interrupted build leaves no half-written
file) with the encoded mouth / face frames (``*_data`` bytes + ``*_offsets``), the
log-mel (float16), the int16 waveform, the face-found flags, boxes, lip landmarks, the
teacher posteriors (float32) with per-side flags, the source's rates and duration, and
the preprocessing parameters and notes as JSON. :func:`encode_clip` makes it from a
preprocessing result (``ClipFeatures`` or an equivalent mapping), :func:`make_entry`
writes it, :func:`read_cached` reads a hit back. Which clips get an entry, and under
which name, is :mod:`avdetect.data.clips`; entries of derived clips are
:mod:`avdetect.data.derived_clips`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from avdetect import contract
from avdetect.data import codec
from avdetect.errors import MediaError

if TYPE_CHECKING:
    from avdetect.data.clips import ClipTask, PreprocessSpec

TeacherFn = Callable[[Any, Mapping[str, Any]], "tuple[np.ndarray, np.ndarray] | None"]


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


def clip_waveform(path: str, num_frames: int) -> np.ndarray:
    """The clip's own audio as int16 [640 T] (zeros when the file has no audio stream)."""
    from avdetect.media.decode import load_audio

    try:
        return contract.to_int16(load_audio(path, num_frames=num_frames))
    except MediaError:
        return np.zeros(num_frames * contract.SAMPLES_PER_FRAME, np.int16)


def clip_field(clip: Any, name: str, default: Any = None) -> Any:
    if isinstance(clip, Mapping):
        return clip.get(name, default)
    return getattr(clip, name, default)


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


def pack_frames(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
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


def encode_clip(task: ClipTask, clip: Any, spec: PreprocessSpec,
                 audio_source: str = "", audio_file: str | None = None
                 ) -> tuple[dict, list[str]]:
    """ClipFeatures (or an equivalent mapping) -> the arrays stored in the cache."""
    mouth = np.asarray(clip_field(clip, "mouth"))
    face = np.asarray(clip_field(clip, "face"))
    T = mouth.shape[0]
    logmel = np.asarray(clip_field(clip, "logmel"), np.float32)
    face_found = np.asarray(clip_field(clip, "face_found"), bool)
    boxes = np.asarray(clip_field(clip, "boxes"), np.float32)
    lips = clip_field(clip, "lips", None)       # None: a preprocessing without landmarks
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
    has_audio = bool(clip_field(clip, "has_audio", True))
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
    info = clip_field(clip, "info")
    enc = spec.encoding
    mouth_data, mouth_off = pack_frames(codec.encode_frames(mouth, enc.mouth_codec,
                                                     jpeg_quality=enc.jpeg_quality,
                                                     png_compression=enc.png_compression))
    face_data, face_off = pack_frames(codec.encode_frames(face, enc.face_codec,
                                                   jpeg_quality=enc.jpeg_quality,
                                                   png_compression=enc.png_compression))
    # The raw waveform (Whisper's input): the one the preprocessing decoded (or borrowed);
    # decoded from the clip's file only for a custom preprocessing that kept none.
    wave = clip_field(clip, "audio")
    if wave is None:
        wave = (clip_waveform(task.path, T) if has_audio
                else np.zeros(T * contract.SAMPLES_PER_FRAME, np.int16))
    wave = np.asarray(wave)
    if wave.dtype != np.int16:
        wave = contract.to_int16(wave)
    if wave.shape != (T * contract.SAMPLES_PER_FRAME,):
        raise ValueError(f"audio waveform of shape {wave.shape} for a {T}-frame clip")
    params = clip_field(clip, "params") or {}
    arrays = {
        "mouth_data": mouth_data, "mouth_offsets": mouth_off,
        "face_data": face_data, "face_offsets": face_off,
        "logmel": logmel.astype(np.float16), "audio": wave, "face_found": face_found, "boxes": boxes,
        "lips": lips, "has_lips": np.bool_(has_lips),
        "has_audio": np.bool_(has_audio),
        "teacher_audio": teacher_a, "teacher_video": teacher_v,
        "has_teacher": np.bool_(has_a and has_v),
        "has_teacher_audio": np.bool_(has_a), "has_teacher_video": np.bool_(has_v),
        "src_fps": np.float32(clip_field(info, "src_fps", 0.0) or 0.0),
        "src_sample_rate": np.int32(clip_field(info, "src_sample_rate", 0) or 0),
        "duration_s": np.float32(clip_field(info, "duration_s", T / contract.VIDEO_FPS) or 0.0),
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


def read_cached(key: str, path: str, t0: float) -> Outcome | None:
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


def make_entry(task: ClipTask, path: str, make: Callable[[], tuple[dict, list[str]]]
                ) -> Outcome:
    """Write the cache entry ``make()`` returns (arrays, notes) to ``path`` unless another
    build made it meanwhile. Never raises for bad input: a ``MediaError`` becomes a
    'skipped' outcome, anything else an 'error' outcome."""
    t0 = time.perf_counter()
    try:
        hit = read_cached(task.key, path, t0)   # another build may have made it meanwhile
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
