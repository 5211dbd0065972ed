"""Audio encoders. Every encoder maps the log-mel of a clip at 100 Hz, float32
[B, 4T, n_mels] (``avdetect.contract``: 4 mel frames per video frame), to the video rate:
``module(features, train, mask=None) -> [B, T, D]``.

* :class:`SEResNetAudio` - the correlation-distillation student's audio stream (TalkNet's
  SE-ResNet-34 layout, papers.md B.1): a 2-D conv net over (time, frequency) whose two
  stride-2 stages reduce time 4x, then a mean over frequency. Input is the log-mel, or
  MFCCs computed from it (:func:`mfcc_from_logmel`), or precomputed MFCCs.
* :class:`WhisperLikeAudio` - a small Whisper-like transformer, the stand-in for CAD's
  frozen Whisper encoder (real weights come from :mod:`avdetect.pretrained`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect.models.layers import (PreLNBlock, SqueezeExcite, kaiming_fan_out,
                                    sinusoidal_positions, torch_bn, zero_padding)

Array = jax.Array


@lru_cache(maxsize=8)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis [n_in, n_out]: ``y = x @ M`` equals
    ``scipy.fft.dct(x, type=2, norm='ortho')[..., :n_out]``."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def mfcc_from_logmel(logmel: Array, n_mfcc: int = 13) -> Array:
    """MFCCs as the orthonormal DCT-II of the natural-log mel energies (the cepstrum of the
    contract's log-mel; librosa's ``mfcc`` does the same on a dB-scaled mel, i.e. up to the
    constant factor 10/ln 10). [..., n_mels] -> [..., n_mfcc]."""
    return logmel @ jnp.asarray(dct_matrix(logmel.shape[-1], n_mfcc))


def audio_input(features: Array, kind: str, n_mfcc: int) -> Array:
    """The encoder input chosen by ``config.model.audio_features``.

    ``'logmel'``: the contract's log-mel as is. ``'mfcc'``: if the last axis already has
    ``n_mfcc`` entries the input is taken to be precomputed MFCCs (the reference's
    13-d ``python_speech_features`` input), otherwise MFCCs are computed from the log-mel.
    """
    if kind == "logmel":
        return features
    if kind == "mfcc":
        return features if features.shape[-1] == n_mfcc else mfcc_from_logmel(features, n_mfcc)
    raise ValueError(f"unknown audio_features {kind!r} (logmel | mfcc)")


class SEBasicBlock(nn.Module):
    """TalkNet's SE basic block on [N, time, freq, C]: conv -> ReLU -> BN -> conv -> BN ->
    SE, plus the (1x1 conv + BN when the shape changes) shortcut, then ReLU. ``mask``
    [N, T] (video frames): padded time steps are zeroed before each 3x3 conv and left
    out of the SE pooling, so they change no valid step."""

    features: int
    stride: tuple[int, int] = (1, 1)
    reduction: int = 8

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        conv = lambda s, name: nn.Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)),  # noqa: E731
                                       use_bias=False, kernel_init=kaiming_fan_out, name=name)
        h = torch_bn(train, name="bn1")(nn.relu(conv(self.stride, "conv1")(
            zero_padding(x, mask))))
        h = torch_bn(train, name="bn2")(conv((1, 1), "conv2")(zero_padding(h, mask)))
        h = SqueezeExcite(self.reduction, name="se")(h, mask)
        skip = x
        if self.stride != (1, 1) or x.shape[-1] != self.features:
            skip = nn.Conv(self.features, (1, 1), self.stride, use_bias=False,
                           kernel_init=kaiming_fan_out, name="downsample")(x)
            skip = torch_bn(train, name="downsample_bn")(skip)
        return nn.relu(h + skip)


class SEResNetAudio(nn.Module):
    """Student audio stream: [B, 4T, F] (log-mel or MFCC) -> [B, T, widths[-1]].

    Laid out as an image [B, time, freq, 1]: stem conv 7x7 stride (time 1, freq 2) -> BN ->
    ReLU, then four stages of :class:`SEBasicBlock` (``layers`` blocks each; stride 2 in
    both axes on stages 2 and 3, which turns 4T frames into T), then the mean over
    frequency. Defaults are the reference's SE-ResNet-34 ([3,4,6,3], 16/32/64/128).
    ``mask`` [B, T]: padded frames change no valid frame's output (every conv's input and
    the SE pooling are masked at their own time resolution).
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    widths: Sequence[int] = (16, 32, 64, 128)
    reduction: int = 8
    features: str = "logmel"
    n_mfcc: int = 13

    @nn.compact
    def __call__(self, feats: Array, train: bool = False, mask: Array | None = None) -> Array:
        x = audio_input(feats, self.features, self.n_mfcc)[..., None]    # [B,4T,F,1]
        x = zero_padding(x, mask)
        x = nn.Conv(self.widths[0], (7, 7), (1, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    kernel_init=kaiming_fan_out, name="stem")(x)
        x = nn.relu(torch_bn(train, name="stem_bn")(x))
        strides = ((1, 1), (2, 2), (2, 2), (1, 1))
        for i, (n, f) in enumerate(zip(self.layers, self.widths)):
            for j in range(n):
                x = SEBasicBlock(f, strides[i] if j == 0 else (1, 1), self.reduction,
                                 name=f"stage{i + 1}_{j}")(x, train, mask)
        return jnp.mean(x, axis=2)                                        # [B,T,C]


class WhisperLikeAudio(nn.Module):
    """A small Whisper-like encoder: log-mel [B, 4T, F] -> [B, T, dim].

    Whisper layout: conv1d(k3) -> GELU -> conv1d(k3, stride 2) -> GELU (100 Hz -> 50 Hz),
    + sinusoidal positions, pre-LN Transformer blocks, final LN; then pairs of 50 Hz frames
    are averaged to reach the 25 Hz video rate (what the pretrained Whisper's 50 Hz output
    will need too, so the stand-in and the real encoder look the same to CAD).
    """

    dim: int = 512
    depth: int = 6
    heads: int = 8
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, feats: Array, train: bool = False, mask: Array | None = None) -> Array:
        # padded frames zeroed before each time conv: they change no valid frame
        x = nn.gelu(nn.Conv(self.dim, (3,), padding=((1, 1),), name="conv1")(
            zero_padding(feats, mask)))
        x = nn.gelu(nn.Conv(self.dim, (3,), (2,), padding=((1, 1),), name="conv2")(
            zero_padding(x, mask)))
        x = x + jnp.asarray(sinusoidal_positions(x.shape[1], self.dim))   # [B,2T,D]
        # Each 50 Hz frame is valid iff its video frame is.
        m2 = None if mask is None else jnp.repeat(mask, 2, axis=1)[:, : x.shape[1]]
        for i in range(self.depth):
            x = PreLNBlock(self.dim, self.heads, self.mlp_ratio, name=f"block{i}")(
                x, mask=m2, train=train)
        x = nn.LayerNorm(name="ln_post")(x)
        b, n, d = x.shape
        return x[:, : n - n % 2].reshape(b, n // 2, 2, d).mean(axis=2)   # [B,T,D]
