"""Log-mel features of the data contract: 80 mels, 25 ms Hann window zero-padded to a
512-point FFT, 10 ms hop, exactly 4 mel frames per 25 fps video frame.

Definition (identical to ``librosa.feature.melspectrogram(y, sr=16000, n_fft=512,
win_length=400, hop_length=160, n_mels=80, center=True, pad_mode='constant', power=2.0)``
with Slaney mel filters, minus librosa's extra last frame):

    frame j is centred on sample 160 j: samples [160 j - 256, 160 j + 256) of the signal
    padded with 256 zeros on each side, times a periodic 400-point Hann window centred in
    the 512 points; power spectrum |rfft|^2 [257]; mel = filters [80, 257] @ power;
    feature = log(mel + LOG_FLOOR).

For T video frames the audio is first padded with zeros or trimmed to T * 640 samples,
and frames j = 0 .. 4T - 1 are kept (librosa's centring gives 4T + 1).
"""

from __future__ import annotations

import functools

import numpy as np

from avdetect import contract

_HALF = contract.MEL_NFFT // 2          # 256: centring pad, as librosa's center=True
_CHUNK_FRAMES = 8192                    # frames per FFT block (bounds memory on long audio)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, 3 mels per
# 200 Hz; logarithmic above, 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL          # 15
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    mel = hz / _SLANEY_HZ_PER_MEL
    log = hz >= _SLANEY_LOG_HZ
    mel[log] = _SLANEY_LOG_MEL + np.log(hz[log] / _SLANEY_LOG_HZ) / _SLANEY_LOG_STEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = mel * _SLANEY_HZ_PER_MEL
    log = mel >= _SLANEY_LOG_MEL
    hz[log] = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (mel[log] - _SLANEY_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Slaney-normalised mel filters float32 [80, 257], equal to
    ``librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=0, fmax=8000, htk=False,
    norm='slaney')`` (the test compares them), cached and read-only (it is shared by
    every caller).

    Built with NumPy rather than by calling librosa: librosa's first call JIT-compiles
    its helpers with numba, ~2 s that every fresh ``avdetect detect`` process paid.
    Triangle i rises from mel point i to i + 1 and falls to i + 2 (82 points evenly
    spaced in mels from fmin to fmax), scaled to unit area per Hz (2 / bandwidth)."""
    fft_hz = np.fft.rfftfreq(contract.MEL_NFFT, d=1.0 / contract.AUDIO_SR)        # [257]
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([contract.MEL_FMIN]))[0],
                                   _hz_to_mel(np.array([contract.MEL_FMAX]))[0],
                                   contract.N_MELS + 2))                          # [82]
    width = np.diff(edges)                                                         # [81]
    ramps = edges[:, None] - fft_hz[None, :]                                       # [82, 257]
    rising = -ramps[:-2] / width[:-1, None]                                        # [80, 257]
    falling = ramps[2:] / width[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.flags.writeable = False
    return fb


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """Periodic Hann of 400 samples centred in 512 zeros, float32 [512] (librosa's
    get_window('hann', 400, fftbins=True) then pad_center)."""
    n = contract.MEL_WIN
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    left = (contract.MEL_NFFT - n) // 2
    win = np.zeros(contract.MEL_NFFT, np.float32)
    win[left:left + n] = hann
    win.flags.writeable = False
    return win


def _fit_audio(audio: np.ndarray, num_frames: int | None) -> tuple[np.ndarray, int]:
    """Validate a mono signal and pad/trim it to T * 640 samples; returns (audio, T)."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"log_mel expects mono audio [N], got shape {audio.shape}")
    if num_frames is None:
        num_frames = len(audio) // contract.SAMPLES_PER_FRAME
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    audio = contract.fit_length(audio, num_frames * contract.SAMPLES_PER_FRAME)
    audio = audio.astype(np.float32, copy=False)
    return audio, num_frames


def mel_power(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """Power mel spectrogram float32 [4T, 80] (before the log); see the module docstring."""
    audio, t = _fit_audio(audio, num_frames)
    n_out = t * contract.MEL_PER_FRAME
    padded = np.pad(audio, (_HALF, _HALF))                         # [N + 512]
    frames = np.lib.stride_tricks.sliding_window_view(padded, contract.MEL_NFFT)
    frames = frames[:: contract.MEL_HOP][:n_out]                  # [4T, 512] (a view)
    fb_t = mel_filterbank().T                                      # [257, 80]
    out = np.empty((n_out, contract.N_MELS), np.float32)
    for s in range(0, n_out, _CHUNK_FRAMES):                       # blocks of frames, not frames
        spec = np.fft.rfft(frames[s:s + _CHUNK_FRAMES] * _window(), axis=-1)   # [b, 257]
        power = spec.real**2 + spec.imag**2
        out[s:s + _CHUNK_FRAMES] = power @ fb_t
    return out


def log_mel(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """Log-mel float32 [4T, 80]: ``log(mel_power + LOG_FLOOR)``.

    ``audio`` is float mono [N] at 16 kHz; T is ``num_frames`` or ``N // 640``; the audio is
    padded with zeros or trimmed to T * 640 samples first, so the result always has exactly
    4 mel frames per video frame.
    """
    return np.log(mel_power(audio, num_frames) + np.float32(contract.LOG_FLOOR))
