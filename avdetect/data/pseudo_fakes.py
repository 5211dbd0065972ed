"""Pseudo-fakes made at build time from real clips (the real-only recipe of AVH-Align,
SAVe, AVPF): the audio or the mouth of a real clip is manipulated so that the pair no
longer belongs together, and the result is labelled fake under its own method name.

Why at build time (not on the fly in Grain): the TTS re-voice needs Whisper and espeak-ng
(a second or more per clip), far too slow for the input pipeline; the cheap kinds are
made here too so that every pseudo-fake is a fixed, inspectable example with its
parameters in ``attributes``, per-method tables and leave-one-method-out runs work on
them like on any other method, and the shards are identical on every rerun.

Two halves:

* **Pure functions** over a preprocessed clip, a dict of NumPy arrays (T frames):
  ``audio`` int16 [640 T], ``logmel`` float32 [4T, 80] (always recomputed from the
  modified waveform with :func:`avdetect.preprocess.logmel.log_mel`), ``face_found``
  bool [T], ``boxes`` float32 [T, 4], optional ``mouth`` uint8 [T, 88, 88] and ``face``
  uint8 [T, S, S, 3], and ``mouth_src`` / ``face_src`` int64 [T]: the source frame each
  frame is a copy of (-1: a new image). The build reuses the source's encoded image for
  every copied frame, so a pseudo-fake whose video is untouched is bit-identical to its
  source there (no second JPEG generation to learn from). ``audio_src`` int64 [T] is the
  frame of the source's (``audio_from`` = 'donor': the donor's) audio each frame plays,
  -1 where the waveform is new; teacher posteriors are carried over through these maps.
  The TTS re-voice (``pf_tts``) is in :mod:`avdetect.data.revoice`; the cache entries of
  the results are made by :mod:`avdetect.data.derived_clips`.
* **Planning** (:func:`add_pseudo_fakes`): for every real clip of every split, one
  derived :class:`~avdetect.data.clips.ClipTask` per kind and repeat, with parameters
  drawn from a generator seeded by the clip key (deterministic), donors taken from the
  same split only (so test identities never meet training).

Kinds (method names; ``audio_fake``/``video_fake``):

==================  ======  ======  ===============================================
pf_shift            audio   -       audio moved by k frames (both signs, |k| in the
                                    configured range, default 3..12 = 120-480 ms);
                                    both streams are cut to the overlap, no padding
pf_swap             audio   -       another identity's speech (same split), length =
                                    the shorter of the two, both streams cut
pf_reverse          audio   -       the clip's own audio reversed in time
pf_other_sentence   audio   -       the same identity's audio from another clip
                                    (content mismatch, same voice); skipped with a
                                    note when the identity has one clip only
pf_tts              audio   -       the clip's Whisper transcript spoken by espeak-ng
                                    (several voices), fitted to the source's voiced
                                    span, RMS-matched there, over the source's own
                                    noise floor; outside the span the source is kept,
                                    so its leading/trailing digital silence is too
pf_freeze           -       video   mouth and face frozen on one frame over a segment
                                    (sometimes the whole clip); audio untouched
pf_blend            -       video   mouth crops of a segment blended with the mouth of
                                    another frame of the clip, the face crop's mouth
                                    square and the lip points alike; audio untouched
pf_rerender         -       video   the mouth re-rendered by the synthetic generator's
                                    renderer driven by another identity's speech (same
                                    split): mouth crops, the face crop's mouth/jaw
                                    region and the lip points (:mod:`avdetect.data.
                                    rerender`); the clip's own audio, both streams cut
                                    to the shorter of clip and donor
==================  ======  ======  ===============================================

Silence: no kind adds silence. pf_shift / pf_swap / pf_other_sentence cut both streams
to the overlap (never pad); pf_tts keeps the source's samples outside its voiced span;
pf_reverse swaps the leading and trailing runs; pf_rerender keeps (a prefix of) the
source's audio.

Size (a little under 600 lines): the kinds, their planning and the check of a built
dataset (``python -m avdetect.data.pseudo_fakes``) all read the one kind table and frame
maps defined here; the TTS re-voice is :mod:`avdetect.data.revoice`, the mouth renderer
of pf_rerender :mod:`avdetect.data.rerender`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Container, Iterable, Mapping, Sequence

import numpy as np

from avdetect import contract
# The TTS re-voice's signal helpers live in avdetect.data.revoice.
from avdetect.data.revoice import revoice_waveform, speak, voiced_rms, voiced_span
from avdetect.errors import AVDetectError, MediaError

SPF = contract.SAMPLES_PER_FRAME
# Per-frame video streams: cut, frozen and re-indexed together (lips: the landmark
# stream, [T, 20, 2], present when the preprocessing gave one).
PER_FRAME = ("mouth", "face", "face_found", "boxes", "lips", "mouth_src", "face_src")


@dataclasses.dataclass(frozen=True)
class Kind:
    audio_fake: bool
    video_fake: bool
    donor: str = ""                    # '' | 'other_identity' | 'same_identity'
    needs_mouth: bool = False          # decode the mouth crops (new pixels are made)
    needs_face: bool = False           # decode the face crops too


KINDS: dict[str, Kind] = {
    "pf_shift": Kind(True, False),
    "pf_swap": Kind(True, False, donor="other_identity"),
    "pf_reverse": Kind(True, False),
    "pf_other_sentence": Kind(True, False, donor="same_identity"),
    "pf_tts": Kind(True, False),
    "pf_freeze": Kind(False, True),
    "pf_blend": Kind(False, True, needs_mouth=True, needs_face=True),
    "pf_rerender": Kind(False, True, donor="other_identity", needs_mouth=True,
                        needs_face=True),
}
ALL_KINDS: tuple[str, ...] = tuple(KINDS)

# espeak-ng voices of the TTS re-voice (variants of the synthetic benchmark's voices).
TTS_VOICES = ("en-us+m1", "en-us+m3", "en-us+m7", "en-us+f1", "en-us+f3", "en-us+f4")


class PseudoFakeSkipped(MediaError):
    """A pseudo-fake that cannot be made from this clip (too short, no speech, ...)."""
    kind = "pseudo_fake_skipped"


@dataclasses.dataclass(frozen=True)
class Options:
    """Which pseudo-fakes a build makes (fields of the builder config)."""
    kinds: tuple[str, ...] = ALL_KINDS
    per_kind: int = 1                  # pseudo-fakes of each kind per real clip
    shift_frames: tuple[int, int] = (3, 12)   # |k| range, inclusive (120-480 ms)
    min_frames: int = 25               # shorter results are skipped (1 s)
    salt: str = "pf-v1"

    def __post_init__(self):
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown pseudo-fake kind(s) {sorted(unknown)}; known: "
                             f"{list(KINDS)}")
        lo, hi = self.shift_frames
        if not 1 <= lo <= hi:
            raise ValueError(f"shift_frames must be 1 <= lo <= hi, got {self.shift_frames}")
        if self.per_kind < 1:
            raise ValueError(f"per_kind must be >= 1, got {self.per_kind}")


# ---------------------------------------------------------------------------------------
# Pure functions over a clip
# ---------------------------------------------------------------------------------------

def num_frames(clip: Mapping[str, np.ndarray]) -> int:
    return len(clip["audio"]) // SPF


def with_frame_maps(clip: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of ``clip`` with identity ``mouth_src`` / ``face_src`` maps when missing."""
    out = dict(clip)
    t = len(out["face_found"])
    for k in ("mouth_src", "face_src", "audio_src"):
        out.setdefault(k, np.arange(t, dtype=np.int64))
    out.setdefault("audio_from", "source")
    return out


def set_audio(clip: Mapping[str, np.ndarray], audio: np.ndarray,
              audio_src: np.ndarray | None = None, audio_from: str = "source"
              ) -> dict[str, np.ndarray]:
    """``clip`` with a new int16 waveform [640 T] and the log-mel recomputed from it;
    ``audio_src`` maps its frames to the frames of the ``audio_from`` clip's audio
    (default: all -1, a new waveform)."""
    from avdetect.preprocess.logmel import log_mel

    audio = np.asarray(audio, np.int16)
    t = len(clip["face_found"])
    if audio.shape != (t * SPF,):
        raise ValueError(f"audio of shape {audio.shape} for a {t}-frame clip")
    out = dict(clip)
    out["audio"] = audio
    out["audio_src"] = (np.full(t, -1, np.int64) if audio_src is None
                        else np.asarray(audio_src, np.int64))
    out["audio_from"] = audio_from
    out["logmel"] = np.asarray(log_mel(contract.from_int16(audio), num_frames=t),
                               np.float32)
    return out


def gather_frames(clip: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The video side of ``clip`` re-indexed (frame t := source frame index[t]); the audio
    and log-mel are left as they are (callers set them)."""
    out = with_frame_maps(clip)
    for k in PER_FRAME:
        if k in out:
            out[k] = np.asarray(out[k])[index]
    return out


def take(clip: Mapping[str, np.ndarray], video_start: int, audio_start: int,
         length: int) -> dict[str, np.ndarray]:
    """Frames [video_start, +length) of the video with frames [audio_start, +length) of the
    audio: both are windows of the source, nothing is padded."""
    t = num_frames(clip)
    if not (0 <= video_start and 0 <= audio_start and video_start + length <= t
            and audio_start + length <= t and length > 0):
        raise ValueError(f"window video {video_start}, audio {audio_start}, length {length} "
                         f"does not fit a {t}-frame clip")
    out = gather_frames(clip, np.arange(video_start, video_start + length))
    audio = np.asarray(clip["audio"])[audio_start * SPF:(audio_start + length) * SPF]
    base = with_frame_maps(clip)["audio_src"]
    return set_audio(out, audio, base[audio_start:audio_start + length],
                     base_from(clip))


def base_from(clip: Mapping[str, Any]) -> str:
    return str(clip.get("audio_from", "source"))


def shift_audio(clip: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Audio moved by ``k`` frames against the video: frame t of the result shows video
    frame v0 + t and plays audio frame v0 + t + k (k > 0: the audio comes k frames early),
    over the T - |k| frames where both exist (v0 = max(0, -k))."""
    t = num_frames(clip)
    length = t - abs(k)
    if k == 0 or length <= 0:
        raise ValueError(f"cannot shift a {t}-frame clip by {k} frames")
    v0 = max(0, -k)
    return take(clip, v0, v0 + k, length)


def replace_audio(clip: Mapping[str, np.ndarray], donor_audio: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The clip's video with another clip's audio (from its start); both streams are cut
    to the shorter of the two (no padding)."""
    donor_audio = np.asarray(donor_audio, np.int16)
    length = min(num_frames(clip), len(donor_audio) // SPF)
    if length <= 0:
        raise ValueError("donor audio shorter than one frame")
    out = gather_frames(clip, np.arange(length))
    return set_audio(out, donor_audio[:length * SPF], np.arange(length), "donor")


def reverse_audio(clip: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The clip with its waveform reversed in time (video untouched)."""
    return set_audio(with_frame_maps(clip), np.asarray(clip["audio"])[::-1].copy())


def freeze(clip: Mapping[str, np.ndarray], start: int, length: int) -> dict[str, np.ndarray]:
    """Mouth and face (and box) held on frame ``start`` over frames [start, start+length);
    audio untouched."""
    t = num_frames(clip)
    if not (0 <= start and length >= 2 and start + length <= t):
        raise ValueError(f"freeze segment {start}+{length} does not fit {t} frames")
    index = np.arange(t)
    index[start:start + length] = start
    return gather_frames(clip, index)


def blend_mouth(clip: Mapping[str, np.ndarray], start: int, length: int, offset: int,
                alpha: float) -> dict[str, np.ndarray]:
    """Mouth crops of frames [start, start+length) blended with the mouth of frame
    (t + offset) mod T: ``(1 - alpha) * mouth[t] + alpha * mouth[other]``; the lip points
    alike, and, when the clip has its decoded ``face`` crops and ``lips``, the face crop
    inside the mouth crop's square (:func:`blend_face_mouth`)."""
    if "mouth" not in clip:
        raise ValueError("blend_mouth needs the decoded 'mouth' crops")
    t = num_frames(clip)
    if not (0 <= start and length >= 1 and start + length <= t and 0 < offset % t):
        raise ValueError(f"blend segment {start}+{length}, offset {offset} on {t} frames")
    out = with_frame_maps(clip)
    mouth = np.array(clip["mouth"], np.float32)
    seg = np.arange(start, start + length)
    other = (seg + offset) % t
    mouth[seg] = (1.0 - alpha) * mouth[seg] + alpha * np.asarray(clip["mouth"])[other]
    out["mouth"] = np.clip(np.round(mouth), 0, 255).astype(np.uint8)
    if "lips" in clip:          # the lip points blend like the pixels they were read from
        lips = np.array(clip["lips"], np.float32)
        lips[seg] = (1.0 - alpha) * lips[seg] + alpha * np.asarray(clip["lips"], np.float32)[other]
        out["lips"] = lips
    src = out["mouth_src"].copy()
    src[seg] = -1
    out["mouth_src"] = src
    if "face" in clip and "lips" in clip:
        out["face"] = blend_face_mouth(np.asarray(clip["face"]), np.asarray(clip["lips"]),
                                       seg, other, alpha)
        src = out["face_src"].copy()
        src[seg] = -1
        out["face_src"] = src
    return out


def mouth_square_mask(centre: np.ndarray, side: float, shape: tuple[int, int]
                      ) -> np.ndarray:
    """float32 [H, W]: 1 inside the axis-aligned square of ``side`` px centred on
    ``centre`` (x, y; continuous coordinates), 0 outside, a 1 px linear ramp across its
    edge."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5          # pixel centres
    d = np.maximum(np.abs(xx - centre[0]), np.abs(yy - centre[1])) - side / 2
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)


def blend_face_mouth(face: np.ndarray, lips: np.ndarray, seg: np.ndarray, other: np.ndarray,
                     alpha: float) -> np.ndarray:
    """Face crops [T, S, S, 3] with frame seg[i]'s mouth square -- the region its mouth
    crop shows: ``contract.MOUTH_SIZE`` reference px around its lip centre -- blended as
    the mouth crops are, with frame other[i]'s mouth moved onto it (the other frame's face
    shifted by the lip-centre difference, since each mouth crop is centred on its own
    lips)."""
    import cv2
    from avdetect.preprocess import align

    out = face.copy()
    size = face.shape[1]
    side = contract.MOUTH_SIZE * size / align.REF_SIZE
    centres = np.asarray(lips, np.float64).mean(axis=1) * size            # [T, 2] face px
    for t, o in zip(seg, other):
        d = centres[t] - centres[o]
        moved = cv2.warpAffine(face[o], np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]]),
                               (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        m = alpha * mouth_square_mask(centres[t], side, (size, size))[..., None]
        out[t] = np.clip((1 - m) * face[t] + m * moved + 0.5, 0, 255).astype(np.uint8)
    return out


def rerender(clip: Mapping[str, np.ndarray], donor_audio: np.ndarray, gain: float,
             rng: np.random.Generator, donor_lips: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
    """The clip (its own audio) with its mouth re-rendered to the donor's speech
    (:mod:`avdetect.data.rerender`): the donor's energy-envelope drive, opening times
    ``gain``, lip width from the donor's lips when given; both streams cut to the
    shorter of clip and donor."""
    from avdetect.data.rerender import donor_width, rerender_mouth
    from datasets.synthetic_av.visemes import envelope_articulation

    missing = [k for k in ("mouth", "face", "lips") if k not in clip]
    if missing:
        raise ValueError(f"pf_rerender needs the decoded {missing}")
    donor_audio = np.asarray(donor_audio, np.int16)
    length = min(num_frames(clip), len(donor_audio) // SPF)
    if length <= 0:
        raise ValueError("donor audio shorter than one frame")
    out = (with_frame_maps(clip) if length == num_frames(clip) else take(clip, 0, 0, length))
    drive = envelope_articulation(donor_audio[:length * SPF], length)
    out["mouth"], out["face"], out["lips"] = rerender_mouth(
        np.asarray(out["mouth"]), np.asarray(out["face"]), np.asarray(out["lips"]),
        np.asarray(out["face_found"]), drive.open, donor_width(donor_lips, length),
        drive.round, gain, rng)
    out["mouth_src"] = np.full(length, -1, np.int64)
    out["face_src"] = np.full(length, -1, np.int64)
    return out


def revoice(clip: Mapping[str, np.ndarray], speech: np.ndarray, rng: np.random.Generator
            ) -> dict[str, np.ndarray]:
    """The clip with ``speech`` over its voiced span (:func:`revoice_waveform`), the log-mel
    recomputed; video untouched."""
    return set_audio(with_frame_maps(clip), revoice_waveform(clip["audio"], speech, rng))


# ---------------------------------------------------------------------------------------
# Applying a planned derivation (worker side)
# ---------------------------------------------------------------------------------------

def _frames_of(frac: float, t: int) -> int:
    return int(np.floor(frac * t))


def apply(kind: str, params: Mapping[str, Any], clip: Mapping[str, np.ndarray], *,
          donor_audio: np.ndarray | None = None, donor_lips: np.ndarray | None = None,
          transcript: str = "",
          min_frames: int = 25, path: str = "") -> dict[str, np.ndarray]:
    """Make pseudo-fake ``kind`` of ``clip`` with the planned ``params``. Raises
    :class:`PseudoFakeSkipped` (reported, not fatal) when this clip cannot give it."""
    t = num_frames(clip)
    rng = np.random.default_rng(int(params.get("seed", 0)))
    try:
        if kind == "pf_shift":
            out = shift_audio(clip, int(params["k"]))
        elif kind in ("pf_swap", "pf_other_sentence"):
            if donor_audio is None:
                raise ValueError(f"{kind} needs the donor's audio")
            out = replace_audio(clip, donor_audio)
        elif kind == "pf_reverse":
            out = reverse_audio(clip)
        elif kind == "pf_tts":
            if not transcript.strip():
                raise PseudoFakeSkipped(path, "pf_tts: Whisper found no speech to re-voice")
            s0, s1 = voiced_span(clip["audio"])
            speech = speak(transcript, params["voice"], (s1 - s0) / contract.AUDIO_SR, rng)
            out = revoice(clip, speech, rng)
        elif kind == "pf_freeze":
            length = t if params["whole"] else max(2, _frames_of(params["len_frac"], t))
            start = 0 if params["whole"] else _frames_of(params["start_frac"], t - length + 1)
            out = freeze(clip, start, length)
        elif kind == "pf_blend":
            length = max(1, _frames_of(params["len_frac"], t))
            start = _frames_of(params["start_frac"], t - length + 1)
            offset = max(1, _frames_of(params["offset_frac"], t)) % t or 1
            out = blend_mouth(clip, start, length, offset, float(params["alpha"]))
        elif kind == "pf_rerender":
            if donor_audio is None:
                raise ValueError("pf_rerender needs the donor's audio")
            out = rerender(clip, donor_audio, float(params["gain"]), rng, donor_lips)
        else:
            raise ValueError(f"unknown pseudo-fake kind {kind!r}")
    except PseudoFakeSkipped:
        raise
    except (ValueError, AVDetectError) as e:    # e.g. espeak-ng failing on a text
        raise PseudoFakeSkipped(path, f"{kind}: {e}") from e
    if num_frames(out) < min_frames:
        raise PseudoFakeSkipped(path, f"{kind}: {num_frames(out)} frames left, fewer than "
                                      f"{min_frames}")
    return out


def code_hash() -> str:
    """Hash of the code a derived clip depends on (part of its cache key)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in ("avdetect/data/pseudo_fakes.py", "avdetect/data/revoice.py",
                "avdetect/data/derived_clips.py", "avdetect/data/rerender.py",
                "datasets/synthetic_av/tts.py", "datasets/synthetic_av/render.py",
                "datasets/synthetic_av/visemes.py",
                "avdetect/preprocess/logmel.py", "avdetect/contract.py"):
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Planning (listing side)
# ---------------------------------------------------------------------------------------

def seed_of(key: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big")


def _params(kind: str, rng: np.random.Generator, opts: Options, i: int,
            shifts: Sequence[int]) -> dict[str, Any]:
    p: dict[str, Any] = {"seed": int(rng.integers(2**31))}
    if kind == "pf_shift":
        p["k"] = int(shifts[i % len(shifts)])
    elif kind == "pf_tts":
        p["voice"] = str(TTS_VOICES[int(rng.integers(len(TTS_VOICES)))])
    elif kind == "pf_freeze":
        p["whole"] = bool(rng.random() < 0.25)
        p["start_frac"] = float(round(rng.random(), 4))
        p["len_frac"] = float(round(rng.uniform(0.2, 0.6), 4))
    elif kind == "pf_blend":
        p["start_frac"] = float(round(rng.random(), 4))
        p["len_frac"] = float(round(rng.uniform(0.3, 0.8), 4))
        p["offset_frac"] = float(round(rng.uniform(0.2, 0.8), 4))
        p["alpha"] = float(round(rng.uniform(0.5, 0.9), 3))
    elif kind == "pf_rerender":
        # Opening gain: the synthetic identities' articulation range, a little lower
        # (the envelope drive already reaches 0.85 on loud frames).
        p["gain"] = float(round(rng.uniform(0.7, 1.1), 3))
    return p


def add_pseudo_fakes(listing, opts: Options, usable: Container[str] | None = None) -> None:
    """Add the planned pseudo-fakes of every real clip of every split to ``listing``
    (a :class:`avdetect.data.clips.Listing`), in the same split as their source, with a
    note for every one that cannot be planned. ``usable``: the keys of the clips that
    were preprocessed (the build plans after preprocessing); None = all."""
    from avdetect.data.clips import ClipTask

    for split, keys in list(listing.splits.items()):
        reals = [k for k in keys if listing.tasks[k].label == 0
                 and listing.tasks[k].derive is None and (usable is None or k in usable)]
        for key in reals:
            src = listing.tasks[key]
            rng = np.random.default_rng(seed_of(key, opts.salt))
            lo, hi = opts.shift_frames
            shifts = [int(s) * k for k in range(lo, hi + 1) for s in (-1, 1)]
            shifts = [shifts[j] for j in rng.permutation(len(shifts))]
            for kind in opts.kinds:
                info = KINDS[kind]
                donors = _donors(listing, reals, src, info.donor)
                for i in range(opts.per_kind):
                    params = _params(kind, rng, opts, i, shifts)
                    donor = ""
                    if info.donor:
                        if not donors:
                            listing.notes.append({"key": key, "path": src.path, "note": (
                                f"no {kind}: no {info.donor.replace('_', ' ')} real clip "
                                f"in split {split}")})
                            continue
                        donor = donors[int(rng.integers(len(donors)))]
                    derive = {"kind": kind, "source": key, "donor": donor, "params": params,
                              "min_frames": opts.min_frames}
                    attrs = {**src.attributes, "pseudo_fake": kind, "pf_source": key,
                             "pf_donor": donor, "pf_params": params}
                    listing.add(ClipTask(
                        key=f"{key}__{kind}_{i}", path=src.path, rel_path=src.rel_path,
                        label=1, video_fake=info.video_fake, audio_fake=info.audio_fake,
                        method=kind, identity=src.identity, attributes=attrs, row=src.row,
                        derive=derive), split)


def _donors(listing, reals: Iterable[str], src, rule: str) -> list[str]:
    if rule == "other_identity":
        return [k for k in reals if listing.tasks[k].identity != src.identity]
    if rule == "same_identity":
        return [k for k in reals if listing.tasks[k].identity == src.identity
                and k != src.key]
    return []


# ---------------------------------------------------------------------------------------
# Check of a built dataset: silence and loudness per method
# ---------------------------------------------------------------------------------------

def silence_table(data_dir: str, name: str, splits: Sequence[str]) -> list[dict[str, Any]]:
    """Per method: clips, mean leading/trailing digital silence (frames,
    :func:`avdetect.contract.digital_silence`), share of clips with any, and for the
    pseudo-fakes the largest |lead/trail difference| to their source and the mean
    |voiced RMS difference| in dB (the "no silence shortcut" rule, checked)."""
    import tensorflow_datasets as tfds

    rows: dict[str, dict[str, list]] = {}
    for split in splits:
        ds = tfds.data_source(name, split=split, data_dir=data_dir)
        by_key = {}
        for i in range(len(ds)):
            ex = ds[i]
            by_key[ex["video_id"].decode()] = (ex["method"].decode(), ex["audio"],
                                               json.loads(ex["attributes"].decode()))
        for key, (method, audio, attrs) in by_key.items():
            r = rows.setdefault(method, {"lead": [], "trail": [], "dsil": [], "ddb": []})
            lead, trail = contract.digital_silence(audio)
            r["lead"].append(lead)
            r["trail"].append(trail)
            src = by_key.get(attrs.get("pf_source", ""))
            if src is not None and method in ("pf_tts", "pf_freeze", "pf_blend"):
                s_lead, s_trail = contract.digital_silence(src[1])
                r["dsil"].append(max(abs(lead - s_lead), abs(trail - s_trail)))
                a, b = voiced_rms(audio), voiced_rms(src[1])
                if a > 0 and b > 0:
                    r["ddb"].append(abs(20 * np.log10(a / b)))
    out = []
    for method, r in sorted(rows.items()):
        lead, trail = np.array(r["lead"]), np.array(r["trail"])
        out.append({"method": method, "clips": len(lead), "lead_mean": float(lead.mean()),
                    "trail_mean": float(trail.mean()),
                    "with_silence": float(np.mean((lead > 0) | (trail > 0))),
                    "max_silence_diff_to_source": max(r["dsil"]) if r["dsil"] else None,
                    "mean_abs_db_to_source": float(np.mean(r["ddb"])) if r["ddb"] else None})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m avdetect.data.pseudo_fakes",
        description="Leading/trailing digital silence and loudness per method of a built "
                    "dataset (pseudo-fakes vs their sources).")
    parser.add_argument("dataset", help="NAME/CONFIG, e.g. realtalk/face112")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--splits", default="train,validation,test")
    args = parser.parse_args(argv)
    table = silence_table(args.data_dir, args.dataset, args.splits.split(","))
    print(f"{'method':<36}{'clips':>6}{'lead':>7}{'trail':>7}{'w/ sil':>8}"
          f"{'max dsil':>10}{'|dB|':>7}")
    for r in table:
        dsil = "" if r["max_silence_diff_to_source"] is None else r["max_silence_diff_to_source"]
        ddb = "" if r["mean_abs_db_to_source"] is None else f"{r['mean_abs_db_to_source']:.2f}"
        print(f"{r['method'][:35]:<36}{r['clips']:>6}{r['lead_mean']:>7.2f}"
              f"{r['trail_mean']:>7.2f}{r['with_silence']:>8.2f}{dsil:>10}{ddb:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
