r"""Correlation distillation (Yu et al., ICME 2024): TalkNet-layout student + ASR/VSR
teacher correlation (BCE) + margin metric loss + per-frame detection loss.

Run (CPU smoke run, a few minutes; tiny trains on the oracle build of synthetic_av/tiny,
which the first command writes as ``synthetic_av/tiny_oracle``):
  python -m avdetect.data.build synthetic_av/tiny --data_dir ~/tensorflow_datasets --teacher oracle
  python -m avdetect.main --config=configs/corrdistill.py:tiny --workdir=/tmp/cd
A dataset without both teacher sides is refused at start-up unless
--config.loss.w_corr=0 --config.loss.w_metric=0 (avdetect.teachers.requirements), and
model.teacher_classes is taken from the dataset's metadata.
Full size (accelerator), FakeAVCeleb:
  python -m avdetect.main --config=configs/corrdistill.py --workdir=DIR
The reference code's loss formulas and raw-logit score (config.paper_quirks; only these,
METHODS.md 1.2):
  python -m avdetect.main --config=configs/corrdistill.py:quirks --workdir=DIR

Arguments (comma-separated): tiny | full, window=T, batch=B, steps=N, quirks, data=NAME,
features=logmel|mfcc, mouth=SIZE (the network's mouth input side; dataset builds hold 88 px
crops, so another size runs on random batches only - the benchmarks), demo (with tiny: the
tiny student on the synthetic benchmark's demo build ``synthetic_av/demo_oracle`` (oracle
teacher, K = 14), 300 steps, one evaluation at the end - what the earlier synthetic demo
trained; ``make demo`` now trains configs/baseline.py:tiny,real,refit).
Ablations are overrides, e.g. --config.loss.w_corr=0 (no correlation distillation),
--config.loss.w_metric=0 (no metric loss), --config.model.fusion.cross_attention_query=source,
--config.model.visual.stem=3d, --config.model.audio_features=mfcc.

Expected result: tiny on synthetic_av/tiny_oracle - training loss falls within the run.
tiny,demo (300 steps of 8 x 25 frames on the 600-clip demo build with the oracle teacher),
measured 2026-11-22 with that day's synthetic demo (``python -m avdetect.demo --out
demo_out`` then generated, built and trained this; it no longer does) on the 2-core CPU
machine, idle (load 0.2), cold XLA cache: whole demo 278 s (generate 104 s, build 75 s, train +
evaluate 92 s, score 16 real clips 6 s); synthetic test video AUC 0.820 (FVFA 0.967, FVRA
0.932, RVFA 0.583), real fixture clips AUC 0.883 (6 real, 10 fake). Under load 6-8 the
stages take 2-3x longer (633 s with 200 steps). The < 10 min goal is met; AUC >= 0.95 is
not: the audio-only fakes (desync, voiceclone, voiceconvert) stay near chance for this tiny
student in a few hundred steps (also with batch 16 x 600 steps + cosine lr 2e-3: 0.810;
lr 3e-3: 0.515; no augmentation: 0.574; loss.w_corr=5: 0.701; query=source: 0.830;
1,500 steps: 0.854; 1,500 steps with data.sync_negatives=0.5: 0.854 / 0.764 for seeds
0 / 1, desync and voiceclone then 0.92-0.99 but faceswap ~0.5 - METHODS.md 1.4). A re-run
the same day (load ~3, commit after 108ddd3) gave the identical table in 279 s.
Full on FakeAVCeleb (reference test split) - AUC to be measured (the reference
reports AUC 0.968 on CMDFD-W2L for its released FakeAVCeleb model, papers.md B.6).
Parameters: full 15.74 M (15,739,869; the reference's 15,743,451 counts a stage-1
downsample conv it never uses and no classifier), tiny about 0.2 M.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


TINY_DATA = "synthetic_av/tiny_oracle"   # `build synthetic_av/tiny --teacher oracle`


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The correlation-distillation config; ``arg`` as in the module docstring."""
    c, arg = common.student_config(
        "corrdistill", arg, ("mouth", "logmel", "teacher_audio", "teacher_video", "label"))
    tiny = common.variant(arg) == "tiny"
    if tiny and not arg.data and not arg.demo and not arg.real:
        c.data.name = TINY_DATA      # the synthetic benchmark WITH its teacher posteriors
    c.model.fusion = ml_collections.ConfigDict(dict(
        dim=32 if tiny else 128,
        heads=4 if tiny else 8,
        ffn_mult=4, dropout=0.1,
        cross_attention_query="target"))        # TalkNet's layout; 'source' = textbook

    c.loss = ml_collections.ConfigDict()
    c.loss.w_detect = 1.0
    c.loss.w_corr = 1.0
    c.loss.w_metric = 1.0
    # None = the mode's margin: 1.0 with config.paper_quirks (sigmoid distance), 0.5 by default
    # (RMS distance); see avdetect.losses.margin_metric_loss.
    c.loss.margin = config_dict.placeholder(float)
    return c
