"""Defaults shared by every method's config, the config-argument parser, and the pieces
the correlation-distillation student and the baseline share (:func:`student_config`).

``parse_arg("tiny,window=25,batch=8", tiny=False, window=50, batch=0)`` ->
ConfigDict(tiny=True, window=25, batch=8): a bare word sets a boolean to True,
``key=value`` is cast to the type of the key's default (big_vision's convention).
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from avdetect import contract
from avdetect.errors import ConfigError

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _cast(key: str, text: str, default: Any):
    if isinstance(default, bool):
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"config argument {key}={text!r}: expected a boolean")
    kind = type(default) if default is not None else str
    try:
        return kind(text)
    except ValueError as e:
        raise ConfigError(f"config argument {key}={text!r}: expected {kind.__name__}") from e


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
    """Parse a ``get_config`` argument string against ``spec`` (name -> default value).

    Tokens are separated by commas; ``name`` alone sets boolean ``name`` to True,
    ``name=value`` casts ``value`` to the default's type. Unknown names raise ConfigError.
    """
    out = dict(spec)
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, sep, value = token.partition("=")
        key = key.strip()
        if key not in spec:
            raise ConfigError(f"unknown config argument {key!r}; known: {sorted(spec)}")
        if not sep:
            if not isinstance(spec[key], bool):
                raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        else:
            out[key] = _cast(key, value.strip(), spec[key])
    return ml_collections.ConfigDict(out)


# The argument names every method's get_config understands.
COMMON_ARGS = dict(
    tiny=False,        # CPU-sized network and run (minutes)
    full=False,        # the paper-sized network (the default; accepted for clarity)
    window=0,          # T, video frames per training window (0 = the variant's default)
    batch=0,           # global batch size (0 = the variant's default)
    steps=0,           # training steps (0 = the variant's default)
    quirks=False,      # config.paper_quirks
    data="",           # config.data.name ('' = the variant's default)
)


def variant(arg: ml_collections.ConfigDict) -> str:
    """'tiny' or 'full' from parsed arguments."""
    if arg.tiny and arg.full:
        raise ConfigError("config argument: choose one of tiny / full")
    return "tiny" if arg.tiny else "full"


def base_config(method: str, arg: ml_collections.ConfigDict, *, inputs: tuple[str, ...],
                window: int, batch: int, steps: int, lr: float,
                face_size: int = contract.FACE_SIZE_DEFAULT) -> ml_collections.ConfigDict:
    """Everything but ``model`` and ``loss``: method, seed, data, optim, train, mesh and
    sharding, with the variant's defaults overridden by the parsed ``arg``."""
    tiny = variant(arg) == "tiny"
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    # The reference code's formulas: the score (raw fake logit, every method) and, for
    # corrdistill, its loss formulas (METHODS.md 1.2). Exported models made before this key
    # moved here carry it as loss.paper_quirks (avdetect.methods.base.paper_quirks reads both).
    c.paper_quirks = arg.quirks
    # A variables file (python -m avdetect.convert ...) to start training from instead of
    # random weights; its shapes must equal the configured model's (avdetect/steps.py).
    c.init_from = config_dict.placeholder(str)

    c.data = ml_collections.ConfigDict()
    c.data.name = arg.data or ("synthetic_av/tiny" if tiny else "fakeavceleb")
    c.data.data_dir = config_dict.placeholder(str)
    c.data.window = arg.window or window
    c.data.batch_size = arg.batch or batch
    c.data.face_size = face_size
    c.data.num_workers = 0 if tiny else 4
    # Training records kept decoded in memory (MB per dataset and worker; 0 = off): a
    # small split is read from the shards once, not once per window (avdetect/data/
    # pipeline.py RecordCache).
    c.data.cache_mb = 1024.0
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.val_split = "validation"
    c.data.inputs = inputs          # the batch keys this method reads
    c.data.augment = True           # per-window mouth / face augmentation while training
    # On-the-fly pseudo-fakes (training only; avdetect/data/otf_fakes.py): per kind, the
    # probability that a real training window has its audio streams shifted by
    # pf_shift_min..pf_shift_max frames (both signs; 2..12 = 80-480 ms), swapped with
    # another identity's (a donor from the same batch) or reversed in time; the window is
    # labelled fake under manipulation 'otf_<kind>'. Build-time kinds (TTS, other sentence,
    # visual): avdetect/data/pseudo_fakes.py.
    c.data.pseudo_fakes = ml_collections.ConfigDict({"shift": 0.0, "swap": 0.0, "reverse": 0.0})
    c.data.pf_shift_min = 2
    c.data.pf_shift_max = 12
    # Training-time augmentation of the lip points and of the raw waveform, one draw per
    # window, applied after the on-the-fly pseudo-fake (avdetect/data/stream_augment.py;
    # METHODS.md 8 "Stream augmentation"). Off by default; e.g.
    # --config.data.lips_augment.enable=True --config.data.audio_augment.enable=True
    c.data.lips_augment = ml_collections.ConfigDict(dict(
        enable=False, rotate_deg=10.0, scale=0.15, shift=0.02, mirror=0.5, noise=0.0))
    c.data.audio_augment = ml_collections.ConfigDict(dict(
        enable=False, gain_db=6.0, shelf_db=6.0, noise_prob=0.5, snr_db_min=10.0,
        snr_db_max=30.0))
    # The older name of pseudo_fakes.shift: that share of real windows gets audio from
    # >= sync_min_shift frames away, anywhere in the clip (set one of the two).
    c.data.sync_negatives = 0.0
    c.data.sync_min_shift = 3
    # Leave-one-method-out: train only on / never on these manipulations (how the fakes
    # were made: the dataset's on-disk `method` column; README's glossary).
    # avdetect.protocols sets train_exclude_manipulations per held-out manipulation.
    c.data.train_include_manipulations = ()
    c.data.train_exclude_manipulations = ()
    # Leave-one-source-out: never train on clips (and their build-time pseudo-fakes) from
    # these sources (index column 'source'; training split only, never val / test).
    c.data.train_exclude_sources = ()
    # Cross-validation over the training identities (avdetect/identity_cv.py): never train
    # on clips showing these identities (index column 'identity'; training split only).
    c.data.train_exclude_identities = ()
    # A mixed training source (avdetect/data/mix.py): ((name, weight[, data_dir]), ...), each
    # dataset's TRAIN split giving that share of the training windows (the primary gets
    # 1 - sum); e.g. (('synthetic_av/demo', 0.25, '/data/synth'),). Validation and test stay
    # on data.name. Manipulations are renamed '<name>:<method>' ('real' stays 'real').
    c.data.mix = ()
    # > 0: that share of the training windows is drawn from the primary dataset's real
    # clips, the rest from its other clips (0 = every clip alike; realtalk's train split is
    # ~10% real clips, and only a real window trains the sync loss or becomes an on-the-fly
    # pseudo-fake). Grain MapDataset.mix of the two record streams, resumable. With
    # real_share_weighting the detection loss weights each window by its kind's natural /
    # drawn probability (the batch's sample_weight): the classifier trains on the same
    # expected mix as with real_share 0, and only the sync / alignment losses on real
    # windows see the extra reals. Measured on the real-footage recipe (METHODS.md 8): 0.5
    # lifts swapped audio of unseen people by 0.08 and costs reversed audio as much, a tie.
    c.data.real_share = 0.0
    c.data.real_share_weighting = True
    # Manipulations (names or fnmatch patterns) whose lips are driven by their own audio -
    # audio-driven talking-face generators: their windows train the synchrony losses
    # (baseline's sync loss, CAD's alignment) beside the real ones; the classifier still
    # learns them as fakes. () = real windows only. realtalk's generators: REAL_SYNCED.
    c.data.synced_manipulations = ()
    c.data.eval_batch_size = config_dict.placeholder(int)   # None = data.batch_size
    c.data.random_eval_videos = 16  # eval videos of the 'random' dataset (benchmarks, tests)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"
    c.optim.lr = lr
    c.optim.schedule = "constant" if tiny else "step"
    c.optim.decay_rate = 0.95       # the reference's StepLR gamma
    c.optim.decay_steps = 1000      # one "epoch" of the reference, in steps (see METHODS.md)
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0         # 0 = no clipping (the reference clips nothing)

    c.train = ml_collections.ConfigDict()
    c.train.steps = arg.steps or steps
    c.train.log_every = 10 if tiny else 100
    c.train.eval_every = 100 if tiny else 2000
    c.train.ckpt_every = 100 if tiny else 2000
    c.train.keep_ckpts = 3
    c.train.eval_batches = 4 if tiny else 0    # 0 = the whole eval split
    c.train.fast_compile = False    # CPU: unoptimised XLA steps (faster compiles, slower steps)

    c.eval = ml_collections.ConfigDict()
    c.eval.threshold = "eer"        # rule on validation video scores: 'eer' | 'max_bacc'
    c.eval.fixed_threshold = 0.5    # used only when there is no validation split
    # Report every AUC/AP/EER also with each video's leading/trailing digital silence
    # trimmed (a second, cheap set of eval windows; avdetect/evaluation.py): FakeAVCeleb-
    # style fakes start with silence and separate on that alone.
    c.eval.trim_silence = True
    # How a video's score is made from its windows (avdetect/evaluation.py ClipScore; the
    # evaluator and `avdetect detect` share it): 'windows' = frame-weighted mean of window
    # scores; 'sync' / 'combined' (SyncFusion models only) = the offset profile pooled over
    # the whole clip, its statistic clip_sync_stat, alone or as
    # clip_weights[0] * window mean + clip_weights[1] * statistic + clip_weights[2].
    c.eval.clip_score = "windows"
    c.eval.clip_sync_stat = "neg_sim0"
    c.eval.clip_weights = (1.0, 1.0, 0.0)
    # True: the 'combined' weights are fitted when the run is evaluated, on the real clips
    # it trained on (each term standardised by their mean and spread), and written into
    # the reports, from which `avdetect detect` / `export` read them (the real-footage
    # recipe, METHODS.md 8); ignored by the other clip_score kinds.
    c.eval.fit_clip_weights = False
    # True ('combined' only): add the heard-phones-against-lips statistic
    # (avdetect/phone_sync.py) as a third term, phone_weight * statistic, its viseme
    # opening table phone_table (14 numbers) fitted with the weights above; the dataset
    # needs 'audio' and 'lips' streams. Heard visemes are kept in phone_cache_dir
    # (default <data_dir>/avdetect_cache/phone_visemes; '' = that default).
    c.eval.phone_sync = False
    c.eval.phone_weight = 1.0
    c.eval.phone_table = ()
    c.eval.phone_cache_dir = ""

    c.mesh = [("data", -1), ("model", 1)]
    c.sharding_strategy = [(".*", "replicate")]
    return c


# The real-footage recipe (config argument ``real``): realtalk's real clips, its generated
# fakes and its build-time pseudo-fakes (datasets/realtalk: identity-disjoint splits), plus
# on-the-fly audio pseudo-fakes of the real training windows.
REAL_DATA = "realtalk/face112"
# The same corpus built with the teacher pair (correlation distillation needs both sides):
#   python -m avdetect.data.build realtalk/face112 --teacher asr_align+vsr_self
REAL_TEACHER_DATA = "realtalk/face112_asr_align_vsr_self"
# realtalk's audio-driven generators (lip-sync and portrait animation driven by the clip's
# audio; the DFDC face-swaps keep the performer's own mouth motion and audio): every fake
# manipulation of its manifest.
REAL_SYNCED = ("Wav2Lip*", "AniTalker*", "SadTalker", "EDTalk", "MuseTalk", "StyleTalk",
               "DINet", "KDTalker", "DFDC-faceswap")
REAL_PSEUDO_FAKES = {"shift": 0.2, "swap": 0.15, "reverse": 0.1}
# tiny: chosen on the validation split, and kept by the cross-validation over the training
# identities (python -m avdetect.identity_cv ... --grid=train.steps=3000,6000: a tie,
# METHODS.md 8)
REAL_STEPS = 3000
# config argument ``refit``: the training split of the final model (test never trained on)
REFIT_SPLIT = "train+validation"
REFIT_ERROR = ("config argument refit: the final fit of the real-footage recipe; use it with "
               "real (e.g. 'tiny,real,refit')")


def real_overrides(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict,
                   data: str = REAL_DATA) -> None:
    """Point a config at the real-footage recipe's data (see REAL_DATA): validation split
    for the threshold, on-the-fly pseudo-fakes, one whole-split evaluation at the end."""
    c.data.name = arg.data or data
    if arg.refit:
        # The final fit: once a setting is chosen (identity cross-validation over the
        # train split's people), train on every person outside the test split. More
        # people is what transfers to unseen ones (METHODS.md 8, the learning curve).
        c.data.train_split = REFIT_SPLIT
    if variant(arg) == "tiny":
        c.train.steps = arg.steps or REAL_STEPS
    c.data.val_split = "validation"
    c.data.pseudo_fakes = ml_collections.ConfigDict(dict(REAL_PSEUDO_FAKES))
    c.train.eval_every = 0          # one evaluation of the whole test split, at the end
    c.train.eval_batches = 0
    c.train.ckpt_every = 100


def lips_visual(tiny: bool) -> ml_collections.ConfigDict:
    """The lip-landmark visual encoder (avdetect/models/lips.py) on the 'lips' stream."""
    return ml_collections.ConfigDict(dict(
        name="lips", input="lips", hidden=64 if tiny else 128, out_dim=32 if tiny else 128,
        layers=3 if tiny else 5, kernel=5, dropout=0.1,
        features="points"))   # 'distances': 8 lip widths / heights only (avdetect/models/lips.py)


def common_model(c: ml_collections.ConfigDict) -> None:
    """Model fields every method carries (read by data pipelines and benchmarks too)."""
    c.model.mouth_size = contract.MOUTH_SIZE
    c.model.teacher_classes = 40    # the deep_avsr teachers' alphabet (A-Z, 0-9, ', space, blank, EOS)
    c.model.freeze = ()             # regexes over parameter paths to freeze


# ---- the correlation-distillation student's config, shared with the baseline ----

STUDENT_ARGS = dict(COMMON_ARGS, features="logmel", mouth=0, demo=False, real=False,
                    refit=False, visual="", audio="")
DEMO_DATA = "synthetic_av/demo_oracle"   # the demo's build: oracle teacher, K = 14 visemes
DEMO_STEPS = 300


def demo_overrides(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
    """The 'demo' variant (``tiny,demo``): the tiny student on the demo build of the
    synthetic benchmark, the earlier synthetic demo's recipe (``make demo`` now trains
    configs/baseline.py:tiny,real; see avdetect/demo.py)."""
    if variant(arg) != "tiny":
        raise ConfigError("config argument demo: use it with tiny ('tiny,demo')")
    c.data.name = arg.data or DEMO_DATA
    c.model.teacher_classes = 14       # the oracle teacher's viseme alphabet
    c.train.steps = arg.steps or DEMO_STEPS
    c.train.eval_every = 0             # one full evaluation at the end, none in between
    c.train.ckpt_every = 50            # an interrupted demo resumes from here


def student_config(method: str, arg: str | None, inputs: tuple[str, ...]
                   ) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(config without fusion / loss, parsed arg): everything the correlation-distillation
    student (configs/corrdistill.py) and the baseline (configs/baseline.py) share - data,
    optim, train, and the two encoders; arguments as in those configs' docstrings."""
    arg = parse_arg(arg, **STUDENT_ARGS)
    tiny = variant(arg) == "tiny"
    c = base_config(
        method, arg, inputs=inputs,
        window=25 if tiny else 50,
        # 40 x 50 = 2000 frames per step, the reference's dynamic-batch frame budget.
        batch=8 if tiny else 40,
        steps=300 if tiny else 50_000,
        lr=1e-3 if tiny else 1e-4)

    c.model = ml_collections.ConfigDict()
    common_model(c)
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
        c.model.visual = lips_visual(tiny)
        c.data.inputs = tuple("lips" if k == "mouth" else k for k in c.data.inputs)
    elif arg.visual != "mouth":
        raise ConfigError(f"config argument visual={arg.visual!r}: expected mouth or lips")
    if arg.audio == "whisper":
        # The frozen pretrained Whisper tiny.en encoder on the raw waveform (offline weights,
        # avdetect/pretrained/whisper.py): speaker-independent speech features.
        # vtlp > 0: each training window's voice warped by a factor U[1-v, 1+v] (vocal tract
        # length perturbation, inside the frozen encoder's front end; evaluation unwarped).
        c.model.audio = ml_collections.ConfigDict(dict(name="whisper", input="audio",
                                                       init_from="", vtlp=0.0))
        c.model.freeze = ("^audio_encoder/",)
        c.data.inputs = tuple("audio" if k == "logmel" else k for k in c.data.inputs)
    elif arg.audio != "logmel":
        raise ConfigError(f"config argument audio={arg.audio!r}: expected logmel or whisper")
    if arg.real:
        real_overrides(c, arg, REAL_TEACHER_DATA if "teacher_audio" in inputs else REAL_DATA)
    elif arg.refit:
        raise ConfigError(REFIT_ERROR)
    if arg.demo:
        demo_overrides(c, arg)
    return c, arg
