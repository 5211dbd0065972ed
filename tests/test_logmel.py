"""Log-mel front end against librosa (the reference definition), numpy and JAX paths."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from avdetect import contract
from avdetect.media.decode import load_audio
from avdetect.preprocess import logmel as L

SR = contract.AUDIO_SR


def chirp_noise(n: int, seed: int = 0) -> np.ndarray:
    """A 100 Hz -> 7 kHz linear chirp plus white noise, float32 [n]."""
    t = np.arange(n) / SR
    dur = max(n / SR, 1e-9)
    f0, f1 = 100.0, 7000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(phase) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def librosa_mel(y: np.ndarray) -> np.ndarray:
    """Reference power mel [frames, 80], exactly the call the data contract names."""
    return librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=512, win_length=400, hop_length=160, n_mels=80, center=True,
        pad_mode="constant", power=2.0,
    ).T


def assert_mel_close(mine: np.ndarray, ref: np.ndarray) -> None:
    significant = ref > 1e-8 * ref.max()
    rel = np.abs(mine - ref)[significant] / ref[significant]
    assert rel.max() < 1e-4
    np.testing.assert_allclose(np.log(mine + contract.LOG_FLOOR),
                               np.log(ref + contract.LOG_FLOOR), atol=1e-3)


def test_filterbank_is_librosa_slaney_and_cached():
    fb = L.mel_filterbank()
    assert fb.shape == (80, 257) and fb.dtype == np.float32
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, fmin=0.0, fmax=SR / 2,
                              htk=False, norm="slaney")
    np.testing.assert_allclose(fb, ref, rtol=1e-6, atol=1e-9)
    assert L.mel_filterbank() is fb
    with pytest.raises(ValueError):
        fb[0, 0] = 1.0                                      # shared cache is read-only


@pytest.mark.parametrize("t", [1, 7, 50])
def test_parity_with_librosa_on_chirp(t):
    y = chirp_noise(t * contract.SAMPLES_PER_FRAME, seed=t)
    ref = librosa_mel(y)
    assert ref.shape[0] == 4 * t + 1                        # librosa's extra centred frame
    mine = L.mel_power(y)
    assert mine.shape == (4 * t, 80) and mine.dtype == np.float32
    assert_mel_close(mine, ref[: 4 * t])
    lm = L.log_mel(y)
    assert lm.shape == (4 * t, 80) and lm.dtype == np.float32
    np.testing.assert_allclose(lm, np.log(mine + contract.LOG_FLOOR), rtol=1e-6)


def test_parity_on_real_clip_audio(realav_clips):
    audio = load_audio(realav_clips[-1])                    # a real speaker, 16 kHz
    t = len(audio) // contract.SAMPLES_PER_FRAME
    mine = L.mel_power(audio, num_frames=t)
    ref = librosa_mel(audio[: t * contract.SAMPLES_PER_FRAME])[: 4 * t]
    assert mine.shape == (4 * t, 80)
    assert_mel_close(mine, ref)


def test_num_frames_pads_and_trims():
    y = chirp_noise(10 * 640 + 123)
    assert L.log_mel(y).shape == (40, 80)                   # T = N // 640
    # Trimming: same as computing on the first 6 * 640 samples.
    np.testing.assert_array_equal(L.log_mel(y, num_frames=6), L.log_mel(y[: 6 * 640]))
    # Padding: same as zero-padding by hand.
    padded = np.concatenate([y, np.zeros(14 * 640 - len(y), np.float32)])
    np.testing.assert_array_equal(L.log_mel(y, num_frames=14), L.log_mel(padded))
    assert L.log_mel(y, num_frames=0).shape == (0, 80)
    silence = L.log_mel(np.zeros(640, np.float32))
    np.testing.assert_allclose(silence, np.log(contract.LOG_FLOOR), rtol=1e-6)


def test_chunked_fft_matches_librosa(monkeypatch):
    # Long inputs are processed in blocks of frames; a tiny block size exercises the joins.
    monkeypatch.setattr(L, "_CHUNK_FRAMES", 7)
    y = chirp_noise(9 * 640, seed=3)
    assert_mel_close(L.mel_power(y), librosa_mel(y)[:36])


def test_rejects_non_mono():
    with pytest.raises(ValueError, match="mono"):
        L.log_mel(np.zeros((2, 640), np.float32))
