"""Correlation distillation (Yu et al., "Explicit Correlation Learning for Generalizable
Cross-Modal Deepfake Detection", ICME 2024; papers.md B).

Student: the TalkNet-layout two-stream network (mouth ResNet + SE-ResNet audio, cross-
attention A<->V, self-attention, per-frame logits). Loss:

    L = w_detect * L_DF + w_corr * BCE(s_t, r_t) + w_metric * L_met

with s_t the student's audio-visual similarity after cross-attention and r_t the teachers'
correlation from the ASR / VSR posteriors in the batch ('teacher_audio', 'teacher_video').
``config.paper_quirks`` switches every loss and the score to the reference code's
exact formulas (see :mod:`avdetect.losses` and METHODS.md). A weight of 0 removes a term
(and its teacher inputs are then not needed).

The teacher terms count only the frames of clips whose posteriors are real on both sides
(the batch's ``has_teacher`` flag, when present): a clip the teacher said nothing about
(e.g. ``asr_align`` on a silent clip) is stored as zeros, and zeros would make r_t a
constant. Datasets without a side at all are refused before training
(``avdetect.teachers.requirements``).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from avdetect import losses
from avdetect.methods.base import (BatchError, TwoStreamMethod, build_two_stream,
                                   detection_loss, require)
from avdetect.models.fusion import StudentFusion


def teacher_mask(batch, mask):
    """The frame mask [B, T] restricted to clips with both teacher sides (``has_teacher``
    [B]; a batch without the flag, e.g. the trainer's random data, has them all). A clip
    without them then adds nothing to the correlation BCE, and a constant (no gradient)
    to the metric loss."""
    if "has_teacher" not in batch:
        return mask
    return mask * (batch["has_teacher"] > 0).astype(mask.dtype)[:, None]


class CorrDistill(TwoStreamMethod):
    """The correlation-distillation method (see the module docstring)."""

    name = "corrdistill"

    def __init__(self, config: ml_collections.ConfigDict):
        m = config.model
        fusion = StudentFusion(dim=m.fusion.dim, heads=m.fusion.heads,
                               dropout=m.fusion.dropout, ffn_mult=m.fusion.ffn_mult,
                               query=m.fusion.cross_attention_query)
        module, self.pretrained = build_two_stream(config, fusion, m.fusion.dim)
        super().__init__(config, module)
        self.uses_teachers = bool(config.loss.w_corr or config.loss.w_metric)
        if self.uses_teachers:
            self.required_keys = ("mouth", "logmel", "label", "teacher_audio", "teacher_video")

    def loss_terms(self, out, batch, mask):
        cfg = self.config.loss
        terms = {"detect": detection_loss(out["logits"], batch, mask)}
        extra = {}
        if self.uses_teachers:
            require(batch, "teacher_audio", "teacher_video", method=self.name)
            p, q = batch["teacher_audio"], batch["teacher_video"]
            k = self.config.model.teacher_classes
            if p.shape[-1] != k or q.shape[-1] != k or p.shape[:2] != out["logits"].shape[:2]:
                raise BatchError(f"{self.name}: teacher posteriors {p.shape} / {q.shape} do "
                                 f"not match [B, T, K={k}]")
            s = losses.student_similarity(out["audio"], out["visual"])   # [B,T]
            r = losses.teacher_soft_label(p, q, self.quirks)              # [B,T]
            tmask = teacher_mask(batch, mask)
            terms["corr"] = losses.correlation_bce(s, r, tmask)
            terms["metric"] = losses.margin_metric_loss(
                s, r, batch["label"], tmask, cfg.get("margin"), self.quirks)
            terms = {k_: v for k_, v in terms.items() if k_ == "detect" or cfg["w_" + k_]}
            extra["student_sim"] = jnp.sum(s * mask) / jnp.maximum(jnp.sum(mask), 1.0)
            extra["teacher_corr"] = jnp.sum(r * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return terms, extra
