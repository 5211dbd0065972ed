"""The trainable part of CAD (cross-modal alignment and distillation), on top of the
encoders' per-frame features. The layout and every choice are explained in METHODS.md.

Inputs (all [B, T, .]): ``a0``, ``v0`` - frozen audio / visual encoder features (the
alignment path); ``a1``, ``v1`` - the modality-specific features of the distillation path
(the LoRA-adapted encoder's output; equal to a0 / v0 for an encoder without LoRA).

Alignment path: LN + Dense to width d (``align_a``, ``align_v``) -> ``xattn_layers`` pre-LN
cross-attention blocks per direction (audio queries visual, visual queries audio) ->
fused streams ``fa``, ``fv``. The KL alignment loss reads the projected ``align_a/v``.
Distillation path: LN + Dense of a1, v1 to width d -> modality-specific ``sa``, ``sv``;
per modality a shared SimSiam projector + predictor embeds the specific stream and the
fused stream of the same modality (the SimSiam pair).
Classifier over both paths: [fa; fv; sa; sv] -> Dense(d) -> ``cls_layers`` pre-LN
self-attention blocks over time -> LN -> Dense(2) per frame.

Alignment evidence (``max_offset`` K > 0): the classifier also reads what the alignment
path measured - per frame the cosine similarity of the visual frame with the audio frames
t-K..t+K in the alignment space (``align_a``, ``align_v``; S[t, t] is the centre entry),
the window's mean of that offset profile and its validity, as SyncFusion does
(:func:`avdetect.models.fusion.offset_evidence`), behind a stop-gradient: the alignment
space is trained by the KL alignment loss, not bent by the detection loss; a direct
Dense from the mean profile to the logits gives the evidence a low-capacity path.
Without it the classifier sees the alignment only through the cross-attention outputs,
which a detection loss on a few dozen identities never taught to report asynchrony
(METHODS.md 2).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avdetect.models.fusion import offset_evidence, unit_rows
from avdetect.models.layers import PreLNBlock

Array = jax.Array


class SimSiamHeads(nn.Module):
    """Projector (Dense-LN-ReLU-Dense-LN) and predictor (Dense-LN-ReLU-Dense) bottleneck,
    SimSiam's layout with LayerNorm instead of BatchNorm so frames of one clip are
    normalised independently of the batch. x [B, T, d] -> (z, p) each [B, T, proj_dim]."""

    proj_dim: int = 256
    pred_hidden: int = 64

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        z = nn.relu(nn.LayerNorm(name="proj_ln1")(nn.Dense(self.proj_dim, name="proj1")(x)))
        z = nn.LayerNorm(name="proj_ln2")(nn.Dense(self.proj_dim, name="proj2")(z))
        p = nn.relu(nn.LayerNorm(name="pred_ln")(nn.Dense(self.pred_hidden, name="pred1")(z)))
        return z, nn.Dense(self.proj_dim, name="pred2")(p)


def alignment_evidence(align_a: Array, align_v: Array, mask: Array, max_offset: int
                       ) -> tuple[Array, Array, Array]:
    """The alignment path's per-frame evidence for the classifier: ([B, T, 3 (2K+1)]
    features, [B, T, 2K+1] offset similarities, [B, T, 2K+1] their validity - the last two
    what a clip's windows pool into its offset profile). Features per frame t: the cosines
    cos(v_t, a_{t+j-K}) for j = 0..2K (0 where out of the window or padded), the window's
    mean of each over its valid frames (broadcast to every frame) and the validity
    mask; all behind a stop-gradient (SyncFusion's reading,
    :func:`avdetect.models.fusion.offset_evidence`)."""
    feats, _, sims, valid = offset_evidence(unit_rows(align_a), unit_rows(align_v), mask,
                                            max_offset)
    return feats, jax.lax.stop_gradient(sims), valid


class CADHead(nn.Module):
    """Alignment + distillation + classifier head; returns a dict of [B, T, .] arrays:
    ``align_a``, ``align_v`` (d), ``fused_a``, ``fused_v`` (d), ``spec_a``, ``spec_v`` (d),
    SimSiam ``z_*``/``p_*`` for ``spec_a, fused_a, spec_v, fused_v``, ``logits`` (2), and
    with ``max_offset`` > 0 ``sync`` (2K+1, the offset similarities the classifier read)
    and ``sync_valid`` (2K+1, which of them exist)."""

    dim: int = 256
    heads: int = 8
    xattn_layers: int = 2
    cls_layers: int = 1
    dropout: float = 0.1
    proj_dim: int = 256
    pred_hidden: int = 64
    num_classes: int = 2
    max_offset: int = 0     # K of the alignment evidence the classifier reads; 0 = none

    @nn.compact
    def __call__(self, a0: Array, v0: Array, a1: Array, v1: Array,
                 mask: Array | None = None, train: bool = False) -> dict[str, Array]:
        to_d = lambda x, name: nn.Dense(self.dim, name=name)(nn.LayerNorm(name=name + "_ln")(x))  # noqa: E731
        al_a, al_v = to_d(a0, "align_a"), to_d(v0, "align_v")
        fa, fv = al_a, al_v
        for i in range(self.xattn_layers):
            # Both directions read the previous layer's streams (computed together).
            fa, fv = (PreLNBlock(self.dim, self.heads, dropout=self.dropout, name=f"xattn_a{i}")(
                          fa, mask, context=fv, context_mask=mask, train=train),
                      PreLNBlock(self.dim, self.heads, dropout=self.dropout, name=f"xattn_v{i}")(
                          fv, mask, context=fa, context_mask=mask, train=train))
        sa, sv = to_d(a1, "spec_a"), to_d(v1, "spec_v")
        heads_a = SimSiamHeads(self.proj_dim, self.pred_hidden, name="simsiam_a")
        heads_v = SimSiamHeads(self.proj_dim, self.pred_hidden, name="simsiam_v")
        out = dict(align_a=al_a, align_v=al_v, fused_a=fa, fused_v=fv, spec_a=sa, spec_v=sv)
        for key, heads, x in (("spec_a", heads_a, sa), ("fused_a", heads_a, fa),
                              ("spec_v", heads_v, sv), ("fused_v", heads_v, fv)):
            out["z_" + key], out["p_" + key] = heads(x)
        streams = [fa, fv, sa, sv]
        if self.max_offset > 0:
            m = jnp.ones(a0.shape[:2], al_a.dtype) if mask is None else mask.astype(al_a.dtype)
            evidence, out["sync"], out["sync_valid"] = alignment_evidence(
                al_a, al_v, m, self.max_offset)
            streams.append(evidence)
        h = nn.Dense(self.dim, name="cls_in")(jnp.concatenate(streams, axis=-1))
        for i in range(self.cls_layers):
            h = PreLNBlock(self.dim, self.heads, dropout=self.dropout, name=f"cls{i}")(
                h, mask, train=train)
        logits = nn.Dense(self.num_classes, name="classifier")(nn.LayerNorm(name="cls_ln")(h))
        if self.max_offset > 0:
            k = 2 * self.max_offset + 1   # the window's mean profile, straight to the logits
            logits = logits + nn.Dense(self.num_classes, name="profile_classifier")(
                evidence[..., k:2 * k])
        out["logits"] = logits
        return out
