"""Clip-level synchrony scoring (``config.eval.clip_score``): the offset profile pooled
over every window of a clip, its statistics, and the rule the evaluator and ``avdetect
detect`` share.

References: NumPy loops over (window, frame, offset) for the pooled profile; NumPy
formulas (explicit log-sum-exp, sorted median) for the statistics; a NumPy re-computation
of the combined clip score from the windows a trained model gives, compared with the
trainer's evaluation report, the inference path over the same split and ``avdetect
detect`` on a real fixture clip.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from avdetect import evaluation as ev
from avdetect.methods.baseline import Baseline
from avdetect.models.fusion import offset_similarity

K = 3


def _windows_of(z: np.ndarray, t_win: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, D] -> ([W, t_win, D] zero-padded windows, [W, t_win] frame mask)."""
    n = -(-len(z) // t_win)
    out = np.zeros((n, t_win, z.shape[1]))
    mask = np.zeros((n, t_win))
    for w in range(n):
        part = z[w * t_win:(w + 1) * t_win]
        out[w, :len(part)] = part
        mask[w, :len(part)] = 1
    return out, mask


def test_pooled_profile_is_the_mean_over_every_window_frame_and_offset():
    rng = np.random.default_rng(0)
    t_win, lengths = 7, (17, 9)
    za_w, zv_w, m_w, vid, want = [], [], [], [], []
    for v, n in enumerate(lengths):
        za, zv = rng.normal(size=(2, n, 4))
        a, m = _windows_of(za, t_win)
        b, _ = _windows_of(zv, t_win)
        za_w.append(a)
        zv_w.append(b)
        m_w.append(m)
        vid += [v] * len(a)
        # reference: for each offset j, the mean of zv[t] . za[t + j] over the frame pairs
        # that lie in one window (windows are scored independently)
        prof = np.zeros(2 * K + 1)
        for j in range(-K, K + 1):
            vals = [b[w, s] @ a[w, s + j] for w in range(len(a)) for s in range(t_win)
                    if 0 <= s + j < t_win and m[w, s] and m[w, s + j]]
            prof[j + K] = np.mean(vals)
        want.append(prof)
    za, zv, mask = (jnp.asarray(np.concatenate(x)) for x in (za_w, zv_w, m_w))
    sims, valid = offset_similarity(za, zv, mask, K)
    aux = Baseline.aux_outputs(None, {"sync": sims, "sync_valid": valid}, mask)
    ids, got = ev.pool_sync(np.array(vid), np.asarray(aux["sync_sum"]),
                            np.asarray(aux["sync_count"]))
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-6)
    # windows of a clip in any order pool to the same profile
    perm = np.random.default_rng(1).permutation(len(vid))
    _, again = ev.pool_sync(np.array(vid)[perm], np.asarray(aux["sync_sum"])[perm],
                            np.asarray(aux["sync_count"])[perm])
    np.testing.assert_allclose(again, got, rtol=1e-12)
    with pytest.raises(ValueError, match="sync_sum"):
        ev.pool_sync(np.array(vid), np.zeros((len(vid), 3)), np.zeros((len(vid), 4)))


def test_sync_statistics_against_numpy_on_hand_made_profiles():
    offsets = np.arange(-K, K + 1)
    synced = 0.6 - 0.1 * np.abs(offsets)             # peak at offset 0
    shifted = 0.6 - 0.1 * np.abs(offsets - 2)        # peak at +2 frames
    flat = np.full(2 * K + 1, 0.3)                   # no synchrony (swapped audio)
    p = np.stack([synced, shifted, flat])
    tau = 0.2
    got = ev.sync_statistics(p, tau)
    for i, row in enumerate(p):
        others = np.r_[row[:K], row[K + 1:]]
        assert got["neg_sim0"][i] == pytest.approx(-row[K])
        assert got["neg_margin"][i] == pytest.approx(max(others) - row[K])
        lse = np.log(np.sum(np.exp(row / tau)))
        assert got["neg_logp0"][i] == pytest.approx(-(row[K] / tau - lse))
        assert got["neg_conf0"][i] == pytest.approx(sorted(row)[K] - row[K])   # 7 values: median = 4th
        assert got["abs_argmax"][i] == abs(int(np.argmax(row)) - K)
    # every statistic calls the synced profile the least fake
    for name, vals in got.items():
        assert vals[0] < min(vals[1], vals[2]) or name == "neg_sim0", name
    assert got["neg_margin"][1] == pytest.approx(0.2) and got["abs_argmax"][1] == 2


def _records():
    """Two videos, 3 + 2 windows, with profiles and frame counts."""
    rng = np.random.default_rng(2)
    n = 5
    return {"score": rng.normal(size=n), "label": np.array([1, 1, 1, 0, 0]),
            "video_id": np.array([4, 4, 4, 9, 9]), "n_frames": np.array([25, 25, 10, 25, 7.0]),
            "method": np.array([1, 1, 1, 0, 0]),
            "sync_sum": rng.uniform(0, 10, (n, 2 * K + 1)),
            "sync_count": rng.integers(1, 25, (n, 2 * K + 1)).astype(float)}


def _real_records(n_videos: int):
    """``n_videos`` real videos of 2 windows each (the second one partly padded)."""
    rng = np.random.default_rng(n_videos)
    n = 2 * n_videos
    return {"score": rng.normal(size=n), "label": np.zeros(n, np.int64),
            "video_id": np.repeat(np.arange(10, 10 + n_videos), 2),
            "n_frames": np.tile([25.0, 9.0], n_videos), "method": np.zeros(n, np.int64),
            "sync_sum": rng.uniform(0, 10, (n, 2 * K + 1)),
            "sync_count": rng.integers(1, 25, (n, 2 * K + 1)).astype(float)}


def test_clip_score_rules_and_report_rows():
    rec = _records()
    spec = ev.ClipScore(kind="combined", stat="neg_logp0", temperature=0.3,
                        weights=(0.5, 2.0, -0.1))
    got = ev.aggregate_videos(rec, spec)
    for i, v in enumerate((4, 9)):
        s = rec["video_id"] == v
        mean = np.sum(rec["score"][s] * rec["n_frames"][s]) / np.sum(rec["n_frames"][s])
        prof = rec["sync_sum"][s].sum(0) / rec["sync_count"][s].sum(0)
        stat = -(prof[K] / 0.3 - np.log(np.sum(np.exp(prof / 0.3))))
        assert got["window_score"][i] == pytest.approx(mean)
        assert got["sync_stat"][i] == pytest.approx(stat)
        assert got["score"][i] == pytest.approx(0.5 * mean + 2.0 * stat - 0.1)
    only_sync = ev.aggregate_videos(rec, ev.ClipScore(kind="sync", stat="neg_logp0",
                                                      temperature=0.3))
    np.testing.assert_allclose(only_sync["score"], got["sync_stat"])
    plain = ev.aggregate_videos(rec, ev.ClipScore())
    np.testing.assert_allclose(plain["score"], got["window_score"])
    assert "sync_stat" not in plain
    rep = ev.evaluate_records(rec, threshold=0.0, threshold_source="test", clip_score=spec)
    np.testing.assert_allclose(rep["videos"]["score"], got["score"])
    np.testing.assert_allclose(rep["videos"]["window_score"], got["window_score"])
    assert rep["videos"]["method"] == ["1", "0"]     # videos 4, 9 without method names
    named = ev.evaluate_records(rec, threshold=0.0, threshold_source="test", clip_score=spec,
                                method_names=["real", "pf_swap"])
    assert named["videos"]["method"] == ["pf_swap", "real"]
    # errors name the problem
    no_sync = {k: v for k, v in rec.items() if not k.startswith("sync")}
    with pytest.raises(ValueError, match="fusion.kind='sync'"):
        ev.aggregate_videos(no_sync, spec)
    with pytest.raises(ValueError, match="clip_score"):
        ev.ClipScore(kind="median")
    with pytest.raises(ValueError, match="clip_sync_stat"):
        ev.ClipScore(stat="best")


def test_clip_score_from_config_defaults_and_overrides():
    from configs import baseline
    # the real-footage recipe: window mean + clip neg_sim0 + heard phones, weights (and
    # the phones' viseme table) fitted at evaluation
    config = baseline.get_config("tiny,real")
    assert ev.ClipScore.from_config(config) == ev.ClipScore(kind="combined", temperature=0.1,
                                                            fit=True, phones=True)
    config.eval.fit_clip_weights = False
    with pytest.raises(ValueError, match="phone_table must hold 14"):
        ev.ClipScore.from_config(config)          # fixed weights need a fixed table too
    config.eval.phone_sync = False
    config.eval.clip_weights = (1.0, 3.0, 0.5)
    spec = ev.ClipScore.from_config(config)
    assert spec.kind == "combined" and spec.weights == (1.0, 3.0, 0.5) and not spec.fit
    # fitting concerns the combined weights only: the other kinds ignore it (a grid over
    # eval.clip_score needs no second key)
    config.eval.update(clip_score="windows", fit_clip_weights=True, phone_sync=True)
    assert not ev.ClipScore.from_config(config).fit
    assert not ev.ClipScore.from_config(config).phones
    # every other config keeps the window mean
    assert ev.ClipScore.from_config(baseline.get_config("tiny")) == ev.ClipScore()


def test_a_pooled_clip_score_needs_a_model_that_measures_the_profile():
    """Concatenation fusion measures no offset profile: a 'combined' or 'sync' clip score
    is refused when the method is built (before training), naming what to change."""
    from configs import baseline
    from avdetect.errors import ConfigError
    for kind in ("combined", "sync"):
        config = baseline.get_config("tiny,real")
        config.eval.clip_score = kind
        config.model.fusion.kind = "concat"
        with pytest.raises(ConfigError, match="fusion.kind=sync.*clip_score=windows"):
            Baseline(config)
        config.eval.clip_score = "windows"
        Baseline(config)


def test_fitted_weights_standardise_the_real_clips_window_mean_and_sync0():
    rec = _real_records(5)
    spec = ev.ClipScore(kind="combined", fit=True)
    fitted = ev.fit_clip_weights(rec, spec, "split 'train'")
    # NumPy: per video the frame-weighted window mean and minus the pooled offset-0
    # similarity; each standardised by the five clips' mean and (population) std
    means, sync0 = [], []
    for v in np.unique(rec["video_id"]):
        s = rec["video_id"] == v
        means.append(np.sum(rec["score"][s] * rec["n_frames"][s]) / np.sum(rec["n_frames"][s]))
        sync0.append(-rec["sync_sum"][s][:, K].sum() / rec["sync_count"][s][:, K].sum())
    z = sum((np.array(x) - np.mean(x)) / np.std(x) for x in (means, sync0))
    got = ev.aggregate_videos(rec, fitted)["score"]
    np.testing.assert_allclose(got, z, rtol=1e-9, atol=1e-9)
    assert not fitted.fit and fitted.kind == "combined"
    assert fitted.weights_source == "fitted on 5 real clips of split 'train'"
    # the trimmed view is not read: adding trimmed-only windows changes nothing
    trimmed = {k: np.concatenate([v, v]) for k, v in rec.items()}
    trimmed["view"] = np.r_[np.full(len(rec["score"]), 3), np.full(len(rec["score"]), 2)]
    trimmed["score"] = np.r_[rec["score"], rec["score"] + 5.0]
    assert ev.fit_clip_weights(trimmed, spec, "x").weights == pytest.approx(fitted.weights)
    # the report carries the rule and its weights; the Markdown says where they came from
    report = ev.evaluate_records(rec, threshold=0.0, threshold_source="t", clip_score=fitted)
    assert report["clip_score"] == {"kind": "combined", "stat": "neg_sim0",
                                    "weights": list(fitted.weights),
                                    "weights_source": fitted.weights_source}
    assert "fitted on 5 real clips of split 'train'" in ev.report_markdown(report)


def test_fitting_refuses_fakes_too_few_clips_and_constant_terms():
    rec = _real_records(3)
    spec = ev.ClipScore(kind="combined", fit=True)
    fake = dict(rec, label=np.ones_like(rec["label"]))
    with pytest.raises(ValueError, match="split 'a'.*real clips only"):
        ev.fit_clip_weights(fake, spec, "split 'a'")
    one = {k: v[rec["video_id"] == rec["video_id"][0]] for k, v in rec.items()}
    with pytest.raises(ValueError, match="split 'b': 1 real clip"):
        ev.fit_clip_weights(one, spec, "split 'b'")
    flat = dict(rec, score=np.ones_like(rec["score"]))
    with pytest.raises(ValueError, match="split 'c': the window mean is the same"):
        ev.fit_clip_weights(flat, spec, "split 'c'")


def test_fitted_weights_are_read_back_from_a_report():
    spec = ev.ClipScore(kind="combined", fit=True)
    report = {"clip_score": {"kind": "combined", "stat": "neg_sim0", "weights": [2.0, 30.0, 1.5],
                             "weights_source": "fitted on 9 real clips of split 'train'"}}
    got = spec.with_report(report)
    assert got.weights == (2.0, 30.0, 1.5) and not got.fit
    assert got.weights_source == "fitted on 9 real clips of split 'train'"
    # a rule that fits nothing ignores the report; one that fits needs the weights
    fixed = ev.ClipScore(kind="combined", weights=(1.0, 1.0, 0.0))
    assert fixed.with_report(report) is fixed
    with pytest.raises(ValueError, match="W/eval_validation.json: holds no fitted"):
        spec.with_report({"clip_score": {"kind": "windows"}}, "W/eval_validation.json")
    with pytest.raises(ValueError, match="evaluate it first"):
        spec.with_report(None)


# ----------------------------------------------------------------------------------
# The evaluator, the inference path and `avdetect detect` agree
# ----------------------------------------------------------------------------------

WEIGHTS = (0.5, 4.0, 0.25)


def _reference_videos(records, temperature):
    """NumPy: per video (sorted ids), the combined score from window records."""
    out = {}
    for v in np.unique(records["video_id"]):
        s = records["video_id"] == v
        w = records["n_frames"][s].astype(np.float64)
        mean = np.sum(records["score"][s] * w) / np.sum(w)
        prof = records["sync_sum"][s].sum(0) / np.maximum(records["sync_count"][s].sum(0), 1)
        out[v.item()] = WEIGHTS[0] * mean + WEIGHTS[1] * (-prof[len(prof) // 2]) + WEIGHTS[2]
    return out


@pytest.fixture(scope="module")
def sync_workdir(tmp_path_factory):
    """The real recipe's network (SyncFusion, sync loss; mouth + log-mel encoders so no
    landmark stage or Whisper is needed) trained 2 steps on the 'random' dataset by the
    real trainer, with the combined clip score on."""
    from configs import baseline
    from avdetect import train
    config = baseline.get_config("tiny,real,visual=mouth,audio=logmel,data=random")
    config.train.update(steps=2, eval_every=0, ckpt_every=2, log_every=1,
                        async_checkpoints=False, tensorboard=False)
    config.data.update(batch_size=4, random_eval_videos=6)
    config.eval.update(clip_score="combined", clip_sync_stat="neg_sim0", clip_weights=WEIGHTS,
                       fit_clip_weights=False,   # 'random' has no real clips to fit on,
                       phone_sync=False)         # nor audio and lips to hear phones in
    wd = tmp_path_factory.mktemp("clip_sync") / "wd"
    train.train_and_evaluate(config, str(wd))
    return wd


def test_evaluator_report_equals_the_inference_path(sync_workdir):
    from avdetect import detect
    from avdetect.inference import load_model
    model = load_model(sync_workdir)
    report = json.loads((sync_workdir / "eval_test.json").read_text())
    records = detect.score_split(model, "test", progress=False)
    want = _reference_videos(records, 0.1)
    assert sorted(want) == report["videos"]["video_id"]
    np.testing.assert_allclose(report["videos"]["score"], [want[v] for v in sorted(want)],
                               rtol=1e-4, atol=1e-5)
    # the pooled score is not the window mean
    assert not np.allclose(report["videos"]["score"], report["videos"]["window_score"])


def test_detect_scores_a_fixture_clip_by_the_same_rule(sync_workdir, realav_clips):
    from avdetect import contract, detect
    from avdetect.inference import load_model
    from avdetect.preprocess.pipeline import preprocess_video
    model = load_model(sync_workdir)
    clip = next(p for p in realav_clips if p.name == "real_video-retalking_1.mp4")
    res = detect.score_video(clip, model, batch_size=4)
    # reference: the detect path's windows scored one by one, pooled in NumPy
    feats = preprocess_video(clip, face_size=contract.FACE_SIZE_DEFAULT)
    starts = detect.window_plan(feats.num_frames, model.window, model.window)
    wins = detect.cut_windows(feats, model, starts)
    outs = [model.predict({k: v[None] for k, v in w.items()}) for w in wins]
    records = {"score": np.array([o["score"][0] for o in outs]),
               "sync_sum": np.stack([o["sync_sum"][0] for o in outs]),
               "sync_count": np.stack([o["sync_count"][0] for o in outs]),
               "n_frames": np.array([w["frame_mask"].sum() for w in wins]),
               "video_id": np.zeros(len(wins), np.int64)}
    assert res.score == pytest.approx(_reference_videos(records, 0.1)[0], rel=1e-4, abs=1e-5)
    assert [x.score for x in res.windows] == pytest.approx(records["score"].tolist(), rel=1e-4,
                                                           abs=1e-5)
    # an exported file carries the rule and its weights (config) and the pooled outputs
    # (its pre-traced predict): it scores the clip the same way
    from avdetect import export
    path = export.export_model(str(sync_workdir), str(sync_workdir.parent / "sync.msgpack"))
    exported = load_model(path)
    assert exported.config.eval.clip_score == "combined"
    again = detect.score_video(clip, exported, batch_size=4)
    assert set(exported.compile_paths.values()) == {"exported"}
    assert again.score == pytest.approx(res.score, rel=1e-5, abs=1e-5)


def test_combined_weights_standardise_by_train_reals():
    rng = np.random.default_rng(3)
    train = {"label": np.r_[np.zeros(6), np.ones(9)].astype(int),
             "score": rng.normal(2, 3, 15), "neg_sim0": rng.normal(-0.4, 0.05, 15)}
    real = train["label"] == 0
    w = ev.zsum_weights(train["score"][real], train["neg_sim0"][real])
    z = [(train[k] - train[k][real].mean()) / train[k][real].std() for k in ("score", "neg_sim0")]
    np.testing.assert_allclose(w[0] * train["score"] + w[1] * train["neg_sim0"] + w[2], z[0] + z[1],
                               rtol=1e-10, atol=1e-10)
