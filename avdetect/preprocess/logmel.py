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

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from avdetect import contract

_HALF = contract.MEL_NFFT // 2          # 256: centring pad, as librosa's center=True
_CHUNK_FRAMES = 8192                    # frames per FFT block (bounds memory on long audio)


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Slaney-normalised mel filters float32 [80, 257] (librosa.filters.mel), cached and
    read-only (it is shared by every caller)."""
    fb = librosa.filters.mel(
        sr=contract.AUDIO_SR, n_fft=contract.MEL_NFFT, n_mels=contract.N_MELS,
        fmin=contract.MEL_FMIN, fmax=contract.MEL_FMAX, htk=False, norm="slaney",
    ).astype(np.float32)
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
    n = num_frames * contract.SAMPLES_PER_FRAME
    audio = audio[:n].astype(np.float32, copy=False)
    if len(audio) < n:
        audio = np.concatenate([audio, np.zeros(n - len(audio), np.float32)])
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


def log_mel_batch_jax(audio: jax.Array) -> jax.Array:
    """Batched, jit-able log-mel: float [B, N] -> float32 [B, N // 160, 80].

    Same definition as ``log_mel`` (for N = 640 T it returns the same 4T frames); frame j
    needs samples up to 160 j + 255, supplied by the zero padding.
    """
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim != 2:
        raise ValueError(f"log_mel_batch_jax expects [B, N] audio, got shape {audio.shape}")
    n_out = audio.shape[1] // contract.MEL_HOP
    padded = jnp.pad(audio, ((0, 0), (_HALF, _HALF)))              # [B, N + 512]
    idx = (np.arange(n_out)[:, None] * contract.MEL_HOP
           + np.arange(contract.MEL_NFFT)[None, :])                # [F, 512] static
    frames = padded[:, idx] * jnp.asarray(_window())               # [B, F, 512]
    spec = jnp.fft.rfft(frames, axis=-1)                           # [B, F, 257]
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    mel = jnp.einsum("bfk,mk->bfm", power, jnp.asarray(mel_filterbank()))
    return jnp.log(mel + contract.LOG_FLOOR)
