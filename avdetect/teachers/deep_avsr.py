"""Flax port of the deep_avsr ASR / VSR teacher networks used by Explicit Correlation
Learning (papers.md B.1), their STFT front end (B.3), and the teacher that runs them.

Architecture (deep_avsr ``AudioNet`` / ``VideoNet``; both frozen in the paper):

* AudioNet: STFT magnitude [B, 4T, 321] -> Conv1d 321->512 (kernel 4, stride 4: 100 Hz ->
  25 Hz) -> + sinusoidal positional encoding (table of 2500 positions) -> 6-layer
  Transformer encoder ("audioEncoder") -> another 6-layer encoder ("audioDecoder") ->
  Conv1d 512->40 (kernel 1) -> softmax over the 40 deep_avsr characters.
* VideoNet: 512-d lip features per frame [B, T, 512] -> + positional encoding -> 6 + 6
  layers -> Conv1d 512->40 -> softmax.
* VisualFrontend (deep_avsr ``visual_frontend.py``, the net that makes those lip
  features): grayscale 112x112 frames normalised (x/255 - 0.4161)/0.1688 -> Conv3d 1->64
  (5,7,7), stride (1,2,2), pad (2,3,3) over the whole clip -> BN3d -> ReLU -> MaxPool
  (1,3,3)/(1,2,2) -> per-frame ResNet-18 (64/128/256/512, deep_avsr block order) ->
  AvgPool 4x4 -> 512-d per frame. This is the student's own front end
  (``avdetect.models.visual.MouthFrontend`` with ``stem='3d'``), reused, not re-written.
  Its input is made from our 88x88 mouth crops resized to 112x112 (``frontend_input``;
  deep_avsr resized whole 160 px LRS2 faces to 224 and cut the central 112, which shows
  about the same mouth-centred region).
* Each layer is ``torch.nn.TransformerEncoderLayer`` with its defaults: post-LN
  (x = LN1(x + MHA(x)); x = LN2(x + FFN(x))), ReLU FFN 512->2048->512, LayerNorm eps 1e-5,
  8 heads with one packed q/k/v input projection.

Differences from the PyTorch code, all deliberate: tensors are batch-major [B, T, C]
(torch runs time-major); the 1x1 output convolution is a ``Dense`` (the same map); dropout
is absent (the teachers only ever run in eval mode); the positional table is recomputed
from the formula (the converter checks the checkpoint's buffer against it); inputs
longer than the table raise a clear error instead of a broadcasting failure.

Size (over 450 lines): one port kept in one file -- the networks, the converted-parameter
files whose names follow their module names, and the teacher that runs them change
together whenever the reference is followed more closely.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect import contract, cpu_compile
from avdetect.models.visual import MOUTH_MEAN, MOUTH_STD, MouthFrontend
from avdetect.teachers import alphabet

# Hyper-parameters of the published deep_avsr models (their config.py).
D_MODEL = 512
NUM_HEADS = 8
NUM_LAYERS = 6                # per stack; each net has an "encoder" and a "decoder" stack
FFN_DIM = 2048
PE_MAX_LEN = 2500             # positions in the sinusoidal table (100 s at 25 fps)
STFT_BINS = 321               # one-sided bins of a 640-point FFT
LIP_FEATURE_DIM = 512
FRONTEND_SIZE = 112            # side of the visual front end's input frames
FRONTEND_CONTEXT = 2          # frames each side the (5,7,7) Conv3d reads
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
    arithmetic like the torch buffer (so converted checkpoints match to rounding). Not
    ``models.layers.sinusoidal_positions``: the layout (interleaved, not sin | cos), the
    timescales (``d`` in the exponent, not ``d/2 - 1``) and the arithmetic differ."""
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


def _char_logits(net: "_CharNet", prefix: str, x: jax.Array, mask: jax.Array | None
                 ) -> jax.Array:
    """The part AudioNet and VideoNet share, called inside their compact ``__call__`` (the
    submodules made here belong to ``net``): + positions, the reference's encoder stack,
    its second ('decoder') stack, the character classifier; parameter names
    ``<prefix>Encoder``, ``<prefix>Decoder``, ``outputConv`` as in its checkpoints."""
    x = _add_positions(x, net.pe_max_len)
    stack = dict(num_layers=net.num_layers, d_model=net.d_model, num_heads=net.num_heads,
                 ffn_dim=net.ffn_dim)
    x = EncoderStack(**stack, name=f"{prefix}Encoder")(x, mask)
    x = EncoderStack(**stack, name=f"{prefix}Decoder")(x, mask)
    return nn.Dense(net.num_classes, name="outputConv")(x)


class _CharNet(nn.Module):
    """The fields AudioNet and VideoNet share (the reference's sizes by default)."""
    num_layers: int = NUM_LAYERS
    d_model: int = D_MODEL
    num_heads: int = NUM_HEADS
    ffn_dim: int = FFN_DIM
    num_classes: int = alphabet.NUM_CHARS
    pe_max_len: int = PE_MAX_LEN


class AudioNet(_CharNet):
    """deep_avsr ASR network: STFT magnitude [B, 4T, 321] -> character logits [B, T, 40]."""

    @nn.compact
    def __call__(self, stft: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """stft [B, 4T, 321]; mask bool [B, T] of real output frames (or None)."""
        x = nn.Conv(self.d_model, kernel_size=(STFT_PER_FRAME,), strides=(STFT_PER_FRAME,),
                    padding="VALID", name="audioConv")(stft)            # [B, T, D]
        return _char_logits(self, "audio", x, mask)                    # [B, T, K]


class VideoNet(_CharNet):
    """deep_avsr VSR network: lip features [B, T, 512] -> character logits [B, T, 40]."""

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """features [B, T, 512]; mask bool [B, T] of real frames (or None)."""
        return _char_logits(self, "video", features, mask)             # [B, T, K]


class VisualFrontend(nn.Module):
    """deep_avsr visual front end: normalised frames [B, T, 112, 112] -> [B, T, 512].

    A real spatio-temporal Conv3d stem over the clip (deep_avsr feeds a whole clip as one
    3-D volume), then the ResNet-18 trunk; eval-mode BatchNorm (running statistics in the
    ``batch_stats`` collection). Frames outside the clip count as 0 (torch's zero padding
    of the normalised input), so a clip zero-padded at its end gives the same features on
    its own frames.
    """
    widths: tuple[int, ...] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if mask is not None:
            frames = frames * mask[:, :, None, None].astype(frames.dtype)
        return MouthFrontend(self.widths[0], tuple(self.widths), stem="3d",
                             name="trunk")(frames, train=False)


def frontend_input(mouth: np.ndarray) -> np.ndarray:
    """uint8 mouth crops [T, H, W] -> float32 [T, 112, 112]: bilinear resize (cv2, as the
    deep_avsr preprocessing resizes) of x/255, then (x - 0.4161) / 0.1688."""
    import cv2

    mouth = np.asarray(mouth)
    if mouth.ndim != 3 or mouth.shape[0] == 0:
        raise ValueError(f"mouth crops must be [T, H, W] with T > 0, got {mouth.shape}")
    x = mouth.astype(np.float32) / 255.0
    if x.shape[1:] != (FRONTEND_SIZE, FRONTEND_SIZE):
        x = np.stack([cv2.resize(f, (FRONTEND_SIZE, FRONTEND_SIZE),
                                 interpolation=cv2.INTER_LINEAR) for f in x])
    return ((x - MOUTH_MEAN) / MOUTH_STD).astype(np.float32)


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
    """A converted deep_avsr network: the module, its params and (visual front end only)
    its BatchNorm running statistics."""
    module: nn.Module
    params: Any
    batch_stats: Any = None

    @property
    def variables(self) -> dict[str, Any]:
        out = {"params": self.params}
        if self.batch_stats is not None:
            out["batch_stats"] = self.batch_stats
        return out

    def posteriors(self, inputs: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Per-frame softmax float32 [T, 40] for one clip's inputs ([4T, 321] STFT for
        AudioNet, [T, 512] lip features for VideoNet).

        Clips longer than the positional table run in consecutive chunks (each restarting
        positions, as a torch run on those chunks would). Each chunk is zero-padded to a
        multiple of ``BUCKET`` frames with the padding masked out, so a dataset of varied
        lengths compiles a handful of shapes instead of one per clip.
        """
        if isinstance(self.module, VisualFrontend):
            raise TypeError("the visual front end makes lip features: use lip_features()")
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
            logits = apply(self.variables, jnp.asarray(piece), jnp.asarray(mask))
            outs.append(np.asarray(jax.nn.softmax(logits, axis=-1)[0, :frames]))
        return np.concatenate(outs, axis=0).astype(np.float32)

    def lip_features(self, mouth: np.ndarray, chunk: int = 100) -> np.ndarray:
        """VisualFrontend: uint8 mouth crops [T, H, W] -> lip features float32 [T, 512].

        Runs in pieces of ``chunk`` frames that also read ``FRONTEND_CONTEXT`` frames on
        each side (all the Conv3d stem sees), zero-padded to a multiple of ``BUCKET``:
        the result equals one pass over the whole clip, in bounded memory."""
        if not isinstance(self.module, VisualFrontend):
            raise TypeError(f"lip_features needs the visual front end, not "
                            f"{type(self.module).__name__}")
        x = frontend_input(mouth)
        total = x.shape[0]
        apply = _jitted_apply(self.module)
        out = np.zeros((total, self.module.widths[-1]), np.float32)
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            lo, hi = max(start - FRONTEND_CONTEXT, 0), min(stop + FRONTEND_CONTEXT, total)
            padded = -(-(hi - lo) // BUCKET) * BUCKET
            piece = np.zeros((1, padded) + x.shape[1:], np.float32)
            piece[0, :hi - lo] = x[lo:hi]
            mask = np.arange(padded)[None] < hi - lo
            feats = np.asarray(apply(self.variables, jnp.asarray(piece), jnp.asarray(mask)))
            out[start:stop] = feats[0, start - lo:stop - lo]
        return out


BUCKET = 50                   # frames (2 s): padding granularity of LoadedNet.posteriors
_APPLY_CACHE: dict[nn.Module, Any] = {}


def _jitted_apply(module: nn.Module):
    if module not in _APPLY_CACHE:
        _APPLY_CACHE[module] = jax.jit(module.apply, compiler_options=cpu_compile.inference())
    return _APPLY_CACHE[module]


# --- converted parameter files ----------------------------------------------------------

_NETS = {"AudioNet": AudioNet, "VideoNet": VideoNet, "VisualFrontend": VisualFrontend}
_CONFIG_FIELDS = ("num_layers", "d_model", "num_heads", "ffn_dim", "num_classes", "pe_max_len",
                  "widths")
STATS_PREFIX = "batch_stats/"      # flat keys of BatchNorm statistics in a params file


def module_config(module: nn.Module) -> dict[str, Any]:
    """JSON-able description of a net, stored beside its converted params."""
    return {"model": type(module).__name__,
            **{f: (list(v) if isinstance(v := getattr(module, f), tuple) else v)
               for f in _CONFIG_FIELDS if hasattr(module, f)}}


def _init_shapes(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, VisualFrontend):
        dummy = jnp.zeros((1, 1, FRONTEND_SIZE, FRONTEND_SIZE), jnp.float32)
    else:
        in_dim = STFT_BINS if isinstance(module, AudioNet) else module.d_model
        steps = STFT_PER_FRAME if isinstance(module, AudioNet) else 1
        dummy = jnp.zeros((1, steps, in_dim), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), dummy)


def param_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """'/'-joined Flax param path -> shape, without allocating the params (BatchNorm
    statistics, where the net has them, under ``STATS_PREFIX``)."""
    tree = _init_shapes(module)
    out = tree_shapes(tree["params"])
    if "batch_stats" in tree:
        out.update(tree_shapes(tree["batch_stats"], STATS_PREFIX))
    return out


def tree_shapes(tree: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """'/'-joined path (after ``prefix``) -> shape of every leaf (arrays or the
    ShapeDtypeStructs of ``jax.eval_shape``)."""
    return {prefix + "/".join(k.key for k in path): tuple(leaf.shape)
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


def save_net(path, module: nn.Module, params: Any, *, batch_stats: Any = None,
             source: str = "") -> None:
    """Write ``params`` (and ``batch_stats``, under ``STATS_PREFIX``) of ``module`` to a
    safetensors file whose metadata holds the module config (so ``load_net`` rebuilds the
    right architecture) and the source."""
    import json

    from safetensors.numpy import save_file

    meta = {"config": json.dumps(module_config(module)), "source": source}
    flat = flatten_params(params)
    if batch_stats is not None:
        flat.update({STATS_PREFIX + k: v for k, v in flatten_params(batch_stats).items()})
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()}, str(path),
              metadata=meta)


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
        if "widths" in config:
            config["widths"] = tuple(config["widths"])
        module = _NETS[config.pop("model")](**config)
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise CheckpointError(path, f"not a converted deep_avsr params file ({e})") from e
    problems = shape_problems(param_shapes(module),
                              {k: tuple(v.shape) for k, v in flat.items()})
    if problems:
        raise CheckpointError(path, "params do not match the declared architecture: "
                              + "; ".join(problems))
    stats = {k[len(STATS_PREFIX):]: v for k, v in flat.items() if k.startswith(STATS_PREFIX)}
    params = {k: v for k, v in flat.items() if not k.startswith(STATS_PREFIX)}
    return LoadedNet(module, unflatten_params(params),
                     unflatten_params(stats) if stats else None)


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

    ``audio_params`` / ``video_params`` / ``frontend_params`` are files written by the
    converter (``params_dir``: its output folder, holding any of ``audio_net``,
    ``video_net`` and ``visual_frontend.safetensors``); ``sides`` says which nets loaded.
    VideoNet's 512-d input per frame comes from ``meta['lip_features']`` when the dataset
    ships them (an array [T, 512] or a ``.npy`` path, the CMDFD layout), else from the
    clip's mouth crops through the ported visual front end (``VisualFrontend``). A side
    without a net is uniform. Returns None when a loaded side has no input for the clip
    (no audio; no lip features and no front end or no mouth crops), since a correlation
    target needs both sides.
    """
    name = "deep_avsr"
    num_classes = alphabet.NUM_CHARS

    def __init__(self, audio_params=None, video_params=None, *, frontend_params=None,
                 params_dir=None):
        if params_dir is not None:       # the converter's output folder
            import os

            def existing(name):
                path = os.path.join(params_dir, name)
                return path if os.path.isfile(path) else None
            audio_params = audio_params or existing("audio_net.safetensors")
            video_params = video_params or existing("video_net.safetensors")
            frontend_params = frontend_params or existing("visual_frontend.safetensors")
        if audio_params is None and video_params is None:
            raise ValueError("DeepAVSRTeacher needs audio_params and/or video_params (or a "
                             "params_dir holding audio_net/video_net.safetensors)")
        self.audio_net = load_net(audio_params) if audio_params is not None else None
        self.video_net = load_net(video_params) if video_params is not None else None
        self.frontend = load_net(frontend_params) if frontend_params is not None else None
        if self.frontend is not None and not isinstance(self.frontend.module, VisualFrontend):
            from avdetect.teachers.errors import CheckpointError
            raise CheckpointError(frontend_params, "not a converted visual front end")
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
            if lips is None and self.frontend is not None and mouth is not None \
                    and np.asarray(mouth).size:
                lips = self.frontend.lip_features(np.asarray(mouth))
            if lips is None:
                return None
            video_post = self.video_net.posteriors(
                contract.fit_length(lips, num_frames, mode="wrap"))   # as the reference loader
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


