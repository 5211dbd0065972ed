"""Heard phones against the lips (``avdetect/phone_sync.py``, ``config.eval.phone_sync``).

References: the lip opening against a NumPy formula on hand-placed points; the viseme
table against hand-computed class means; the correlation profile against clips built
so that one known offset is a perfect correlation; pocketsphinx's recognition on a real
fixture clip against its own audio shifted, reversed and silenced; the evaluator's
phone term against a NumPy standardisation.
"""

from __future__ import annotations

import numpy as np
import pytest

from avdetect import contract
from avdetect import evaluation as ev
from avdetect import phone_sync as ps
from avdetect.teachers import alphabet

V = alphabet.VISEME_INDEX


def _lips(opening: np.ndarray, width: np.ndarray) -> np.ndarray:
    """[T, 20, 2] points whose three inner pairs are ``opening`` apart and whose corners
    are ``width`` apart (everything else at the origin)."""
    t = len(opening)
    lips = np.zeros((t, contract.NUM_LIPS, 2))
    a, b = contract.LIP_CORNERS
    lips[:, a, 0], lips[:, b, 0] = -width / 2, width / 2
    for u, d in ps.INNER_PAIRS:
        lips[:, u, 1], lips[:, d, 1] = -opening / 2, opening / 2
    return lips


def test_lip_opening_is_the_standardised_inner_gap_over_width():
    rng = np.random.default_rng(0)
    gap, width = rng.uniform(0, 0.3, 40), rng.uniform(0.8, 1.2, 40)
    ratio = gap / width
    got = ps.lip_opening(_lips(gap, width))
    np.testing.assert_allclose(got, (ratio - ratio.mean()) / ratio.std(), atol=1e-5)
    assert np.all(ps.lip_opening(_lips(np.full(5, 0.1), np.ones(5))) == 0)   # a still mouth
    with pytest.raises(ValueError, match="lips must be"):
        ps.lip_opening(np.zeros((5, 19, 2)))


def test_opening_table_is_each_classes_mean_opening():
    v1 = np.array([[V["PBM"]] * 4, [V["AA"]] * 4, [V["AA"], V["AA"], V["sil"], V["sil"]]])
    o1 = np.array([-1.0, 2.0, 0.5])
    v2 = np.array([[V["PBM"]] * 4, [V["IY"]] * 4])
    o2 = np.array([-3.0, 1.0])
    table = ps.fit_opening_table([(v1, o1), (v2, o2)])
    want = np.zeros(ps.NUM_CLASSES)
    want[V["PBM"]] = (4 * -1.0 + 4 * -3.0) / 8
    want[V["AA"]] = (4 * 2.0 + 2 * 0.5) / 6
    want[V["sil"]] = 0.5
    want[V["IY"]] = 1.0
    np.testing.assert_allclose(table, want)
    with pytest.raises(ValueError, match="no real clip"):
        ps.fit_opening_table([])
    with pytest.raises(ValueError, match="cover 3 frames"):
        ps.fit_opening_table([(v1, o2)])


def _speech(t: int, seed: int) -> np.ndarray:
    """Random viseme runs of 2-6 frames, [t, 4]."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < t:
        out += [rng.integers(ps.NUM_CLASSES)] * int(rng.integers(2, 7))
    return np.repeat(np.array(out[:t])[:, None], 4, axis=1)


def test_profile_peaks_at_the_offset_the_expected_opening_was_moved_by():
    table = np.linspace(-1, 1, ps.NUM_CLASSES)
    vis = _speech(150, 1)
    expected = ps.viseme_histogram(vis) @ table
    seen = np.roll(expected, -4)                   # seen[t] = expected[t + 4]
    prof = ps.correlation_profile(seen, expected, 15)
    assert int(np.argmax(prof)) - 15 == 4
    a, b = seen[:150 - 4], expected[4:]
    assert prof[15 + 4] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert prof[15 + 4] == pytest.approx(1.0, abs=1e-9)


def test_stat_is_low_for_lips_that_follow_the_phones_and_high_when_moved():
    rng = np.random.default_rng(2)
    table = np.linspace(-1.5, 1.5, ps.NUM_CLASSES)
    vis = _speech(175, 3)
    seen = ps.viseme_histogram(vis) @ table + rng.normal(0, 0.3, 175)
    in_sync = ps.phone_sync_stat(vis, seen, table)
    moved = ps.phone_sync_stat(np.roll(vis, 10, axis=0), seen, table)       # audio 400 ms late
    other = ps.phone_sync_stat(_speech(175, 4), seen, table)                 # other speech
    assert in_sync < -3.0                   # a clear peak near 0: several profile SDs
    assert moved > in_sync + 2.0 and other > in_sync + 2.0
    # within the tolerance (2 frames) a small offset still counts as in sync
    assert ps.phone_sync_stat(np.roll(vis, 2, axis=0), seen, table) == pytest.approx(
        in_sync, abs=0.5)
    assert ps.phone_sync_stat(vis, np.zeros(175), table) == 0.0              # still mouth
    with pytest.raises(ValueError, match="14 numbers"):
        ps.phone_sync_stat(vis, seen, table[:5])


@pytest.fixture(scope="module")
def fixture_clip(realav_clips):
    """(audio float [N], lips [T, 20, 2]) of a real fixture clip."""
    from avdetect.preprocess.pipeline import preprocess_video
    clip = next(p for p in realav_clips if p.name == "real_video-retalking_1.mp4")
    feats = preprocess_video(clip, face_size=contract.FACE_SIZE_DEFAULT)
    return np.asarray(feats.audio, np.float32), np.asarray(feats.lips), feats.num_frames


def test_heard_visemes_on_a_real_clip_find_speech_and_move_with_the_audio(fixture_clip, tmp_path):
    audio, lips, t = fixture_clip
    vis = ps.heard_visemes(audio, t)
    assert vis.shape == (t, 4) and vis.dtype == np.int32
    speech = np.mean(vis != V["sil"])
    assert speech > 0.5                                   # the speaker talks most of the clip
    assert np.all(ps.heard_visemes(np.zeros_like(audio), t) == V["sil"])
    # the cache gives the same visemes from disk, and as int16 PCM
    cache = ps.VisemeCache(tmp_path)
    first = cache.visemes(audio, t)
    np.testing.assert_array_equal(first, vis)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_array_equal(ps.VisemeCache(tmp_path).visemes(contract.to_int16(audio), t), vis)
    # on its own lips (table fitted on this clip), the real audio is more in sync than the
    # same audio 12 frames (480 ms) late or played backwards
    opening = ps.lip_opening(lips[:t])
    table = ps.fit_opening_table([(vis, opening)])
    real = ps.phone_sync_stat(vis, opening, table)
    late = np.concatenate([np.zeros(12 * contract.SAMPLES_PER_FRAME, np.float32), audio])[:len(audio)]
    for fake in (late, audio[::-1].copy()):
        assert ps.phone_sync_stat(ps.heard_visemes(fake, t), opening, table) > real + 0.5


def _phone_records():
    """Window records of 5 real videos (2 windows each) with a phone statistic."""
    rng = np.random.default_rng(5)
    vid = np.repeat(np.arange(5), 2)
    k = 2 * 3 + 1
    return {"video_id": vid, "label": np.zeros(10, np.int64), "n_frames": np.full(10, 25.0),
            "score": rng.normal(1, 2, 10), "sync_sum": rng.normal(0.3, 0.1, (10, k)) * 25,
            "sync_count": np.full((10, k), 25.0), "phone_stat": np.repeat(rng.normal(-2, 1, 5), 2)}


def test_fitted_weights_add_the_standardised_phone_term():
    rec = _phone_records()
    # (the evaluator fits the viseme table first: the records' phone_stat used it)
    spec = ev.ClipScore(kind="combined", fit=True, phones=True, phone_table=(0.0,) * 14)
    fitted = ev.fit_clip_weights(rec, spec, "test reals")
    videos = ev.aggregate_videos(rec)
    win = videos["score"]
    sync0 = -np.array([rec["sync_sum"][rec["video_id"] == v].sum(0)[3] /
                       rec["sync_count"][rec["video_id"] == v].sum(0)[3] for v in range(5)])
    phone = rec["phone_stat"][::2]
    z = sum((x - x.mean()) / x.std() for x in (win, sync0, phone))
    got = ev.aggregate_videos(rec, fitted)
    np.testing.assert_allclose(got["score"], z, atol=1e-9)
    np.testing.assert_allclose(got["phone_stat"], phone)
    assert fitted.describe()["phone_weight"] == pytest.approx(1 / phone.std())


def test_phone_term_settings_are_checked():
    with pytest.raises(ValueError, match="clip_score='combined'"):
        ev.ClipScore(kind="sync", phones=True)
    with pytest.raises(ValueError, match="phone_table must hold 14"):
        ev.ClipScore(kind="combined", phones=True, phone_table=(1.0, 2.0))
    rec = _phone_records()
    del rec["phone_stat"]
    with pytest.raises(ValueError, match="no 'phone_stat'"):
        ev.aggregate_videos(rec, ev.ClipScore(kind="combined", phones=True,
                                              phone_table=(0.0,) * 14))
    # the trainer and the evaluator read the rule through evaluators.clip_rule: a bad
    # setting is a ConfigError naming the key, before any training or evaluation
    import ml_collections
    from avdetect import evaluators
    from avdetect.errors import ConfigError
    cfg = ml_collections.ConfigDict({"eval": {"clip_score": "combined", "phone_sync": True,
                                              "fit_clip_weights": False}})
    with pytest.raises(ConfigError, match="eval.phone_table must hold 14"):
        evaluators.clip_rule(cfg)
    spec = ev.ClipScore(kind="combined", fit=True, phones=True)
    with pytest.raises(ValueError, match="no fitted phone-sync"):
        spec.with_report({"clip_score": {"kind": "combined", "weights": [1, 1, 0]}}, "r.json")
    back = spec.with_report({"clip_score": {"kind": "combined", "weights": [1, 2, 3],
                                            "phone_weight": 0.5, "phone_table": [0.1] * 14}})
    assert back.phone_weight == 0.5 and back.phone_table == (0.1,) * 14 and not back.fit


def test_worker_processes_recognise_as_the_main_process_does(fixture_clip, tmp_path):
    audio, _, _ = fixture_clip
    n = 25 * contract.SAMPLES_PER_FRAME                   # 1-s pieces of the real clip
    items = [(audio[i * n:(i + 1) * n], 25) for i in range(10)]
    pooled = ps.VisemeCache(tmp_path).visemes_many(items, workers=2)
    assert len(list(tmp_path.glob("*.npy"))) == len({a.tobytes() for a, _ in items})
    for (a, t), got in zip(items, pooled):
        np.testing.assert_array_equal(got, ps.heard_visemes(a, t))


def test_evaluator_gives_trimmed_windows_the_statistic_of_the_trimmed_span():
    import ml_collections
    from avdetect import evaluators
    rng = np.random.default_rng(7)
    table = tuple(np.linspace(-1, 1, ps.NUM_CLASSES))
    t = 90
    vis = [_speech(t, 10), _speech(t, 11)]
    lips = [_lips(rng.uniform(0, 0.3, t), np.ones(t)) for _ in range(2)]
    inputs = {0: (vis[0], lips[0], t), 1: (vis[1], lips[1], t)}
    both, as_is, trimmed = (contract.VIEW_AS_IS | contract.VIEW_TRIMMED, contract.VIEW_AS_IS,
                            contract.VIEW_TRIMMED)
    # video 0 has nothing to trim (one set of windows for both views); video 1 has 10
    # leading and 5 trailing frames of digital silence (its trimmed view has own windows)
    records = {"video_id": np.array([0, 0, 1, 1, 1, 1]),
               "view": np.array([both, both, as_is, as_is, trimmed, trimmed]),
               "trim_lead": np.array([0, 0, 10, 10, 10, 10]),
               "trim_trail": np.array([0, 0, 5, 5, 5, 5]), "score": np.zeros(6)}
    clip = ev.ClipScore(kind="combined", phones=True, phone_table=table)
    out = evaluators.add_phone_stats(records, ml_collections.ConfigDict(), "test", clip, inputs)

    def stat(v, l):
        return ps.phone_sync_stat(v, ps.lip_opening(l), table)
    np.testing.assert_allclose(out["phone_stat"][:4], [stat(vis[0], lips[0])] * 2
                               + [stat(vis[1], lips[1])] * 2)
    np.testing.assert_allclose(out["phone_stat"][4:], stat(vis[1][10:t - 5], lips[1][10:t - 5]))
    assert out["phone_stat"][4] != out["phone_stat"][2]
    # the clip score is unchanged without the phone term
    assert evaluators.add_phone_stats(records, None, "test", ev.ClipScore()) is records


def test_bench_scores_each_clip_with_a_table_that_never_saw_its_person():
    from avdetect.bench import phone_bench
    rng = np.random.default_rng(9)
    rows = [{"identity": who, "label": label, "visemes": _speech(60, seed),
             "opening": rng.normal(size=60)}
            for seed, (who, label) in enumerate([("a", 0), ("a", 1), ("b", 0), ("c", 0)])]
    got = phone_bench.loio_stats(rows, tolerance=2, max_offset=15)
    for i, row in enumerate(rows):
        others = [(r["visemes"], r["opening"]) for r in rows
                  if r["label"] == 0 and r["identity"] != row["identity"]]
        want = ps.phone_sync_stat(row["visemes"], row["opening"], ps.fit_opening_table(others))
        assert got[i] == pytest.approx(want)
    # the person's own real clip never enters its table: a's clips differ from a table
    # fitted on every real
    every = ps.fit_opening_table((r["visemes"], r["opening"]) for r in rows if r["label"] == 0)
    assert got[0] != pytest.approx(ps.phone_sync_stat(rows[0]["visemes"], rows[0]["opening"], every))
