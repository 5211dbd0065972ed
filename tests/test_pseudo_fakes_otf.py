"""On-the-fly pseudo-fakes (config.data.pseudo_fakes) in the Grain training pipeline:
each kind's audio checked against the source clip's waveform (shift: the source at the
stated lag; swap: another identity's samples; reverse: the reversed samples, with the
log-mel against librosa), rates, untouched windows, and resume determinism."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest

from avdetect import contract
from avdetect.data import otf_fakes
from avdetect.data import pipeline as pl
from avdetect.data.metadata import SplitIndex
from avdetect.errors import ConfigError
from avdetect.preprocess.logmel import log_mel
from test_pipeline_grain import assert_batches_equal, make_example, take

T = 6
SPF = contract.SAMPLES_PER_FRAME
LENGTHS = [30, 26, 31, 28, 24, 33, 29, 27, 25, 32, 30, 26]
METHODS = ("real", "real", "wav2lip")            # two reals for every fake


def _wave(video: int, num_frames: int) -> np.ndarray:
    """int16 noise, different for every video (so a window's audio names its source)."""
    rng = np.random.default_rng(1000 + video)
    return np.round(rng.normal(0, 0.1, num_frames * SPF).clip(-1, 1) * 32767).astype(np.int16)


def make_av_example(video: int, num_frames: int, method: str) -> dict:
    ex = make_example(video, num_frames, method)
    wave = _wave(video, num_frames)
    ex["audio"] = wave
    ex["logmel"] = log_mel(wave.astype(np.float32) / 32768.0, num_frames)     # as the build
    ex["teacher_audio"] = (np.arange(num_frames)[:, None] * 10.0 + np.arange(5)[None]
                           + 1000.0 * video).astype(np.float32)
    ex["identity"] = f"id{video % 5}".encode()
    return ex


@pytest.fixture(scope="module")
def source():
    return [make_av_example(v, n, METHODS[v % 3]) for v, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def index(source):
    return SplitIndex.from_examples(source)


def cfg(**kw):
    base = dict(name="unused", data_dir="unused", window=T, batch_size=8, num_workers=0,
                read_threads=1, prefetch_batches=2, augment=False,
                inputs=("mouth", "logmel", "audio", "teacher_audio"))
    base.update(kw)
    return base


def _method_id(index, kind, **kw):
    return pl.train_method_names(cfg(**kw), index).index(otf_fakes.method_name(kind))


def _source_frame(w) -> int:
    """The (video, frame) the window's first audio frame came from, via the posteriors."""
    t = int(w["teacher_audio"][0, 0])
    return t // 1000, (t % 1000) // 10


# ----------------------------------------------------------------------------- shift

def test_shift_takes_the_audio_of_the_same_clip_at_the_lag(source, index):
    pf = dict(pseudo_fakes={"shift": 1.0}, pf_shift_min=2, pf_shift_max=5)
    maker = pl._maker(cfg(**pf), index)
    ex = dict(source[0], _record=0)                 # real, 30 frames
    lags = set()
    for seed in range(80):
        w = maker.random_window(ex, np.random.default_rng(seed), augment=False)
        v = int(w["window_start"])
        vid, a = _source_frame(w)
        assert vid == 0 and 2 <= abs(a - v) <= 5 and 0 <= a <= 30 - T
        # every audio stream moved together, from inside the clip; the video stayed
        np.testing.assert_array_equal(w["audio"], source[0]["audio"][SPF * a:SPF * (a + T)]
                                      / np.float32(32768))
        np.testing.assert_allclose(w["logmel"], source[0]["logmel"][4 * a:4 * (a + T)])
        np.testing.assert_array_equal(w["mouth"][:, 5, 5],
                                      [(0 * 37 + f * 5) % 251 for f in range(v, v + T)])
        assert (w["label"], w["audio_fake"], w["video_fake"]) == (1, 1, 0)
        assert w["category"] == contract.CATEGORIES.index("RVFA")
        assert w["method"] == _method_id(index, "shift", **pf)
        lags.add(a - v)
    assert min(lags) < 0 < max(lags) and {-5, -2, 2, 5} <= lags      # both signs, the range


# --------------------------------------------------------------------------- reverse

def test_reverse_gives_the_reversed_waveform_and_its_log_mel(source, index):
    maker = pl._maker(cfg(pseudo_fakes={"reverse": 1.0}), index)
    for r in (0, 4):
        ex = dict(source[r], _record=r)
        nf = len(source[r]["audio"]) // SPF
        for seed in range(6):
            w = maker.random_window(ex, np.random.default_rng(seed), augment=False)
            v = int(w["window_start"])
            seg = source[r]["audio"][SPF * v:SPF * (v + T)].astype(np.float32) / 32768
            np.testing.assert_array_equal(w["audio"], seg[::-1])
            np.testing.assert_array_equal(w["teacher_audio"],
                                          source[r]["teacher_audio"][v:v + T][::-1])
            # log-mel of the reversed waveform (its neighbours as context, zeros outside
            # the clip), from librosa: frames centred on the reversed window's hops
            lo, hi = SPF * v - 320, SPF * (v + T) + 320
            ext = np.zeros(hi - lo, np.float32)
            s0, s1 = max(lo, 0), min(hi, SPF * nf)
            ext[s0 - lo:s1 - lo] = source[r]["audio"][s0:s1] / np.float32(32768)
            mel = librosa.feature.melspectrogram(
                y=ext[::-1][64:].copy(), sr=16000, n_fft=512, win_length=400, hop_length=160,
                n_mels=80, center=False, power=2.0)[:, :4 * T].T
            np.testing.assert_allclose(w["logmel"], np.log(mel + contract.LOG_FLOOR),
                                       rtol=1e-4, atol=2e-4)
            assert w["label"] == 1 and w["method"] == _method_id(
                index, "reverse", pseudo_fakes={"reverse": 1.0})
            # the same construction without reversal is the build's whole-clip log-mel:
            # a reversed window has no edge artefact a real one lacks
            np.testing.assert_allclose(otf_fakes.window_log_mel(source[r]["audio"], v, T),
                                       source[r]["logmel"][4 * v:4 * (v + T)],
                                       rtol=1e-4, atol=2e-4)


# ------------------------------------------------------------------------------ swap

def _find_donor(audio: np.ndarray, source) -> tuple[int, int]:
    """(video, frame) of the source clip whose samples a window's audio is."""
    for u, ex in enumerate(source):
        frames = (ex["audio"].astype(np.float32) / 32768).reshape(-1, SPF)
        hits = np.flatnonzero((frames == audio[:SPF]).all(1))
        for a in hits:
            n = len(audio) // SPF
            if a + n <= len(frames) and np.array_equal(frames[a:a + n].ravel(), audio):
                return u, int(a)
    raise AssertionError("the window's audio is no clip's")


def test_swap_takes_another_identitys_audio_from_the_batch(source, index):
    c = cfg(pseudo_fakes={"swap": 0.5})
    swap_id = _method_id(index, "swap", pseudo_fakes={"swap": 0.5})
    ident = [ex["identity"] for ex in source]
    seen = 0
    for b in take(iter(pl.build_train_dataset(source, index, c, seed=3)), 8):
        assert not {otf_fakes.SWAP_FLAG, otf_fakes.IDENTITY} & b.keys()
        for i in np.flatnonzero(b["method"] == swap_id):
            own = int(b["video_id"][i])
            assert source[own]["label"] == 0 and b["label"][i] == 1 and b["audio_fake"][i] == 1
            donor, a = _find_donor(b["audio"][i], source)
            assert ident[donor] != ident[own]
            # the donor is a real window of this batch, and all its audio streams came along
            j = np.flatnonzero((b["video_id"] == donor) & (b["window_start"] == a)
                               & (b["label"] == 0))
            assert len(j) >= 1
            np.testing.assert_array_equal(b["logmel"][i], b["logmel"][j[0]])
            np.testing.assert_array_equal(b["teacher_audio"][i], b["teacher_audio"][j[0]])
            # the video stayed the window's own
            v = int(b["window_start"][i])
            np.testing.assert_array_equal(b["mouth"][i, :, 5, 5],
                                          [(own * 37 + f * 5) % 251 for f in range(v, v + T)])
            seen += 1
    assert seen >= 5


def test_swap_without_a_donor_stays_real():
    batch = {"label": np.zeros(3, np.int32), "audio_fake": np.zeros(3, np.int32),
             "category": np.zeros(3, np.int32), "method": np.zeros(3, np.int32),
             "has_audio": np.ones(3, np.int32), "frame_mask": np.ones((3, 4), np.float32),
             "logmel": np.arange(3, dtype=np.float32)[:, None, None] * np.ones((3, 16, 80)),
             otf_fakes.SWAP_FLAG: np.array([1, 0, 0], np.int32),
             otf_fakes.IDENTITY: np.array([7, 7, 7], np.int32)}           # one identity
    out = otf_fakes.swap_in_batch(batch, np.random.default_rng(0), method_id=9)
    assert (out["label"] == 0).all() and (out["logmel"][0] == 0).all()
    batch[otf_fakes.IDENTITY] = np.array([7, 8, 7], np.int32)
    batch["frame_mask"][1, 3] = 0                        # the donor is shorter: not taken
    out = otf_fakes.swap_in_batch(batch, np.random.default_rng(0), method_id=9)
    assert (out["label"] == 0).all()
    batch["frame_mask"][1, 3] = 1
    out = otf_fakes.swap_in_batch(batch, np.random.default_rng(0), method_id=9)
    assert out["label"][0] == 1 and out["method"][0] == 9 and (out["logmel"][0] == 1).all()
    assert (batch["logmel"][0] == 0).all()               # the input batch is not modified


# ---------------------------------------------------------------- rates, untouched, resume

def test_rates_follow_the_probabilities_and_the_rest_is_untouched(source, index):
    probs = {"shift": 0.2, "reverse": 0.3}
    maker = pl._maker(cfg(pseudo_fakes=probs), index)
    plain = pl._maker(cfg(), index)
    names = pl.train_method_names(cfg(pseudo_fakes=probs), index)
    counts = {m: 0 for m in names}
    n = 0
    for seed in range(150):
        for r in (0, 1, 2):                               # two reals and a fake
            ex = dict(source[r], _record=r)
            w = maker.random_window(ex, np.random.default_rng(seed), augment=False)
            ref = plain.random_window(ex, np.random.default_rng(seed), augment=False)
            if source[r]["label"] == 0:
                counts[names[int(w["method"])]] += 1
                n += 1
            if w["label"] == ref["label"]:                # not turned: exactly the plain window
                assert w.keys() == ref.keys()
                for k in w:
                    np.testing.assert_array_equal(w[k], ref[k], err_msg=k)
    assert abs(counts["otf_shift"] / n - 0.2) < 0.06
    assert abs(counts["otf_reverse"] / n - 0.3) < 0.07
    assert abs(counts["real"] / n - 0.5) < 0.07
    # in the pipeline, with a swap share too: the turned share of real windows
    c = cfg(pseudo_fakes={"shift": 0.1, "swap": 0.3, "reverse": 0.1})
    b = take(iter(pl.build_train_dataset(source, index, c, seed=0)), 40)
    method = np.concatenate([x["method"] for x in b])
    real_src = np.array([source[int(v)]["label"] == 0 for x in b for v in x["video_id"]])
    names = pl.train_method_names(c, index)
    share = {m: np.mean(method[real_src] == names.index(m)) for m in names}
    assert abs(share["otf_shift"] - 0.1) < 0.05 and abs(share["otf_reverse"] - 0.1) < 0.05
    assert 0.2 < share["otf_swap"] < 0.36        # a few swaps find no donor in their batch
    assert (method[~real_src] == names.index("wav2lip")).all()        # fakes untouched


def test_resume_and_worker_processes_give_identical_batches(source, index):
    c = cfg(pseudo_fakes={"shift": 0.2, "swap": 0.3, "reverse": 0.2}, augment=True)
    it = iter(pl.build_train_dataset(source, index, c, seed=5))
    first = take(it, 3)
    state = it.get_state()
    json.dumps(state)
    want = take(it, 3)
    fresh = iter(pl.build_train_dataset(source, index, c, seed=5))
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 3), want)
    workers = iter(pl.build_train_dataset(source, index, dict(c, num_workers=2), seed=5))
    assert_batches_equal(take(workers, 6), first + want)


def test_config_checks_and_the_sync_negatives_alias(index):
    assert otf_fakes.parse({"sync_negatives": 0.4, "sync_min_shift": 3}) == otf_fakes.OtfSpec(
        (0.4, 0.0, 0.0), 3, None)
    with pytest.raises(ConfigError, match="unknown on-the-fly kinds"):
        otf_fakes.parse({"pseudo_fakes": {"tts": 0.1}})
    with pytest.raises(ConfigError, match="sum"):
        otf_fakes.parse({"pseudo_fakes": {"shift": 0.6, "swap": 0.5}})
    with pytest.raises(ConfigError, match="only one"):
        otf_fakes.parse({"pseudo_fakes": {"shift": 0.2}, "sync_negatives": 0.2})
    with pytest.raises(ConfigError, match="pf_shift"):
        otf_fakes.parse({"pseudo_fakes": {"shift": 0.2}, "pf_shift_min": 5, "pf_shift_max": 2})
    assert pl.train_method_names(cfg(), index) == index.method_names
    assert pl.train_method_names(cfg(pseudo_fakes={"swap": 0.1}), index) == (
        index.method_names + ("otf_shift", "otf_swap", "otf_reverse"))


def test_pseudo_fakes_need_an_audio_input(index):
    with pytest.raises(ConfigError, match="no audio stream"):
        pl._maker(cfg(pseudo_fakes={"shift": 0.1}, inputs=("mouth", "face")), index)
    pl._maker(cfg(inputs=("mouth", "face")), index)            # off: fine
