"""Flax port of the deep_avsr ASR / VSR teacher networks used by Explicit Correlation
Learning (papers.md B.1), their STFT front end (B.3), and the teacher that runs them.

Architecture (deep_avsr ``AudioNet`` / ``VideoNet``; both frozen in the paper):

* AudioNet: STFT magnitude [B, 4T, 321] -> Conv1d 321->512 (kernel 4, stride 4: 100 Hz ->
  25 Hz) -> + sinusoidal positional encoding (table of 2500 positions) -> 6-layer
  Transformer encoder ("audioEncoder") -> another 6-layer encoder ("audioDecoder") ->
  Conv1d 512->40 (kernel 1) -> softmax over the 40 deep_avsr characters.
* VideoNet: 512-d lip features per frame [B, T, 512] (output of deep_avsr's visual front
  end, computed outside this module) -> + positional encoding -> 6 + 6 layers ->
  Conv1d 512->40 -> softmax.
* Each layer is ``torch.nn.TransformerEncoderLayer`` with its defaults: post-LN
  (x = LN1(x + MHA(x)); x = LN2(x + FFN(x))), ReLU FFN 512->2048->512, LayerNorm eps 1e-5,
  8 heads with one packed q/k/v input projection.

Differences from the PyTorch code, all deliberate: tensors are batch-major [B, T, C]
(torch runs time-major); the 1x1 output convolution is a ``Dense`` (the same map); dropout
is absent (the teachers only ever run in eval mode); the positional table is recomputed
from the formula (the converter checks the checkpoint's buffer against it); inputs
longer than the table raise a clear error instead of a broadcasting failure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect import contract
from avdetect.teachers import alphabet

# Hyper-parameters of the published deep_avsr models (their config.py).
D_MODEL = 512
NUM_HEADS = 8
NUM_LAYERS = 6                # per stack; each net has an "encoder" and a "decoder" stack
FFN_DIM = 2048
PE_MAX_LEN = 2500             # positions in the sinusoidal table (100 s at 25 fps)
STFT_BINS = 321               # one-sided bins of a 640-point FFT
LIP_FEATURE_DIM = 512
LN_EPS = 1e-5                 # torch.nn.LayerNorm default

# STFT front end of the ASR teacher (the CMDFD loader's scipy.signal.stft call):
# 40 ms Hamming window, 30 ms overlap -> 10 ms hop, no boundary padding, magnitude.
STFT_WIN = int(0.040 * contract.AUDIO_SR)            # 640 samples = 40 ms
STFT_HOP = int(0.010 * contract.AUDIO_SR)            # 160 samples = 10 ms
STFT_PER_FRAME = contract.SAMPLES_PER_FRAME // STFT_HOP   # 4 STFT frames per video frame
assert STFT_WIN // 2 + 1 == STFT_BINS


def positional_encoding(length: int, d_model: int = D_MODEL) -> np.ndarray:
    """Sinusoidal table float32 [length, d_model] exactly as deep_avsr builds it:
    PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...), in float32
    arithmetic like the torch buffer (so converted checkpoints match to rounding)."""
    position = np.arange(length, dtype=np.float32)[:, None]
    denominator = np.exp(np.arange(0, d_model, 2, dtype=np.float32)
                         * np.float32(math.log(10000.0) / d_model))
    angle = (position / denominator).astype(np.float32)
    table = np.zeros((length, d_model), np.float32)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return table


class TorchEncoderLayer(nn.Module):
    """``torch.nn.TransformerEncoderLayer`` (post-LN, ReLU, eval mode) on [B, T, D]."""
    d_model: int = D_MODEL
    num_heads: int = NUM_HEADS
    ffn_dim: int = FFN_DIM

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """x [B, T, D]; mask bool [B, T] marks real frames (padding keys get no weight,
        so a padded run equals the unpadded one on the real frames)."""
        b, t, d = x.shape
        head_dim = d // self.num_heads
        # One packed projection, like torch's in_proj_weight [3D, D]: q | k | v.
        qkv = nn.Dense(3 * self.d_model, name="in_proj")(x)              # [B, T, 3D]
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (a.reshape(b, t, self.num_heads, head_dim) for a in (q, k, v))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(head_dim)
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)                       # [B, H, T, T]
        ctx = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, t, d)
        x = nn.LayerNorm(epsilon=LN_EPS, name="norm1")(x + nn.Dense(d, name="out_proj")(ctx))
        h = nn.relu(nn.Dense(self.ffn_dim, name="linear1")(x))
        return nn.LayerNorm(epsilon=LN_EPS, name="norm2")(x + nn.Dense(d, name="linear2")(h))


class EncoderStack(nn.Module):
    """``torch.nn.TransformerEncoder`` without a final norm: ``num_layers`` layers."""
    num_layers: int = NUM_LAYERS
    d_model: int = D_MODEL
    num_heads: int = NUM_HEADS
    ffn_dim: int = FFN_DIM

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.num_layers):
            x = TorchEncoderLayer(self.d_model, self.num_heads, self.ffn_dim,
                                  name=f"layers_{i}")(x, mask)
        return x


def _add_positions(x: jax.Array, max_len: int) -> jax.Array:
    t = x.shape[1]
    if t > max_len:
        raise ValueError(f"sequence of {t} frames is longer than the positional table "
                         f"({max_len} frames); split the clip into chunks")
    return x + jnp.asarray(positional_encoding(t, x.shape[-1]))[None]


class AudioNet(nn.Module):
    """deep_avsr ASR network: STFT magnitude [B, 4T, 321] -> character logits [B, T, 40]."""
    num_layers: int = NUM_LAYERS
    d_model: int = D_MODEL
    num_heads: int = NUM_HEADS
    ffn_dim: int = FFN_DIM
    num_classes: int = alphabet.NUM_CHARS
    pe_max_len: int = PE_MAX_LEN

    @nn.compact
    def __call__(self, stft: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """stft [B, 4T, 321]; mask bool [B, T] of real output frames (or None)."""
        x = nn.Conv(self.d_model, kernel_size=(STFT_PER_FRAME,), strides=(STFT_PER_FRAME,),
                    padding="VALID", name="audioConv")(stft)            # [B, T, D]
        x = _add_positions(x, self.pe_max_len)
        stack = dict(num_layers=self.num_layers, d_model=self.d_model,
                     num_heads=self.num_heads, ffn_dim=self.ffn_dim)
        x = EncoderStack(**stack, name="audioEncoder")(x, mask)
        x = EncoderStack(**stack, name="audioDecoder")(x, mask)
        return nn.Dense(self.num_classes, name="outputConv")(x)         # [B, T, K]


class VideoNet(nn.Module):
    """deep_avsr VSR network: lip features [B, T, 512] -> character logits [B, T, 40]."""
    num_layers: int = NUM_LAYERS
    d_model: int = D_MODEL
    num_heads: int = NUM_HEADS
    ffn_dim: int = FFN_DIM
    num_classes: int = alphabet.NUM_CHARS
    pe_max_len: int = PE_MAX_LEN

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """features [B, T, 512]; mask bool [B, T] of real frames (or None)."""
        x = _add_positions(features, self.pe_max_len)
        stack = dict(num_layers=self.num_layers, d_model=self.d_model,
                     num_heads=self.num_heads, ffn_dim=self.ffn_dim)
        x = EncoderStack(**stack, name="videoEncoder")(x, mask)
        x = EncoderStack(**stack, name="videoDecoder")(x, mask)
        return nn.Dense(self.num_classes, name="outputConv")(x)         # [B, T, K]


# --- STFT front end ---------------------------------------------------------------------

def normalize_audio(audio: np.ndarray) -> np.ndarray:
    """Peak-normalise then RMS-normalise (the teacher input's normalisation in B.3).
    Silent audio stays zeros instead of dividing by zero."""
    x = np.asarray(audio, np.float64).reshape(-1)
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak == 0.0:
        return np.zeros_like(x)
    x = x / peak
    return x / np.sqrt(np.mean(x * x))


def stft_features(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """ASR-teacher input float32 [4 * num_frames, 321] from 16 kHz mono ``audio`` [N].

    |STFT| with a periodic 640-point Hamming window, 160-sample hop, no boundary padding,
    scaled by 1 / sum(window) (scipy.signal.stft's default 'spectrum' scaling, which the
    reference loader used), of the peak+RMS normalised audio; then wrap-padded or cut to
    exactly 4 frames per video frame, as the reference loader does.
    """
    x = normalize_audio(audio)
    if x.size < STFT_WIN:                       # fewer samples than one window
        x = np.pad(x, (0, STFT_WIN - x.size))
    n = np.arange(STFT_WIN)
    window = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / STFT_WIN)   # periodic Hamming
    count = 1 + (x.size - STFT_WIN) // STFT_HOP
    idx = np.arange(STFT_WIN)[None, :] + STFT_HOP * np.arange(count)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=-1)) / window.sum()   # [F, 321]
    want = STFT_PER_FRAME * num_frames
    if spec.shape[0] < want:
        spec = np.pad(spec, ((0, want - spec.shape[0]), (0, 0)), mode="wrap")
    return spec[:want].astype(np.float32)


# --- running the nets -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LoadedNet:
    """A converted deep_avsr network: the module and its params."""
    module: nn.Module
    params: Any

    def posteriors(self, inputs: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Per-frame softmax float32 [T, 40] for one clip's inputs ([4T, 321] STFT for
        AudioNet, [T, 512] lip features for VideoNet).

        Clips longer than the positional table run in consecutive chunks (each restarting
        positions, as a torch run on those chunks would). Each chunk is zero-padded to a
        multiple of ``BUCKET`` frames with the padding masked out, so a dataset of varied
        lengths compiles a handful of shapes instead of one per clip.
        """
        per_in = STFT_PER_FRAME if isinstance(self.module, AudioNet) else 1
        chunk = chunk or self.module.pe_max_len
        apply = _jitted_apply(self.module)
        total = inputs.shape[0] // per_in
        outs = [np.zeros((0, self.module.num_classes), np.float32)]
        for start in range(0, total, chunk):
            frames = min(chunk, total - start)
            padded = min(-(-frames // BUCKET) * BUCKET, self.module.pe_max_len)
            piece = np.zeros((1, padded * per_in, inputs.shape[1]), np.float32)
            piece[0, :frames * per_in] = inputs[start * per_in:(start + frames) * per_in]
            mask = np.arange(padded)[None] < frames
            logits = apply({"params": self.params}, jnp.asarray(piece), jnp.asarray(mask))
            outs.append(np.asarray(jax.nn.softmax(logits, axis=-1)[0, :frames]))
        return np.concatenate(outs, axis=0).astype(np.float32)


BUCKET = 50                   # frames (2 s): padding granularity of LoadedNet.posteriors
_APPLY_CACHE: dict[nn.Module, Any] = {}


def _jitted_apply(module: nn.Module):
    if module not in _APPLY_CACHE:
        _APPLY_CACHE[module] = jax.jit(module.apply)
    return _APPLY_CACHE[module]


# --- converted parameter files ----------------------------------------------------------

_NETS = {"AudioNet": AudioNet, "VideoNet": VideoNet}
_CONFIG_FIELDS = ("num_layers", "d_model", "num_heads", "ffn_dim", "num_classes", "pe_max_len")


def module_config(module: nn.Module) -> dict[str, Any]:
    """JSON-able description of a net, stored beside its converted params."""
    return {"model": type(module).__name__,
            **{f: getattr(module, f) for f in _CONFIG_FIELDS}}


def param_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """'/'-joined Flax param path -> shape, without allocating the params."""
    in_dim = STFT_BINS if isinstance(module, AudioNet) else module.d_model
    steps = STFT_PER_FRAME if isinstance(module, AudioNet) else 1
    tree = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, steps, in_dim), jnp.float32))["params"]
    return {"/".join(k.key for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """Nested Flax params -> {'a/b/kernel': array}."""
    return {"/".join(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """{'a/b/kernel': array} -> nested dict {'a': {'b': {'kernel': array}}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return tree


def save_net(path, module: nn.Module, params: Any, *, source: str = "") -> None:
    """Write ``params`` of ``module`` to a safetensors file whose metadata holds the
    module config (so ``load_net`` rebuilds the right architecture) and the source."""
    import json

    from safetensors.numpy import save_file

    meta = {"config": json.dumps(module_config(module)), "source": source}
    save_file({k: np.ascontiguousarray(v, np.float32)
               for k, v in flatten_params(params).items()}, str(path), metadata=meta)


def load_net(path) -> LoadedNet:
    """Load a net written by ``save_net`` / ``python -m avdetect.teachers.convert``.
    Raises ``CheckpointError`` naming the file when it is not such a file or its tensors
    do not match the architecture its metadata declares."""
    import json
    import os

    from safetensors import safe_open

    from avdetect.errors import FileMissingError
    from avdetect.teachers.errors import CheckpointError

    if not os.path.isfile(path):
        raise FileMissingError(path, "converted teacher params not found (run "
                               "python -m avdetect.teachers.convert first)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
        config = json.loads(meta["config"])
        module = _NETS[config.pop("model")](**config)
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise CheckpointError(path, f"not a converted deep_avsr params file ({e})") from e
    problems = shape_problems(param_shapes(module),
                              {k: tuple(v.shape) for k, v in flat.items()})
    if problems:
        raise CheckpointError(path, "params do not match the declared architecture: "
                              + "; ".join(problems))
    return LoadedNet(module, unflatten_params(flat))


def shape_problems(expected: dict[str, tuple[int, ...]],
                   found: dict[str, tuple[int, ...]], limit: int = 12) -> list[str]:
    """Human-readable list of missing, unexpected and wrongly shaped entries."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])

    def show(keys):
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    out = []
    if missing:
        out.append(f"{len(missing)} missing: {show(missing)}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
    if wrong:
        out.append(f"{len(wrong)} with wrong shape: " + show(
            [f"{k} {found[k]} != expected {expected[k]}" for k in wrong]))
    return out


# --- the teacher ------------------------------------------------------------------------

class DeepAVSRTeacher:
    """The paper's teachers: AudioNet on the clip's STFT (audio side) and VideoNet on
    deep_avsr lip features (video side), per-frame softmax over the 40 characters.

    ``audio_params`` / ``video_params`` are files written by the converter; give one or
    both (``sides`` says which). VideoNet's input is the 512-d output of deep_avsr's own
    visual front end, which this project does not port: supply it per clip as
    ``meta['lip_features']`` (an array [T, 512] or the path of a ``.npy``, the CMDFD
    layout keeps it beside the video). A side without a net is uniform. Returns None when
    a loaded side has no input for the clip (no audio, or no lip features), since a
    correlation target needs both sides.
    """
    name = "deep_avsr"
    num_classes = alphabet.NUM_CHARS

    def __init__(self, audio_params=None, video_params=None, *, params_dir=None):
        if params_dir is not None:       # the converter's output folder
            import os

            def existing(name):
                path = os.path.join(params_dir, name)
                return path if os.path.isfile(path) else None
            audio_params = audio_params or existing("audio_net.safetensors")
            video_params = video_params or existing("video_net.safetensors")
        if audio_params is None and video_params is None:
            raise ValueError("DeepAVSRTeacher needs audio_params and/or video_params (or a "
                             "params_dir holding audio_net/video_net.safetensors)")
        self.audio_net = load_net(audio_params) if audio_params is not None else None
        self.video_net = load_net(video_params) if video_params is not None else None
        self.sides = frozenset(s for s, n in (("audio", self.audio_net),
                                              ("video", self.video_net)) if n is not None)

    def __call__(self, *, audio: np.ndarray | None, mouth: np.ndarray | None,
                 num_frames: int, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        uniform = np.full((num_frames, self.num_classes), 1.0 / self.num_classes, np.float32)
        audio_post = video_post = uniform
        if self.audio_net is not None:
            if audio is None or np.asarray(audio).size == 0:
                return None
            audio_post = self.audio_net.posteriors(stft_features(audio, num_frames))
        if self.video_net is not None:
            lips = _lip_features(meta)
            if lips is None:
                return None
            video_post = self.video_net.posteriors(_fit_length(lips, num_frames))
        return audio_post[:num_frames], video_post[:num_frames]


def _lip_features(meta: dict) -> np.ndarray | None:
    from avdetect.teachers.errors import GroundTruthError

    lips = meta.get("lip_features")
    if lips is None:
        return None
    if isinstance(lips, np.ndarray):
        arr = lips
    else:
        try:
            arr = np.load(lips, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise GroundTruthError(lips, f"cannot read lip features ({e})") from e
    if arr.ndim != 2 or arr.shape[1] != LIP_FEATURE_DIM or arr.shape[0] == 0:
        raise GroundTruthError(str(lips) if not isinstance(lips, np.ndarray) else "<array>",
                               f"lip features must be [T, {LIP_FEATURE_DIM}], got {arr.shape}")
    return arr.astype(np.float32)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Wrap-pad or cut the time axis to ``length`` (the reference loader's convention)."""
    if x.shape[0] < length:
        x = np.pad(x, ((0, length - x.shape[0]), (0, 0)), mode="wrap")
    return x[:length]
