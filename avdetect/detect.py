"""Scoring videos with a trained model: the library behind ``avdetect detect``.

``score_video(path, model)`` runs, for one file:

  decode + face track + crops + log-mel   (``avdetect.preprocess.pipeline``, with the
                                           training dataset's recorded parameters)
  -> a shard-format example               (crops through the dataset's frame codecs,
                                           log-mel through float16, exactly as stored)
  -> windows of T = config.data.window    (``avdetect.data.pipeline.WindowMaker.cut``:
                                           the evaluation pipeline's own cutter)
  -> batches -> ``method.predict``        (``LoadedModel.predict``)
  -> video score, verdict, flags.

Windows. Default stride = T: the windows tile the video exactly as the evaluation
pipeline does (``window_starts``), the last partial window zero-padded and masked, so a
file scores as it would inside an evaluated dataset and the threshold chosen on the
validation split applies unchanged. ``stride < T`` gives overlapping windows (a finer
timeline); the last window is the first one that reaches the end of the video.

Aggregation. Window score = the method's clip score over the window's valid frames;
video score = the mean of the window scores weighted by their valid frames
(``evaluation.aggregate_videos``, the evaluator's own rule). Per-frame scores (the
timeline) = the method's per-frame scores averaged over the windows covering the frame.
Verdict: 'fake' when score >= threshold (the threshold of the model's validation report,
or an explicit override; a default threshold is always named as such).

Flags (nothing is hidden; frames are still scored as they are):
  no_face_frames        frames where the face detector/tracker found no face (their crops
                        come from interpolated / held boxes): count, fraction, time ranges
  no_audio              the file has no usable audio track (the audio input is silence)
  silent_audio_frames   frames whose audio is digital silence (every mel band within 10x
                        of the log floor): count, fraction, time ranges
  too_short             shorter than one model window (scored from one padded window)
  corrupt_frames        undecodable video frames (the previous frame was repeated)
  corrupt_audio_packets undecodable audio packets (replaced by silence)

Files that cannot be scored (missing, empty, not media, no video stream, truncated,
shorter than ``pipeline.MIN_FRAMES`` frames, no face in any frame) raise the typed
``avdetect.errors.MediaError`` of their problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import re
import time
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from avdetect import contract, evaluation
from avdetect.data import clips, codec
from avdetect.data.pipeline import WindowMaker, window_starts
from avdetect.errors import AVDetectError, FileMissingError, MediaError
from avdetect.export import LoadedModel
from avdetect.media import decode
from avdetect.preprocess import align, landmarks, logmel, pipeline

SCHEMA_VERSION = 1
# Exit codes of `avdetect detect` (documented in its --help).
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL, EXIT_NONE = 0, 2, 3, 4
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                    ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv")
# A frame's audio is "digital silence" when every mel band of its 4 log-mel frames is
# within 10x of the log floor: ~90 dB below a full-scale tone, far under any room noise
# (the real fixture clips never go below log-mel -8).
SILENCE_LOGMEL = math.log(10 * contract.LOG_FLOOR)
_UNREAD_FACE_SIZE = 8        # preprocess_video's smallest face crop side
_CORRUPT_VIDEO = re.compile(r"(\d+) corrupt video frame")
_CORRUPT_AUDIO = re.compile(r"(\d+) corrupt audio packet")


# ----------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------

def frame_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a bool [T] array as ``(start, stop)`` frame pairs (stop exclusive)."""
    m = np.asarray(mask, bool).astype(np.int8)
    edges = np.diff(np.r_[0, m, 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _seconds(ranges: Sequence[tuple[int, int]]) -> list[list[float]]:
    fps = contract.VIDEO_FPS
    return [[round(a / fps, 3), round(b / fps, 3)] for a, b in ranges]


def _frame_flag(mask: np.ndarray) -> dict[str, Any]:
    mask = np.asarray(mask, bool)
    n = int(mask.sum())
    return {"count": n, "fraction": round(n / max(len(mask), 1), 4),
            "ranges_s": _seconds(frame_ranges(mask))}


@dataclasses.dataclass
class WindowScore:
    """One scored window: frames [start, start + num_frames) of the video."""

    start: int                # first frame
    num_frames: int           # valid (non-padding) frames
    score: float
    face_fraction: float      # share of its frames with a detected / tracked face
    audio_fraction: float     # share of its frames with non-silent audio

    def to_json(self) -> dict[str, Any]:
        fps = contract.VIDEO_FPS
        return {"start_frame": self.start, "num_frames": self.num_frames,
                "start_s": round(self.start / fps, 3),
                "end_s": round((self.start + self.num_frames) / fps, 3),
                "score": float(self.score), "face_fraction": round(self.face_fraction, 4),
                "audio_fraction": round(self.audio_fraction, 4)}


@dataclasses.dataclass
class DetectResult:
    """Everything ``score_video`` found out about one file (see the module docstring).

    Per-frame arrays are [T] at ``contract.VIDEO_FPS``: ``frame_scores`` float32,
    ``face_found`` and ``audio_present`` bool."""

    path: str
    score: float
    verdict: str                          # 'fake' | 'real'
    threshold: float
    threshold_source: str
    threshold_origin: str                 # 'report' | 'default' | 'override'
    score_scale: str
    window: int
    stride: int
    windows: list[WindowScore]
    frame_scores: np.ndarray
    face_found: np.ndarray
    audio_present: np.ndarray
    has_audio: bool
    corrupt_frames: int = 0
    corrupt_audio_packets: int = 0
    media: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(len(self.frame_scores))

    @property
    def duration_s(self) -> float:
        return self.num_frames / contract.VIDEO_FPS

    @property
    def too_short(self) -> bool:
        return self.num_frames < self.window

    @property
    def flags(self) -> dict[str, Any]:
        return {"no_face_frames": _frame_flag(~self.face_found),
                "no_audio": not self.has_audio,
                "silent_audio_frames": _frame_flag(~self.audio_present),
                "too_short": self.too_short,
                "corrupt_frames": int(self.corrupt_frames),
                "corrupt_audio_packets": int(self.corrupt_audio_packets)}

    @property
    def warnings(self) -> list[str]:
        """Sentences for people about everything that weakens this verdict."""
        out = []
        f = self.flags
        nf = f["no_face_frames"]
        if nf["count"]:
            out.append(f"no face in {nf['count']} of {self.num_frames} frames "
                       f"({100 * nf['fraction']:.0f}%); their crops come from interpolated or "
                       "held face boxes")
        if f["no_audio"]:
            out.append("no audio track: the model heard silence, the verdict rests on the "
                       "video alone")
        elif f["silent_audio_frames"]["count"]:
            s = f["silent_audio_frames"]
            out.append(f"digital silence in {100 * s['fraction']:.0f}% of frames")
        if f["too_short"]:
            out.append(f"shorter than one model window ({self.num_frames} < {self.window} "
                       "frames): scored from one padded window")
        if f["corrupt_frames"] or f["corrupt_audio_packets"]:
            out.append(f"{f['corrupt_frames']} corrupt video frame(s), "
                       f"{f['corrupt_audio_packets']} corrupt audio packet(s) replaced")
        if self.threshold_origin == "default":
            out.append("threshold is a default, not chosen on validation data: "
                       + self.threshold_source)
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``RESULT_SCHEMA``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "file": self.path,
            "status": "scored",
            "score": float(self.score),
            "verdict": self.verdict,
            "threshold": {"value": float(self.threshold), "source": self.threshold_source,
                          "origin": self.threshold_origin},
            "score_scale": self.score_scale,
            "num_frames": self.num_frames,
            "duration_s": round(self.duration_s, 3),
            "fps": contract.VIDEO_FPS,
            "window": {"frames": self.window, "stride": self.stride},
            "windows": [w.to_json() for w in self.windows],
            "frame_scores": [round(float(s), 5) for s in self.frame_scores],
            "face_found": [int(v) for v in self.face_found],
            "audio_present": [int(v) for v in self.audio_present],
            "flags": self.flags,
            "warnings": self.warnings,
            "media": self.media,
            "model": self.model,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "DetectResult":
        """Inverse of :meth:`to_json` (per-frame scores are rounded to 5 decimals there)."""
        windows = [WindowScore(int(w["start_frame"]), int(w["num_frames"]), float(w["score"]),
                               float(w["face_fraction"]), float(w["audio_fraction"]))
                   for w in doc["windows"]]
        return cls(path=doc["file"], score=float(doc["score"]), verdict=doc["verdict"],
                   threshold=float(doc["threshold"]["value"]),
                   threshold_source=doc["threshold"]["source"],
                   threshold_origin=doc["threshold"]["origin"],
                   score_scale=doc["score_scale"], window=int(doc["window"]["frames"]),
                   stride=int(doc["window"]["stride"]), windows=windows,
                   frame_scores=np.asarray(doc["frame_scores"], np.float32),
                   face_found=np.asarray(doc["face_found"], bool),
                   audio_present=np.asarray(doc["audio_present"], bool),
                   has_audio=not doc["flags"]["no_audio"],
                   corrupt_frames=int(doc["flags"]["corrupt_frames"]),
                   corrupt_audio_packets=int(doc["flags"]["corrupt_audio_packets"]),
                   media=dict(doc.get("media", {})), model=dict(doc.get("model", {})),
                   timings=dict(doc.get("timings_s", {})))


def _range_list() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                       "minItems": 2, "maxItems": 2}}


def _frame_flag_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["count", "fraction", "ranges_s"],
            "properties": {"count": {"type": "integer", "minimum": 0},
                           "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                           "ranges_s": _range_list()}}


# JSON Schema (draft 2020-12) of one file's result document.
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "avdetect detect result",
    "type": "object",
    "required": ["schema_version", "file", "status", "score", "verdict", "threshold",
                 "score_scale", "num_frames", "duration_s", "fps", "window", "windows",
                 "frame_scores", "face_found", "audio_present", "flags", "warnings", "media",
                 "model", "timings_s"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "file": {"type": "string"},
        "status": {"const": "scored"},
        "score": {"type": "number"},
        "verdict": {"enum": ["real", "fake"]},
        "threshold": {"type": "object", "required": ["value", "source", "origin"],
                      "properties": {"value": {"type": "number"},
                                     "source": {"type": "string", "minLength": 1},
                                     "origin": {"enum": ["report", "default", "override"]}}},
        "score_scale": {"enum": ["log_odds", "logit", "probability", "unknown"]},
        "num_frames": {"type": "integer", "minimum": 1},
        "duration_s": {"type": "number", "exclusiveMinimum": 0},
        "fps": {"const": contract.VIDEO_FPS},
        "window": {"type": "object", "required": ["frames", "stride"],
                   "properties": {"frames": {"type": "integer", "minimum": 1},
                                  "stride": {"type": "integer", "minimum": 1}}},
        "windows": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["start_frame", "num_frames", "start_s", "end_s", "score",
                         "face_fraction", "audio_fraction"],
            "properties": {"start_frame": {"type": "integer", "minimum": 0},
                           "num_frames": {"type": "integer", "minimum": 1},
                           "start_s": {"type": "number", "minimum": 0},
                           "end_s": {"type": "number", "exclusiveMinimum": 0},
                           "score": {"type": "number"},
                           "face_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                           "audio_fraction": {"type": "number", "minimum": 0, "maximum": 1}}}},
        "frame_scores": {"type": "array", "items": {"type": "number"}},
        "face_found": {"type": "array", "items": {"enum": [0, 1]}},
        "audio_present": {"type": "array", "items": {"enum": [0, 1]}},
        "flags": {"type": "object",
                  "required": ["no_face_frames", "no_audio", "silent_audio_frames", "too_short",
                               "corrupt_frames", "corrupt_audio_packets"],
                  "properties": {"no_face_frames": _frame_flag_schema(),
                                 "no_audio": {"type": "boolean"},
                                 "silent_audio_frames": _frame_flag_schema(),
                                 "too_short": {"type": "boolean"},
                                 "corrupt_frames": {"type": "integer", "minimum": 0},
                                 "corrupt_audio_packets": {"type": "integer", "minimum": 0}}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "media": {"type": "object"},
        "model": {"type": "object"},
        "timings_s": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


# ----------------------------------------------------------------------------------
# Stage timing (--timings)
# ----------------------------------------------------------------------------------

class _TimedFrames:
    """Wraps a frame generator, adding the time spent inside ``next`` to a stage."""

    def __init__(self, it: Iterator, add: Callable[[float], None]):
        self._it, self._add = it, add

    def __iter__(self) -> "_TimedFrames":
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self._add(time.perf_counter() - t0)

    def close(self) -> None:
        self._it.close()


@contextlib.contextmanager
def stage_timer(timings: dict[str, float]):
    """Times the stages inside ``preprocess_video`` (probe, video decoding, face
    tracking, cropping, audio decoding, log-mel) by wrapping those functions for the
    duration of the block; adds seconds into ``timings``. Instrumentation only: the
    wrapped functions return exactly what they return unwrapped."""

    def add(stage: str, dt: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + dt

    def timed(stage: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(stage, time.perf_counter() - t0)
        return wrapper

    def timed_frames(fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            it = fn(*args, **kwargs)
            add("decode_video", time.perf_counter() - t0)
            return _TimedFrames(it, lambda dt: add("decode_video", dt))
        return wrapper

    patches = [(decode, "probe", timed("probe", decode.probe)),
               (decode, "iter_frames", timed_frames(decode.iter_frames)),
               (decode, "load_audio", timed("decode_audio", decode.load_audio)),
               (logmel, "log_mel", timed("logmel", logmel.log_mel)),
               (landmarks.LandmarkTracker, "update",
                timed("face_track", landmarks.LandmarkTracker.update)),
               (align, "mouth_crop", timed("crop", align.mouth_crop)),
               (align, "face_crop", timed("crop", align.face_crop))]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, new in patches:
            setattr(obj, name, new)
        yield timings
    finally:
        for obj, name, old in originals:
            setattr(obj, name, old)


# ----------------------------------------------------------------------------------
# Preprocessing and inputs
# ----------------------------------------------------------------------------------

def preprocess_kwargs(model: LoadedModel) -> dict[str, Any]:
    """``preprocess_video`` arguments reproducing the training dataset's preprocessing
    (its recorded landmark parameters and decode size; defaults when not recorded)."""
    rec = model.preprocess.get("params") or {}
    face_size = int(model.preprocess["face_size"])
    if "face" not in model.inputs:
        # The model never reads face crops: ask for the smallest the pipeline makes
        # rather than holding [T, S, S, 3] of them (a 10-minute video: 560 MiB at S=112).
        face_size = _UNREAD_FACE_SIZE
    kw: dict[str, Any] = {"face_size": face_size}
    if "decode_max_side" in rec:
        kw["decode_max_side"] = rec["decode_max_side"]
    if isinstance(rec.get("landmarks"), Mapping):
        names = {f.name for f in dataclasses.fields(landmarks.LandmarkParams)}
        lp = {k: tuple(v) if isinstance(v, list) else v
              for k, v in rec["landmarks"].items() if k in names}
        kw["landmark_params"] = landmarks.LandmarkParams(**lp)
    # Models trained on the older Haar-box crops (params with 'tracker' and no
    # 'landmarks') get the landmark-aligned crops: the only preprocessing there is now.
    return kw


def preprocess_file(path: str, model: LoadedModel
                    ) -> tuple[pipeline.ClipFeatures, int, int]:
    """(features, corrupt video frames, corrupt audio packets) of one file. Raises the
    typed MediaError of an unusable file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileMissingError(path, "does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", decode.CorruptFrameWarning)
        # Once a file with video has passed the probe, compile the one-window shape
        # (every clip shorter than two batches uses it) in a background thread while it
        # decodes.
        def on_probe(info: decode.MediaInfo) -> None:
            if info.has_video:
                model.warm_up(1)

        feats = pipeline.preprocess_video(path, **preprocess_kwargs(model), on_probe=on_probe)
    bad_video = bad_audio = 0
    for w in caught:
        if issubclass(w.category, decode.CorruptFrameWarning):
            text = str(w.message)
            if m := _CORRUPT_VIDEO.search(text):
                bad_video += int(m.group(1))
            if m := _CORRUPT_AUDIO.search(text):
                bad_audio += int(m.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return feats, bad_video, bad_audio


def audio_presence(feats: pipeline.ClipFeatures) -> np.ndarray:
    """bool [T]: the frame's audio is neither missing nor digital silence."""
    t = feats.num_frames
    if not feats.has_audio:
        return np.zeros(t, bool)
    per_frame = np.asarray(feats.logmel, np.float32).reshape(t, contract.MEL_PER_FRAME, -1)
    return per_frame.max(axis=(1, 2)) > SILENCE_LOGMEL


def clip_example(feats: pipeline.ClipFeatures, model: LoadedModel) -> dict[str, Any]:
    """The shard-format example of a preprocessed clip (the streams the model reads),
    so windows are cut by the evaluation pipeline's own code: crops go through the
    training dataset's frame codecs (lossy JPEG faces included) and the log-mel through
    float16, exactly as a dataset stores them. Labels are placeholders."""
    enc = model.preprocess["encoding"]
    streams = set(model.inputs)
    ex: dict[str, Any] = {"num_frames": feats.num_frames, "face_found": feats.face_found,
                          "label": 0, "video_fake": False, "audio_fake": False, "category": 0,
                          "method": "unknown", "has_audio": feats.has_audio,
                          "has_teacher": False, "video_id": os.path.basename(feats.info.path),
                          "_record": 0}
    if "mouth" in streams:
        # PNG is lossless at any compression level: level 0 is the fastest way to the
        # same pixels the dataset's codec would give.
        ex["mouth"] = (codec.encode_frames(feats.mouth, "png", png_compression=0)
                       if enc.get("mouth_codec", "png") == "png" else
                       codec.encode_frames(feats.mouth, "jpeg", jpeg_quality=int(enc["jpeg_quality"])))
    if "face" in streams:
        ex["face"] = codec.encode_frames(feats.face, enc.get("face_codec", "jpeg"),
                                         jpeg_quality=int(enc.get("jpeg_quality", 90)),
                                         png_compression=int(enc.get("png_compression", 3)))
    if "logmel" in streams:
        ex["logmel"] = np.asarray(feats.logmel).astype(np.float16)
    if "audio" in streams:
        # Raw waveform (e.g. CAD's Whisper front end), int16 as a shard stores it.
        ex["audio"] = clips.clip_waveform(feats.info.path, feats.num_frames)
    if "lips" in streams:
        # float32 [T, 20, 2] as a shard stores it (shard format 4)
        if feats.lips is None:
            raise ValueError(f"{feats.info.path}: the model reads 'lips' but the "
                             "preprocessing gave no lip landmarks")
        ex["lips"], ex["has_lips"] = np.asarray(feats.lips, np.float32), True
    return ex


def window_plan(num_frames: int, window: int, stride: int) -> list[int]:
    """Window start frames: the evaluation tiling for ``stride == window``; otherwise
    every ``stride`` frames up to the first window that reaches the end."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window}, {stride}")
    if stride == window:
        return window_starts(num_frames, window)
    starts = [0]
    while starts[-1] + window < num_frames:
        starts.append(starts[-1] + stride)
    return starts


def batch_plan(n: int, batch_size: int) -> list[int]:
    """Windows per model call for ``n`` windows: full batches of ``batch_size``, then the
    rest one window per call. No padding window is ever computed (a network spends as
    long on a padding window as on a real one: a 10 s clip of the default config is 5
    windows, which a padded batch of 8 made 1.8x the work), and only two batch shapes,
    ``batch_size`` and 1, are ever traced and compiled (tracing the full student costs
    ~0.8 s per shape even with the compilation cache warm). On CPU a window costs the
    same alone as in a batch: 5 windows of the default config took 1.45 CPU-s as 5 x 1,
    1.54 as 4 + 1 and 2.68 as a padded 8."""
    return [batch_size] * (n // batch_size) + [1] * (n % batch_size)


def _batches(windows: list[dict[str, np.ndarray]], batch_size: int
             ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(batch, number of windows in it) in the sizes of :func:`batch_plan`."""
    i = 0
    for size in batch_plan(len(windows), batch_size):
        part = windows[i:i + size]
        i += size
        yield {k: np.stack([w[k] for w in part]) for k in part[0]}, size


# ----------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------

def score_video(path: str | os.PathLike, model: LoadedModel, *, batch_size: int = 8,
                stride: int | None = None, threshold: float | None = None,
                progress: bool = False, timings: bool = False) -> DetectResult:
    """Scores one video file with ``model`` (see the module docstring).

    ``stride`` defaults to the window (the evaluation tiling); ``threshold`` overrides
    the model's. ``timings`` adds a per-stage breakdown (seconds) to the result; total
    and model times are always recorded. Raises ``MediaError`` subclasses for files
    that cannot be scored."""
    path = os.fspath(path)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    with stage_timer(times) if timings else contextlib.nullcontext():
        feats, bad_video, bad_audio = preprocess_file(path, model)
    times["preprocess"] = time.perf_counter() - t_start
    if timings:
        inner = sum(v for k, v in times.items() if k != "preprocess")
        times["preprocess_other"] = max(times["preprocess"] - inner, 0.0)

    t0 = time.perf_counter()
    T, W = feats.num_frames, model.window
    stride = int(stride or W)
    ex = clip_example(feats, model)
    maker = WindowMaker(window=W, method_ids={"unknown": 0}, face_size=model.face_size,
                        streams=frozenset(model.inputs))
    starts = window_plan(T, W, stride)
    keys = (*model.inputs, "frame_mask")
    windows = [{k: v for k, v in maker.cut(ex, s).items() if k in keys} for s in starts]
    times["windows"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    compile0 = model.compile_seconds
    scores, frame_parts = [], []
    # disable=None: tqdm shows the bar only on a terminal
    bar = tqdm(total=len(windows), desc=os.path.basename(path), unit="window", leave=False,
               disable=None if progress else True)
    for batch, n in _batches(windows, batch_size):
        out = model.predict(batch)
        scores.extend(out["score"][:n].tolist())
        frame_parts.extend(out["frame_score"][:n])
        bar.update(n)
    bar.close()
    times["model_compile"] = model.compile_seconds - compile0
    times["model"] = time.perf_counter() - t0 - times["model_compile"]

    t0 = time.perf_counter()
    masks = [w["frame_mask"] for w in windows]
    n_valid = np.array([int(m.sum()) for m in masks])
    video = evaluation.aggregate_videos({"score": np.asarray(scores, np.float64),
                                         "n_frames": n_valid.astype(np.float64),
                                         "video_id": np.zeros(len(scores), np.int64),
                                         "label": np.zeros(len(scores), np.int64)})
    score = float(video["score"][0])
    frame_sum, frame_cnt = np.zeros(T, np.float64), np.zeros(T, np.float64)
    for s, fs, n in zip(starts, frame_parts, n_valid):
        frame_sum[s:s + n] += fs[:n]
        frame_cnt[s:s + n] += 1
    frame_scores = (frame_sum / np.maximum(frame_cnt, 1)).astype(np.float32)
    audio = audio_presence(feats)
    face = np.asarray(feats.face_found, bool)
    window_scores = [WindowScore(int(s), int(n), float(sc), float(face[s:s + n].mean()),
                                 float(audio[s:s + n].mean()))
                     for s, n, sc in zip(starts, n_valid, scores)]
    if threshold is None:
        thr, thr_source, thr_origin = model.threshold, model.threshold_source, model.threshold_origin
    else:
        thr, thr_source, thr_origin = float(threshold), "given on the command line", "override"
    info = feats.info
    media = {"container": info.container, "duration_s": round(float(info.duration_s), 3),
             "src_fps": info.src_fps, "width": info.width, "height": info.height,
             "video_codec": info.video_codec, "audio_codec": info.audio_codec,
             "src_sample_rate": info.src_sample_rate, "vfr": bool(info.vfr),
             "rotation": int(info.rotation)}
    times["aggregate"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_start
    return DetectResult(
        path=path, score=score, verdict="fake" if score >= thr else "real", threshold=thr,
        threshold_source=thr_source, threshold_origin=thr_origin, score_scale=model.score_scale,
        window=W, stride=stride, windows=window_scores, frame_scores=frame_scores,
        face_found=face, audio_present=audio, has_audio=bool(feats.has_audio),
        corrupt_frames=bad_video, corrupt_audio_packets=bad_audio, media=media,
        model=model.describe(), timings=times)


# ----------------------------------------------------------------------------------
# Many files
# ----------------------------------------------------------------------------------

def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_paths(args: Sequence[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """(files to score, problems) from command-line PATHs: a file (kept even when it does
    not exist: scoring it reports the problem), a folder (its video files, by extension;
    sub-folders with ``recursive``) or a glob pattern. Problems: folders without videos,
    patterns matching nothing."""
    files, problems = [], []
    for arg in args:
        if os.path.isdir(arg):
            pattern = os.path.join(glob.escape(arg), "**", "*") if recursive else \
                os.path.join(glob.escape(arg), "*")
            found = sorted(p for p in glob.glob(pattern, recursive=recursive)
                           if os.path.isfile(p) and p.lower().endswith(VIDEO_EXTENSIONS))
            if not found:
                problems.append(f"{arg}: folder holds no video files "
                                f"({', '.join(VIDEO_EXTENSIONS[:6])}, ...)"
                                + ("" if recursive else "; use --recursive for sub-folders"))
            files.extend(found)
        elif _has_glob(arg) and not os.path.exists(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not found:
                problems.append(f"{arg}: pattern matches no file")
            files.extend(found)
        else:
            files.append(arg)
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def output_names(paths: Sequence[str]) -> list[str]:
    """A distinct output base name per input file (its stem; ``-2``, ``-3`` on clashes)."""
    used: dict[str, int] = {}
    names = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(os.path.normpath(p)))[0] or "video"
        k = used.get(stem, 0) + 1
        used[stem] = k
        names.append(stem if k == 1 else f"{stem}-{k}")
    return names


def error_record(path: str, err: BaseException) -> dict[str, Any]:
    """The summary entry of a file that could not be scored."""
    if isinstance(err, MediaError):
        kind, reason = err.kind, err.reason
    elif isinstance(err, AVDetectError):
        kind, reason = type(err).__name__, str(err)
    else:   # not expected: say what it was rather than hide it
        kind, reason = "internal_error", f"{type(err).__name__}: {err}"
    return {"file": path, "status": "error", "error": {"kind": kind, "reason": reason}}


def exit_code(n_scored: int, n_failed: int) -> int:
    """0 all scored, 3 some could not be scored, 4 none could be scored."""
    if n_failed == 0:
        return EXIT_OK
    return EXIT_PARTIAL if n_scored else EXIT_NONE


# ----------------------------------------------------------------------------------
# Dataset splits (the notebook's evaluation)
# ----------------------------------------------------------------------------------

def score_split(model: LoadedModel, split: str, *, data_dir: str | None = None,
                batch_size: int | None = None, max_batches: int | None = None,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Valid window records (``score``, ``label``, ``video_id``, ``n_frames``,
    ``category``, ``method``) of every window of a dataset split, scored by ``model`` on
    this process: the input of ``evaluation.evaluate_records`` / ``aggregate_videos``.
    The data come from ``model.config.data`` ('random' needs no dataset; ``data_dir``
    overrides the config's)."""
    from avdetect import train
    from avdetect.data import pipeline as data_pipeline

    config = model.config
    b = int(batch_size or config.data.get("eval_batch_size", None) or config.data.batch_size)
    if config.data.name == "random":
        it = train.random_eval_batches(config, split, process_index=0, process_count=1,
                                       local_batch_size=b)
    else:
        data_cfg = config.data.to_dict()
        if data_dir:
            data_cfg["data_dir"] = data_dir
        it = data_pipeline.make_eval_batches(data_cfg, split, local_batch_size=b)
    collector = evaluation.Collector()
    keys = (*model.inputs, "frame_mask")
    bar = tqdm(desc=f"score {split}", unit="batch", disable=None if progress else True)
    for i, batch in enumerate(it):
        if max_batches is not None and i >= max_batches:
            break
        out = model.predict({k: batch[k] for k in keys if k in batch})
        rec = {"score": out["score"], "label": batch["label"], "video_id": batch["video_id"],
               "n_frames": batch["frame_mask"].sum(-1),
               "valid": batch.get("valid", np.ones(len(batch["label"]), np.int32))}
        for k in ("category", "method"):
            if k in batch:
                rec[k] = batch[k]
        collector.add(rec)
        bar.update(1)
    bar.close()
    return collector.records()
