"""Encoder registry: one interface for every audio / visual encoder a method can use.

An encoder is a linen module called as ``module(inputs, train, mask=None) -> [B, T, D]``.
A config sub-dict names it and carries its keyword arguments::

    config.model.audio = ConfigDict(dict(name='seresnet', input='logmel', layers=(3,4,6,3)))

Reserved keys (not passed to the module): ``name``; ``input`` - the batch key it reads
('mouth', 'face', 'logmel', 'audio'); ``init_from`` - a weight file / folder for
pretrained factories; ``arch`` - a pretrained module's sizes (its config dataclass as a
dict), so the module can be rebuilt without its weight file (exported models carry it).
A factory returns ``(module, params or None)``; None means "initialise randomly", params
(or a zero-argument function returning them, so the file is read only when needed) means
pretrained weights that the method puts in place of the random ones.

This module is the one list of built-in encoders: the trainable ones of
:mod:`avdetect.models`, and the pretrained ones, whose factories live next to their
modules (``encoder_factory`` in :mod:`avdetect.pretrained.whisper` / ``.clip`` /
``.face_mesh``). Importing it is enough to build any of them; other code adds encoders
with :func:`register_audio_encoder` / :func:`register_visual_encoder`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import ml_collections

from avdetect.errors import ConfigError
from avdetect.models.audio import SEResNetAudio, WhisperLikeAudio
from avdetect.models.lips import LipEncoder
from avdetect.models.visual import FaceViT, MouthEncoder
from avdetect.pretrained import clip, face_mesh, whisper

Factory = Callable[[ml_collections.ConfigDict, dict], tuple[nn.Module, Any]]
RESERVED = ("name", "input", "init_from", "arch")

_AUDIO: dict[str, Factory] = {}
_VISUAL: dict[str, Factory] = {}


def register_audio_encoder(name: str, factory: Factory) -> None:
    """Make ``config.model.<encoder>.name = name`` build ``factory(model_cfg, kwargs)``."""
    _AUDIO[name] = factory


def register_visual_encoder(name: str, factory: Factory) -> None:
    """Visual twin of :func:`register_audio_encoder`."""
    _VISUAL[name] = factory


def registered_encoders() -> dict[str, tuple[str, ...]]:
    """The names ``config.model.<audio|visual>.name`` may take: {'audio': ..., 'visual': ...}."""
    return {"audio": tuple(sorted(_AUDIO)), "visual": tuple(sorted(_VISUAL))}


def encoder_kwargs(enc_cfg: ml_collections.ConfigDict) -> dict:
    """The module keyword arguments of an encoder sub-config (reserved keys removed,
    lists turned into tuples so linen modules stay hashable)."""
    out = {}
    for k, v in enc_cfg.items():
        if k in RESERVED:
            continue
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _build(registry: dict[str, Factory], kind: str, model_cfg, enc_cfg):
    name = enc_cfg.get("name")
    if name not in registry:
        raise ConfigError(f"unknown {kind} encoder {name!r}; known: {sorted(registry)}")
    try:
        return registry[name](model_cfg, encoder_kwargs(enc_cfg))
    except TypeError as e:   # an unknown keyword in the config
        raise ConfigError(f"{kind} encoder {name!r}: bad config keys ({e})") from e


def build_audio_encoder(model_cfg: ml_collections.ConfigDict,
                        enc_cfg: ml_collections.ConfigDict) -> tuple[nn.Module, Any]:
    """(module, pretrained params or None) for an audio encoder sub-config."""
    return _build(_AUDIO, "audio", model_cfg, enc_cfg)


def build_visual_encoder(model_cfg: ml_collections.ConfigDict,
                         enc_cfg: ml_collections.ConfigDict) -> tuple[nn.Module, Any]:
    """(module, pretrained params or None) for a visual encoder sub-config."""
    return _build(_VISUAL, "visual", model_cfg, enc_cfg)


def _seresnet(model_cfg, kw):
    # The student's input kind is a top-level model knob (config.model.audio_features).
    kw.setdefault("features", model_cfg.get("audio_features", "logmel"))
    kw.setdefault("n_mfcc", model_cfg.get("n_mfcc", 13))
    return SEResNetAudio(**kw), None


register_audio_encoder("seresnet", _seresnet)
register_audio_encoder("whisper_like", lambda model_cfg, kw: (WhisperLikeAudio(**kw), None))
register_visual_encoder("mouth_resnet", lambda model_cfg, kw: (MouthEncoder(**kw), None))
register_visual_encoder("face_vit", lambda model_cfg, kw: (FaceViT(**kw), None))
# 'lips': the frozen MediaPipe face mesh read at its landmark head (its 20 lip points,
# precomputed at preprocessing: the 'lips' stream) + a small trained temporal encoder.
register_visual_encoder("lips", lambda model_cfg, kw: (LipEncoder(**kw), None))
# Pretrained (frozen by default): the factory defers reading weight files to the loader.
register_audio_encoder("whisper", whisper.encoder_factory)
register_visual_encoder("clip", clip.encoder_factory)
register_visual_encoder("face_mesh", face_mesh.encoder_factory)
