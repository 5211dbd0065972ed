"""Visual encoders.

* :class:`MouthEncoder` - the correlation-distillation student's visual stream (TalkNet
  layout, papers.md B.1): spatio-temporal conv stem + per-frame ResNet-18-style trunk +
  temporal depthwise-separable conv blocks (V-TCN) + conv head, on grayscale mouth crops
  uint8 [B, T, H, W] -> [B, T, D].
* :class:`FaceViT` - a small ViT-like image encoder on RGB face crops
  uint8 [B, T, S, S, 3] -> [B, T, D], the stand-in for CAD's frozen CLIP encoder (the real
  CLIP weights arrive through :mod:`avdetect.pretrained`; same call signature).

Every encoder is a linen module called as ``module(inputs, train, mask=None) -> [B, T, D]``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avdetect.models.layers import (BatchNormReLU, GlobalLayerNorm, PReLU, PreLNBlock,
                                    conv_chunked_wgrad, to_float_image,
                                    torch_bn, zero_padding)

Array = jax.Array

# Grayscale normalisation of the reference lip-reading front end (deep_avsr / TalkNet).
MOUTH_MEAN, MOUTH_STD = 0.4161, 0.1688
# CLIP's RGB normalisation (what a CLIP-pretrained face encoder expects).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The reference front end's BatchNorms use PyTorch momentum 0.01, eps 1e-3.
_FRONT_BN = dict(momentum=0.01, eps=1e-3)

# The per-frame convolutions of the front end (stem and trunk) compute their kernel
# gradient over chunks of this many frames (of the B*T): same function, faster on CPU
# (layers.conv_chunked_wgrad; BENCHMARKS.md "peer").
WGRAD_CHUNK = 25
_frame_conv = functools.partial(conv_chunked_wgrad, chunk=WGRAD_CHUNK)


class ResNetStage(nn.Module):
    """One stage of the deep_avsr / TalkNet ResNet-18 trunk (x: [N, H, W, C]).

    Block i: ``s_i = conv(relu(bn(conv(y_{i-1})))) + skip``; the next block's input is
    ``y_i = relu(bn(s_i))``. The skip of the first block is the stage input (a 1x1 strided
    conv without BN when the shape changes); the skip of every later block is the previous
    *pre-BN* sum ``s_{i-1}``, as in the reference. With ``blocks=2`` this is exactly the
    reference's ``ResNetLayer``.
    """

    features: int
    stride: int
    blocks: int = 2

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = lambda f, s, name: nn.Conv(f, (3, 3), (s, s), padding=((1, 1), (1, 1)),  # noqa: E731
                                          use_bias=False, name=name,
                                          conv_general_dilated=_frame_conv)
        y, skip = x, x
        if self.stride != 1 or x.shape[-1] != self.features:
            skip = nn.Conv(self.features, (1, 1), (self.stride, self.stride), use_bias=False,
                           name="downsample", conv_general_dilated=_frame_conv)(x)
        for i in range(self.blocks):
            stride = self.stride if i == 0 else 1
            h = conv(self.features, stride, f"conv1_{i}")(y)
            h = BatchNormReLU(train, **_FRONT_BN, name=f"bn1_{i}")(h)
            s = conv(self.features, 1, f"conv2_{i}")(h) + skip
            y = BatchNormReLU(train, **_FRONT_BN, name=f"outbn_{i}")(s)
            skip = s
        return y


class MouthFrontend(nn.Module):
    """Conv stem + ResNet trunk: mouth crops [B, T, H, W] (normalised float) -> [B, T, C].

    ``stem``: ``'3d'`` uses the (5,7,7) kernel as a spatio-temporal conv over +-2
    neighbouring frames of each clip - TalkNet's function (its Conv3d runs over all B*T
    frames of a batch as one sequence; per clip, the two are the same; METHODS.md "Stem").
    ``'per_frame'`` uses only the kernel's centre temporal slice as a 2-D 7x7 conv per
    frame (5x fewer FLOPs). The kernel keeps the reference shape either way, so
    TalkNet / deep_avsr weights load as-is.
    The trunk ends with a global spatial mean (== the reference's AvgPool(4) on 112 px
    input, where the map is 4x4; also valid for 88 px input whose map is 3x3).
    """

    stem_width: int = 64
    widths: Sequence[int] = (64, 128, 256, 512)
    strides: Sequence[int] = (1, 2, 2, 2)
    blocks: int = 2
    stem: str = "per_frame"
    stem_time_kernel: int = 5

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        b, t, h, w = x.shape
        kt = self.stem_time_kernel
        kernel = self.param("stem_conv", nn.initializers.lecun_normal(),
                            (kt, 7, 7, 1, self.stem_width))              # [kt,7,7,1,C]
        if self.stem == "per_frame":
            y = _frame_conv(
                x.reshape(b * t, h, w, 1), kernel[kt // 2], (2, 2), ((3, 3), (3, 3)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))               # [BT,H/2,W/2,C]
        elif self.stem == "3d":
            y = jax.lax.conv_general_dilated(
                x[..., None], kernel, (1, 2, 2), ((kt // 2, kt // 2), (3, 3), (3, 3)),
                dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))            # [B,T,H/2,W/2,C]
            y = y.reshape((b * t,) + y.shape[2:])
        else:
            raise ValueError(f"unknown visual stem {self.stem!r} (per_frame | 3d)")
        y = BatchNormReLU(train, **_FRONT_BN, pool=(3, 2, 1), name="stem_bn")(y)  # [BT,H/4,W/4,C]
        for i, (f, s) in enumerate(zip(self.widths, self.strides)):
            y = ResNetStage(f, s, self.blocks, name=f"stage{i + 1}")(y, train)
        y = jnp.mean(y, axis=(1, 2))                                      # [BT, C]
        return y.reshape(b, t, -1)


# Outside training the per-frame front end's frames are independent (BatchNorm reads its
# running averages), so it runs over chunks of this many frames of each clip in turn: the
# same values with each chunk's maps staying in cache (BENCHMARKS.md, "peer": inference).
EVAL_CHUNK = 25


def frames_in_chunks(front: nn.Module, x: Array) -> Array:
    """``front(x, False)`` for a per-frame front end on [B, T, H, W], computed over chunks
    of EVAL_CHUNK frames along T in a loop (flax ``nn.scan`` with the front end's variables
    shared, so its parameter tree is the same as a direct call's). Chunking along the
    static T (not B*T) keeps it valid for a symbolic batch size (``jax.export``)."""
    b, t, h, w = x.shape
    k = -(-t // EVAL_CHUNK)
    x = jnp.pad(x, ((0, 0), (0, k * EVAL_CHUNK - t), (0, 0), (0, 0)))
    chunks = jnp.swapaxes(x.reshape(b, k, EVAL_CHUNK, h, w), 0, 1)      # [k,B,chunk,H,W]
    scan = nn.scan(lambda mdl, carry, chunk: (carry, mdl(chunk, False)),
                   variable_broadcast=("params", "batch_stats"),
                   split_rngs={"params": False}, length=k)
    _, feats = scan(front, None, chunks)                                # [k,B,chunk,C]
    return jnp.swapaxes(feats, 0, 1).reshape(b, k * EVAL_CHUNK, -1)[:, :t]


class DSConvBlock(nn.Module):
    """Residual depthwise-separable temporal block of TalkNet's V-TCN on [B, T, C]:
    ReLU -> BN -> depthwise conv(k=3) -> PReLU -> gLN -> pointwise conv, plus the input.
    Padded frames (``mask`` 0) are zeroed before the temporal conv and left out of gLN."""

    kernel: int = 3

    @nn.compact
    def __call__(self, x: Array, train: bool, mask: Array | None = None) -> Array:
        c = x.shape[-1]
        h = zero_padding(torch_bn(train, name="bn")(nn.relu(x)), mask)
        h = nn.Conv(c, (self.kernel,), padding=((self.kernel // 2,) * 2,),
                    feature_group_count=c, use_bias=False, name="depthwise")(h)
        h = GlobalLayerNorm(name="gln")(PReLU(name="prelu")(h), mask)
        h = nn.Conv(c, (1,), use_bias=False, name="pointwise")(h)
        return x + h


class MouthEncoder(nn.Module):
    """Student visual stream: uint8 mouth crops [B, T, H, W] -> [B, T, out_dim].

    Front end (:class:`MouthFrontend`) -> ``tcn_blocks`` x :class:`DSConvBlock` ->
    conv head Conv1d(k=5, head_hidden) -> BN -> ReLU -> Conv1d(k=1, out_dim).
    ``mask`` [B, T]: padded frames change no valid frame's output (zeroed before every
    temporal conv, the '3d' stem's included).
    """

    stem_width: int = 64
    widths: Sequence[int] = (64, 128, 256, 512)
    blocks: int = 2
    stem: str = "per_frame"
    tcn_blocks: int = 5
    head_hidden: int = 256
    out_dim: int = 128

    @nn.compact
    def __call__(self, mouth: Array, train: bool = False, mask: Array | None = None) -> Array:
        x = to_float_image(mouth, MOUTH_MEAN, MOUTH_STD)                 # [B,T,H,W]
        if self.stem == "3d":           # the only front-end op that mixes frames
            x = zero_padding(x, mask)
        front = MouthFrontend(self.stem_width, tuple(self.widths), blocks=self.blocks,
                              stem=self.stem, name="frontend")
        if train or self.stem != "per_frame" or x.shape[1] <= EVAL_CHUNK:
            x = front(x, train)                                           # [B,T,C]
        else:
            x = frames_in_chunks(front, x)                                # [B,T,C]
        for i in range(self.tcn_blocks):
            x = DSConvBlock(name=f"tcn{i}")(x, train, mask)
        x = nn.Conv(self.head_hidden, (5,), padding=((2, 2),), name="head_conv1")(
            zero_padding(x, mask))
        x = nn.relu(torch_bn(train, name="head_bn")(x))
        return nn.Conv(self.out_dim, (1,), name="head_conv2")(x)          # [B,T,D]


class FaceViT(nn.Module):
    """ViT-like per-frame image encoder: uint8 faces [B, T, S, S, 3] -> [B, T, out_dim].

    CLIP layout: patchify conv (no bias) -> [CLS] + learned positions -> LN ->
    pre-LN blocks -> LN on [CLS] -> linear projection. Inputs whose side differs from
    ``image_size`` are resized bilinearly first.
    """

    image_size: int = 224
    patch: int = 32
    dim: int = 768
    depth: int = 12
    heads: int = 12
    out_dim: int = 512

    @nn.compact
    def __call__(self, face: Array, train: bool = False, mask: Array | None = None) -> Array:
        b, t = face.shape[:2]
        x = to_float_image(face, CLIP_MEAN, CLIP_STD).reshape((b * t,) + face.shape[2:])
        if x.shape[1:3] != (self.image_size, self.image_size):
            x = jax.image.resize(x, (b * t, self.image_size, self.image_size, 3), "bilinear")
        x = nn.Conv(self.dim, (self.patch, self.patch), (self.patch, self.patch),
                    padding="VALID", use_bias=False, name="patchify")(x)
        x = x.reshape(b * t, -1, self.dim)                                # [BT, N, D]
        cls = self.param("cls", nn.initializers.normal(0.02), (self.dim,))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b * t, 1, self.dim)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), x.shape[1:])
        x = nn.LayerNorm(name="ln_pre")(x)
        for i in range(self.depth):
            x = PreLNBlock(self.dim, self.heads, name=f"block{i}")(x, train=train)
        x = nn.LayerNorm(name="ln_post")(x[:, 0])
        x = nn.Dense(self.out_dim, use_bias=False, name="proj")(x)
        return x.reshape(b, t, self.out_dim)
