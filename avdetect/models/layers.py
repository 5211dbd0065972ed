"""Small building blocks shared by the encoders and fusion modules.

All modules are flax.linen; tensors are channels-last. Shapes are written as
[B, T, C] (batch, time, channels) unless stated otherwise.

PyTorch's BatchNorm ``momentum`` m weights the *new* batch statistic; flax's weights the
*old* running value, so a PyTorch momentum m becomes flax momentum 1 - m (see
:func:`torch_bn`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Initialiser of the reference audio encoder's convolutions (kaiming normal, fan_out, ReLU
# gain), written once here.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_bn(train: bool, momentum: float = 0.1, eps: float = 1e-5,
             name: str | None = None) -> nn.BatchNorm:
    """A BatchNorm that behaves like ``torch.nn.BatchNorm*d(momentum, eps)``.

    ``momentum`` is given in PyTorch's convention (weight of the new batch statistic).
    In training the batch statistics normalise and the running averages update (the
    caller applies with ``mutable=['batch_stats']``); in eval the running averages are used.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=1.0 - momentum,
                        epsilon=eps, name=name)


def masked_mean(x: Array, mask: Array | None, axis=None, keepdims: bool = False) -> Array:
    """Mean of ``x`` over ``axis`` counting only entries where ``mask`` is 1.

    ``mask`` broadcasts against ``x``; entries outside the mask may hold inf/nan and are
    ignored (``where`` rather than multiply). An all-zero mask gives 0, not nan.
    """
    if mask is None:
        return jnp.mean(x, axis=axis, keepdims=keepdims)
    mask = jnp.broadcast_to(mask.astype(x.dtype), x.shape)
    total = jnp.sum(jnp.where(mask > 0, x, 0.0), axis=axis, keepdims=keepdims)
    count = jnp.sum(mask, axis=axis, keepdims=keepdims)
    return total / jnp.maximum(count, 1.0)


def time_mask(mask: Array | None, length: int) -> Array | None:
    """The frame mask [B, T] at another time resolution ``length`` = k * T (each video
    frame's flag repeated k times: the 4 log-mel frames of a frame, the 2 frames of a
    stride-2 stage), or None."""
    if mask is None:
        return None
    t = mask.shape[1]
    if length % t:
        raise ValueError(f"time axis of {length} steps is not a multiple of the {t}-frame mask")
    return jnp.repeat(mask, length // t, axis=1) if length != t else mask


def zero_padding(x: Array, mask: Array | None) -> Array:
    """``x`` [B, L, ...] with the time steps of padded frames set to 0.

    Applied to the input of every convolution (and pooling) over time: a clip padded to a
    longer window then gives the valid frames exactly what the unpadded clip's own zero
    padding gives them, so padding changes no valid frame's output. ``where``, not a
    product: a padded step holding inf/nan must not leak either."""
    if mask is None:
        return x
    m = time_mask(mask, x.shape[1]) > 0
    return jnp.where(m.reshape(m.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))


class PReLU(nn.Module):
    """PReLU with one shared slope (``torch.nn.PReLU()`` default, slope 0.25)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x: Array) -> Array:
        slope = self.param("slope", nn.initializers.constant(self.init_slope), ())
        return jnp.where(x >= 0, x, slope * x)


class GlobalLayerNorm(nn.Module):
    """Global layer norm of Conv-TasNet / TalkNet: statistics over time *and* channels.

    x: [B, T, C] -> [B, T, C]; gamma, beta: [C]. ``mask`` [B, T] excludes padded frames
    from the statistics (the reference has no padding inside a clip, so with a full mask
    this is exactly its formula).
    """

    eps: float = 1e-8

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c = x.shape[-1]
        gamma = self.param("scale", nn.initializers.ones, (c,))
        beta = self.param("bias", nn.initializers.zeros, (c,))
        m = None if mask is None else mask[..., None]
        mean = masked_mean(x, m, axis=(1, 2), keepdims=True)            # [B,1,1]
        var = masked_mean((x - mean) ** 2, m, axis=(1, 2), keepdims=True)
        return gamma * (x - mean) / jnp.sqrt(var + self.eps) + beta


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation over the spatial axes of [N, H, W, C] (reduction r).
    ``mask`` [N, T] (T dividing H, the time axis of an audio map) pools over the valid
    time steps only, so padding does not change the excitation of a clip."""

    reduction: int = 8

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c = x.shape[-1]
        if mask is None:
            s = jnp.mean(x, axis=(1, 2))                                  # [N, C]
        else:
            m = time_mask(mask, x.shape[1])[:, :, None, None]              # [N, H, 1, 1]
            s = masked_mean(x, m, axis=(1, 2))
        s = nn.relu(nn.Dense(max(c // self.reduction, 1), name="fc1")(s))
        s = nn.sigmoid(nn.Dense(c, name="fc2")(s))
        return x * s[:, None, None, :]


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """Fixed sinusoidal position table float32 [length, dim], Whisper's layout: sin on the
    first ``dim // 2`` channels, cos on the next, timescales 1 .. 1e4 spaced
    geometrically (an odd ``dim`` gets a zero last channel). Whisper's encoder initialises
    its table with it. Deep-AVSR's table (``teachers.deep_avsr.positional_encoding``)
    is a different one: interleaved sin/cos, timescales ``10000^(2i/d)``, float32
    arithmetic to match its torch buffer."""
    half = dim // 2
    inv = np.exp(-math.log(10_000.0) * np.arange(half) / max(half - 1, 1))
    ang = np.arange(length)[:, None] * inv[None, :]
    table = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    if dim % 2:
        table = np.pad(table, ((0, 0), (0, 1)))
    return table.astype(np.float32)


def attention_bias(key_mask: Array | None, dtype=jnp.float32) -> Array | None:
    """Additive attention bias [B, 1, 1, Tk] that removes padded keys (mask 0)."""
    if key_mask is None:
        return None
    return jnp.where(key_mask[:, None, None, :] > 0, 0.0, -1e9).astype(dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate 2-D ``query``/``key``/``value``/``out`` Dense
    kernels (so LoRA can target them by parameter path; see :mod:`avdetect.models.lora`).

    q: [B, Tq, Dq], kv: [B, Tk, Dk] -> [B, Tq, dim]. ``key_mask`` [B, Tk] (1 = valid).
    With ``return_weights`` also returns the head-averaged attention [B, Tq, Tk].
    Dropout is applied to the attention weights, as in ``torch.nn.MultiheadAttention``.
    """

    dim: int
    heads: int
    dropout: float = 0.0
    use_bias: bool = True
    dense: Callable[..., nn.Module] = nn.Dense

    @nn.compact
    def __call__(self, q: Array, kv: Array, key_mask: Array | None = None,
                 train: bool = False, return_weights: bool = False):
        if self.dim % self.heads:
            raise ValueError(f"attention dim {self.dim} not divisible by {self.heads} heads")
        hd = self.dim // self.heads
        split = lambda x: x.reshape(x.shape[:-1] + (self.heads, hd))  # noqa: E731
        qh = split(self.dense(self.dim, use_bias=self.use_bias, name="query")(q))
        kh = split(self.dense(self.dim, use_bias=self.use_bias, name="key")(kv))
        vh = split(self.dense(self.dim, use_bias=self.use_bias, name="value")(kv))
        logits = jnp.einsum("bqhd,bkhd->bhqk", qh, kh) / math.sqrt(hd)  # [B,H,Tq,Tk]
        bias = attention_bias(key_mask, logits.dtype)
        if bias is not None:
            logits = logits + bias
        weights = jax.nn.softmax(logits, axis=-1)
        dropped = nn.Dropout(self.dropout, deterministic=not train)(weights)
        out = jnp.einsum("bhqk,bkhd->bqhd", dropped, vh).reshape(q.shape[:-1] + (self.dim,))
        out = self.dense(self.dim, use_bias=self.use_bias, name="out")(out)
        if return_weights:
            return out, jnp.mean(weights, axis=1)
        return out


class PreLNBlock(nn.Module):
    """Pre-LayerNorm Transformer block (ViT / Whisper layout), self- or cross-attention.

    x: [B, T, D]; ``context`` [B, Tk, D] for cross-attention (None = self-attention).
    x + MHA(LN(x), LN(context)) then x + MLP(LN(x)) with GELU.
    """

    dim: int
    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    dense: Callable[..., nn.Module] = nn.Dense

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, context: Array | None = None,
                 context_mask: Array | None = None, train: bool = False) -> Array:
        h = nn.LayerNorm(name="ln_attn")(x)
        if context is None:
            kv, kmask = h, mask
        else:
            kv, kmask = nn.LayerNorm(name="ln_context")(context), context_mask
        h = MultiHeadAttention(self.dim, self.heads, self.dropout, dense=self.dense,
                               name="attn")(h, kv, kmask, train)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(self.dense(self.dim * self.mlp_ratio, name="mlp_in")(h))
        h = self.dense(self.dim, name="mlp_out")(h)
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


def to_float_image(x: Array, mean, std) -> Array:
    """uint8 (or float in [0,255]) pixels -> float32 ``(x/255 - mean) / std``."""
    x = x.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


# ------------------------------------------------------------------ CPU speed helpers --
# XLA:CPU computes max-pool's gradient (select-and-scatter) about 14x slower than its
# forward pass: 1.1 of ~7 CPU seconds of a train step at the reference's shapes
# (BENCHMARKS.md, "peer"). The helper below computes the same function with a cheaper
# backward pass.

def max_pool_slices(x: Array, window: int, stride: int, pad: int) -> Array:
    """``nn.max_pool(x, (window,)*2, (stride,)*2, padding=((pad, pad),)*2)`` on
    [N, H, W, C] as the max of window*window strided slices of the (-inf) padded input.
    Same values; its gradient is a few selects instead of a select-and-scatter (about 3x
    cheaper on CPU). Only where two inputs of a window tie for the max does the gradient
    differ: split evenly between them instead of all to the first."""
    n, h, w, c = x.shape
    ho, wo = (h + 2 * pad - window) // stride + 1, (w + 2 * pad - window) // stride + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
    out = None
    for i in range(window):
        for j in range(window):
            sl = jax.lax.slice(xp, (0, i, j, 0),
                               (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                               (1, stride, stride, 1))
            out = sl if out is None else jnp.maximum(out, sl)
    return out


# XLA:CPU computes a convolution's weight gradient over all B*T frames of the visual trunk
# about 3x slower than its forward pass (3x3 conv 64->64 on 200x28x28: 0.28 vs 0.09 CPU s,
# `python -m avdetect.bench.step_profile --part ops`); summed over chunks of a few dozen
# frames (smaller problems, whose operands stay in cache) the same gradient costs about
# half, and the whole train step ~1 CPU s less (BENCHMARKS.md, "peer", speed attempts).

def conv_chunked_wgrad(lhs: Array, rhs: Array, window_strides, padding, lhs_dilation=None,
                       rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                       precision=None, *, chunk: int = 25) -> Array:
    """``jax.lax.conv_general_dilated`` (same arguments, so ``nn.Conv`` takes it as its
    ``conv_general_dilated``) whose kernel gradient is summed over chunks of ``chunk``
    rows of the batch axis (the first axis of ``lhs``'s layout). Same values and same
    input gradient; the kernel gradient differs only by float32 summation order."""
    padding = padding if isinstance(padding, str) else tuple(map(tuple, padding))
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=window_strides,
                             padding=padding, lhs_dilation=lhs_dilation,
                             rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                             feature_group_count=feature_group_count, precision=precision)
    dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    x_axis, g_axis = dn.lhs_spec[0], dn.out_spec[0]      # the batch axis of input / output

    @jax.custom_vjp
    def f(x, w):
        return conv(x, w)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        dx = jax.vjp(lambda a: conv(a, w), x)[1](g)[0]
        dw = None
        n = x.shape[x_axis]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            xs = jax.lax.slice_in_dim(x, start, stop, axis=x_axis)
            gs = jax.lax.slice_in_dim(g, start, stop, axis=g_axis)
            part = jax.vjp(lambda k, xs=xs: conv(xs, k), w)[1](gs)[0]
            dw = part if dw is None else dw + part
        return dx, dw

    f.defvjp(fwd, bwd)
    return f(lhs, rhs)
