r"""Cross-validation over the training identities: choose a recipe setting on more people.

realtalk's validation split holds 8 real clips, so a setting chosen on it (how many steps,
a loss weight) rests on a handful of people: one real scored high moves its AUC by 1/8.
The training split holds 24 real identities (37 real clips). This protocol deals the
training identities into ``k`` folds and, for every candidate value of one config setting
and every fold, trains without that fold's identities (``config.data.train_exclude_identities``:
their real clips, the build-time pseudo-fakes made from them and their generated fakes
never reach training) and scores the fold's own training-split clips - people that run
never saw. The test split plays no part (each run's trainer writes its usual end-of-run
report of it, which this protocol never opens), so a choice made here is not tuned on it::

    python -m avdetect.identity_cv --config=configs/baseline.py:tiny,real \
        --data=realtalk/face112 --data_dir=D --workdir=W \
        --grid=train.steps=3000,6000 [--folds=3] [--set KEY=VALUE]

One value (``--grid=train.steps=3000``) gives that setting's figures; with ``--folds=k``
each run trains on (k-1)/k of the training people, so the same value at several k is a
learning curve over the number of people (METHODS.md 8).

Folds: identities with real clips are dealt round-robin in the order of a stable hash of
their name (``splits.hash_fraction`` with this module's salt), then the fake-only ones the
same way, so each fold holds about a third of the real people. Figures per fold: video
AUC of the fold's real clips against its fakes - all of them, each build-time pseudo-fake
kind, and the generated (non-pseudo) fakes - then the mean over folds (a pooled AUC would
mix the score scales of different models). Every cell states its clip counts summed over
the folds. A fold's people never reach training as faces; as voices only through the
build-time ``pf_swap`` clips of other training people that took one of them as donor
(the on-the-fly swaps draw donors from the batch, which holds no dropped record).

Selection rule (fixed before any run): the value with the highest fold-mean AUC averaged
over the four audio pseudo-fake kinds of the demo bar (pf_shift, pf_swap, pf_reverse,
pf_tts); a value within 0.005 of the best that comes earlier in ``--grid`` wins (list the
cheaper setting first).

Runs are reused when the command is repeated (``protocols.train_once``). The table is
written to ``<workdir>/identity_cv.md`` and ``<workdir>/identity_cv.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from avdetect import loso, protocols
from avdetect.config_specs import apply_overrides, bind_dataset, load_config
from avdetect.data import metadata, splits
from avdetect.errors import ConfigError

SALT = "avdetect-identity-cv-v1"
TRAIN = "train"
SELECT_KINDS = ("pf_shift", "pf_swap", "pf_reverse", "pf_tts")
COLUMNS = ("all",) + SELECT_KINDS + ("pf_other_sentence", "pf_freeze", "pf_blend",
                                     "pf_rerender", "generated")
TIE = 0.005


def identity_folds(rows: Sequence[Mapping[str, Any]], k: int) -> list[list[str]]:
    """The training split's identities dealt into ``k`` folds (module docstring): those
    with real clips first, round-robin in stable-hash order, then the fake-only ones."""
    if k < 2:
        raise ConfigError(f"--folds must be >= 2, got {k}")
    train = [r for r in rows if r["split"] == TRAIN and r["identity"]]
    with_real = sorted({r["identity"] for r in train if r["label"] == 0},
                       key=lambda i: (splits.hash_fraction(i, SALT), i))
    if len(with_real) < k:
        raise ConfigError(f"the training split has {len(with_real)} identities with real "
                          f"clips: too few for {k} folds")
    fake_only = sorted({r["identity"] for r in train} - set(with_real),
                       key=lambda i: (splits.hash_fraction(i, SALT), i))
    folds: list[list[str]] = [[] for _ in range(k)]
    for j, ident in enumerate(with_real):
        folds[j % k].append(ident)
    for j, ident in enumerate(fake_only):
        folds[j % k].append(ident)
    return folds


def fold_figures(scored: Sequence[Mapping[str, Any]], fold: Sequence[str]
                 ) -> dict[str, dict[str, Any]]:
    """{column: {'auc', 'n_real', 'n_fake'}} on the training-split clips of ``fold``'s
    identities (``scored``: ``loso.attach_scores`` rows)."""
    people = set(fold)
    mine = [r for r in scored if r["split"] == TRAIN and r["identity"] in people]
    reals = [r["score"] for r in mine if r["label"] == 0]
    fakes = [r for r in mine if r["label"] == 1]
    out = {}
    for col in COLUMNS:
        if col == "all":
            pos = [r["score"] for r in fakes]
        elif col == "generated":
            pos = [r["score"] for r in fakes if not r["pseudo"]]
        else:
            pos = [r["score"] for r in fakes if r["method"] == col]
        out[col] = {"auc": loso._auc(pos, reals), "n_real": len(reals), "n_fake": len(pos)}
    return out


def summarise(per_fold: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Fold mean (and min / max) of each column's AUC, clip counts summed over folds."""
    out = {}
    for col in COLUMNS:
        cells = [f[col] for f in per_fold]
        aucs = [c["auc"] for c in cells if c["auc"] is not None]
        out[col] = {"mean": float(np.mean(aucs)) if aucs else None,
                    "min": float(np.min(aucs)) if aucs else None,
                    "max": float(np.max(aucs)) if aucs else None,
                    "folds": len(aucs),
                    "n_real": sum(c["n_real"] for c in cells if c["auc"] is not None),
                    "n_fake": sum(c["n_fake"] for c in cells if c["auc"] is not None)}
    return out


def select(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The chosen value (module docstring's rule) of ``{value: summarise(...)}`` in grid
    order."""
    def criterion(s):
        vals = [s[k]["mean"] for k in SELECT_KINDS]
        if any(v is None for v in vals):
            raise ConfigError("a selection kind has no AUC in some setting: the folds lack "
                              f"one of {SELECT_KINDS}")
        return float(np.mean(vals))
    scores = {v: criterion(s) for v, s in summary.items()}
    best = max(scores.values())
    return next(v for v, c in scores.items() if c >= best - TIE)


def parse_grid(text: str) -> tuple[str, list[str]]:
    """'train.steps=3000,6000' -> ('train.steps', ['3000', '6000']); commas inside
    brackets or quotes belong to their value: "k=(),('a*','b')" -> ['()', "('a*','b')"]."""
    key, sep, values = text.partition("=")
    vals, depth, quote, cur = [], 0, "", ""
    for ch in values:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            vals.append(cur)
            cur = ""
            continue
        cur += ch
    vals = [v.strip() for v in vals + [cur] if v.strip()]
    if not sep or not key.strip() or not vals:
        raise ConfigError(f"--grid wants KEY=V1[,V2,...] with at least one value, got {text!r}")
    return key.strip(), vals


def run(config: ml_collections.ConfigDict, data: str, data_dir: str | None, workdir: str,
        grid: tuple[str, Sequence[str]], folds: int = 3, log=print) -> dict[str, Any]:
    """Train every (value, fold), score, tabulate and select: ``{'table', 'chosen',
    'summary', 'paths'}``."""
    config = bind_dataset(config, data, data_dir)
    rows = loso.clip_rows(metadata.dataset_metadata(data, config.data.data_dir))
    fold_ids = identity_folds(rows, folds)
    key, values = grid
    t0 = time.perf_counter()
    per_value: dict[str, list[dict[str, Any]]] = {}
    n = len(values) * folds
    for a, value in enumerate(values):
        per_value[value] = []
        for f, ids in enumerate(fold_ids):
            cfg = apply_overrides(copy.deepcopy(config), [f"{key}={value}"])
            cfg.data.train_exclude_identities = tuple(ids)
            wd = os.path.join(workdir, f"{key}={value}", f"fold{f}")
            log(f"[{a * folds + f + 1}/{n}] {key}={value}, fold {f} ({len(ids)} identities "
                f"held out) -> {wd}")
            _, reused = protocols.train_once(cfg, wd)
            scored = loso.attach_scores(rows, loso.video_scores(cfg, wd, data,
                                                                config.data.data_dir))
            per_value[value].append(fold_figures(scored, ids))
            log(f"      {'reused' if reused else 'trained'}; every split scored")
    summary = {v: summarise(p) for v, p in per_value.items()}
    chosen = select(summary)
    text = markdown(summary, key, chosen, data, folds, fold_ids)
    os.makedirs(workdir, exist_ok=True)
    paths = (os.path.join(workdir, "identity_cv.md"), os.path.join(workdir, "identity_cv.json"))
    with open(paths[0], "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(paths[1], "w", encoding="utf-8") as fh:
        json.dump({"data": data, "key": key, "values": list(values), "folds": fold_ids,
                   "per_fold": per_value, "summary": summary, "chosen": chosen,
                   "seconds": round(time.perf_counter() - t0, 1)}, fh, indent=1)
    return {"table": text, "chosen": chosen, "summary": summary, "paths": paths}


def markdown(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str, chosen: str,
             data: str, folds: int, fold_ids: Sequence[Sequence[str]]) -> str:
    lines = [f"Cross-validation over the training identities of `{data}`: {folds} folds "
             f"({', '.join(str(len(f)) for f in fold_ids)} identities). Video AUC of each "
             "fold's real clips vs its fakes, mean over folds [min, max] (reals + fakes, "
             "summed over folds). The test split plays no part.", "",
             f"| {key} | " + " | ".join(COLUMNS) + " | selection (mean of "
             + ", ".join(SELECT_KINDS) + ") |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for value, s in summary.items():
        cells = []
        for col in COLUMNS:
            c = s[col]
            cells.append("–" if c["mean"] is None else
                         f"{c['mean']:.3f} [{c['min']:.2f}, {c['max']:.2f}] "
                         f"({c['n_real']}+{c['n_fake']})")
        crit = np.mean([s[k]["mean"] for k in SELECT_KINDS])
        mark = " (chosen)" if value == chosen else ""
        lines.append(f"| {value}{mark} | " + " | ".join(cells) + f" | {crit:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avdetect.identity_cv",
                                description="Cross-validation over the training identities "
                                            "(module docstring).")
    p.add_argument("--config", required=True, help="configs/<m>.py[:arg]")
    p.add_argument("--data", required=True, help="dataset NAME[/CONFIG] with identities")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--workdir", required=True)
    p.add_argument("--grid", required=True,
                   help="KEY=V1[,V2,...]: the setting to choose (one value: its figures)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="config override (repeatable)")
    a = p.parse_args(argv)

    def run_from_args() -> dict[str, Any]:
        config = apply_overrides(load_config(a.config), a.overrides)
        return run(config, a.data, a.data_dir, os.path.abspath(os.path.expanduser(a.workdir)),
                   parse_grid(a.grid), a.folds)
    return protocols.run_command(run_from_args)


if __name__ == "__main__":
    sys.exit(main())
