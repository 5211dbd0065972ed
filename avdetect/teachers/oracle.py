"""Oracle teacher for the synthetic benchmark: per-frame viseme posteriors from the
generator's own ground truth (``datasets/synthetic_av/generate.py`` writes a
``<clip_id>.npz`` beside each video and ``alphabet.json`` at the top of its output).

* Audio side: the phone HEARD in each frame (npz ``phone``, names from
  ``alphabet.json['phones']`` spelled in ``['phone_scheme']``), mapped to
  ``alphabet.VISEMES``.
* Video side: the phone the VISIBLE mouth was driven by (npz ``video_phone``), mapped the
  same way. Where the mouth follows no phone (``-1``: talking heads drive the jaw from the
  audio energy with a neutral lip shape) the side reports the viseme whose lip target is
  nearest to the rendered mouth (``mouth_open``, ``mouth_width``, ``mouth_round``), i.e.
  what a lip reader would see; frames without that either are uniform.

Both sides go through ``posteriors.soften`` (label smoothing ``label_smoothing`` = 0.1,
temporal Gaussian blur ``blur_sigma`` = 0.6 frames; see that module for why). The
resulting agreement structure, by construction: real, voiceconvert and faceswap clips
(the lips follow the heard phones) agree on every frame (r_t = 1 up to the blur);
lipsync, voiceclone, desync and talkinghead clips disagree on the manipulated frames
wherever the heard and shown visemes differ.

Tracks whose length differs from the decoded video by a frame or two are cut or
edge-extended (``posteriors.fit_length``). A clip without ground truth (no path in the
row, or no ``.npz`` beside the video) gets None; a ground-truth file that exists but is
unusable raises ``GroundTruthError`` naming it.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Any

import numpy as np

from avdetect.teachers import alphabet, posteriors
from avdetect.teachers.errors import GroundTruthError

ALPHABET_FILE = "alphabet.json"
_SEARCH_LEVELS = 6          # <out>/<category>/<method>/<identity>/<clip>.npz is 4 deep
REQUIRED_KEYS = ("phone", "video_phone")
SHAPE_KEYS = ("mouth_open", "mouth_width", "mouth_round")

# Lip target (open, width, round) of each viseme class, in [0, 1]: how the synthetic
# generator renders that class (datasets/synthetic_av/visemes.py TARGETS). Used only to
# read frames whose mouth follows no phone.
_LIP_TARGETS_MODULE = "datasets.synthetic_av.visemes"


def ground_truth_path(meta: dict) -> pathlib.Path | None:
    """The ``.npz`` of a dataset row: ``meta['ground_truth']`` if given, else the video
    ``meta['path']`` with its suffix replaced. None when the row names neither or the
    file does not exist (clips from real datasets)."""
    explicit = meta.get("ground_truth")
    if explicit:
        return pathlib.Path(explicit)
    video = meta.get("path")
    if not video:
        return None
    npz = pathlib.Path(video).with_suffix(".npz")
    return npz if npz.is_file() else None


def find_alphabet(npz: pathlib.Path) -> pathlib.Path:
    """``alphabet.json`` in the folder of ``npz`` or one of its parents."""
    for folder in list(npz.resolve().parents)[:_SEARCH_LEVELS]:
        candidate = folder / ALPHABET_FILE
        if candidate.is_file():
            return candidate
    raise GroundTruthError(npz, f"no {ALPHABET_FILE} in its folder or the "
                           f"{_SEARCH_LEVELS - 1} above it (the generator writes one at the "
                           f"top of its output)")


@functools.lru_cache(maxsize=16)
def phone_visemes(alphabet_json: str) -> np.ndarray:
    """Viseme index of every phone of a generator alphabet (int64 [P]), from the phone
    names and their spelling scheme; every name must be known to ``alphabet``."""
    try:
        spec = json.loads(pathlib.Path(alphabet_json).read_text())
        phones = [str(p) for p in spec["phones"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GroundTruthError(alphabet_json, f"not a generator alphabet ({e})") from e
    scheme = spec.get("phone_scheme") or alphabet.guess_phone_scheme(phones)
    try:
        return alphabet.viseme_ids(phones, scheme).astype(np.int64)
    except (KeyError, ValueError) as e:
        raise GroundTruthError(alphabet_json, str(e)) from e


@functools.lru_cache(maxsize=1)
def _lip_targets() -> np.ndarray:
    """float [K, 3] (open, width, round) per class of ``alphabet.VISEMES``."""
    import importlib
    targets = importlib.import_module(_LIP_TARGETS_MODULE).TARGETS
    return np.asarray([targets[v] for v in alphabet.VISEMES], np.float64)


def nearest_viseme(shape: np.ndarray) -> np.ndarray:
    """Viseme index (int64 [T]) whose lip target is nearest to each rendered mouth
    shape (float [T, 3]: open, width, round)."""
    d = ((shape[:, None, :] - _lip_targets()[None]) ** 2).sum(-1)      # [T, K]
    return d.argmin(axis=1)


def _one_hot_or_uniform(ids: np.ndarray) -> np.ndarray:
    """[T, K] one-hot rows, uniform rows where ``ids`` is -1 (nothing known)."""
    k = alphabet.NUM_VISEMES
    out = np.full((ids.shape[0], k), 1.0 / k, np.float32)
    known = ids >= 0
    out[known] = np.eye(k, dtype=np.float32)[ids[known]]
    return out


def load_tracks(npz: pathlib.Path, alphabet_path: pathlib.Path | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(heard, shown) viseme ids int64 [T] of a generator ground-truth file; -1 where
    nothing is known."""
    alphabet_path = alphabet_path or find_alphabet(npz)
    lut = phone_visemes(os.fspath(alphabet_path))
    try:
        with np.load(npz, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise GroundTruthError(npz, f"missing {missing} (has {sorted(z.files)})")
            heard_ph = np.asarray(z["phone"], np.int64)
            shown_ph = np.asarray(z["video_phone"], np.int64)
            shape = (np.stack([np.asarray(z[k], np.float64) for k in SHAPE_KEYS], axis=1)
                     if all(k in z.files for k in SHAPE_KEYS) else None)
    except GroundTruthError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise GroundTruthError(npz, f"cannot read ground truth ({e})") from e
    if heard_ph.ndim != 1 or shown_ph.shape != heard_ph.shape:
        raise GroundTruthError(npz, f"phone {heard_ph.shape} and video_phone "
                               f"{shown_ph.shape} must be equal-length [T] tracks")
    for name, track in (("phone", heard_ph), ("video_phone", shown_ph)):
        if track.size and (track.max() >= len(lut) or track.min() < -1):
            raise GroundTruthError(npz, f"{name} ids outside the alphabet's "
                                   f"{len(lut)} phones")
    heard = np.where(heard_ph >= 0, lut[np.maximum(heard_ph, 0)], -1)
    shown = np.where(shown_ph >= 0, lut[np.maximum(shown_ph, 0)], -1)
    if shape is not None and shape.shape[0] == shown.shape[0]:
        free = shown < 0                          # mouth driven by no phone: read its shape
        if free.any():
            shown[free] = nearest_viseme(shape[free])
    return heard, shown


class OracleTeacher:
    """Both sides from the synthetic generator's ground truth (see the module doc).

    Args:
      label_smoothing: eps of ``posteriors.smooth_labels`` (default 0.1).
      blur_sigma: temporal blur in video frames (default 0.6, ~24 ms).
      alphabet_path: the generator's ``alphabet.json`` (default: found above each npz).
    """
    name = "oracle"
    num_classes = alphabet.NUM_VISEMES
    sides = frozenset({"audio", "video"})
    needs_audio = False             # reads the ground-truth file, not the clip's audio

    def __init__(self, *, label_smoothing: float = 0.1, blur_sigma: float = 0.6,
                 alphabet_path: str | os.PathLike | None = None):
        posteriors.smooth_labels(np.ones((1, 1)), label_smoothing)   # validates eps
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        self.label_smoothing = label_smoothing
        self.blur_sigma = blur_sigma
        self.alphabet_path = pathlib.Path(alphabet_path) if alphabet_path else None

    def tracks(self, meta: dict, num_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(heard, shown) viseme ids int64 [num_frames] of a row, or None."""
        npz = ground_truth_path(meta)
        if npz is None:
            return None
        if not npz.is_file():
            raise GroundTruthError(npz, "ground-truth file named in the row does not exist")
        heard, shown = load_tracks(npz, self.alphabet_path)
        if heard.size == 0:
            raise GroundTruthError(npz, "empty tracks")
        return posteriors.fit_length(heard, num_frames), posteriors.fit_length(shown, num_frames)

    def __call__(self, *, audio: Any = None, mouth: Any = None, num_frames: int,
                 meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        tracks = self.tracks(meta, num_frames)
        if tracks is None:
            return None
        soft = lambda ids: posteriors.soften(_one_hot_or_uniform(ids), eps=self.label_smoothing,
                                             sigma=self.blur_sigma)
        return soft(tracks[0]), soft(tracks[1])
