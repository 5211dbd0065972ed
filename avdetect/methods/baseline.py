"""The plain baseline: the student's encoders (mouth ResNet + SE-ResNet audio) with
concatenation fusion, a per-frame MLP classifier and the detection loss only
(``L = w_detect * L_DF``). It isolates what cross-attention and the correlation branch add.

``config.model.fusion.kind = 'sync'`` (the real-footage recipe) swaps the concatenation
for :class:`avdetect.models.fusion.SyncFusion` (the per-frame audio-visual offset profile)
and adds its offset-contrastive loss on real windows (and on the audio-driven fakes of
``config.data.synced_manipulations``), ``w_sync * L_sync``
(:func:`avdetect.losses.sync_infonce`).
"""

from __future__ import annotations

import ml_collections

from avdetect import losses
from avdetect.errors import ConfigError
from avdetect.methods.base import (TwoStreamMethod, build_two_stream, check_clip_score,
                                   detection_loss, sync_sums, unsynced)
from avdetect.models.fusion import ConcatFusion, SyncFusion


class Baseline(TwoStreamMethod):
    """Concatenation-fusion baseline (see the module docstring)."""

    name = "baseline"

    def __init__(self, config: ml_collections.ConfigDict):
        m = config.model
        kind = m.fusion.get("kind", "concat")
        if kind == "concat":
            fusion = ConcatFusion(hidden=m.fusion.hidden, dropout=m.fusion.dropout)
        elif kind == "sync":
            fusion = SyncFusion(dim=m.fusion.sync_dim, max_offset=m.fusion.max_offset,
                                hidden=m.fusion.hidden, dropout=m.fusion.dropout,
                                stream_dropout=m.fusion.get("stream_dropout", 0.0),
                                center=m.fusion.get("center", False))
        else:
            raise ConfigError(f"model.fusion.kind={kind!r}: expected concat or sync")
        check_clip_score(config, kind == "sync", "--config.model.fusion.kind=sync")
        module, self.pretrained = build_two_stream(config, fusion, None)
        super().__init__(config, module)

    def aux_outputs(self, out, mask):
        """With SyncFusion: the window's offset profile as poolable sums (``sync_sum``,
        ``sync_count``; :func:`avdetect.methods.base.sync_sums`)."""
        return sync_sums(out)

    def loss_terms(self, out, batch, mask):
        terms = {"detect": detection_loss(out["logits"], batch, mask)}
        if "sync" in out:
            cross = self.config.loss.get("sync_cross_negatives", True)
            terms["sync"] = losses.sync_infonce(
                out["sync"], out["sync_valid"], unsynced(batch), mask,
                self.config.loss.sync_temperature,
                out["sync_cross"] if cross else None, out["sync_cross_valid"] if cross else None)
        return terms, {}
