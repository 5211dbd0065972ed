"""Leave-one-source-out figures (avdetect.loso) and the per-video scores of the eval
report they read, checked against NumPy / scikit-learn on hand-made clips."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm

from avdetect import evaluation as ev
from avdetect import loso
from avdetect.errors import ConfigError


def test_report_lists_every_videos_frame_weighted_score():
    rng = np.random.default_rng(0)
    vid = np.repeat(np.arange(5), [3, 1, 4, 2, 2])
    rec = {"score": rng.random(len(vid)), "label": (vid % 2).astype(np.int64),
           "video_id": vid, "n_frames": rng.integers(1, 9, len(vid))}
    rep = ev.evaluate_records(rec, threshold=0.5, threshold_source="fixed")
    got = rep["videos"]
    assert got["video_id"] == [0, 1, 2, 3, 4]
    for v in range(5):
        sel = vid == v
        want = np.sum(rec["score"][sel] * rec["n_frames"][sel]) / np.sum(rec["n_frames"][sel])
        assert got["score"][v] == pytest.approx(want)
        assert got["label"][v] == v % 2
    names = ev.evaluate_records({"score": np.array([0.2, 0.7]), "label": np.array([0, 1]),
                                 "video_id": np.array([b"a", b"b"], dtype=object)},
                                threshold=0.5, threshold_source="fixed")["videos"]
    assert names["video_id"] == ["a", "b"]          # JSON-ready names


def _meta():
    """Three splits; sources 'F' (fakes), 'R' (reals + its pseudo-fakes), 'X' (both)."""
    def split(items):
        return {"source": [s for s, _, _ in items], "label": [lab for _, lab, _ in items],
                "method": [m for _, _, m in items], "video_id": [str(i) for i in range(len(items))]}
    train = [("F", 1, "Wav2Lip"), ("F", 1, "Wav2Lip"), ("R", 0, "real"), ("R", 1, "pf_shift"),
             ("X", 0, "real"), ("X", 1, "EDTalk")]
    val = [("F", 1, "Wav2Lip"), ("R", 0, "real")]
    test = [("F", 1, "Wav2Lip"), ("R", 0, "real"), ("R", 0, "real"), ("R", 1, "pf_swap"),
            ("X", 0, "real"), ("X", 1, "EDTalk"), ("X", 1, "pf_reverse"), ("Y", 0, "real")]
    return {"index": {"train": split(train), "validation": split(val), "test": split(test)}}


def _scored(seed=1):
    rows = loso.clip_rows(_meta())
    rng = np.random.default_rng(seed)
    videos = {}
    for s in loso.SPLITS:
        mine = [r for r in rows if r["split"] == s]
        videos[s] = {"video_id": [r["record"] for r in mine],
                     "score": rng.random(len(mine)).tolist(),
                     "label": [r["label"] for r in mine]}
    return loso.attach_scores(rows, videos)


def test_clip_rows_mark_pseudo_fakes_and_largest_sources_count_corpus_clips():
    rows = loso.clip_rows(_meta())
    assert len(rows) == 16
    assert [r["pseudo"] for r in rows if r["method"].startswith("pf_")] == [True] * 3
    assert not any(r["pseudo"] for r in rows if not r["method"].startswith("pf_"))
    # fakes: F 3 clips, X 1 (pseudo-fakes not counted); reals: R 4, X 2, Y 1
    assert loso.largest_sources(rows, 2) == {"fake": ["F", "X"], "real": ["R", "X"]}


def test_fake_source_figures_match_sklearn():
    rows = _scored()
    got = loso.held_out_figures(rows, "F", "fake")
    test_reals = [r["score"] for r in rows if r["split"] == "test" and r["label"] == 0]
    for view, splits in (("test", {"test"}), ("val_test", {"validation", "test"}),
                         ("all", set(loso.SPLITS))):
        fakes = [r["score"] for r in rows if r["source"] == "F" and r["split"] in splits]
        want = skm.roc_auc_score([1] * len(fakes) + [0] * len(test_reals), fakes + test_reals)
        assert got[view]["auc"] == pytest.approx(want)
        assert (got[view]["n_source"], got[view]["n_other"]) == (len(fakes), 4)
    assert got["clips"] == {"train": 2, "validation": 1, "test": 1}
    assert "own_pf_all" not in got


def test_real_source_figures_match_sklearn():
    rows = _scored(seed=3)
    got = loso.held_out_figures(rows, "R", "real")
    reals = [r["score"] for r in rows if r["source"] == "R" and r["label"] == 0]
    gen_test_fakes = [r["score"] for r in rows if r["split"] == "test" and r["label"] == 1
                      and not r["pseudo"]]              # Wav2Lip of F, EDTalk of X
    want = skm.roc_auc_score([0] * len(reals) + [1] * len(gen_test_fakes), reals + gen_test_fakes)
    assert got["all"]["auc"] == pytest.approx(want)
    assert (got["all"]["n_source"], got["all"]["n_other"]) == (4, 2)
    own = [r["score"] for r in rows if r["source"] == "R" and r["pseudo"]]
    want = skm.roc_auc_score([0] * len(reals) + [1] * len(own), reals + own)
    assert got["own_pf_all"]["auc"] == pytest.approx(want)
    assert got["own_pf_test"]["n_other"] == 1 and got["own_pf_test"]["n_source"] == 2
    assert loso.held_out_figures(rows, "Y", "real")["own_pf_all"]["auc"] is None   # none made


def test_bad_inputs_are_refused():
    rows = _scored()
    with pytest.raises(ConfigError, match="no fake clips"):
        loso.held_out_figures(rows, "R", "fake")
    bad = {s: {"video_id": [r["record"] for r in rows if r["split"] == s],
               "score": [0.0] * sum(r["split"] == s for r in rows),
               "label": [1 - r["label"] for r in rows if r["split"] == s]} for s in loso.SPLITS}
    with pytest.raises(ConfigError, match="is not the index's"):
        loso.attach_scores(loso.clip_rows(_meta()), bad)
    meta = _meta()
    del meta["index"]["test"]["source"]
    with pytest.raises(ConfigError, match="no 'source' column"):
        loso.clip_rows(meta)
