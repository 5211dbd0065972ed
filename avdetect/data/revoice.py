"""The TTS re-voice of the ``pf_tts`` pseudo-fake (:mod:`avdetect.data.pseudo_fakes`): the
clip's Whisper transcript (cached), spoken by espeak-ng at a rate that fits the source's
voiced span, laid over the source's own noise floor at the source's voiced loudness.
A 20 ms energy detector (:func:`voiced_frames`) finds the voiced span.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import tempfile

import numpy as np

from avdetect import contract

SPF = contract.SAMPLES_PER_FRAME

_VAD_FRAME = 320                       # 20 ms energy frames


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // _VAD_FRAME
    f = np.asarray(x[:n * _VAD_FRAME], np.float64).reshape(n, _VAD_FRAME)
    return 10.0 * np.log10(np.mean(f * f, axis=1) + 1e-10)


def voiced_frames(x: np.ndarray, rel_db: float = 35.0) -> np.ndarray:
    """bool [N // 320]: the 20 ms frames louder than ``max(loud - 35 dB, min(floor +
    10 dB, loud - 6 dB))``, where loud = the 95th percentile of the frame energies and
    floor = the 10th percentile of the non-silent ones (a noisy clip whose floor is close
    to its speech level still has voiced frames)."""
    db = _frame_db(x)
    if db.size == 0:
        return np.zeros(0, bool)
    loud = np.percentile(db, 95)
    nonzero = db[db > -90]
    floor = np.percentile(nonzero, 10) if nonzero.size else -100.0
    return db > max(loud - rel_db, min(floor + 10.0, loud - 6.0))


def voiced_span(audio: np.ndarray) -> tuple[int, int]:
    """Samples [s0, s1) from the first to the last voiced 20 ms frame (0, 0 if none)."""
    v = np.flatnonzero(voiced_frames(np.asarray(audio, np.float64)))
    if v.size == 0:
        return 0, 0
    return int(v[0] * _VAD_FRAME), int((v[-1] + 1) * _VAD_FRAME)


def voiced_rms(x: np.ndarray) -> float:
    """RMS over the voiced 20 ms frames of ``x`` (same units as x)."""
    x = np.asarray(x, np.float64)
    v = voiced_frames(x)
    if not v.any():
        return 0.0
    f = x[:len(v) * _VAD_FRAME].reshape(len(v), _VAD_FRAME)[v]
    return float(np.sqrt(np.mean(f * f)))


def noise_bed(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of the source's own noise floor: its quietest non-silent 20 ms
    frames (lowest fifth) in random order, joined with short cross-fades."""
    x = np.asarray(audio, np.float64)
    db = _frame_db(x)
    n = len(db)
    frames = x[:n * _VAD_FRAME].reshape(n, _VAD_FRAME) if n else np.zeros((0, _VAD_FRAME))
    live = np.flatnonzero(db > -90)               # skip digital silence
    if live.size == 0 or length <= 0:
        return np.zeros(max(length, 0))
    quiet = live[np.argsort(db[live])[:max(1, live.size // 5)]]
    fade = 32
    pieces = frames[rng.choice(quiet, size=length // (_VAD_FRAME - fade) + 2)]
    ramp = np.linspace(0.0, 1.0, fade)
    out = pieces[0].copy()
    for p in pieces[1:]:
        out[-fade:] = out[-fade:] * (1 - ramp) + p[:fade] * ramp
        out = np.concatenate([out, p[fade:]])
    return out[:length]


def resample_to_length(speech: np.ndarray, length: int) -> np.ndarray:
    """``speech`` resampled to exactly ``length`` samples (a small tempo/pitch change:
    the speaking rate was already chosen to come close). Not ``contract.fit_length``:
    this stretches the whole signal instead of cutting or padding its end."""
    import scipy.signal

    speech = np.asarray(speech, np.float64)
    if len(speech) == length:
        return speech
    return scipy.signal.resample(speech, length)


def revoice_waveform(audio: np.ndarray, speech: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
    """int16 ``audio`` with ``speech`` (float, any scale) over its voiced span: fitted to
    the span's length, added to the source's own noise floor, with a gain that makes the
    result's voiced RMS (:func:`voiced_rms` over the whole clip) equal the source's; the
    source's samples outside the span (its digital silence included) are kept, with 5 ms
    cross-fades at the span's edges. Returns int16, the length of ``audio``."""
    src = np.asarray(audio, np.float64)
    s0, s1 = voiced_span(src)
    if s1 - s0 < SPF:
        raise ValueError("the source has no voiced span to re-voice")
    speech = resample_to_length(speech, s1 - s0)
    got = voiced_rms(speech)
    if got <= 0:
        raise ValueError("the TTS speech is silent")
    bed = noise_bed(src, s1 - s0, rng)
    fade = min(80, (s1 - s0) // 4)
    ramp = np.linspace(0.0, 1.0, fade)

    def mix(gain: float) -> np.ndarray:
        new = speech * gain + bed
        out = src.copy()
        out[s0:s1] = new
        out[s0:s0 + fade] = src[s0:s0 + fade] * (1 - ramp) + new[:fade] * ramp
        out[s1 - fade:s1] = new[-fade:] * (1 - ramp) + src[s1 - fade:s1] * ramp
        return out

    # The voiced frames of the result depend on its level: a few fixed-point steps.
    target = voiced_rms(src)
    gain = voiced_rms(src[s0:s1]) / got
    for _ in range(4):
        level = voiced_rms(mix(gain))
        if level <= 0:
            break
        gain *= target / level
    return contract.to_int16(mix(gain) / contract.INT16_SCALE)   # src is on the int16 scale


def speak(text: str, voice_name: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """espeak-ng speech of ``text`` (float32 16 kHz, leading/trailing pauses cut) at a
    rate chosen to last about ``seconds`` (a trial at 170 wpm, then the rate scaled).
    Uses the synthetic benchmark's deterministic espeak-ng server; the phone events are
    not needed here, so any phoneme espeak-ng emits is fine."""
    import scipy.signal

    from datasets.synthetic_av import tts

    pitch, pitch_range = int(rng.integers(35, 66)), int(rng.integers(35, 71))

    def synth(rate: int) -> np.ndarray:
        raw, _, sr_in = tts.synth_isolated(text, tts.Voice(voice_name, pitch=pitch, rate=rate,
                                                           range=pitch_range))
        if len(raw) == 0:
            raise ValueError(f"espeak-ng produced no speech for {text!r}")
        g = math.gcd(sr_in, contract.AUDIO_SR)
        audio = scipy.signal.resample_poly(contract.from_int16(raw).astype(np.float64),
                                           contract.AUDIO_SR // g, sr_in // g)
        v = np.flatnonzero(voiced_frames(audio))
        if v.size == 0:
            raise ValueError(f"espeak-ng produced silence for {text!r}")
        return audio[v[0] * _VAD_FRAME:(v[-1] + 1) * _VAD_FRAME]

    trial = synth(170)
    rate = int(np.clip(round(170 * len(trial) / contract.AUDIO_SR / max(seconds, 0.2)), 80, 450))
    return synth(rate)


# --- Whisper transcripts, cached ---------------------------------------------------------

_transcriber = None


def transcript_of(audio: np.ndarray, cache_dir: str) -> str:
    """Whisper tiny.en transcript of an int16 waveform (the project's CTranslate2 code in
    ``avdetect.teachers.asr_align``), cached as JSON under ``cache_dir`` by the sha256 of
    the samples."""
    global _transcriber
    audio = np.ascontiguousarray(audio, np.int16)
    digest = hashlib.sha256(audio.tobytes()).hexdigest()[:32]
    path = pathlib.Path(cache_dir) / digest[:2] / f"{digest}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["text"]
        except (ValueError, KeyError):
            path.unlink()
    if _transcriber is None:
        from avdetect.teachers.asr_align import WhisperTranscriber
        _transcriber = WhisperTranscriber()
    text = _transcriber(contract.from_int16(audio))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"text": text, "model": "whisper-tiny.en-ct2"}, f)
    os.replace(tmp, path)
    return text
