"""Cross-validation over the training identities (avdetect.identity_cv) and the identity
filter it trains with (``config.data.train_exclude_identities``).

References: sklearn's roc_auc_score for the fold figures, NumPy for the filter, and the
pipeline's own batches for "never yields a held-out identity"."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from avdetect import identity_cv, loso
from avdetect.data import pipeline as pl
from avdetect.data.metadata import SplitIndex
from avdetect.errors import ConfigError
from test_pipeline_grain import cfg, make_example, take


def _rows(rng, n_real_ids=7, n_fake_ids=4):
    """Scored clip rows: every real identity has 1-2 real clips and pseudo-fakes of
    several kinds; fake-only identities have generated fakes; a few val/test rows."""
    rows, rec = [], 0
    for i in range(n_real_ids):
        who = f"person{i}"
        for _ in range(1 + i % 2):
            rows.append({"split": "train", "record": rec, "identity": who, "label": 0,
                         "method": "real", "pseudo": False, "score": rng.normal(0, 1)})
            rec += 1
        for kind in identity_cv.SELECT_KINDS + ("pf_blend",):
            rows.append({"split": "train", "record": rec, "identity": who, "label": 1,
                         "method": kind, "pseudo": True, "score": rng.normal(1, 1)})
            rec += 1
    for i in range(n_fake_ids):
        rows.append({"split": "train", "record": rec, "identity": f"avatar{i}", "label": 1,
                     "method": "Wav2Lip", "pseudo": False, "score": rng.normal(0.5, 1)})
        rec += 1
    rows.append({"split": "test", "record": 0, "identity": "person0", "label": 0,
                 "method": "real", "pseudo": False, "score": 9.0})
    return rows


def test_folds_are_disjoint_cover_every_training_identity_and_balance_the_real_people():
    rows = _rows(np.random.default_rng(0))
    folds = identity_cv.identity_folds(rows, 3)
    flat = [i for f in folds for i in f]
    assert len(flat) == len(set(flat))
    assert set(flat) == {r["identity"] for r in rows if r["split"] == "train"}
    real_people = {r["identity"] for r in rows if r["label"] == 0 and r["split"] == "train"}
    per_fold = [len(set(f) & real_people) for f in folds]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == 7
    assert identity_cv.identity_folds(rows, 3) == folds                     # stable
    with pytest.raises(ConfigError, match=">= 2"):
        identity_cv.identity_folds(rows, 1)
    with pytest.raises(ConfigError, match="too few"):
        identity_cv.identity_folds(rows, 8)


def test_fold_figures_are_sklearn_aucs_on_the_folds_training_clips():
    rows = _rows(np.random.default_rng(1))
    fold = ["person1", "person4", "avatar2"]
    got = identity_cv.fold_figures(rows, fold)
    mine = [r for r in rows if r["split"] == "train" and r["identity"] in fold]
    reals = [r for r in mine if r["label"] == 0]

    def ref(fakes):
        y = [0] * len(reals) + [1] * len(fakes)
        return roc_auc_score(y, [r["score"] for r in reals + fakes])
    fakes = [r for r in mine if r["label"] == 1]
    assert got["all"]["auc"] == pytest.approx(ref(fakes))
    assert got["all"]["n_real"] == 3 and got["all"]["n_fake"] == len(fakes)
    shift = [r for r in fakes if r["method"] == "pf_shift"]
    assert got["pf_shift"]["auc"] == pytest.approx(ref(shift)) and got["pf_shift"]["n_fake"] == 2
    gen = [r for r in fakes if not r["pseudo"]]
    assert got["generated"]["auc"] == pytest.approx(ref(gen)) and got["generated"]["n_fake"] == 1
    assert got["pf_freeze"]["auc"] is None                   # no such fakes in the fold


def test_selection_takes_the_best_and_prefers_the_earlier_value_on_a_tie():
    def summary(x):
        return {k: {"mean": x} for k in identity_cv.SELECT_KINDS}
    assert identity_cv.select({"3000": summary(0.80), "6000": summary(0.85)}) == "6000"
    assert identity_cv.select({"3000": summary(0.848), "6000": summary(0.85)}) == "3000"
    assert identity_cv.parse_grid("train.steps=3000,6000") == ("train.steps", ["3000", "6000"])
    assert identity_cv.parse_grid("data.synced_manipulations=(),('W*', \"a,b\"),[1, 2]") == (
        "data.synced_manipulations", ["()", "('W*', \"a,b\")", "[1, 2]"])
    assert identity_cv.parse_grid("train.steps=3000") == ("train.steps", ["3000"])
    for bad in ("train.steps=", "train.steps= , ", "=3000", "train.steps"):
        with pytest.raises(ConfigError, match="at least one value"):
            identity_cv.parse_grid(bad)


def test_run_trains_each_value_without_each_fold_and_scores_its_people(tmp_path, monkeypatch):
    """The orchestration with the trainer and scorer stubbed: every (value, fold) run gets
    the grid value and exactly its fold's identities excluded; the figures come from the
    scores of that run."""
    rng = np.random.default_rng(2)
    rows = _rows(rng)
    clip_index = [{k: r[k] for k in r if k != "score"} for r in rows]
    monkeypatch.setattr(identity_cv, "bind_dataset", lambda c, d, dd: c)
    monkeypatch.setattr(identity_cv.metadata, "dataset_metadata", lambda d, dd: {})
    monkeypatch.setattr(identity_cv.loso, "clip_rows", lambda meta: clip_index)
    seen = []

    def train_once(config, workdir):
        seen.append((int(config.train.steps), tuple(config.data.train_exclude_identities)))
        return {}, False

    def video_scores(config, workdir, data, data_dir):
        # A model that separates better with more steps; scores as the report gives them.
        gain = config.train.steps / 1000.0
        out = {}
        for split in ("train", "test"):
            rs = [r for r in rows if r["split"] == split]
            out[split] = {"video_id": [r["record"] for r in rs], "label": [r["label"] for r in rs],
                          "score": [r["score"] + gain * r["label"] for r in rs]}
        return out
    monkeypatch.setattr(identity_cv.protocols, "train_once", train_once)
    monkeypatch.setattr(identity_cv.loso, "video_scores", video_scores)
    config = ml_collections.ConfigDict({"train": {"steps": 10},
                                        "data": {"data_dir": "/x", "train_exclude_identities": ()}})
    out = identity_cv.run(config, "d", None, str(tmp_path), ("train.steps", ["1000", "4000"]),
                          folds=3, log=lambda *a: None)
    folds = identity_cv.identity_folds(clip_index, 3)
    assert seen == [(s, tuple(f)) for s in (1000, 4000) for f in folds]
    assert out["chosen"] == "4000"
    assert out["summary"]["4000"]["all"]["mean"] > out["summary"]["1000"]["all"]["mean"]
    assert out["summary"]["1000"]["all"]["n_real"] == 10          # every training real
    assert (tmp_path / "identity_cv.md").read_text().count("(chosen)") == 1


def test_select_drops_exactly_the_listed_identities():
    n = 12
    cols = {"video_id": [f"v{v}" for v in range(n)], "num_frames": [8] * n,
            "label": [v % 2 for v in range(n)], "category": [0] * n,
            "method": ["real" if v % 2 == 0 else "wav2lip" for v in range(n)],
            "identity": [f"id{v % 4}" for v in range(n)]}
    index = SplitIndex.from_columns(cols)
    ident = np.array(cols["identity"])
    for drop in [("id1",), ("id0", "id3"), ()]:
        assert index.select(exclude_identities=drop).tolist() == \
            np.flatnonzero(~np.isin(ident, drop)).tolist()


def test_training_pipeline_never_yields_an_excluded_identity():
    source = [make_example(v, 8, "real" if v % 2 == 0 else "wav2lip") for v in range(12)]
    index = SplitIndex.from_examples(source)
    drop = index.identity[0]
    it = iter(pl.build_train_dataset(source, index, cfg(train_exclude_identities=(drop,),
                                                        augment=False), seed=3))
    seen = {int(v) for b in take(it, 9) for v in b["video_id"]}
    expected = {v for v in range(12) if index.identity[v] != drop}
    assert seen == expected and expected != set(range(12))


def test_clip_score_fit_reads_only_the_real_clips_training_reads():
    # eval.fit_clip_weights standardises the clip score on "the training reals": with an
    # identity held out (a cross-validation fold), its real clips must not be among them,
    # nor any fake; the eval batches of that selection hold exactly those videos.
    source = [make_example(v, 8, "real" if v % 3 else "wav2lip") for v in range(12)]
    index = SplitIndex.from_examples(source)
    drop = index.identity[1]
    config = cfg(train_exclude_identities=(drop,), augment=False)
    got = pl.trained_real_records(config, index)
    want = np.flatnonzero((index.label == 0) & (np.array(index.identity) != drop))
    assert got.tolist() == want.tolist() and 0 < len(want) < (index.label == 0).sum()
    batches = pl.eval_batches_from_source(source, index, config, local_batch_size=4,
                                          records=got)
    seen = {int(v) for b in batches for v, ok in zip(b["video_id"], b["valid"]) if ok}
    assert seen == set(want.tolist())
    everyone = cfg(train_exclude_identities=tuple(set(index.identity)), augment=False)
    with pytest.raises(ConfigError, match="keep no real clip"):
        pl.trained_real_records(everyone, index)


def test_clip_rows_carry_the_identity():
    meta = {"index": {"train": {"source": ["a", "b"], "label": [0, 1], "method": ["real", "pf_shift"],
                                "identity": ["p", "q"]}}}
    rows = loso.clip_rows(meta)
    assert [r["identity"] for r in rows] == ["p", "q"] and rows[1]["pseudo"]


def test_cv_errors_averages_runs_and_counts_misordered_pairs(tmp_path):
    # avdetect.bench.cv_errors: several runs' cached fold scores average record by record;
    # a real clip's share is the fraction of its fold's fakes of that kind it outscores
    # (ties half), by hand on four clips.
    from avdetect.bench import cv_errors

    for name, scores in (("a", [0.2, 0.9, 0.4, 0.6]), ("b", [0.4, 0.5, 0.4, 0.2])):
        d = tmp_path / name / "fold0"
        d.mkdir(parents=True)
        videos = {"train": {"video_id": [0, 1, 2, 3], "score": scores, "label": [0, 0, 1, 1]}}
        (d / "videos.json").write_text(json.dumps({"config": "", "videos": videos}))
    avg = cv_errors.fold_scores([str(tmp_path / "a"), str(tmp_path / "b")], 0)
    np.testing.assert_allclose(avg["train"]["score"], [0.3, 0.7, 0.4, 0.4])
    rows = [dict(split="train", record=i, identity="p" if i < 3 else "q", source="s",
                 label=int(i >= 2), method="real" if i < 2 else "pf_swap", pseudo=i >= 2,
                 score=s) for i, s in enumerate([0.3, 0.7, 0.4, 0.4])]
    errs = cv_errors.real_errors(rows, ["p", "q"], "pf_swap")
    assert [(e["record"], e["pairs"], e["share"]) for e in errs] == [(0, 0.0, 0.0), (1, 2.0, 1.0)]
    assert [e["record"] for e in cv_errors.real_errors(rows, ["q"], "pf_swap")] == []
    with pytest.raises(ConfigError, match="no cached scores"):
        cv_errors.fold_scores([str(tmp_path / "missing")], 0)
    # --score: one term of a combined clip score instead of the score itself
    d = tmp_path / "c" / "fold0"
    d.mkdir(parents=True)
    videos = {"train": {"video_id": [0, 1], "score": [1.0, 2.0], "label": [0, 1],
                        "window_score": [0.5, 0.25], "sync_stat": [-0.3, -0.1]}}
    (d / "videos.json").write_text(json.dumps({"config": "", "videos": videos}))
    for column in ("score", "window_score", "sync_stat"):
        got = cv_errors.fold_scores([str(tmp_path / "c")], 0, column)
        assert got["train"]["score"] == videos["train"][column]
    with pytest.raises(ConfigError, match="no 'window_score' column"):
        cv_errors.fold_scores([str(tmp_path / "a")], 0, "window_score")


def test_cross_person_auc_counts_only_pairs_of_two_people():
    # cv_errors.person_pair_auc against scikit-learn on the pairs kept by hand: every
    # (real, fake) pair of different people (or of the same person) as its own 2-clip AUC.
    from sklearn.metrics import roc_auc_score
    from avdetect.bench import cv_errors

    rng = np.random.default_rng(4)
    rows = []
    for i in range(40):
        ident = f"p{i % 5}"
        method = ["real", "pf_swap", "Wav2Lip", "pf_shift"][i % 4]
        rows.append(dict(split="train" if i < 36 else "test", record=i, identity=ident,
                         label=int(method != "real"), method=method,
                         pseudo=method.startswith("pf_"), score=float(rng.integers(0, 4))))
    fold = ["p0", "p1", "p2", "p3"]
    mine = [r for r in rows if r["split"] == "train" and r["identity"] in fold]
    for kind, fake_of in (("pf_swap", lambda r: r["method"] == "pf_swap"),
                          ("generated", lambda r: r["method"] == "Wav2Lip")):
        for same in (False, True):
            pair_aucs = [roc_auc_score([0, 1], [r["score"], f["score"]]) if r["score"] != f["score"]
                         else 0.5
                         for r in mine if r["label"] == 0 for f in mine
                         if fake_of(f) and (f["identity"] == r["identity"]) == same]
            auc, n = cv_errors.person_pair_auc(rows, fold, kind, same)
            assert n == len(pair_aucs) > 0
            assert auc == pytest.approx(np.mean(pair_aucs))
    assert cv_errors.person_pair_auc(rows, ["p4"], "pf_tts", False) == (None, 0)
