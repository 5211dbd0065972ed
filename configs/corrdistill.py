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
Reference code exactly (quirky losses and raw-logit score):
  python -m avdetect.main --config=configs/corrdistill.py:quirks --workdir=DIR

Arguments (comma-separated): tiny | full, window=T, batch=B, steps=N, quirks, data=NAME,
features=logmel|mfcc, mouth=SIZE, demo (with tiny: the tiny student on the demo's build
``synthetic_av/demo_oracle`` (oracle teacher, K = 14), 300 steps, one evaluation at the end;
what ``make demo`` trains, see avdetect/demo.py).
Ablations are overrides, e.g. --config.loss.w_corr=0 (no correlation distillation),
--config.loss.w_metric=0 (no metric loss), --config.model.fusion.cross_attention_query=source,
--config.model.visual.stem=3d, --config.model.audio_features=mfcc.

Expected result: tiny on synthetic_av/tiny_oracle - training loss falls within the run.
tiny,demo (300 steps of 8 x 25 frames on the 600-clip demo build with the oracle teacher),
``python -m avdetect.demo --out demo_out``, measured 2026-11-22 on the 2-core CPU machine,
idle (load 0.2), cold XLA cache: whole demo 278 s (generate 104 s, build 75 s, train +
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

from avdetect.errors import ConfigError
from configs import common


STUDENT_ARGS = dict(common.COMMON_ARGS, features="logmel", mouth=0, demo=False, real=False,
                    visual="", audio="")
DEMO_DATA = "synthetic_av/demo_oracle"   # the demo's build: oracle teacher, K = 14 visemes
TINY_DATA = "synthetic_av/tiny_oracle"   # `build synthetic_av/tiny --teacher oracle`
DEMO_STEPS = 300


def demo_overrides(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
    """The 'demo' variant (``tiny,demo``): the tiny student on the demo's build of the
    synthetic benchmark within ``make demo``'s time budget (see avdetect/demo.py)."""
    if common.variant(arg) != "tiny":
        raise ConfigError("config argument demo: use it with tiny ('tiny,demo')")
    c.data.name = arg.data or DEMO_DATA
    c.model.teacher_classes = 14       # the oracle teacher's viseme alphabet
    c.train.steps = arg.steps or DEMO_STEPS
    c.train.eval_every = 0             # one full evaluation at the end, none in between
    c.train.ckpt_every = 50            # an interrupted demo resumes from here


def student_config(method: str, arg: str | None, inputs: tuple[str, ...]
                   ) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config without fusion / loss, parsed arg): everything the correlation-distillation
    student and the baseline share - data, optim, train, and the two encoders."""
    arg = common.parse_arg(arg, **STUDENT_ARGS)
    tiny = common.variant(arg) == "tiny"
    c = common.base_config(
        method, arg, inputs=inputs,
        window=25 if tiny else 50,
        # 40 x 50 = 2000 frames per step, the reference's dynamic-batch frame budget.
        batch=8 if tiny else 40,
        steps=300 if tiny else 50_000,
        lr=1e-3 if tiny else 1e-4)

    c.model = ml_collections.ConfigDict()
    common.common_model(c)
    if arg.mouth:
        c.model.mouth_size = arg.mouth
    c.model.audio_features = arg.features     # 'logmel' | 'mfcc' (13 DCT coefficients)
    c.model.n_mfcc = 13
    c.model.visual = ml_collections.ConfigDict(dict(
        name="mouth_resnet", input="mouth",
        stem_width=8 if tiny else 64,
        widths=(8, 16, 32, 64) if tiny else (64, 128, 256, 512),
        blocks=1 if tiny else 2,
        stem="per_frame",                       # centre temporal tap only; '3d' = TalkNet's function
        tcn_blocks=1 if tiny else 5,
        head_hidden=32 if tiny else 256,
        out_dim=32 if tiny else 128))
    c.model.audio = ml_collections.ConfigDict(dict(
        name="seresnet", input="logmel",
        layers=(1, 1, 1, 1) if tiny else (3, 4, 6, 3),
        widths=(8, 16, 32, 32) if tiny else (16, 32, 64, 128),
        reduction=8))
    # The real-footage recipe reads lip landmarks and frozen Whisper features by default
    # (inputs that transfer across faces and voices; METHODS.md "Real footage").
    arg.visual = arg.visual or ("lips" if arg.real else "mouth")
    arg.audio = arg.audio or ("whisper" if arg.real else "logmel")
    if arg.visual == "lips":
        c.model.visual = common.lips_visual(tiny)
        c.data.inputs = tuple("lips" if k == "mouth" else k for k in c.data.inputs)
    elif arg.visual != "mouth":
        raise ConfigError(f"config argument visual={arg.visual!r}: expected mouth or lips")
    if arg.audio == "whisper":
        # The frozen pretrained Whisper tiny.en encoder on the raw waveform (offline weights,
        # avdetect/pretrained/whisper.py): speaker-independent speech features.
        c.model.audio = ml_collections.ConfigDict(dict(name="whisper", input="audio",
                                                       init_from=""))
        c.model.freeze = ("^audio_encoder/",)
        c.data.inputs = tuple("audio" if k == "logmel" else k for k in c.data.inputs)
    elif arg.audio != "logmel":
        raise ConfigError(f"config argument audio={arg.audio!r}: expected logmel or whisper")
    if arg.real:
        common.real_overrides(c, arg, common.REAL_TEACHER_DATA if "teacher_audio" in inputs
                              else common.REAL_DATA)
    if arg.demo:
        demo_overrides(c, arg)
    return c, arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The correlation-distillation config; ``arg`` as in the module docstring."""
    c, arg = student_config(
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
    c.loss.paper_quirks = arg.quirks
    c.loss.w_detect = 1.0
    c.loss.w_corr = 1.0
    c.loss.w_metric = 1.0
    # None = the mode's margin: 1.0 with paper_quirks (sigmoid distance), 0.5 by default
    # (RMS distance); see avdetect.losses.margin_metric_loss.
    c.loss.margin = config_dict.placeholder(float)
    return c
