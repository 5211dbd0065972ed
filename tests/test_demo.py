"""The demo command, reduced (``--quick``): every stage runs for real (a realtalk subset
built with landmarks and pseudo-fakes, preprocessing of a real clip, training of the
real-footage recipe, evaluation on test identities, export and scoring of real fixture
clips) and a second run reuses them all.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from avdetect import contract, detect, evaluators, phone_sync
from avdetect.inference import load_model
from avdetect.data import metadata, splits
from avdetect.preprocess import contact_sheet

REPO = pathlib.Path(__file__).resolve().parents[1]
REALTALK = REPO.parent / "shared" / "realtalk"


def _demo(out: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               AVDETECT_COMPILE_CACHE=str(out.parent / "jax_cache"))
    return subprocess.run([sys.executable, "-m", "avdetect.demo", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    proc = _demo(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_demo_runs_every_stage(demo_run, realav_dir):
    out, stdout = demo_run
    for i, word in enumerate(("Build", "Preprocess", "Train", "Evaluate", "Export"), start=1):
        assert f"[{i}/5] {word}" in stdout
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["build", "preprocess", "train",
                                                      "evaluate", "detect"]
    assert not any(s["reused"] for s in summary["stages"])

    # 1: the realtalk subset, split by identity as the builder's rule says; its shards
    subset = next((out / "realtalk_subset").iterdir())
    with open(subset / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 13
    for split in ("train", "validation", "test"):
        mine = [r for r in rows if splits.split_of(r["identity"]) == split]
        assert {r["label"] for r in mine} == {"real", "fake"}, split
    build = summary["stages"][0]["info"]
    reals = sum(r["label"] == "real" for r in rows)
    # every clip, plus one pseudo-fake per kind and real clip (none skipped in the subset)
    assert sum(build["written"].values()) + build["skipped"] == len(rows) + 4 * reals

    # 2: the real clip's contact sheet has the size the renderer gives for its frames
    pre = summary["stages"][1]["info"]
    sheet = cv2.imread(pre["contact_sheet"])
    assert sheet is not None
    t = pre["frames"]
    n = len(contact_sheet.sample_indices(t, 16))
    assert sheet.shape[1] == min(8, n) * (128 + 6)           # tiles of 128 px + borders
    assert sheet.shape[0] == -(-n // 8) * (2 * 128 + 16 + 6)  # face over mouth + caption
    assert pre["logmel_shape"] == [contract.MEL_PER_FRAME * t, contract.N_MELS]
    assert pre["mouth_shape"] == [t, contract.MOUTH_SIZE, contract.MOUTH_SIZE]
    assert f"frames (T)    {t}" in stdout

    # 3-4: the trained run and the printed per-method table of the test identities, with
    # the silence-trimmed columns; the summary's AUCs are the report's
    workdir = next((out / "train").iterdir()) / summary["config"].split("/")[1].split(".")[0]
    assert (workdir / "checkpoints" / "8").is_dir()
    report = json.loads((workdir / "eval_test.json").read_text())
    assert report["threshold"]["source"].startswith("chosen on split 'validation'")
    # the demo trains the recipe's final fit (config argument refit): every person outside
    # the test split, so the validation people are training people and the report says so
    assert json.loads((workdir / "config.json").read_text())["data"]["train_split"] == (
        "train+validation")
    assert report["threshold"]["source"].endswith("(a split this run trained on)")
    val_report = json.loads((workdir / "eval_validation.json").read_text())
    assert val_report["video"]["overall"]["n_real"] == sum(
        r["label"] == "real" for r in rows if splits.split_of(r["identity"]) == "validation")
    # the video score is the recipe's combined clip score, its weights fitted on the real
    # clips the run trained on (train + validation): NumPy from the model's own windows
    trained_reals = sum(r["label"] == "real" for r in rows
                        if splits.split_of(r["identity"]) in ("train", "validation"))
    clip = report["clip_score"]
    assert clip["kind"] == "combined" and clip["stat"] == "neg_sim0"
    assert clip["weights_source"].startswith(f"fitted on {trained_reals} real clips of split "
                                             "'train+validation'")
    assert val_report["clip_score"] == clip
    model = load_model(workdir)
    assert model.config.eval.clip_weights == pytest.approx(clip["weights"])
    rec = detect.score_split(model, "train+validation", progress=False)
    means, sync0 = [], []
    for v in np.unique(rec["video_id"][rec["label"] == 0]):
        w = rec["video_id"] == v
        means.append(np.average(rec["score"][w], weights=rec["n_frames"][w]))
        k = rec["sync_sum"].shape[1] // 2
        sync0.append(-rec["sync_sum"][w, k].sum() / rec["sync_count"][w, k].sum())
    assert len(means) == trained_reals
    # ... and the heard-phones term (eval.phone_sync): its viseme table is each class's
    # mean standardised lip opening over those reals (NumPy bincounts over the shards'
    # lips and the cached visemes), its weight the inverse spread of their statistic
    phone = np.array([rec["phone_stat"][rec["video_id"] == v][0]
                      for v in np.unique(rec["video_id"][rec["label"] == 0])])
    expect = [1 / np.std(means), 1 / np.std(sync0),
              -(np.mean(means) / np.std(means) + np.mean(sync0) / np.std(sync0)
                + np.mean(phone) / np.std(phone))]
    np.testing.assert_allclose(clip["weights"], expect, rtol=1e-3, atol=1e-3)
    assert clip["phone_weight"] == pytest.approx(1 / np.std(phone), rel=1e-3)
    assert model.config.eval.phone_table == pytest.approx(clip["phone_table"])
    src, index, _ = metadata.open_split(model.config.data.name, model.config.data.data_dir,
                                        "train+validation")
    cache = phone_sync.VisemeCache(evaluators.phone_cache_dir(model.config))
    total, count = np.zeros(len(clip["phone_table"])), np.zeros(len(clip["phone_table"]))
    for r in np.nonzero(index.label == 0)[0]:
        ex = src[int(r)]
        t = int(ex["num_frames"])
        lips = np.asarray(ex["lips"], np.float64)[:t]
        ratio = (np.linalg.norm(lips[:, 14] - lips[:, 18], axis=1)
                 + np.linalg.norm(lips[:, 13] - lips[:, 19], axis=1)
                 + np.linalg.norm(lips[:, 15] - lips[:, 17], axis=1)) / 3 / (
            np.linalg.norm(lips[:, 0] - lips[:, 6], axis=1) + 1e-6)
        z = (ratio - ratio.mean()) / ratio.std()
        v = cache.visemes(np.asarray(ex["audio"]), t).astype(np.int64)
        total += np.bincount(v.reshape(-1), np.repeat(z, v.shape[1]), minlength=len(total))
        count += np.bincount(v.reshape(-1), minlength=len(total))
    np.testing.assert_allclose(clip["phone_table"], np.where(count > 0, total / np.maximum(
        count, 1), 0), rtol=1e-6, atol=1e-9)
    # the trainer's background prefetch of those visemes (evaluators.PhonePrefetch) lists
    # the trained reals, then the validation and test splits, and writes what recognition
    # gives in the main process
    work = evaluators.phone_eval_records(model.config)
    assert [w[0] for w in work] == ["train+validation", "validation", "test"]
    assert len(work[0][1]) == trained_reals
    fresh = out.parent / "prefetch_cache"
    phone_sync.warm_cache(model.config.data.name, model.config.data.data_dir,
                          [("test", work[2][1][:2])], str(fresh))
    test_src, _, _ = metadata.open_split(model.config.data.name, model.config.data.data_dir,
                                         "test")
    for r in work[2][1][:2]:
        ex = test_src[int(r)]
        np.testing.assert_array_equal(
            phone_sync.VisemeCache(fresh).visemes(np.asarray(ex["audio"]), int(ex["num_frames"])),
            phone_sync.heard_visemes(np.asarray(ex["audio"]), int(ex["num_frames"])))
    assert len(list(fresh.glob("*.npy"))) == 2
    # the prefetch process itself, into an empty cache: it hears every listed record
    cfg = model.config
    cfg.eval.phone_cache_dir = str(out.parent / "prefetch_all")
    prefetch = evaluators.PhonePrefetch(cfg)
    assert prefetch.started and prefetch.join(timeout=600) == 0
    prefetch.stop()
    cache = phone_sync.VisemeCache(cfg.eval.phone_cache_dir)
    for split, ids in work:
        split_src, _, _ = metadata.open_split(cfg.data.name, cfg.data.data_dir, split)
        for r in ids:
            ex = split_src[int(r)]
            assert cache._path(np.asarray(ex["audio"]), int(ex["num_frames"])).exists()
    cfg.eval.phone_sync = False
    assert not evaluators.PhonePrefetch(cfg).started
    test_ids = {r["identity"] for r in rows if splits.split_of(r["identity"]) == "test"}
    assert report["video"]["overall"]["n_real"] == sum(
        r["label"] == "real" for r in rows if r["identity"] in test_ids)
    for method, row in report["video"]["per_method"].items():
        assert f"| manipulation: {method} |" in stdout
        assert summary["test_per_method_auc"][method] == row["auc"]
    assert {"pf_shift", "pf_swap", "pf_reverse"} <= set(report["video"]["per_method"])
    assert "AUC (trimmed)" in stdout

    # 5: the exported model scored the fixture clips; the printed AUC is scikit-learn's
    assert next((out / "model").iterdir()).suffix == ".msgpack"
    scores = json.loads((out / "detect" / "realav_scores.json").read_text())
    entries = scores["entries"]
    assert len(entries) == 4 and all(e["status"] == "scored" for e in entries)
    with open(realav_dir / "manifest.csv", newline="") as f:
        labels = {r["file"]: r["label"] for r in csv.DictReader(f)}
    for e in entries:
        assert e["label"] == labels[e["file"]]
        assert e["verdict"] == ("fake" if e["score"] >= e["threshold"] else "real")
        assert f"| {e['file']} | {e['label']} |" in stdout
    y = [int(e["label"] == "fake") for e in entries]
    assert scores["metrics"]["auc"] == pytest.approx(
        roc_auc_score(y, [e["score"] for e in entries]))


def test_second_run_reuses_every_stage(demo_run):
    out, first = demo_run
    proc = _demo(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    reused = {s["name"]: s["reused"] for s in summary["stages"]}
    assert reused == {"build": True, "preprocess": True, "train": True,
                      "evaluate": False, "detect": True}
    # the same table and scores come back
    table = [line for line in first.splitlines() if line.startswith("| manipulation: ")]
    assert table and all(line in proc.stdout for line in table)


def test_clip_selection_and_metrics_match_sklearn():
    from avdetect import demo_stages

    rows = [{"file": f"{lab}_{i}.mp4", "label": lab} for i, lab in
            enumerate(["real", "real", "fake", "real", "fake", "fake"])]
    assert demo_stages.pick_clips(rows, None) == rows
    picked = demo_stages.pick_clips(rows, 4)
    assert [r["file"] for r in picked] == ["real_0.mp4", "real_1.mp4", "fake_2.mp4", "fake_4.mp4"]
    entries = [{"status": "scored", "label": r["label"], "score": s,
                "verdict": "fake" if s >= 0.5 else "real"}
               for r, s in zip(rows, [0.1, 0.7, 0.9, 0.3, 0.6, 0.2])]
    entries.append({"status": "error", "label": "fake", "error": "no_face: ..."})
    m = demo_stages.clip_metrics(entries)
    y = [int(r["label"] == "fake") for r in rows]
    assert m["auc"] == pytest.approx(roc_auc_score(y, [0.1, 0.7, 0.9, 0.3, 0.6, 0.2]))
    assert (m["scored"], m["failed"], m["n_real"], m["n_fake"]) == (6, 1, 3, 3)
    assert m["acc"] == pytest.approx(4 / 6)       # 0.7 (real) and 0.2 (fake) are wrong
    one_class = demo_stages.clip_metrics([e for e in entries[:2]])
    assert one_class["auc"] is None
