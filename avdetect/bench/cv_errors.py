"""Where the identity cross-validation's errors sit, and what averaging runs would give.

Reads finished grid values of :mod:`avdetect.identity_cv` (each a folder holding
``fold0 .. fold{k-1}`` with their cached ``videos.json``; nothing is trained or scored
again) and prints

1. the fold-mean AUC of every column for the *mean* of the given runs' video scores (one
   run: its own table row; several: an unweighted score-average ensemble, no refit), and
2. for one manipulation (``--kind``), each held-out real clip's share of that kind's fakes
   in its fold that it outscores (a misordered real / fake pair), worst first, with the
   share of all misordered pairs the listed reals account for;
3. the fold-mean AUC of the selection kinds and the generated fakes over cross-person
   real / fake pairs only (and over same-person pairs): comparable across ``--folds``.

  python -m avdetect.bench.cv_errors --data=realtalk/face112 --data_dir=D \\
      --runs "W/data.real_share=0" ["W2/model.fusion.center=True" ...] [--kind pf_swap] \\
      [--score score|window_score|sync_stat|phone_stat]

``--score`` reads one term of a combined clip score instead of the score itself (runs of
the real-footage recipe keep each term per video): the same fold models scored by the
mean window score alone, by the clip's synchrony alone, or by the heard phones alone.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from avdetect import identity_cv, loso
from avdetect.data import metadata
from avdetect.errors import ConfigError


SCORE_COLUMNS = ("score", "window_score", "sync_stat", "phone_stat")


def fold_scores(runs: Sequence[str], fold: int, column: str = "score"
                ) -> dict[str, dict[str, list]]:
    """The per-split video scores of fold ``fold``, averaged over ``runs`` (same records).
    ``column``: the video score the runs were evaluated with ('score'), or, for runs with
    a clip-pooled score (``eval.clip_score`` 'combined'), one of its terms: the mean
    window score ('window_score'), the clip's synchrony statistic ('sync_stat') or, with
    ``eval.phone_sync``, the heard-phones statistic ('phone_stat')."""
    per_run = []
    for run in runs:
        path = os.path.join(run, f"fold{fold}", loso.VIDEOS_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: no cached scores (run avdetect.identity_cv first)")
        with open(path, encoding="utf-8") as fh:
            per_run.append(json.load(fh)["videos"])
    first = per_run[0]
    for run, videos in zip(runs[1:], per_run[1:]):
        for split, v in first.items():
            if videos[split]["video_id"] != v["video_id"]:
                raise ConfigError(f"{run}: fold {fold} scored other records of {split!r}")
    for run, videos in zip(runs, per_run):
        for split, v in videos.items():
            if column not in v:
                raise ConfigError(f"{run}: fold {fold}'s {split!r} scores have no {column!r} "
                                  "column (only runs evaluated with eval.clip_score='combined' "
                                  "keep the window mean and the synchrony statistic)")
    return {split: {**v, "score": np.mean([r[split][column] for r in per_run], 0).tolist()}
            for split, v in first.items()}


def fold_clips(scored: Sequence[Mapping[str, Any]], fold: Sequence[str]
               ) -> list[Mapping[str, Any]]:
    """The scored training-split clips of ``fold``'s identities (the people its run held
    out)."""
    people = set(fold)
    return [r for r in scored if r["split"] == identity_cv.TRAIN and r["identity"] in people]


def real_errors(scored: Sequence[Mapping[str, Any]], fold: Sequence[str], kind: str
                ) -> list[dict[str, Any]]:
    """Each real training clip of ``fold``'s identities: the fraction of the fold's
    ``kind`` fakes it outscores (ties count half) and that count of misordered pairs."""
    mine = fold_clips(scored, fold)
    fakes = np.array([r["score"] for r in mine if r["method"] == kind])
    out = []
    for r in mine:
        if r["label"] != 0 or not len(fakes):
            continue
        bad = float(np.sum(fakes < r["score"]) + 0.5 * np.sum(fakes == r["score"]))
        out.append({"identity": r["identity"], "source": r["source"], "record": r["record"],
                    "score": r["score"], "pairs": bad, "share": bad / len(fakes)})
    return out


def person_pair_auc(scored: Sequence[Mapping[str, Any]], fold: Sequence[str], kind: str,
                    same: bool) -> tuple[float | None, int]:
    """AUC of ``fold``'s real training clips against its ``kind`` fakes ('generated': every
    non-pseudo fake) over the pairs whose two clips show another person (``same`` False)
    or the same person (True), ties half; and the number of pairs. A fold of fewer people
    holds a larger share of same-person pairs, so the cross-person figure is the one that
    compares across fold counts (a learning curve over the number of training people)."""
    mine = fold_clips(scored, fold)
    reals = [r for r in mine if r["label"] == 0]
    fakes = [r for r in mine if r["label"] == 1 and (
        r["method"] == kind if kind != "generated" else not r["pseudo"])]
    hits = pairs = 0.0
    for r in reals:
        f = np.array([x["score"] for x in fakes if (x["identity"] == r["identity"]) == same])
        pairs += len(f)
        hits += float(np.sum(f > r["score"]) + 0.5 * np.sum(f == r["score"]))
    return (hits / pairs if pairs else None), int(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--runs", nargs="+", required=True, help="grid-value folders to average")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--kind", default="pf_swap", help="the manipulation of the error list")
    p.add_argument("--score", default="score", choices=SCORE_COLUMNS,
                   help="the video score to read (fold_scores): the run's own, or one of the "
                        "combined clip score's terms")
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args(argv)
    rows = loso.clip_rows(metadata.dataset_metadata(a.data, a.data_dir))
    folds = identity_cv.identity_folds(rows, a.folds)
    per_fold, errors = [], []
    kinds = identity_cv.SELECT_KINDS + ("generated",)
    pairs = {(k, same): [] for k in kinds for same in (False, True)}
    for f, ids in enumerate(folds):
        scored = loso.attach_scores(rows, fold_scores(a.runs, f, a.score))
        per_fold.append(identity_cv.fold_figures(scored, ids))
        errors += [{**e, "fold": f} for e in real_errors(scored, ids, a.kind)]
        for k, same in pairs:
            pairs[k, same].append(person_pair_auc(scored, ids, k, same))
    summary = identity_cv.summarise(per_fold)
    crit = np.mean([summary[k]["mean"] for k in identity_cv.SELECT_KINDS])
    print(f"mean score of {len(a.runs)} run(s): " + ", ".join(
        f"{c} {summary[c]['mean']:.3f} ({summary[c]['n_real']}+{summary[c]['n_fake']})"
        for c in identity_cv.COLUMNS if summary[c]["mean"] is not None)
        + f"; selection {crit:.3f}")
    print("fold-mean AUC over cross-person pairs (same-person pairs), pairs summed over folds:")
    for k in kinds:
        cells = []
        for same in (False, True):
            aucs = [x for x, n in pairs[k, same] if x is not None]
            n = sum(n for _, n in pairs[k, same])
            cells.append(f"{np.mean(aucs):.3f} ({n} pairs)" if aucs else f"- ({n} pairs)")
        print(f"  {k:12s} {cells[0]}   ({cells[1]})")
    cross = [np.mean([x for x, _ in pairs[k, False] if x is not None])
             for k in identity_cv.SELECT_KINDS]
    print(f"  selection over cross-person pairs {np.mean(cross):.3f}")
    total = sum(e["pairs"] for e in errors)
    errors.sort(key=lambda e: -e["share"])
    print(f"\nreal clips against {a.kind}: {len(errors)} reals, {total:g} misordered pairs")
    for e in errors[:a.top]:
        print(f"  fold {e['fold']}  {e['identity']:32s} {e['source']:40s} outscores "
              f"{e['share']:.2f} of the fold's {a.kind} fakes")
    shown = sum(e["pairs"] for e in errors[:a.top])
    if total and a.top > 0:
        print(f"the {min(a.top, len(errors))} listed reals: {shown:g} of {total:g} misordered "
              f"pairs ({shown / total:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
