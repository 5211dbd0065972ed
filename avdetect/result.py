"""The result of scoring one file (``avdetect detect``): :class:`DetectResult`, its
windows, its flags and warnings, and the JSON Schema of the document it writes.

Flags (nothing is hidden; frames are still scored as they are):
  no_face_frames        frames where the face detector/tracker found no face (their crops
                        come from interpolated / held boxes): count, fraction, time ranges
  no_audio              the file has no usable audio track: the model's audio input is
                        what the training data holds for a missing track (an all-zero
                        log-mel / waveform), which is not silence (log-mel 0 is a loud
                        frame; silence is the floor ln(1e-6))
  silent_audio_frames   frames without sound: digital silence (every mel band within 10x
                        of the log floor) or no audio track: count, fraction, time ranges
  too_short             shorter than one model window (>= 3 frames): scored from one
                        window whose missing frames are padding the model masks out
                        (``frame_mask``); ``num_frames`` says how many frames were scored
  corrupt_frames        undecodable video frames (the previous frame was repeated)
  corrupt_audio_packets undecodable audio packets (replaced by silence)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from avdetect import contract

SCHEMA_VERSION = 1
# The fewest video frames a file may have to be scored (fewer: TooShortError naming the
# file). CMDFD's protocol scores clips under 1 s, so detect does too, from one window
# padded with masked frames; under 3 frames (0.12 s) there is no lip movement to judge.
MIN_FRAMES = 3


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
            # Not "silence": a missing track reaches the model as the training data's
            # stand-in (an all-zero log-mel, which is a loud frame; silence is the floor).
            out.append("no audio track: the model's audio input is the stand-in the training "
                       "data holds for a missing track (all-zero log-mel / waveform), so "
                       "audio-visual agreement cannot be judged for this file")
        elif f["silent_audio_frames"]["count"]:
            s = f["silent_audio_frames"]
            out.append(f"digital silence in {100 * s['fraction']:.0f}% of frames")
        if f["too_short"]:
            out.append(f"shorter than one model window ({self.num_frames} < {self.window} "
                       f"frames): scored from one window whose {self.window - self.num_frames} "
                       "missing frames are masked out")
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
        "num_frames": {"type": "integer", "minimum": MIN_FRAMES},
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
                           # the tiling's tail window may hold a single frame
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
                                 "too_short": {"type": "boolean", "description":
                                               "fewer frames than one model window: "
                                               "scored from one window whose missing "
                                               "frames are masked (frame_mask)"},
                                 "corrupt_frames": {"type": "integer", "minimum": 0},
                                 "corrupt_audio_packets": {"type": "integer", "minimum": 0}}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "media": {"type": "object"},
        "model": {"type": "object"},
        "timings_s": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}
