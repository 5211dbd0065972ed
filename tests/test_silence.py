"""Digital silence (``contract.digital_silence``) on hand-made clips against a
sample-level NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from avdetect import contract

SPF = contract.SAMPLES_PER_FRAME


def _reference(x_int16: np.ndarray) -> tuple[int, int]:
    """Independent: the first / last sample louder than 2 int16 steps, in whole frames."""
    t = len(x_int16) // SPF
    loud = np.flatnonzero(np.abs(x_int16[:t * SPF].astype(np.int64)) > 2)
    if len(loud) == 0:
        return t, t
    return int(loud[0] // SPF), int(t - 1 - loud[-1] // SPF)


def _clip(lead: int, body: int, trail: int, seed: int = 0) -> np.ndarray:
    """int16 clip: ``lead`` frames of zeros, a tone, ``trail`` frames of zeros."""
    n = body * SPF
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / contract.AUDIO_SR)
    tone += 0.01 * np.random.default_rng(seed).normal(size=n)
    wave = np.concatenate([np.zeros(lead * SPF), tone, np.zeros(trail * SPF)])
    return np.round(wave * 32767).astype(np.int16)


@pytest.mark.parametrize("lead,body,trail", [(0, 10, 0), (7, 20, 3), (12, 1, 0), (0, 5, 9)])
def test_zero_padded_clip(lead, body, trail):
    x = _clip(lead, body, trail)
    assert contract.digital_silence(x) == (lead, trail) == _reference(x)
    # the float waveform of the same clip gives the same frames
    assert contract.digital_silence(x.astype(np.float32) / 32768.0) == (lead, trail)


def test_threshold_partial_frames_and_whole_silence():
    x = _clip(6, 10, 4)
    # a near-silent frame (|x| <= 2 steps, as a lossy decoder leaves) still counts as
    # silence; a single sample of 3 steps makes its whole frame sounding
    x[2 * SPF:3 * SPF] = np.random.default_rng(1).integers(-2, 3, SPF)
    assert contract.digital_silence(x) == (6, 4) == _reference(x)
    x[2 * SPF + 100] = 3
    assert contract.digital_silence(x) == (2, 4) == _reference(x)
    # a trailing partial frame is ignored; an all-silent clip is silent at both ends
    assert contract.digital_silence(np.r_[_clip(1, 3, 0), np.full(100, 9000, np.int16)]) == (1, 0)
    assert contract.digital_silence(np.zeros(5 * SPF, np.int16)) == (5, 5)
    assert contract.digital_silence(np.zeros(0, np.float32)) == (0, 0)
    with pytest.raises(ValueError, match="mono"):
        contract.digital_silence(np.zeros((2, SPF)))
