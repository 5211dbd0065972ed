"""A mixed training source (config.data.mix, avdetect/data/mix.py) over in-memory shard
records: the union manipulation vocabulary and the offset identity ids against a
hand-written expectation, every window's content and labels against the record it came
from, mixing proportions against the weights, swap donors kept within a dataset, exact
resume through the trainer's orbax checkpoint, and clear errors for bad mix configs. Also
the real-clip share of the primary (config.data.real_share), which mixes the primary's
real and other records the same way."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from avdetect import checkpointing, contract
from avdetect.data import mix as mix_lib
from avdetect.data import otf_fakes
from avdetect.data import pipeline as pl
from avdetect.data.metadata import SplitIndex
from avdetect.errors import ConfigError
from test_pipeline_grain import _frame_value, assert_batches_equal, take
from test_pseudo_fakes_otf import T, make_av_example

PRIMARY, SYNTH, OTHER = "prim/a", "synth/x", "other/y"
P_LEN = [30, 26, 31, 28, 24, 33, 29, 27, 25, 32, 30, 26]       # 12 primary videos
P_METHODS = ("real", "real", "wav2lip")
S_LEN = [28, 30, 27, 31, 26, 29, 32, 25]                       # 8 mixed videos
S_METHODS = ("real", "desync", "wav2lip", "real")
S_IDENT = ("id0", "id1", "zz")          # 'id0' / 'id1' exist in the primary too
S_BASE = 100                            # mixed video v carries the values of video 100 + v


def _synth_example(v: int, n: int) -> dict:
    ex = make_av_example(S_BASE + v, n, S_METHODS[v % 4])
    ex["identity"] = S_IDENT[v % 3].encode()
    return ex


@pytest.fixture(scope="module")
def primary():
    source = [make_av_example(v, n, P_METHODS[v % 3]) for v, n in enumerate(P_LEN)]
    return source, SplitIndex.from_examples(source)


@pytest.fixture(scope="module")
def synth():
    source = [_synth_example(v, n) for v, n in enumerate(S_LEN)]
    return source, SplitIndex.from_examples(source)


@pytest.fixture(scope="module")
def other():
    source = [make_av_example(200 + v, 27 + v, "real") for v in range(4)]
    return source, SplitIndex.from_examples(source)


def cfg(mix=((SYNTH, 0.25),), **kw):
    base = dict(name=PRIMARY, data_dir="/unused", window=T, batch_size=8, num_workers=0,
                read_threads=1, prefetch_batches=2, augment=False, mix=mix,
                inputs=("mouth", "audio", "teacher_audio", "label"))
    base.update(kw)
    return base


def _source_video(vid: int) -> tuple[str, int]:
    """(dataset, value-video) of a training window's video_id: the primary's records
    come first, the mixed dataset's follow (offset by the primary's 12)."""
    return (PRIMARY, vid) if vid < len(P_LEN) else (SYNTH, S_BASE + vid - len(P_LEN))


def _windows(batches):
    for b in batches:
        for i in range(len(b["label"])):
            yield {k: v[i] for k, v in b.items()}


# --------------------------------------------------------------------- vocabulary

def test_union_vocabulary_and_identity_ids_by_hand(primary, synth):
    _, pidx = primary
    _, sidx = synth
    assert pidx.method_names == ("real", "wav2lip")
    assert sidx.method_names == ("desync", "real", "wav2lip")
    # the primary's ids unchanged, then the mixed dataset's (qualified, 'real' shared),
    # then the on-the-fly kinds
    want = ("real", "wav2lip", "synth/x:desync", "synth/x:wav2lip",
            "otf_shift", "otf_swap", "otf_reverse")
    got = pl.train_method_names(cfg(pseudo_fakes={"swap": 0.2}), pidx,
                                [(SYNTH, sidx.method_names)])
    assert got == want
    assert mix_lib.method_ids(got, SYNTH, sidx.method_names) == {
        "desync": 2, "real": 0, "wav2lip": 3}
    assert mix_lib.method_ids(got, None, pidx.method_names) == {"real": 0, "wav2lip": 1}
    # identities: primary id0..id4 -> 0..4; the mixed dataset's, sorted, from 5 on, so
    # its 'id0' is not the primary's 'id0'
    prim_ids, syn_ids = mix_lib.identity_ids([pidx.identity, sidx.identity])
    assert prim_ids == {"id0": 0, "id1": 1, "id2": 2, "id3": 3, "id4": 4}
    assert syn_ids == {"id0": 5, "id1": 6, "zz": 7}
    # evaluation keeps reading the primary's vocabulary: its ids are the union's first
    assert got[:len(pidx.method_names)] == pidx.method_names


def test_windows_carry_their_source_record_and_union_ids(primary, synth):
    (psrc, pidx), (ssrc, sidx) = primary, synth
    names = pl.train_method_names(cfg(), pidx, [(SYNTH, sidx.method_names)])
    it = iter(pl.build_train_dataset(psrc, pidx, cfg(), seed=2, mixed=[(ssrc, sidx)]))
    seen = set()
    for w in _windows(take(it, 12)):
        dataset, video = _source_video(int(w["video_id"]))
        seen.add(dataset)
        rec = psrc[video] if dataset == PRIMARY else ssrc[video - S_BASE]
        method = rec["method"].decode()
        assert names[w["method"]] == (method if dataset == PRIMARY
                                      else mix_lib.qualified(SYNTH, method))
        assert w["label"] == rec["label"]
        # the pictures and the audio of that record, at the window's frames
        s, n = int(w["window_start"]), int(w["frame_mask"].sum())
        np.testing.assert_array_equal(w["mouth"][:n, 5, 5],
                                      [_frame_value(video, f) for f in range(s, s + n)])
        np.testing.assert_array_equal(w["teacher_audio"][:n, 0],
                                      1000.0 * video + 10.0 * np.arange(s, s + n))
    assert seen == {PRIMARY, SYNTH}


# --------------------------------------------------------------------- proportions

@pytest.mark.parametrize("weights", [(0.25,), (0.1,), (0.2, 0.1)])
def test_mixing_proportions_follow_the_weights(primary, synth, other, weights):
    (psrc, pidx) = primary
    mixed = [synth, other][:len(weights)]
    mix = tuple(zip((SYNTH, OTHER), weights))
    c = cfg(mix=mix, inputs=("audio", "label"))         # no pictures: a fast stream
    n_batches = 50
    vids = np.concatenate([b["video_id"] for b in take(
        iter(pl.build_train_dataset(psrc, pidx, c, seed=0, mixed=mixed)), n_batches)])
    # record ids: primary 0..11, synth 12..19, other 20..23
    bounds = np.cumsum([0, len(P_LEN), len(S_LEN), 4])
    for k, w in enumerate(weights, start=1):
        share = np.mean((vids >= bounds[k]) & (vids < bounds[k + 1]))
        assert abs(share - w) <= 0.01, (k, share, w)
    assert abs(np.mean(vids < bounds[1]) - (1 - sum(weights))) <= 0.01


def test_without_mix_the_stream_is_unchanged(primary, synth):
    # an empty mix is the single-dataset pipeline, batch for batch
    psrc, pidx = primary
    a = take(iter(pl.build_train_dataset(psrc, pidx, cfg(mix=()), seed=4)), 3)
    c = {k: v for k, v in cfg().items() if k != "mix"}
    b = take(iter(pl.build_train_dataset(psrc, pidx, c, seed=4)), 3)
    assert_batches_equal(a, b)


# ----------------------------------------------------------------------- swap donors

def test_swap_donors_stay_within_a_dataset(primary, synth):
    (psrc, pidx), (ssrc, sidx) = primary, synth
    c = cfg(mix=((SYNTH, 0.5),), pseudo_fakes={"swap": 0.5})
    names = pl.train_method_names(c, pidx, [(SYNTH, sidx.method_names)])
    swap_id = names.index(otf_fakes.method_name("swap"))
    swapped = {PRIMARY: 0, SYNTH: 0}
    for w in _windows(take(iter(pl.build_train_dataset(psrc, pidx, c, seed=1,
                                                        mixed=[(ssrc, sidx)])), 40)):
        assert otf_fakes.GROUP not in w and otf_fakes.IDENTITY not in w     # private
        if w["method"] != swap_id:
            continue
        dataset, video = _source_video(int(w["video_id"]))
        donor = int(w["teacher_audio"][0, 0]) // 1000      # the audio's source video
        donor_dataset = PRIMARY if donor < S_BASE else SYNTH
        assert donor_dataset == dataset, (video, donor)
        ident = (lambda v: psrc[v] if v < S_BASE else ssrc[v - S_BASE])
        assert ident(donor)["identity"] != ident(video)["identity"]
        swapped[dataset] += 1
    assert swapped[PRIMARY] > 0 and swapped[SYNTH] > 0, swapped


# ------------------------------------------------------------------------ real share

REAL_P = {v for v in range(len(P_LEN)) if P_METHODS[v % 3] == "real"}     # 8 of 12


@pytest.mark.parametrize("share", [0.25, 0.9])
def test_real_share_draws_real_clips_at_that_rate(primary, synth, share):
    psrc, pidx = primary
    c = cfg(mix=((SYNTH, 0.2),), real_share=share, inputs=("audio", "label"))
    wins = list(_windows(take(iter(pl.build_train_dataset(psrc, pidx, c, seed=3,
                                                          mixed=[synth])), 60)))
    vids = np.array([int(w["video_id"]) for w in wins])
    prim = vids < len(P_LEN)
    # the mixed dataset keeps its weight; within the primary, reals at `share`
    assert abs(np.mean(~prim) - 0.2) <= 0.02
    real = np.isin(vids[prim], sorted(REAL_P))
    assert abs(np.mean(real) - share) <= 0.03, np.mean(real)
    # labels still come from the record, and every primary record is drawn
    assert all(int(w["label"]) == (int(w["video_id"]) not in REAL_P)
               for w in wins if int(w["video_id"]) < len(P_LEN))
    assert set(vids[prim]) == set(range(len(P_LEN)))


@pytest.mark.parametrize("weighting", [True, False])
def test_real_share_weights_give_back_the_natural_mix(primary, synth, weighting):
    # Each primary window carries its kind's natural / drawn probability: summed, the real
    # windows' weight is the share real clips have when every clip is drawn alike (8 of
    # 12); a mixed dataset's windows weigh 1. Without weighting every window weighs 1.
    psrc, pidx = primary
    share = 0.25
    c = cfg(mix=((SYNTH, 0.2),), real_share=share, real_share_weighting=weighting,
            inputs=("audio", "label"))
    wins = list(_windows(take(iter(pl.build_train_dataset(psrc, pidx, c, seed=5,
                                                          mixed=[synth])), 60)))
    natural = len(REAL_P) / len(P_LEN)
    w = np.array([float(x[contract.SAMPLE_WEIGHT]) for x in wins])
    vids = np.array([int(x["video_id"]) for x in wins])
    prim, real = vids < len(P_LEN), np.isin(vids, sorted(REAL_P))
    np.testing.assert_array_equal(w[~prim], 1.0)
    if not weighting:
        np.testing.assert_array_equal(w, 1.0)
        return
    np.testing.assert_allclose(w[real], natural / share, rtol=1e-6)
    np.testing.assert_allclose(w[prim & ~real], (1 - natural) / (1 - share), rtol=1e-6)
    assert abs(w[real].sum() / w[prim].sum() - natural) <= 0.05


def test_real_share_zero_is_the_unchanged_stream(primary):
    psrc, pidx = primary
    a = take(iter(pl.build_train_dataset(psrc, pidx, cfg(mix=(), real_share=0.0), seed=4)), 3)
    b = take(iter(pl.build_train_dataset(psrc, pidx, cfg(mix=()), seed=4)), 3)
    assert_batches_equal(a, b)
    assert contract.SAMPLE_WEIGHT not in a[0]


def test_real_share_resumes_and_refuses_what_it_cannot_do(primary, other):
    psrc, pidx = primary
    c = cfg(mix=(), real_share=0.5, pseudo_fakes={"shift": 0.3, "swap": 0.3})

    def fresh():
        return iter(pl.build_train_dataset(psrc, pidx, c, seed=2))

    uninterrupted = take(fresh(), 6)
    run = fresh()
    take(run, 3)
    resumed = fresh()
    resumed.set_state(run.get_state())
    assert_batches_equal(take(resumed, 3), uninterrupted[3:])
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=rf"real_share={bad} must be in \[0, 1\)"):
            pl.build_train_dataset(psrc, pidx, cfg(mix=(), real_share=bad), seed=0)
    osrc, oidx = other                                    # every clip real
    with pytest.raises(ConfigError, match="needs real and fake training clips of prim/a"):
        pl.build_train_dataset(osrc, oidx, cfg(mix=(), real_share=0.5), seed=0)


# -------------------------------------------------------------------- synced windows

def test_synced_flag_marks_reals_and_listed_generators_never_turned_windows(primary, synth):
    # av_synced = untouched real, or a listed (audio-driven) manipulation; on-the-fly
    # fakes of real windows (shift / reverse / swap) and unlisted manipulations are not.
    (psrc, pidx), (ssrc, sidx) = primary, synth
    c = cfg(mix=((SYNTH, 0.4),), synced_manipulations=("wav2lip", "synth/x:wav*"),
            pseudo_fakes={"shift": 0.3, "swap": 0.3, "reverse": 0.2}, inputs=("audio", "label"))
    names = pl.train_method_names(c, pidx, [(SYNTH, sidx.method_names)])
    wins = list(_windows(take(iter(pl.build_train_dataset(psrc, pidx, c, seed=6,
                                                          mixed=[(ssrc, sidx)])), 40)))
    seen = set()
    for w in wins:
        method = names[int(w["method"])]
        want = method == "real" or method in ("wav2lip", "synth/x:wav2lip")
        assert int(w[contract.AV_SYNCED]) == int(want), method
        assert (method == "real") == (int(w["label"]) == 0)
        seen.add(method)
    # every kind of window was drawn: reals, both listed generators, the unlisted
    # 'desync', and each on-the-fly fake
    assert {"real", "wav2lip", "synth/x:wav2lip", "synth/x:desync",
            *otf_fakes.method_names()} <= seen, seen


def test_synced_flag_absent_by_default_and_bad_patterns_refused(primary):
    psrc, pidx = primary
    a = take(iter(pl.build_train_dataset(psrc, pidx, cfg(mix=()), seed=4)), 2)
    b = take(iter(pl.build_train_dataset(psrc, pidx, cfg(mix=(), synced_manipulations=()),
                                         seed=4)), 2)
    assert_batches_equal(a, b)
    assert contract.AV_SYNCED not in a[0]
    with pytest.raises(ConfigError, match="'sadtalker' matches no manipulation"):
        pl.build_train_dataset(psrc, pidx, cfg(mix=(), synced_manipulations=("sadtalker",)),
                               seed=0)
    with pytest.raises(ConfigError, match="matches the pseudo-fakes"):
        pl.build_train_dataset(psrc, pidx, cfg(mix=(), synced_manipulations=("*",),
                                               pseudo_fakes={"shift": 0.2}), seed=0)


# --------------------------------------------------------------------------- resume

def test_resume_from_a_checkpoint_gives_the_uninterrupted_batches(primary, synth, tmp_path):
    # In-process: the mix is part of the MapDataset whose position the iterator state
    # holds, so worker processes (mp_prefetch) resume it as they resume a single dataset
    # (test_pipeline_grain, test_resume_real); starting them here would triple the time.
    (psrc, pidx), (ssrc, sidx) = primary, synth
    c = cfg(mix=((SYNTH, 0.3),), augment=True,
            pseudo_fakes={"shift": 0.2, "swap": 0.3, "reverse": 0.2})

    def fresh():
        return iter(pl.build_train_dataset(psrc, pidx, c, seed=7, mixed=[(ssrc, sidx)]))

    uninterrupted = take(fresh(), 7)
    run = fresh()
    take(run, 4)                                          # "train" 4 steps, then save
    with checkpointing.Checkpointer(tmp_path / "ckpt", asynchronous=False) as ckpt:
        ckpt.save(4, {"step": np.int32(4)}, run.get_state())
    del run
    with checkpointing.Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
        state = ckpt.restore_data(ckpt.latest_step())
    resumed = fresh()
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), uninterrupted[4:])


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("value, match", [
    ("synth/x", "must be a tuple"),
    ({"synth/x": 0.2}, "must be a tuple"),
    (("synth/x", 0.25), "bare entry"),
    ((("synth/x",),), "is not one"),
    ((("synth/x", 0.2, "/d", "extra"),), "is not one"),
    ((("", 0.2),), "non-empty string"),
    ((("synth/x", 1.5),), r"weight must be a number in \(0, 1\)"),
    ((("synth/x", 0.0),), "weight must be"),
    ((("synth/x", True),), "weight must be"),
    ((("synth/x", float("nan")),), "weight must be"),
    ((("synth/x", 0.2, 7),), "data_dir must be"),
    ((("synth/x", 0.6), ("other/y", 0.5)), "sum to 1.1"),
    ((("prim/a", 0.2),), "is the primary dataset"),
    ((("synth/x", 0.2), ("synth/x", 0.1)), "listed twice"),
])
def test_bad_mix_configs_are_refused(value, match):
    with pytest.raises(ConfigError, match=match):
        mix_lib.parse(value, PRIMARY, "/unused")


def test_mix_parse_accepts_the_documented_forms():
    assert mix_lib.parse((), PRIMARY, "/d") == ()
    got = mix_lib.parse((("synth/x", 0.25), ["other/y", 0.1, "/e"]), PRIMARY, "/d")
    assert got == (mix_lib.MixEntry("synth/x", 0.25, "/d"),
                   mix_lib.MixEntry("other/y", 0.1, "/e"))
    assert mix_lib.weights(got) == pytest.approx((0.65, 0.25, 0.1))
    # the same primary name under another data dir is another dataset
    assert mix_lib.parse((("prim/a", 0.2, "/other"),), PRIMARY, "/d")[0].data_dir == "/other"


def test_mixed_datasets_with_other_windows_are_refused(primary, synth):
    (psrc, pidx), (ssrc, sidx) = primary, synth
    wide = [dict(ex, teacher_audio=np.zeros((int(ex["num_frames"]), 7), np.float32))
            for ex in ssrc]                               # K = 7 teacher classes, not 5
    with pytest.raises(ConfigError, match="synth/x differ from those of prim/a.*teacher_audio"):
        pl.build_train_dataset(psrc, pidx, cfg(), seed=0, mixed=[(wide, sidx)])
    mute = [{k: v for k, v in ex.items() if k != "audio"} for ex in ssrc]
    with pytest.raises(ConfigError, match="cannot cut a training window of synth/x.*audio"):
        pl.build_train_dataset(psrc, pidx, cfg(), seed=0, mixed=[(mute, sidx)])
    with pytest.raises(ConfigError, match="1 datasets but 0 mixed sources"):
        pl.build_train_dataset(psrc, pidx, cfg(), seed=0, mixed=[])


def test_random_data_refuses_a_mix():
    from avdetect import input_pipeline, sharding
    config = ml_collections.ConfigDict(dict(seed=0, data=dict(name="random", batch_size=2,
                                                               mix=((SYNTH, 0.2),))))
    mesh = sharding.make_mesh([("data", -1)])
    with pytest.raises(ConfigError, match="'random' is none"):
        input_pipeline.make_train_iterator(config, mesh)
