"""Metrics against scikit-learn / SciPy / NumPy references, aggregation, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from avdetect import evaluation as ev


def _cases(n_cases: int = 60, seed: int = 0):
    """Random binary problems, with and without tied scores, balanced and not."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_cases:
        n = int(rng.integers(2, 80))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        if y.min() == y.max():
            continue
        s = rng.normal(size=n) + y * rng.uniform(0, 2)
        if len(out) % 2:
            s = np.round(s, 1)          # many ties
        out.append((y, s))
    return out


def _eer_reference(y, s):
    """The common EER recipe: sklearn ROC + interpolation + root finding."""
    fpr, tpr, _ = skm.roc_curve(y, s)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


@pytest.mark.parametrize("case", range(60))
def test_auc_ap_eer_match_references(case):
    y, s = _cases()[case]
    assert ev.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert ev.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert ev.equal_error_rate(y, s)[0] == pytest.approx(_eer_reference(y, s), abs=1e-9)


def test_roc_curve_matches_sklearn_points():
    for y, s in _cases(10, seed=1):
        fpr, tpr, thr = ev.roc_curve(y, s)
        sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)
        assert np.isinf(thr[0]) and np.all(np.diff(thr[1:]) < 0)


def test_accuracy_and_balanced_accuracy_at_threshold_match_sklearn():
    for y, s in _cases(20, seed=2):
        t = float(np.median(s))
        m = ev.binary_metrics(y, s, t)
        pred = (s >= t).astype(int)
        assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["bacc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        assert m["tpr"] == pytest.approx(skm.recall_score(y, pred))
        assert (m["n_real"], m["n_fake"]) == (int((y == 0).sum()), int(y.sum()))


def test_thresholds():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # ROC points: at 0.7 -> FPR 0, FNR 0.25; at 0.6 -> FPR 0.25, FNR 0.25 (the EER point).
    eer, thr = ev.equal_error_rate(y, s)
    assert eer == pytest.approx(0.25) and thr == pytest.approx(0.6)
    # Balanced accuracy is best (0.875) at 0.7 (3/4 fakes, 4/4 reals) and at 0.4
    # (4/4 fakes, 3/4 reals); the first (highest) threshold wins.
    assert ev.max_bacc_threshold(y, s) == pytest.approx(0.7)
    brute = max(((np.mean((s >= t)[y == 1]) + np.mean((s < t)[y == 0])) / 2, t) for t in s)
    assert ev.binary_metrics(y, s, ev.max_bacc_threshold(y, s))["bacc"] == pytest.approx(brute[0])
    assert ev.choose_threshold(y, s, "eer") == thr
    with pytest.raises(ValueError, match="unknown threshold rule"):
        ev.choose_threshold(y, s, "median")


def test_one_class_gives_none_not_nonsense():
    m = ev.binary_metrics([0, 0, 0], [0.1, 0.9, 0.2], 0.5)
    assert m["auc"] is None and m["ap"] is None and m["eer"] is None and m["bacc"] is None
    assert m["acc"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="both real and fake"):
        ev.roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        ev.roc_auc([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        ev.roc_auc([0, 2], [0.2, 0.3])


def _window_records(seed: int = 3, n_videos: int = 30):
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        label = v % 3 != 0
        cat = 0 if not label else 1 + (v // 3) % 3
        meth = 0 if not label else 1 + (v // 3) % 2
        for w in range(int(rng.integers(1, 5))):
            rows.append(dict(video_id=1000 + v, label=int(label), category=cat, method=meth,
                             score=float(rng.normal(label)), n_frames=float(rng.integers(1, 26)),
                             valid=1))
    rows.append(dict(rows[0], score=99.0, valid=0))      # padding: must be ignored
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def test_video_aggregation_is_the_frame_weighted_mean():
    rec = _window_records()
    col = ev.Collector()
    half = len(rec["score"]) // 2
    col.add({k: v[:half] for k, v in rec.items()})
    col.add({k: v[half:] for k, v in rec.items()})
    windows = col.records()
    assert len(windows["score"]) == len(rec["score"]) - 1 and "valid" not in windows
    videos = ev.aggregate_videos(windows)
    for vid, score, label in zip(videos["video_id"], videos["score"], videos["label"]):
        sel = (rec["video_id"] == vid) & (rec["valid"] == 1)
        want = np.sum(rec["score"][sel] * rec["n_frames"][sel]) / np.sum(rec["n_frames"][sel])
        assert score == pytest.approx(want)
        assert label == rec["label"][sel][0]
    bad = dict(windows, label=windows["label"].copy())
    bad["label"][0] = 1 - bad["label"][0]
    with pytest.raises(ValueError, match="different labels"):
        ev.aggregate_videos(bad)


def test_breakdowns_pair_each_group_with_all_reals():
    rec = _window_records()
    rep = ev.evaluate_records(_collected(rec).records(), threshold=0.5,
                              threshold_source="test", split="test",
                              method_names=("real", "m_a", "m_b"))
    videos = ev.aggregate_videos(_collected(rec).records())
    real = videos["label"] == 0
    for name, cat in (("RVFA", 1), ("FVRA", 2), ("FVFA", 3)):
        keep = real | (videos["category"] == cat)
        want = skm.roc_auc_score(videos["label"][keep], videos["score"][keep])
        assert rep["video"]["per_category"][name]["auc"] == pytest.approx(want)
        assert rep["video"]["per_category"][name]["n_real"] == int(real.sum())
    assert rep["video"]["per_category"]["RVRA"]["auc"] is None
    assert rep["video"]["per_category"]["RVRA"]["n"] == int(real.sum())
    keep = real | (videos["method"] == 2)
    assert rep["video"]["per_method"]["m_b"]["ap"] == pytest.approx(
        skm.average_precision_score(videos["label"][keep], videos["score"][keep]))
    assert rep["video"]["overall"]["auc"] == pytest.approx(skm.roc_auc_score(videos["label"], videos["score"]))


def _collected(rec):
    col = ev.Collector()
    col.add(rec)
    return col


def test_threshold_from_validation_is_applied_to_test_and_written(tmp_path):
    val = _window_records(seed=4)
    test = _window_records(seed=5)
    thr = ev.video_threshold(_collected(val).records(), "max_bacc")
    videos = ev.aggregate_videos(_collected(val).records())
    assert thr == pytest.approx(ev.max_bacc_threshold(videos["label"], videos["score"]))
    rep = ev.evaluate_records(_collected(test).records(), threshold=thr,
                              threshold_source="chosen on split 'validation'", split="test")
    tv = ev.aggregate_videos(_collected(test).records())
    assert rep["video"]["overall"]["acc"] == pytest.approx(np.mean((tv["score"] >= thr) == (tv["label"] == 1)))
    json_path, md_path = ev.write_report(rep, tmp_path)
    assert json.loads(open(json_path).read())["threshold"]["value"] == pytest.approx(thr)
    md = open(md_path).read()
    assert "chosen on split 'validation'" in md
    row = next(line for line in md.splitlines() if line.startswith("| video: overall"))
    assert f"{rep['video']['overall']['auc']:.4f}" in row
    assert "| category: RVRA | " in md and "–" in md
    flat = ev.flat_scalars(rep, "eval/test")
    assert flat["eval/test/video_auc"] == pytest.approx(rep["video"]["overall"]["auc"])


def test_string_ids_and_names():
    rec = {"score": np.array([0.1, 0.9, 0.8]), "label": np.array([0, 1, 1]),
           "video_id": np.array([b"a", b"b", b"c"], dtype=object),
           "category": np.array([b"RVRA", b"FVFA", b"RVFA"], dtype=object),
           "method": np.array(["real", "wav2lip", "wav2lip"], dtype=object)}
    rep = ev.evaluate_records(rec, threshold=0.5, threshold_source="fixed")
    assert set(rep["video"]["per_category"]) == {"RVRA", "FVFA", "RVFA"}
    assert rep["video"]["per_method"]["wav2lip"]["n"] == 3
