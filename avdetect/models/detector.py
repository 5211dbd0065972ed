"""The two-stream detector shell shared by the correlation-distillation student and the
baseline: visual encoder + audio encoder + a fusion module.

``AVDetector(mouth [B,T,H,W] uint8, audio [B,4T,F] float, mask [B,T]) -> dict`` with
``logits`` [B, T, 2], the post-fusion per-modality embeddings ``audio``/``visual``
[B, T, D] and ``fused``; the fusion module decides what they are.
"""

from __future__ import annotations

import flax.linen as nn
import jax

Array = jax.Array


class AVDetector(nn.Module):
    """Run both encoders, bring them to ``fusion_dim`` if needed, and fuse.

    A stream whose width already equals ``fusion_dim`` is passed on untouched (the
    reference has no projection: both encoders emit 128-d); otherwise a Dense maps it.
    """

    visual_encoder: nn.Module
    audio_encoder: nn.Module
    fusion: nn.Module
    fusion_dim: int | None = None

    @nn.compact
    def __call__(self, mouth: Array, audio: Array, mask: Array | None = None,
                 train: bool = False) -> dict[str, Array]:
        v = self.visual_encoder(mouth, train, mask)                      # [B,T,Dv]
        a = self.audio_encoder(audio, train, mask)                       # [B,T,Da]
        if a.shape[1] != v.shape[1]:
            raise ValueError(f"audio encoder gave {a.shape[1]} frames, visual {v.shape[1]}")
        if self.fusion_dim is not None and a.shape[-1] != self.fusion_dim:
            a = nn.Dense(self.fusion_dim, name="audio_proj")(a)
        if self.fusion_dim is not None and v.shape[-1] != self.fusion_dim:
            v = nn.Dense(self.fusion_dim, name="visual_proj")(v)
        return self.fusion(a, v, mask, train)
