"""The plain baseline: the student's encoders (mouth ResNet + SE-ResNet audio) with
concatenation fusion, a per-frame MLP classifier and the detection loss only
(``L = w_detect * L_DF``). It isolates what cross-attention and the correlation branch add.
"""

from __future__ import annotations

import ml_collections

from avdetect import losses
from avdetect.methods.base import TwoStreamMethod, build_two_stream
from avdetect.models.fusion import ConcatFusion


class Baseline(TwoStreamMethod):
    """Concatenation-fusion baseline (see the module docstring)."""

    name = "baseline"

    def __init__(self, config: ml_collections.ConfigDict):
        m = config.model
        fusion = ConcatFusion(hidden=m.fusion.hidden, dropout=m.fusion.dropout)
        module, self.pretrained = build_two_stream(config, fusion, None)
        super().__init__(config, module)

    def init(self, rng, batch):
        return self._with_pretrained(super().init(rng, batch))

    def loss_terms(self, out, batch, mask):
        return {"detect": losses.frame_cross_entropy(out["logits"], batch["label"], mask)}, {}
