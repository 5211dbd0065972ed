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


# In training, autodiff of BatchNorm keeps both its input and the centred input for the
# backward pass, and the ReLU after it its own mask. The fused version keeps only the
# input and the per-channel statistics and recomputes the rest inside the backward pass:
# one map of the frame size less per BatchNorm, and fewer passes over the maps
# (BENCHMARKS.md, "peer").

def _batch_stats(x: Array, eps: float) -> tuple[Array, Array, Array]:
    """(mean, biased variance, 1/sqrt(var + eps)) over every axis but the last, computed
    as flax's BatchNorm does (E[x^2] - E[x]^2, clipped at 0, float32)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))
    return mean, var, jax.lax.rsqrt(var + eps)


def _normalise(x: Array, mean: Array, rstd: Array, scale: Array, bias: Array) -> Array:
    return (x - mean) * (rstd * scale) + bias         # flax's _normalize, term for term


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bn_relu_train(x: Array, scale: Array, bias: Array, eps: float):
    """``relu(BatchNorm(x))`` with batch statistics over all axes but the last: returns
    (output, batch mean, batch variance). The mean and variance are for the running
    averages only and carry no gradient (their cotangents are ignored)."""
    return _bn_relu_fwd(x, scale, bias, eps)[0]


def _bn_relu_fwd(x, scale, bias, eps):
    mean, var, rstd = _batch_stats(x, eps)
    out = jax.nn.relu(_normalise(x, mean, rstd, scale, bias))
    return (out, mean, var), (x, mean, rstd, scale, bias)


def _bn_relu_bwd(eps, res, cts):
    x, mean, rstd, scale, bias = res
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xhat = (x - mean) * rstd
    g = jnp.where(xhat * scale + bias > 0, cts[0], 0.0)    # through the ReLU
    dbias = jnp.sum(g, axes)
    dscale = jnp.sum(g * xhat, axes)
    # d/dx of the batch-normalised output, batch mean and variance included.
    dx = (scale * rstd / n) * (n * g - dbias - xhat * dscale)
    return dx, dscale, dbias


bn_relu_train.defvjp(_bn_relu_fwd, _bn_relu_bwd)


# The stem's BatchNorm + ReLU is followed by a max-pool. Its backward pass needs each
# window's winner; autodiff (or a saved index) lets XLA keep the padded ReLU map of the
# largest activation from the forward pass to the backward one, to recompute the index
# from it (164 MiB at the reference's shapes). Recomputing BN + ReLU from the conv output
# that the BatchNorm keeps anyway drops that map (BENCHMARKS.md, "peer").

@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def bn_relu_pool_train(x: Array, scale: Array, bias: Array, eps: float, window: int,
                       stride: int, pad: int):
    """``max_pool_indexed(relu(BatchNorm(x)), window, stride, pad)`` with batch
    statistics: returns (pooled output, batch mean, batch variance) like
    :func:`bn_relu_train`, whose gradient it has (the pool's goes to each window's first
    maximum). Residuals: the input and per-channel statistics only."""
    return _bn_relu_pool_fwd(x, scale, bias, eps, window, stride, pad)[0]


def _bn_relu_pool_fwd(x, scale, bias, eps, window, stride, pad):
    (y, mean, var), res = _bn_relu_fwd(x, scale, bias, eps)
    return (pool_with_index(y, window, stride, pad)[0], mean, var), res


def _bn_relu_pool_bwd(eps, window, stride, pad, res, cts):
    x, mean, rstd, scale, bias = res
    # The barrier makes this recomputation a new value: without it XLA merges it with the
    # forward pass's identical map (CSE) and keeps that map alive until here.
    x = jax.lax.optimization_barrier(x)
    y = jax.nn.relu(_normalise(x, mean, rstd, scale, bias))
    _, idx = pool_with_index(y, window, stride, pad)
    gy = unpool(idx, cts[0], y.shape, window, stride, pad)
    return _bn_relu_bwd(eps, (x, mean, rstd, scale, bias), (gy, None, None))


bn_relu_pool_train.defvjp(_bn_relu_pool_fwd, _bn_relu_pool_bwd)


class BatchNormReLU(nn.Module):
    """``relu(torch_bn(train, momentum, eps)(x))`` with the same variables (params
    ``scale``/``bias``, batch_stats ``mean``/``var``, so checkpoints and converters see a
    BatchNorm), the same values and running-average updates, and a leaner training
    backward pass (:func:`bn_relu_train`). ``momentum`` in PyTorch's convention.
    ``pool`` = (window, stride, pad): followed by :func:`max_pool_indexed` on [N, H, W, C]
    (in training through :func:`bn_relu_pool_train`, which keeps no map of its own)."""

    train: bool
    momentum: float = 0.1
    eps: float = 1e-5
    pool: tuple[int, int, int] | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if not self.train:
            rstd = jax.lax.rsqrt(ra_var.value + self.eps)
            out = jax.nn.relu(_normalise(x, ra_mean.value, rstd, scale, bias))
            return out if self.pool is None else max_pool_indexed(out, *self.pool)
        if self.pool is None:
            out, mean, var = bn_relu_train(x, scale, bias, self.eps)
        else:
            out, mean, var = bn_relu_pool_train(x, scale, bias, self.eps, *self.pool)
        if not self.is_initializing():
            keep = 1.0 - self.momentum            # flax's momentum, as torch_bn sets it
            ra_mean.value = keep * ra_mean.value + (1 - keep) * jax.lax.stop_gradient(mean)
            ra_var.value = keep * ra_var.value + (1 - keep) * jax.lax.stop_gradient(var)
        return out


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
# (BENCHMARKS.md, "peer"). The max of strided slices is cheap both ways, but autodiff of
# its running max keeps every intermediate maximum (8 maps of the pooled size) and the
# padded input alive until the backward pass; the helper below keeps a uint8 index of
# each window's winner instead (1/4 of one pooled map) and routes the gradient by it.

def _pool_geometry(shape, window: int, stride: int, pad: int):
    n, h, w, c = shape
    if window * window > 256:
        raise ValueError(f"max-pool window {window} has more taps than a uint8 index")
    ho, wo = (h + 2 * pad - window) // stride + 1, (w + 2 * pad - window) // stride + 1
    return ho, wo, [(i, j) for i in range(window) for j in range(window)]


def pool_with_index(x: Array, window: int, stride: int, pad: int) -> tuple[Array, Array]:
    """Max-pool [N, H, W, C] (-inf padding) as the max of window*window strided slices,
    and the uint8 index (row-major tap number) of each window's first maximum."""
    n, h, w, c = x.shape
    ho, wo, taps = _pool_geometry(x.shape, window, stride, pad)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)

    def tap(i, j):
        return jax.lax.slice(xp, (0, i, j, 0),
                             (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                             (1, stride, stride, 1))

    out, idx = tap(*taps[0]), jnp.zeros((n, ho, wo, c), jnp.uint8)
    for k, (i, j) in enumerate(taps[1:], start=1):
        sl = tap(i, j)
        later_wins = sl > out                     # strict: ties stay with the earlier tap
        out = jnp.where(later_wins, sl, out)
        idx = jnp.where(later_wins, jnp.uint8(k), idx)
    return out, idx


def unpool(idx: Array, g: Array, in_shape, window: int, stride: int, pad: int) -> Array:
    """The gradient of :func:`pool_with_index` wrt its input: each window's cotangent
    ``g`` goes to its winner. Each tap's share is spread back onto the strided grid it was
    read from (the transpose of a strided slice is an interior-padded pad)."""
    _, h, w, _ = in_shape
    ho, wo, taps = _pool_geometry(in_shape, window, stride, pad)
    hp, wp = h + 2 * pad, w + 2 * pad
    zero = jnp.zeros((), g.dtype)
    dxp = None
    for k, (i, j) in enumerate(taps):
        part = jax.lax.pad(jnp.where(idx == k, g, zero), zero,
                           ((0, 0, 0), (i, hp - i - (ho - 1) * stride - 1, stride - 1),
                            (j, wp - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
        dxp = part if dxp is None else dxp + part
    return dxp[:, pad:pad + h, pad:pad + w, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_indexed(x: Array, window: int, stride: int, pad: int) -> Array:
    """``nn.max_pool(x, (window,)*2, (stride,)*2, padding=((pad, pad),)*2)`` on
    [N, H, W, C]: same values, same gradient (each window's gradient goes to its first
    maximum in row-major window order, as XLA's select-and-scatter and torch's max-pool
    do). The backward pass reads only the saved uint8 index of each window's winner."""
    return pool_with_index(x, window, stride, pad)[0]


def _max_pool_fwd(x, window, stride, pad):
    out, idx = pool_with_index(x, window, stride, pad)
    return out, (idx, x.shape)


def _max_pool_bwd(window, stride, pad, res, g):
    idx, shape = res
    return (unpool(idx, g, shape, window, stride, pad),)


max_pool_indexed.defvjp(_max_pool_fwd, _max_pool_bwd)


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
        # XLA's schedulers put the chunks' kernel gradients late (each chunk looks like
        # new memory, only the last frees anything), keeping this layer's input and
        # cotangent alive through the backward pass of every layer before it. Making the
        # input gradient depend on the kernel gradient (by a zero term) runs them first:
        # the train step's temporary memory falls 1.15 -> 0.86 GiB at the reference's
        # shapes, same speed (BENCHMARKS.md, "peer"). A non-finite kernel gradient would
        # turn the input gradient NaN - a step that is lost either way.
        dx = dx + 0.0 * jnp.sum(dw)
        return dx, dw

    f.defvjp(fwd, bwd)
    return f(lhs, rhs)
