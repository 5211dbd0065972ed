"""Audio tracks of the clips: speech placed on the clip timeline over a noise floor, and the
voice-conversion "vocoder" of the ``voiceconvert`` method.

Every clip, real or fake, gets the same kind of background: low Gaussian noise (about
-60 to -50 dBFS, drawn per recording), so digital silence never marks a clip, and speech
starts after a lead drawn from one distribution for all methods (see ``generate.py``):
the leading-silence shortcut of FakeAVCeleb (papers.md) does not exist here.
"""

from __future__ import annotations

import difflib
import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from avdetect import contract

from datasets.synthetic_av.tts import Utterance

VC_NFFT = 512
VC_HOP = 160
VC_MELS = 96                 # mel bottleneck of the conversion (spectral detail lost)
VC_GRIFFIN_LIM_ITERS = 24


def noise_floor(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Background noise of one recording: white noise at -60..-50 dBFS RMS, float32 [N]."""
    level = 10 ** (rng.uniform(-60.0, -50.0) / 20.0)
    return (rng.standard_normal(num_samples) * level).astype(np.float32)


def place(speech: np.ndarray, offset: int, num_samples: int) -> np.ndarray:
    """``speech`` starting at sample ``offset`` of a silent track of ``num_samples``
    (negative offsets cut the start of the speech, long speech is cut at the end)."""
    out = np.zeros(num_samples, np.float32)
    s0 = max(0, -offset)
    d0 = max(0, offset)
    n = min(len(speech) - s0, num_samples - d0)
    if n > 0:
        out[d0:d0 + n] = speech[s0:s0 + n]
    return out


def _anchors(source: Utterance, target: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """Matching time points (samples) of two utterances of the same text: the boundaries
    of phones that line up in both phone sequences (difflib's matching blocks), plus
    both ends. Monotone, so a piecewise-linear map between them is a time warp."""
    src, tgt = [0], [0]
    matcher = difflib.SequenceMatcher(a=source.phones, b=target.phones, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            i, j = block.a + k, block.b + k
            src += [int(source.starts[i]), int(source.ends[i])]
            tgt += [int(target.starts[j]), int(target.ends[j])]
    src.append(len(source.audio))
    tgt.append(len(target.audio))
    src_a, tgt_a = np.asarray(src, float), np.asarray(tgt, float)
    order = np.argsort(src_a, kind="stable")
    src_a, tgt_a = src_a[order], np.maximum.accumulate(tgt_a[order])
    return src_a, tgt_a


@functools.lru_cache(maxsize=1)
def _mel_basis() -> tuple[np.ndarray, np.ndarray]:
    import librosa          # only here: a worker that converts no voice never loads it

    fb = librosa.filters.mel(sr=contract.AUDIO_SR, n_fft=VC_NFFT, n_mels=VC_MELS)  # [M, F]
    # Inverse by the normalised transpose: each frequency bin gets the weighted mean of
    # the bands covering it. Smooth in frequency: harmonics above ~1 kHz are smeared, the
    # spectral trace of a low-resolution vocoder.
    inv = fb.T / np.maximum(fb.sum(axis=0)[:, None], 1e-8)                       # [F, M]
    return fb.astype(np.float32), inv.astype(np.float32)


def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(VC_NFFT) / VC_NFFT)).astype(np.float32)


# NumPy STFT / ISTFT (centred, Hann, hop VC_HOP): librosa's versions spend seconds in
# one-off JIT compilation in every fresh worker process, more than a whole clip costs.
def stft(x: np.ndarray) -> np.ndarray:
    """Complex STFT [F, frames] of float [N] (frame k centred on sample k * hop)."""
    pad = VC_NFFT // 2
    xp = np.pad(x.astype(np.float32), pad)
    n_frames = 1 + (len(xp) - VC_NFFT) // VC_HOP
    frames = sliding_window_view(xp, VC_NFFT)[::VC_HOP][:n_frames] * _window()   # [K, nfft]
    return np.fft.rfft(frames, axis=1).T


def istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Inverse of ``stft`` by weighted overlap-add, cut to ``length`` samples."""
    win = _window()
    frames = np.fft.irfft(spec.T, n=VC_NFFT, axis=1) * win                      # [K, nfft]
    n = VC_NFFT + VC_HOP * (len(frames) - 1)
    out = np.zeros(n, np.float64)
    norm = np.zeros(n, np.float64)
    for k, frame in enumerate(frames):
        out[k * VC_HOP:k * VC_HOP + VC_NFFT] += frame
        norm[k * VC_HOP:k * VC_HOP + VC_NFFT] += win ** 2
    pad = VC_NFFT // 2
    out = out / np.maximum(norm, 1e-8)
    out = out[pad:pad + length]
    return np.pad(out, (0, max(0, length - len(out)))).astype(np.float32)


def griffin_lim(mag: np.ndarray, length: int, n_iter: int, rng: np.random.Generator
                ) -> np.ndarray:
    """Audio whose STFT magnitude approximates ``mag`` [F, K] (random initial phases)."""
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    audio = istft(mag * phase, length)
    for _ in range(n_iter):
        rebuilt = stft(audio)[:, :mag.shape[1]]
        phase = rebuilt / np.maximum(np.abs(rebuilt), 1e-8)
        audio = istft(mag * phase, length)
    return audio


def convert_voice(source: Utterance, target: Utterance, seed: int) -> np.ndarray:
    """``target`` (the same text spoken by another voice) re-timed onto ``source``'s phone
    timing and passed through a mel vocoder (mel bottleneck + Griffin-Lim phases):
    same words, same timing, another voice, vocoder artefacts. float32 [len(source)]."""
    n_out = len(source.audio)
    src_t, tgt_t = _anchors(source, target)
    mag = np.abs(stft(target.audio))                                            # [F, Ft]
    n_frames = 1 + n_out // VC_HOP
    out_times = np.arange(n_frames) * VC_HOP                                    # samples
    in_frames = np.interp(out_times, src_t, tgt_t) / VC_HOP                     # fractional
    lo = np.clip(np.floor(in_frames).astype(int), 0, mag.shape[1] - 1)
    hi = np.clip(lo + 1, 0, mag.shape[1] - 1)
    w = (in_frames - lo)[None, :]
    warped = mag[:, lo] * (1 - w) + mag[:, hi] * w                              # [F, n_frames]
    fb, inv = _mel_basis()
    power = inv @ (fb @ warped ** 2)                                            # mel round trip
    audio = griffin_lim(np.sqrt(np.maximum(power, 0)), n_out, VC_GRIFFIN_LIM_ITERS,
                        np.random.default_rng(seed))
    peak = float(np.max(np.abs(audio))) or 1.0
    return (audio * (target.voice.gain / peak)).astype(np.float32)


def frame_rms(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS per video frame (float32 [T]) of a clip's audio."""
    spf = contract.SAMPLES_PER_FRAME
    x = np.zeros(num_frames * spf, np.float32)
    n = min(len(audio), len(x))
    x[:n] = audio[:n]
    return np.sqrt(np.mean(x.reshape(num_frames, spf) ** 2, axis=1)).astype(np.float32)
