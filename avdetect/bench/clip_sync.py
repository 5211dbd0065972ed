"""Clip-level synchrony analysis: does pooling the offset profile over a whole clip
separate shifted / swapped / re-voiced audio from real better than the mean of window
scores? (Issue 12; METHODS.md section 8.)

    python -m avdetect.bench.clip_sync --workdir W [--data_dir D] [--splits train,validation,test]
                                       [--out W/clip_sync] [--stat neg_sim0] [--window T]

For a trained SyncFusion model (``configs/baseline.py:...,real``) it scores every window of
each split (as-is and silence-trimmed views), pools each clip's windows
(:func:`avdetect.evaluation.pool_sync`) and prints, per split and view, the video AUC of
the current clip score (frame-weighted mean of window scores) and of each clip-level sync
statistic (:func:`avdetect.evaluation.sync_statistics`), overall, on all generated
(non-pseudo) fakes at once and per manipulation (all reals of the split + those fakes). Per-clip values go to
``OUT/<split>.npz`` (``score``, ``label``, ``method``, ``profile``; ``t_*`` the trimmed
view). With the train split scored it also fits the 'combined' clip score on the training
clips (:func:`avdetect.evaluation.zsum_weights`, on its real clips), prints its config overrides and a window mean / sync
statistic / combined AUC table per split and view.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from avdetect import contract, evaluation
from avdetect.inference import load_model


def score_windows(model, split: str, data_dir: str | None, batch_size: int = 32
                  ) -> dict[str, np.ndarray]:
    """Valid window records of ``split``: score, sync sums, label, video_id, n_frames,
    method, view (as-is and trimmed windows)."""
    from avdetect.data import pipeline as data_pipeline

    data_cfg = model.config.data.to_dict()
    if data_dir:
        data_cfg["data_dir"] = data_dir
    it = data_pipeline.make_eval_batches(data_cfg, split, local_batch_size=batch_size,
                                         trim_silence=True)
    collector = evaluation.Collector()
    keys = (*model.inputs, "frame_mask")
    for batch in it:
        out = model.predict({k: batch[k] for k in keys if k in batch})
        if "sync_sum" not in out:
            raise SystemExit(f"{model.source['path']}: the model outputs no sync profile "
                             "(model.fusion.kind must be 'sync')")
        rec = {"score": out["score"], "sync_sum": out["sync_sum"],
               "sync_count": out["sync_count"], "label": batch["label"],
               "video_id": batch["video_id"], "n_frames": batch["frame_mask"].sum(-1),
               "valid": batch.get("valid", np.ones(len(batch["label"]), np.int32))}
        for k in ("method", "view"):
            if k in batch:
                rec[k] = batch[k]
        collector.add(rec)
    return collector.records()


def clip_table(records: dict[str, np.ndarray], method_names, temperature: float
               ) -> dict[str, np.ndarray]:
    """Per clip: 'score' (current), 'label', 'method' (names), 'profile', and every sync
    statistic."""
    videos = evaluation.aggregate_videos(records)
    ids, profile = evaluation.pool_sync(records["video_id"], records["sync_sum"],
                                        records["sync_count"])
    assert np.array_equal(ids, videos["video_id"])
    out = {"score": videos["score"], "label": videos["label"], "profile": profile,
           "method": evaluation._names(videos["method"], method_names).astype(str)}
    out.update(evaluation.sync_statistics(profile, temperature))
    return out


def auc_rows(clips: dict[str, np.ndarray], columns: list[str]) -> list[tuple[str, int, int, list]]:
    """(group, #real, #fake, [AUC per column]) overall and per manipulation."""
    y, meth = clips["label"], clips["method"]
    groups = [("overall", np.ones(len(y), bool))]
    generated = (y == 1) & ~np.char.startswith(meth.astype(str), "pf_")
    if generated.any():   # every generated (not pseudo-) fake of the split at once
        groups.append(("generated (all)", (y == 0) | generated))
    groups += [(m, (y == 0) | (meth == m)) for m in sorted(set(meth[y == 1].tolist()))]
    rows = []
    for name, keep in groups:
        aucs = [evaluation.roc_auc(y[keep], clips[c][keep]) for c in columns]
        rows.append((name, int((y[keep] == 0).sum()), int((y[keep] == 1).sum()), aucs))
    return rows


def summary_rows(clips: dict[str, np.ndarray], stat: str, weights) -> list:
    """(group, #real, #fake, AUC window mean, AUC sync statistic, AUC combined)."""
    combined = weights[0] * clips["score"] + weights[1] * clips[stat] + weights[2]
    return auc_rows({**clips, "combined": combined}, ["score", stat, "combined"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--splits", default="validation,test")
    ap.add_argument("--out", default=None)
    ap.add_argument("--stat", default="neg_sim0", choices=evaluation.SYNC_STATS,
                    help="the statistic of the combined score (fitted when train is scored)")
    ap.add_argument("--window", type=int, default=None,
                    help="score with windows of this many frames instead of the trained one")
    args = ap.parse_args(argv)
    model = load_model(args.workdir)
    if args.window:
        with model.config.unlocked():
            model.config.data.window = args.window
    temp = float(model.config.loss.get("sync_temperature", 0.1))
    out_dir = args.out or os.path.join(args.workdir, "clip_sync")
    os.makedirs(out_dir, exist_ok=True)
    cols = ["score", *evaluation.SYNC_STATS]
    tables = {}
    for split in args.splits.split(","):
        rec = score_windows(model, split, args.data_dir)
        saved = {}
        for view, trimmed in (("as-is", False), ("trimmed", True)):
            r = evaluation.view_records(rec, trimmed=trimmed)
            clips = clip_table(r, model.method_names, temp)
            prefix = "t_" if trimmed else ""
            saved.update({prefix + k: v for k, v in clips.items()})
            print(f"\n## {split} ({view}), video AUC", flush=True)
            print("| group | #real | #fake | " + " | ".join(cols) + " |")
            print("|---" * (len(cols) + 3) + "|")
            for name, nr, nf, aucs in auc_rows(clips, cols):
                print(f"| {name} | {nr} | {nf} | " + " | ".join(f"{a:.3f}" for a in aucs) + " |")
        np.savez(os.path.join(out_dir, f"{split}.npz"), **saved)
        tables[split] = saved
    if "train" in tables:
        stat = args.stat
        t = tables["train"]
        real = t["label"] == 0
        try:
            w = evaluation.zsum_weights(t["score"][real], t[stat][real])
        except ValueError as e:
            raise SystemExit(f"{args.workdir}: cannot fit the combined score on the train "
                             f"split: {e}") from e
        print(f"\n## combined score fitted on train clips ({stat}): "
              f"--config.eval.clip_score=combined --config.eval.clip_sync_stat={stat} "
              f"--config.eval.clip_weights='({w[0]:.6g}, {w[1]:.6g}, {w[2]:.6g})'")
        for split, saved in tables.items():
            for view, prefix in (("as-is", ""), ("trimmed", "t_")):
                clips = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)
                         and (prefix or not k.startswith("t_"))}
                print(f"\n### {split} ({view}): window mean | {stat} | combined")
                for name, nr, nf, aucs in summary_rows(clips, stat, w):
                    print(f"| {name} | {nr} | {nf} | " + " | ".join(f"{a:.3f}" for a in aucs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
