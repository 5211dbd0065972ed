"""CLIP's ViT vision tower in Flax, with a loader for Hugging Face ``CLIPVisionModel`` /
``CLIPVisionModelWithProjection`` / full ``CLIPModel`` safetensors.

Architecture (Hugging Face ``CLIPVisionTransformer``)::

    pixels [B, S, S, 3] (normalised)  -> patch conv (k = stride = patch, no bias)
    -> [CLS] + patches, + learned position embeddings     -> [B, 1 + (S/patch)^2, D]
    -> pre-LayerNorm ("pre_layrnorm" in HF) -> n_layers x pre-LN block (quick_gelu)
    = last_hidden_state;  pooled = post-LayerNorm(last_hidden_state[:, 0])
    (optional) image embedding = pooled @ visual_projection   (no bias)

:class:`ClipVisionEncoder` is the frozen visual encoder behind CAD's interface: uint8 face
crops [B, T, S, S, 3] -> per-frame embeddings [B, T, D]. When S differs from the
checkpoint's image size the crops are **resized** (bicubic, antialiased) rather than
interpolating position embeddings: the pretrained positions stay exactly as trained, and
CLIP's own preprocessing resizes too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from avdetect.errors import ConfigError
from avdetect.pretrained import layout, safetensors_io
from avdetect.pretrained.errors import WeightFileError
from avdetect.pretrained.transformer import ACTIVATIONS, PreLNBlock, layer_norm

# OpenAI CLIP's pixel statistics (its preprocessor_config.json), RGB order.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    """Sizes of a CLIP ViT (defaults: ViT-B/32). ``projection_dim`` 0 = no projection."""

    hidden_size: int = 768
    n_heads: int = 12
    n_layers: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 32
    activation: str = "quick_gelu"
    ln_eps: float = 1e-5
    projection_dim: int = 0
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class ClipVisionTransformer(nn.Module):
    """CLIP's vision tower on normalised pixels [B, S, S, 3] (S = image_size).

    Returns (last_hidden_state [B, 1 + n_patches, D], pooled [B, D]) like Hugging Face's
    ``last_hidden_state`` and ``pooler_output``.
    """

    config: ClipVisionConfig
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        size, p = cfg.image_size, cfg.patch_size
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"expected pixels [B, {size}, {size}, 3], got {pixels.shape}")
        x = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                    dtype=self.dtype, precision=self.precision,
                    name="patch_embed")(pixels.astype(self.dtype))         # [B, S/p, S/p, D]
        b = x.shape[0]
        x = x.reshape(b, -1, cfg.hidden_size)                              # [B, P, D]
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (cfg.hidden_size,))
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (cfg.n_patches + 1, cfg.hidden_size))
        cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, cfg.hidden_size))
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(self.dtype)     # [B, 1+P, D]
        x = layer_norm(cfg.ln_eps, self.dtype, "ln_pre")(x)
        for i in range(cfg.n_layers):
            x = PreLNBlock(cfg.hidden_size, cfg.n_heads, cfg.intermediate_size, cfg.activation,
                           cfg.ln_eps, k_bias=True, dtype=self.dtype, precision=self.precision,
                           name=f"layers_{i}")(x)
        pooled = layer_norm(cfg.ln_eps, self.dtype, "ln_post")(x[:, 0])   # [B, D]
        return x, pooled


def clip_normalize(frames: jax.Array, config: ClipVisionConfig) -> jax.Array:
    """uint8 RGB [..., S, S, 3] (or float in [0, 1]) -> CLIP-normalised float32 pixels of
    side ``config.image_size`` (bicubic antialiased resize when S differs)."""
    x = frames.astype(jnp.float32)
    if frames.dtype == jnp.uint8:
        x = x / 255.0
    size = config.image_size
    if x.shape[-3:-1] != (size, size):
        x = jax.image.resize(x, x.shape[:-3] + (size, size, 3), method="bicubic",
                             antialias=True)
    mean = jnp.asarray(config.image_mean, jnp.float32)
    std = jnp.asarray(config.image_std, jnp.float32)
    return (x - mean) / std


class ClipVisionEncoder(nn.Module):
    """Frozen visual encoder behind the encoder interface (:mod:`avdetect.models.encoders`):
    ``module(frames, train, mask=None) -> [B, T, D]``.

    ``frames``: uint8 RGB face crops [B, T, S, S, 3] (float input is taken as [0, 1]).
    Normalisation with CLIP's mean/std happens inside; crops are resized to the
    checkpoint's image size when S differs. Per frame the output is the pooled embedding
    (post-LayerNorm CLS), or the projected image embedding with ``use_projection``
    (D = projection_dim). No dropout: ``train`` changes nothing.
    Parameters live under ``vision`` (and ``visual_projection``).
    """

    config: ClipVisionConfig
    use_projection: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False, mask=None) -> jax.Array:
        del mask    # the encoder interface's padding mask: per-frame model, nothing to mask
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"expected face crops [B, T, S, S, 3], got {frames.shape}")
        b, t = frames.shape[:2]
        pixels = clip_normalize(frames.reshape((b * t,) + frames.shape[2:]), self.config)
        _, pooled = ClipVisionTransformer(self.config, self.dtype, self.precision,
                                          name="vision")(pixels)           # [B*T, D]
        if self.use_projection:
            if not self.config.projection_dim:
                raise ValueError("use_projection needs a checkpoint with visual_projection")
            pooled = nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                              precision=self.precision, name="visual_projection")(pooled)
        return pooled.reshape(b, t, pooled.shape[-1])                      # [B, T, D]


# --------------------------------------------------------------------------- weights

def _vision_hf_config(raw: dict | None) -> dict:
    """The vision part of a config.json: CLIPVisionConfig itself, or CLIPModel's nested
    ``vision_config`` (with the top-level ``projection_dim``)."""
    raw = dict(raw or {})
    if "vision_config" in raw:
        vision = dict(raw["vision_config"] or {})
        vision.setdefault("projection_dim", raw.get("projection_dim", 0))
        return vision
    return raw


def clip_params_from_hf(tensors: dict[str, np.ndarray], hf_config: dict | None,
                        path: str | os.PathLike = "<tensors>") -> tuple[ClipVisionConfig, dict]:
    """(config, ClipVisionEncoder params) from Hugging Face CLIP tensors.

    Sizes come from the tensors; heads, activation and epsilon from ``hf_config`` when
    given (defaults otherwise: head size 64, quick_gelu, 1e-5, as in OpenAI's CLIP).
    Pixel statistics default to OpenAI's.
    """
    path = pathlib.Path(path)
    pre = "vision_model."
    if pre + "embeddings.class_embedding" not in tensors:
        raise WeightFileError(path, "no CLIP vision tower here (tensor "
                              f"'{pre}embeddings.class_embedding' missing)", kind="wrong_model")

    def w(name: str) -> np.ndarray:
        if pre + name not in tensors:
            raise WeightFileError(path, f"tensor {pre + name!r} missing", kind="missing_variable")
        return tensors[pre + name].astype(np.float32)

    vision = _vision_hf_config(hf_config)
    patch_w = w("embeddings.patch_embedding.weight")                       # [D, 3, p, p]
    d, p = patch_w.shape[0], patch_w.shape[2]
    n_pos = w("embeddings.position_embedding.weight").shape[0]
    side = math.isqrt(n_pos - 1)
    if side * side != n_pos - 1:
        raise WeightFileError(path, f"{n_pos} position embeddings is not 1 + a square number",
                              kind="bad_format")
    n_layers = layout.count_layers(tensors, pre + "encoder.layers.", ".", path)
    activation = vision.get("hidden_act", "quick_gelu")
    if activation not in ACTIVATIONS:
        raise WeightFileError(path, f"activation {activation!r} is not supported",
                              kind="unsupported")
    has_projection = "visual_projection.weight" in tensors
    cfg = ClipVisionConfig(
        hidden_size=d, n_heads=int(vision.get("num_attention_heads", d // 64)),
        n_layers=n_layers, intermediate_size=w("encoder.layers.0.mlp.fc1.weight").shape[0],
        image_size=side * p, patch_size=p, activation=activation,
        ln_eps=float(vision.get("layer_norm_eps", 1e-5)),
        projection_dim=tensors["visual_projection.weight"].shape[0] if has_projection else 0)
    vis: dict[str, Any] = {
        "patch_embed": layout.conv(patch_w),                               # [p, p, 3, D]
        "class_embedding": w("embeddings.class_embedding"),
        "position_embedding": w("embeddings.position_embedding.weight"),
        "ln_pre": layout.layer_norm(w("pre_layrnorm.weight"), w("pre_layrnorm.bias")),
        "ln_post": layout.layer_norm(w("post_layernorm.weight"), w("post_layernorm.bias")),
    }
    for i in range(cfg.n_layers):
        q = f"encoder.layers.{i}."
        a = q + "self_attn."
        vis[f"layers_{i}"] = {
            "attn_ln": layout.layer_norm(w(q + "layer_norm1.weight"), w(q + "layer_norm1.bias")),
            "attn": {name: layout.dense(w(a + name + ".weight"), w(a + name + ".bias"))
                     for name in ("q_proj", "k_proj", "v_proj", "out_proj")},
            "mlp_ln": layout.layer_norm(w(q + "layer_norm2.weight"), w(q + "layer_norm2.bias")),
            "fc1": layout.dense(w(q + "mlp.fc1.weight"), w(q + "mlp.fc1.bias")),
            "fc2": layout.dense(w(q + "mlp.fc2.weight"), w(q + "mlp.fc2.bias")),
        }
    params: dict[str, Any] = {"vision": vis}
    if has_projection:
        params["visual_projection"] = layout.dense(tensors["visual_projection.weight"])
    return cfg, params


def load_clip_vision(path: str | os.PathLike, **module_kwargs: Any
                     ) -> tuple[ClipVisionEncoder, dict]:
    """Build :class:`ClipVisionEncoder` and its params from a Hugging Face CLIP checkpoint.

    Args:
      path: a ``.safetensors`` file, or a folder with ``model.safetensors`` (or a sharded
        index) plus ``config.json``; ``preprocessor_config.json`` there, when present,
        supplies ``image_mean`` / ``image_std``.
      **module_kwargs: ``use_projection``, ``dtype``, ``precision``.
    Returns:
      (module, params) to call as ``module.apply({"params": params}, frames, train)``.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise WeightFileError(path, "no such file or folder", kind="missing_file")
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.suffix != ".safetensors":
        raise WeightFileError(path, "not a .safetensors file", kind="bad_format")
    tensors = safetensors_io.read_checkpoint_tensors(path)
    hf_config = layout.read_json_if_present(folder / "config.json")
    cfg, params = clip_params_from_hf(tensors, hf_config, path)
    pre = layout.read_json_if_present(folder / "preprocessor_config.json") or {}
    if "image_mean" in pre and "image_std" in pre:
        cfg = dataclasses.replace(cfg, image_mean=tuple(pre["image_mean"]),
                                  image_std=tuple(pre["image_std"]))
    return ClipVisionEncoder(cfg, **module_kwargs), jax.tree.map(jnp.asarray, params)


# --------------------------------------------------------------- encoder registry factory

@functools.lru_cache(maxsize=2)
def _load_clip(path: str) -> tuple[ClipVisionConfig, dict]:
    """(config, host-side params) of a checkpoint; cached so one process reads it once."""
    module, params = load_clip_vision(path)
    return module.config, jax.tree.map(np.asarray, params)


def encoder_factory(model_cfg, kw: dict) -> tuple[ClipVisionEncoder, Any]:
    """The ``'clip'`` visual encoder (registered in :mod:`avdetect.models.encoders`):
    Hugging Face CLIP weights from ``config.model.visual.init_from`` (required: no CLIP
    weights ship offline). Returns (module, loader), read as for Whisper
    (:func:`avdetect.pretrained.whisper.encoder_factory`)."""
    visual = model_cfg.visual
    path = str(visual.get("init_from", "") or "")
    if not path:
        raise ConfigError("config.model.visual.name='clip' needs config.model.visual.init_from "
                          "(a Hugging Face CLIP safetensors file or folder)")
    cfg = layout.config_from_arch(ClipVisionConfig, visual.get("arch")) or _load_clip(path)[0]
    return ClipVisionEncoder(cfg, **kw), lambda: _load_clip(path)[1]
