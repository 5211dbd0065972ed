"""Training-time augmentation of the lip-point and raw-waveform streams (issue 12).

Why: the real-footage recipe (METHODS.md 8) learns its audio-visual sync space from ~24
training identities and separates their shifted / swapped audio almost perfectly, unseen
people's much less well. The crop augmentation (:mod:`avdetect.data.augment`) never
touches what that recipe reads - the 20 lip points and the waveform Whisper hears - so
these transforms vary exactly those, once per window (every frame / sample of a window
gets the same draw, so the synchrony inside the window is untouched):

- lips (``[T, 20, 2]``, x, y in [0, 1] of the aligned face): a similarity about the
  window's mean mouth centre (rotation, mouth width and height scaled independently,
  translation), a horizontal mirror that also swaps the left / right points so the
  layout stays dlib's mouth order (:data:`MIRROR_PERM`), and optional per-frame Gaussian
  noise of the order of the landmark jitter (off by default: see ``LipsAugSpec.noise``);
- audio (``[640 T]`` float waveform): a random gain, a first-order low- or high-shelf
  EQ, and white noise at a random SNR (measured over the window's valid samples).

Padded frames / samples stay zero. Applied by :meth:`avdetect.data.windows.WindowMaker.
random_window` after any on-the-fly pseudo-fake is made, so real and fake windows get the
same treatment; evaluation windows are never augmented. The ``lips`` encoder
standardises every per-frame feature over the window (:mod:`avdetect.models.lips`), so a
per-window scale of x against y reaches it only through the rotation and noise that follow
it: the scale is kept for other readers of the stream.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from scipy import signal

from avdetect import contract
from avdetect.errors import ConfigError

# Horizontal mirror of the 20 lip points in dlib's mouth order (48-59 outer, 60-67
# inner; avdetect/preprocess/landmarks.LIP_POINTS): index i of the mirrored window takes
# point MIRROR_PERM[i]. Outer: corners 0 <-> 6, 1 <-> 5, 2 <-> 4, 7 <-> 11, 8 <-> 10,
# middles 3, 9 fixed; inner: corners 12 <-> 16, 13 <-> 15, 17 <-> 19, middles 14, 18 fixed.
MIRROR_PERM = (6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 16, 15, 14, 13, 12, 19, 18, 17)

SHELF_CUTOFF_HZ = 1000.0     # corner of the shelf EQ: splits voicing from consonants


@dataclasses.dataclass(frozen=True)
class LipsAugSpec:
    rotate_deg: float = 10.0     # rotation drawn uniformly in +-rotate_deg
    scale: float = 0.15          # width and height each scaled by 1 + U(-scale, scale)
    shift: float = 0.02          # translation per axis, U(-shift, shift) (face units)
    mirror: float = 0.5          # probability of the horizontal mirror
    # Per-frame per-point Gaussian sigma (0.004 ~ 1 px of 256). Off by default: the lips
    # encoder standardises each clip, so noise on a still mouth becomes motion, and the
    # frozen-mouth pseudo-fake's cue went with it (METHODS.md 8, "Stream augmentation").
    noise: float = 0.0


@dataclasses.dataclass(frozen=True)
class AudioAugSpec:
    gain_db: float = 6.0         # gain drawn uniformly in +-gain_db
    shelf_db: float = 6.0        # low or high shelf (coin flip), gain U(-shelf_db, shelf_db)
    noise_prob: float = 0.5      # probability of additive white noise
    snr_db_min: float = 10.0     # its SNR, uniform in [snr_db_min, snr_db_max]
    snr_db_max: float = 30.0


@dataclasses.dataclass(frozen=True)
class StreamAugSpec:
    lips: LipsAugSpec | None = None
    audio: AudioAugSpec | None = None

    @property
    def active(self) -> bool:
        return self.lips is not None or self.audio is not None


def _fields(cfg: Any, cls: type, key: str):
    """``cls`` from the config group ``key`` (ConfigDict / dict) when its ``enable`` is
    true, else None; unknown fields are an error (a typo must not silently do nothing)."""
    if not cfg:
        return None
    d = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    if not d.pop("enable", False):
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(d) - names)
    if bad:
        raise ConfigError(f"config.data.{key}: unknown field(s) {bad}; known: "
                          f"['enable'] + {sorted(names)}")
    spec = cls(**{k: float(v) for k, v in d.items()})
    for f in dataclasses.fields(spec):
        if getattr(spec, f.name) < 0:
            raise ConfigError(f"config.data.{key}.{f.name} must be >= 0, got "
                              f"{getattr(spec, f.name)}")
    return spec


def parse(lips_cfg: Any, audio_cfg: Any) -> StreamAugSpec:
    """The spec of ``config.data.lips_augment`` / ``config.data.audio_augment``."""
    audio = _fields(audio_cfg, AudioAugSpec, "audio_augment")
    if audio is not None and audio.snr_db_min > audio.snr_db_max:
        raise ConfigError(f"config.data.audio_augment: snr_db_min {audio.snr_db_min} > "
                          f"snr_db_max {audio.snr_db_max}")
    lips = _fields(lips_cfg, LipsAugSpec, "lips_augment")
    if lips is not None and lips.mirror > 1:
        raise ConfigError(f"config.data.lips_augment.mirror is a probability, got {lips.mirror}")
    return StreamAugSpec(lips=lips, audio=audio)


# ---------------------------------------------------------------------------------------
# lips
# ---------------------------------------------------------------------------------------

def mirror_lips(lips: np.ndarray) -> np.ndarray:
    """[..., 20, 2] points mirrored about x = 0.5 (the aligned face's vertical axis), the
    left / right points swapped back into dlib's order."""
    out = lips[..., list(MIRROR_PERM), :].copy()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def similarity(lips: np.ndarray, n: int, angle: float, sx: float, sy: float,
               t: np.ndarray) -> np.ndarray:
    """Scale (sx along x, sy along y) then rotate by ``angle`` (radians) about the mean
    point of the first ``n`` frames, then translate by ``t``; frames from n on returned
    as they were (padding)."""
    out = lips.copy()
    valid = lips[:n]
    centre = valid.reshape(-1, 2).mean(axis=0)
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.diag([sx, sy])
    out[:n] = (valid - centre) @ m.T + centre + t
    return out


def augment_lips(lips: np.ndarray, n: int, spec: LipsAugSpec,
                 rng: np.random.Generator) -> np.ndarray:
    """One draw for a [T, 20, 2] window with ``n`` valid frames (float32 out, padding 0)."""
    if lips.ndim != 3 or lips.shape[1:] != (len(MIRROR_PERM), 2):
        raise ValueError(f"lips augmentation expects [T, {len(MIRROR_PERM)}, 2] points, "
                         f"got shape {lips.shape}")
    angle = np.deg2rad(rng.uniform(-spec.rotate_deg, spec.rotate_deg))
    sx, sy = 1.0 + rng.uniform(-spec.scale, spec.scale, size=2)
    t = rng.uniform(-spec.shift, spec.shift, size=2)
    mirror = rng.random() < spec.mirror
    noise = rng.normal(0.0, spec.noise, size=lips.shape) if spec.noise > 0 else 0.0
    x = np.asarray(lips, np.float64)
    if mirror:
        x = mirror_lips(x)
    x = similarity(x, n, angle, sx, sy, t) + noise
    x[n:] = 0.0
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------

def shelf_filter(wave: np.ndarray, gain_db: float, high: bool,
                 sr: int = contract.AUDIO_SR) -> np.ndarray:
    """First-order shelf: y = x + (g - 1) * band(x), band the one-pole low-pass of x
    (low shelf) or x minus it (high shelf), g = 10^(gain_db / 20): far inside the band
    the gain is g, far outside it 1."""
    a = np.exp(-2.0 * np.pi * SHELF_CUTOFF_HZ / sr)
    low = signal.lfilter([1.0 - a], [1.0, -a], wave)       # y[t] = (1-a) x[t] + a y[t-1]
    band = wave - low if high else low
    return wave + (10.0 ** (gain_db / 20.0) - 1.0) * band


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus white Gaussian noise whose power is the wave's mean power over
    10^(snr_db / 10) (a silent wave is returned as is: no SNR to meet)."""
    power = float(np.mean(np.square(wave))) if wave.size else 0.0
    if power == 0.0:
        return wave
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return wave + rng.normal(0.0, sigma, size=wave.shape)


def augment_audio(wave: np.ndarray, n_samples: int, spec: AudioAugSpec,
                  rng: np.random.Generator) -> np.ndarray:
    """One draw for a [S] window waveform with ``n_samples`` valid samples (float32 out,
    padding 0, clipped to [-1, 1] like any int16-decoded audio)."""
    if wave.ndim != 1:
        raise ValueError(f"audio augmentation expects a [samples] waveform, got {wave.shape}")
    gain = rng.uniform(-spec.gain_db, spec.gain_db)
    shelf = rng.uniform(-spec.shelf_db, spec.shelf_db)
    high = bool(rng.random() < 0.5)
    noisy = rng.random() < spec.noise_prob
    snr = rng.uniform(spec.snr_db_min, spec.snr_db_max)
    x = np.asarray(wave[:n_samples], np.float64) * 10.0 ** (gain / 20.0)
    if spec.shelf_db > 0:
        x = shelf_filter(x, shelf, high)
    if noisy:
        x = add_noise(x, snr, rng)
    out = np.zeros(wave.shape, np.float32)
    out[:n_samples] = np.clip(x, -1.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------
# a window
# ---------------------------------------------------------------------------------------

def apply(out: dict[str, np.ndarray], spec: StreamAugSpec, rng: np.random.Generator) -> None:
    """Augment the ``lips`` / ``audio`` arrays of a cut window in place (those it holds;
    ``frame_mask`` gives the valid frames). Lips draws come before audio draws."""
    n = int(np.asarray(out["frame_mask"]).sum())
    if spec.lips is not None and "lips" in out:
        out["lips"] = augment_lips(out["lips"], n, spec.lips, rng)
    if spec.audio is not None and "audio" in out:
        out["audio"] = augment_audio(out["audio"], n * contract.SAMPLES_PER_FRAME,
                                     spec.audio, rng)


def check_streams(spec: StreamAugSpec, streams: Mapping[str, Any] | frozenset) -> None:
    """The audio augmentation changes the waveform only: a config that also feeds the
    log-mel or ASR posteriors (computed from the clean audio) would see two audios."""
    if spec.audio is not None:
        other = sorted({"logmel", "teacher_audio"} & set(streams))
        if other:
            raise ConfigError(f"config.data.audio_augment acts on the raw 'audio' waveform "
                              f"only, but config.data.inputs also reads {other}: turn it off "
                              "or drop those streams")
