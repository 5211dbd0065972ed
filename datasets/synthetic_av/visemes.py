"""From a phone segmentation to per-frame tracks: phone and viseme labels, and the mouth
articulation curves (opening, width, rounding) that drive the renderer.

Viseme classes are ``avdetect.teachers.alphabet.VISEMES`` (14 classes; ARPAbet -> class
map documented there). Each class gets a lip target (``TARGETS``):

=======  =====  =====  =====  ===============================================
viseme   open   width  round  mouth shape
=======  =====  =====  =====  ===============================================
sil      0.00   0.50   0.00   closed, relaxed
PBM      0.00   0.45   0.05   lips pressed together (dominant: always closes)
FV       0.06   0.50   0.00   lower lip tucked under the upper teeth
TH       0.18   0.55   0.00   small opening, tongue between teeth
TDNL     0.25   0.55   0.00   slightly open, neutral lips
SZ       0.10   0.70   0.00   teeth nearly closed, spread
SH       0.22   0.35   0.70   protruded, rounded
KG       0.35   0.50   0.00   open, lips follow the neighbours
R        0.22   0.35   0.50   slightly rounded
W        0.20   0.20   1.00   small round opening
OW       0.60   0.30   0.80   rounded, open
AA       0.95   0.60   0.00   jaw wide open
EH       0.60   0.75   0.00   mid open, spread
IY       0.30   0.85   0.00   nearly closed, spread
=======  =====  =====  =====  ===============================================

Coarticulation (the mouth moves towards the next sound before it is heard, and short
consonants barely move the jaw) is a dominance-weighted blend in the spirit of
Cohen & Massaro: on a 100 Hz grid, each dimension is
``sum_k d_k w(t - t_k) x_k / sum_k d_k w(t - t_k)``, approximated by convolving
``dominance * target`` and ``dominance`` with one kernel. Bilabials and labiodentals are
dominant (lips must close), vowels medium, alveolars/velars weak. The kernel is a
Gaussian (sigma 35 ms) centred ``ANTICIPATION_S`` = 20 ms in the future, i.e. the lips
lead the sound slightly; jaw opening is the ``open`` curve (the renderer drops the jaw
with it). Curves are sampled at video frame centres (25 fps).

Frame labels: a frame's phone is the phone covering most of the frame's 40 ms.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avdetect import contract
from avdetect.teachers import alphabet

from datasets.synthetic_av.audio_fx import frame_rms
from datasets.synthetic_av.tts import PHONE_INDEX, PHONES, Utterance

VISEMES = alphabet.VISEMES
# (open, width, round) per viseme class; see the module docstring.
TARGETS: dict[str, tuple[float, float, float]] = {
    "sil": (0.00, 0.50, 0.00), "PBM": (0.00, 0.45, 0.05), "FV": (0.06, 0.50, 0.00),
    "TH": (0.18, 0.55, 0.00), "TDNL": (0.25, 0.55, 0.00), "SZ": (0.10, 0.70, 0.00),
    "SH": (0.22, 0.35, 0.70), "KG": (0.35, 0.50, 0.00), "R": (0.22, 0.35, 0.50),
    "W": (0.20, 0.20, 1.00), "OW": (0.60, 0.30, 0.80), "AA": (0.95, 0.60, 0.00),
    "EH": (0.60, 0.75, 0.00), "IY": (0.30, 0.85, 0.00),
}
DOMINANCE: dict[str, float] = {
    "sil": 0.6, "PBM": 4.0, "FV": 2.5, "TH": 1.0, "TDNL": 0.4, "SZ": 0.8, "SH": 1.5,
    "KG": 0.3, "R": 1.0, "W": 2.0, "OW": 1.2, "AA": 1.2, "EH": 1.0, "IY": 1.0,
}
assert set(TARGETS) == set(VISEMES) == set(DOMINANCE)

NEUTRAL = TARGETS["sil"]
GRID_HZ = 100                 # articulation is computed on a 10 ms grid
KERNEL_SIGMA_S = 0.035
ANTICIPATION_S = 0.020

# phone index -> viseme index (silence -> sil)
PHONE_TO_VISEME = np.array([alphabet.VISEME_INDEX[alphabet.ARPABET_TO_VISEME[p]]
                            for p in PHONES], dtype=np.int16)


@dataclasses.dataclass(frozen=True)
class Articulation:
    """Per-frame mouth drive: float32 [T] curves in [0, 1]."""
    open: np.ndarray
    width: np.ndarray
    round: np.ndarray

    def scaled(self, gain: float) -> "Articulation":
        """Opening scaled by a speaker's articulation gain (clipped to [0, 1])."""
        return dataclasses.replace(self, open=np.clip(self.open * gain, 0, 1).astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Placed:
    """An utterance placed on a clip's timeline: its audio starts at sample ``offset``
    (negative: the clip starts inside the utterance)."""
    utterance: Utterance
    offset: int

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phone ids int [P], starts, ends) in clip samples."""
        ids = np.array([PHONE_INDEX[p] for p in self.utterance.phones], dtype=np.int16)
        return ids, self.utterance.starts + self.offset, self.utterance.ends + self.offset


def phone_track(placed: Placed | None, num_frames: int) -> np.ndarray:
    """Phone id per video frame (int16 [T]): the phone covering most of the frame;
    silence outside the utterance."""
    spf = contract.SAMPLES_PER_FRAME
    track = np.zeros(num_frames, np.int16)            # SIL = 0
    if placed is None:
        return track
    ids, starts, ends = placed.segments()
    frame_start = np.arange(num_frames)[:, None] * spf                          # [T, 1]
    overlap = (np.minimum(ends[None, :], frame_start + spf)
               - np.maximum(starts[None, :], frame_start)).clip(min=0)          # [T, P]
    best = overlap.argmax(axis=1)
    covered = overlap[np.arange(num_frames), best] > 0
    # speech must cover more of the frame than the silence around the utterance does
    speech_wins = overlap[np.arange(num_frames), best] * 2 > spf
    track[covered & speech_wins] = ids[best[covered & speech_wins]]
    return track


def viseme_track(phones: np.ndarray) -> np.ndarray:
    """Viseme id per frame (int16 [T]) of a phone track; -1 stays -1 (no phones)."""
    out = np.full(phones.shape, -1, np.int16)
    ok = phones >= 0
    out[ok] = PHONE_TO_VISEME[phones[ok]]
    return out


def _gaussian_kernel() -> np.ndarray:
    half = int(np.ceil(4 * KERNEL_SIGMA_S * GRID_HZ))
    t = np.arange(-half, half + 1) / GRID_HZ            # seconds, future positive
    return np.exp(-0.5 * ((t - ANTICIPATION_S) / KERNEL_SIGMA_S) ** 2)


def articulation(placed: Placed | None, num_frames: int) -> Articulation:
    """Mouth curves at the video frame centres for speech placed on the clip timeline
    (see the module docstring for the coarticulation model)."""
    sr = contract.AUDIO_SR
    n_grid = int(np.ceil(num_frames / contract.VIDEO_FPS * GRID_HZ)) + 1
    target = np.tile(np.asarray(NEUTRAL, np.float64), (n_grid, 1))      # [G, 3]
    dom = np.full(n_grid, DOMINANCE["sil"])                              # [G]
    if placed is not None:
        ids, starts, ends = placed.segments()
        grid_t = np.arange(n_grid) / GRID_HZ * sr                        # grid times, samples
        seg = np.searchsorted(ends, grid_t, side="right")                # segment per point
        inside = (seg < len(ids))
        inside[inside] &= starts[seg[inside]] <= grid_t[inside]
        vis = [VISEMES[v] for v in PHONE_TO_VISEME[ids[seg[inside]]]]
        target[inside] = [TARGETS[v] for v in vis]
        dom[inside] = [DOMINANCE[v] for v in vis]
    # Convolution with the kernel flipped: out[t] = sum_s k(s) x[t + s] (looks ahead).
    k = _gaussian_kernel()[::-1]
    num = np.stack([np.convolve(dom * target[:, j], k, mode="same") for j in range(3)], 1)
    den = np.convolve(dom, k, mode="same")[:, None]
    curves = num / den                                                   # [G, 3]
    frame_t = (np.arange(num_frames) + 0.5) / contract.VIDEO_FPS * GRID_HZ
    sampled = np.stack([np.interp(frame_t, np.arange(n_grid), curves[:, j]) for j in range(3)], 1)
    sampled = np.clip(sampled, 0.0, 1.0).astype(np.float32)
    return Articulation(open=sampled[:, 0], width=sampled[:, 1], round=sampled[:, 2])


def envelope_articulation(audio: np.ndarray, num_frames: int) -> Articulation:
    """Talking-head drive: opening from the audio energy envelope only (frame RMS in dB,
    mapped to [0, 1] and smoothed), width and rounding fixed at neutral. Well synced, but
    blind to which sound is made: an /m/ with energy opens the mouth, /u/ is not rounded."""
    db = 20 * np.log10(frame_rms(audio, num_frames) + 1e-6)
    top = np.percentile(db, 95)
    openness = np.clip((db - (top - 30.0)) / 30.0, 0.0, 1.0) ** 1.5       # 30 dB range
    smooth = np.convolve(np.pad(openness, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    smooth = np.clip(smooth * 0.85, 0, 1).astype(np.float32)
    return Articulation(open=smooth, width=np.full(num_frames, NEUTRAL[1], np.float32),
                        round=np.full(num_frames, NEUTRAL[2], np.float32))
