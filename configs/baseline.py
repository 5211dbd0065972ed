r"""Plain baseline: the correlation-distillation student's encoders (mouth ResNet +
SE-ResNet audio) with concatenation fusion and the per-frame detection loss only.

Run (CPU smoke run, a few minutes):
  python -m avdetect.main --config=configs/baseline.py:tiny --workdir=/tmp/base
Full size (accelerator), FakeAVCeleb:
  python -m avdetect.main --config=configs/baseline.py --workdir=DIR

Arguments: tiny | full, window=T, batch=B, steps=N, quirks (raw-logit score), data=NAME,
features=logmel|mfcc, mouth=SIZE (as in configs/corrdistill.py). Overrides as
--config.model.fusion.hidden=512 etc.

Expected result: tiny on synthetic_av/tiny - training loss falls within the run; AUC to be
measured. Full on FakeAVCeleb: AUC to be measured (the reference point that shows what
cross-attention and correlation distillation add).

The real-footage recipe (``real``; METHODS.md 8): realtalk's identity-disjoint splits with
build-time and on-the-fly pseudo-fakes, lip landmarks + frozen Whisper tiny.en features,
SyncFusion (the audio-visual offset profile) and the offset-contrastive sync loss:
  python -m avdetect.data.build realtalk/face112 --data_dir D
  python -m avdetect.main --config=configs/baseline.py:tiny,real,refit --workdir=W \
      --config.data.data_dir=D
Arguments: visual=lips|mouth, audio=whisper|logmel (the real defaults are lips, whisper);
refit: the final fit, on the train and validation splits (every person outside the test
split; chosen by the learning curve of the cross-validation, METHODS.md 8 "The final
fit"); without it the run trains on the train split, as every choice was made.
The video score is the mean window score, the clip's pooled offset-0 audio-visual
similarity and the heard-phones statistic (pocketsphinx's phones of the audio against the
lip opening, avdetect/phone_sync.py), each standardised on the run's own training reals
(eval.clip_score=combined, eval.fit_clip_weights, eval.phone_sync; chosen by the
cross-validation over the training identities: selection 0.910 -> 0.929 for the pooled
similarity, 0.930 -> 0.953 for the phones; swap 0.745 -> 0.814 -> 0.877 on 37 unseen
training reals, METHODS.md 8 "The video score", "Heard phones against the lips").
Expected result (refit, 3000 steps - the steps chosen on the validation split and kept by
the cross-validation over the training identities, METHODS.md 8; realtalk build 1.3.0,
2026-12-08, 2-core Intel Xeon): test split - 22 real clips of people never seen in
training - video AUC 0.883 overall (182 fakes); per manipulation (22 reals vs that
manipulation's fakes): pf_shift 0.92 (21), pf_swap 0.92 (22), pf_reverse 0.98 (22),
pf_tts 0.98 (22), pf_other_sentence 0.90 (10), pf_freeze 0.94 (22), pf_blend 0.64 (22),
pf_rerender 0.94 (22), Wav2Lip 0.75 (5), SadTalker 0.66 (9), DFDC face-swap 0.85 (4),
EDTalk 0.14 (1); with digital silence trimmed overall 0.885. The same model without the
phone term (--config.eval.phone_sync=False): shift / swap 0.88 / 0.86, generated fakes
0.76 (against 0.70); its mean window score alone: shift / swap 0.85 / 0.82. Seed 1
(--config.seed=1): 0.878 overall, shift / swap / reverse / TTS 0.94 / 0.93 / 0.97 / 0.98,
generated 0.65.
Printed in W/eval_test.md. Ablations, the longer run, the clip-level sync score, the
synthetic mix, stream augmentation and the learning curve: METHODS.md 8.
``make demo`` trains exactly this (``python -m avdetect.demo --out DIR``, 2026-12-08 00:43
UTC on a 2-core Intel Xeon at load 1.1-2.5, realtalk build 1.3.0: 588 s in all - build
267 s, preprocess 3 s, train + evaluate 287 s, detect 30 s; the figures above are that
run's; the 16 fixture clips - 6 real, 10 fake, people absent from realtalk - AUC 0.917,
accuracy 0.875 at the threshold the validation split places: the refit trained on those
clips, so it sits low and 2 of the 6 reals are called fake).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The baseline config: corrdistill's encoders, concatenation fusion, detection loss."""
    c, arg = common.student_config("baseline", arg, ("mouth", "logmel", "label"))
    tiny = common.variant(arg) == "tiny"
    c.model.fusion = ml_collections.ConfigDict(dict(hidden=32 if tiny else 256, dropout=0.1,
                                                    kind="concat"))
    c.loss = ml_collections.ConfigDict()
    c.loss.w_detect = 1.0
    if arg.real:
        # The real-footage recipe reads synchrony explicitly (SyncFusion: the per-frame
        # audio-visual offset profile, +-max_offset frames) and trains the shared space
        # with the offset-contrastive loss on real windows (avdetect/losses.py).
        c.model.fusion.update(kind="sync", sync_dim=32 if tiny else 128, max_offset=15,
                              hidden=64 if tiny else 256, stream_dropout=0.0,
                              center=False)
        c.loss.w_sync = 1.0
        c.loss.sync_temperature = 0.1
        c.loss.sync_cross_negatives = True   # other clips' audio as negatives too
        # A video's score: the window mean plus the clip's offset-0 similarity pooled over
        # every frame, each standardised on the run's own training reals (chosen by the
        # identity cross-validation: selection 0.910 -> 0.929, METHODS.md 8).
        c.eval.clip_score = "combined"
        c.eval.clip_sync_stat = "neg_sim0"
        c.eval.fit_clip_weights = True
        # ... plus the heard phones against the lip opening (avdetect/phone_sync.py), a cue
        # with 14 fitted numbers and nothing else to learn, standardised like the other two
        # (identity cross-validation: selection 0.930 -> 0.953, swap 0.821 -> 0.877,
        # METHODS.md 8 "Heard phones against the lips").
        c.eval.phone_sync = True
    return c
