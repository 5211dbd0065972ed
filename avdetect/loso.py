r"""Leave-one-source-out (LOSO): does the detector learn the fake, or the source's look?

The clips of one source repository share lighting, codec and background, and realtalk's
identity-disjoint splits do not keep a source out of training: a model may score a
source's test clips by their look. For each held-out source s the protocol trains the
config with ``config.data.train_exclude_sources = (s,)`` (s's clips and the build-time
pseudo-fakes made from them never reach training) and compares it with the same config
trained on everything (the reference), on the same clips::

    python -m avdetect.loso --config=configs/baseline.py:tiny,real \
        --data=realtalk/face112 --data_dir=D --workdir=W [--steps=2000] \
        [--sources=X-LANCE/AniTalker,rizkiarm/LipNet] [--top=4] [--set KEY=VALUE]

Without ``--sources`` the held-out sources are the ``--top`` largest sources of fakes and
of reals (clips of the corpus per source and label, over every split; pseudo-fakes not
counted). A source in both lists is trained out once and reported in both roles.

Figures (video AUC; every row states its clip counts):

* fake source s: s's generated fakes against every real clip of the test split;
* real source s: s's real clips against every generated fake of the test split, and
  against the pseudo-fakes made from s's own clips (can the detector tell an unseen
  source's reals from manipulations of the same footage?).

Each is given three times: on s's test-split clips only (the honest held-out figure:
people never seen in training under either model), on its validation + test clips (people
neither model trained on either: more clips where a source has few test ones), and on all
of s's clips in every split. With s excluded, every clip of s is unseen by the held-out
model; the reference model trained on s's train-split clips, so its all-clips figure is
partly on seen clips - the gap shows what having seen the source is worth. The counterpart clips (test reals, test fakes) are
identity-disjoint from training in both models. The threshold-free AUC needs no
validation split, so validation is never filtered (its own clips of s stay there).

Runs are reused when the command is repeated (``protocols.train_once``); the per-video
scores of every split are cached beside each run (``videos.json``). The table is written
to ``<workdir>/loso.md`` and ``<workdir>/loso.json``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from avdetect import evaluation, protocols
from avdetect.config_specs import apply_overrides, bind_dataset, load_config
from avdetect.data import metadata
from avdetect.data.pseudo_fakes import KINDS as PSEUDO_FAKE_KINDS
from avdetect.errors import ConfigError

SPLITS = ("train", "validation", "test")
TEST = "test"
ROLES = ("fake", "real")
REFERENCE = "reference"
VIDEOS_FILE = "videos.json"


# ----------------------------------------------------------------------------------
# Clips and their scores
# ----------------------------------------------------------------------------------

def clip_rows(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every clip of the built dataset: split, record index, source, identity, label,
    method and whether it is a build-time pseudo-fake (from the metadata's per-split
    index)."""
    index = meta.get("index") or {}
    rows = []
    for split in SPLITS:
        if split not in index:
            continue
        cols = index[split]
        if "source" not in cols:
            raise ConfigError("the dataset's index has no 'source' column: rebuild it with "
                              "the current builder (python -m avdetect.data.build ...)")
        identity = cols.get("identity") or [""] * len(cols["label"])
        for i, (src, who, lab, m) in enumerate(zip(cols["source"], identity, cols["label"],
                                                   cols["method"])):
            rows.append({"split": split, "record": i, "source": str(src),
                         "identity": str(who), "label": int(lab), "method": str(m),
                         "pseudo": str(m) in PSEUDO_FAKE_KINDS})
    if not rows:
        raise ConfigError("the dataset's metadata has no index of its splits")
    return rows


def largest_sources(rows: Sequence[Mapping[str, Any]], top: int) -> dict[str, list[str]]:
    """The ``top`` sources with the most clips of each role (pseudo-fakes not counted;
    ties broken by name)."""
    out = {}
    for role, label in (("fake", 1), ("real", 0)):
        counts = collections.Counter(r["source"] for r in rows
                                     if r["label"] == label and not r["pseudo"] and r["source"])
        out[role] = [s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:top]
    return out


def attach_scores(rows: Sequence[Mapping[str, Any]],
                  videos: Mapping[str, Mapping[str, list]]) -> list[dict[str, Any]]:
    """``rows`` with each clip's video-level ``score`` from the per-split ``videos``
    sections of the eval reports (``evaluation.evaluate_records``); the report's label
    must match the index (the record order of both is the split's)."""
    lookup = {}
    for split, v in videos.items():
        for vid, score, label in zip(v["video_id"], v["score"], v["label"]):
            lookup[(split, int(vid))] = (float(score), int(label))
    out = []
    for r in rows:
        key = (r["split"], r["record"])
        if key not in lookup:
            raise ConfigError(f"no score for record {r['record']} of split {r['split']!r}")
        score, label = lookup[key]
        if label != r["label"]:
            raise ConfigError(f"record {r['record']} of split {r['split']!r}: the report's "
                              f"label {label} is not the index's {r['label']}")
        out.append({**r, "score": score})
    return out


# ----------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------

def _auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """AUC of fakes ``pos`` against reals ``neg`` (None without both classes)."""
    if not len(pos) or not len(neg):
        return None
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return evaluation.roc_auc(labels, np.r_[pos, neg])


def held_out_figures(rows: Sequence[Mapping[str, Any]], source: str, role: str
                     ) -> dict[str, Any]:
    """The figures of one source in one role (module docstring) from scored ``rows``:
    ``{'<view>': {'auc', 'n_source', 'n_other'}}`` for the views 'test', 'val_test' and
    'all' (and
    'own_pf_test' / 'own_pf_all' for a real source), plus the source's clip counts per
    split."""
    if role not in ROLES:
        raise ConfigError(f"role must be one of {ROLES}, got {role!r}")
    label = 1 if role == "fake" else 0
    mine = [r for r in rows if r["source"] == source and r["label"] == label and not r["pseudo"]]
    if not mine:
        raise ConfigError(f"source {source!r} has no {role} clips in this dataset")
    other = [r["score"] for r in rows if r["split"] == TEST and r["label"] != label
             and not r["pseudo"]]
    out: dict[str, Any] = {"clips": {s: sum(r["split"] == s for r in mine) for s in SPLITS}}

    def fig(src_scores, other_scores):
        pos, neg = (src_scores, other_scores) if role == "fake" else (other_scores, src_scores)
        return {"auc": _auc(pos, neg), "n_source": len(src_scores), "n_other": len(other_scores)}

    test = [r["score"] for r in mine if r["split"] == TEST]
    every = [r["score"] for r in mine]
    unseen_people = [r["score"] for r in mine if r["split"] != "train"]
    out["test"], out["all"] = fig(test, other), fig(every, other)
    out["val_test"] = fig(unseen_people, other)
    if role == "real":
        own = [r for r in rows if r["source"] == source and r["pseudo"]]
        out["own_pf_test"] = fig(test, [r["score"] for r in own if r["split"] == TEST])
        out["own_pf_all"] = fig(every, [r["score"] for r in own])
    return out


# ----------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------

def _folder(source: str) -> str:
    return "without_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in source)


def video_scores(config: ml_collections.ConfigDict, workdir: str, data: str,
                 data_dir: str | None) -> dict[str, dict[str, list]]:
    """Per-video scores of every split by the run's latest checkpoint (the reports'
    ``videos`` sections), cached in ``<workdir>/videos.json`` for this config."""
    path = os.path.join(workdir, VIDEOS_FILE)
    key = config.to_json_best_effort(sort_keys=True)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("config") == key:
            return cached["videos"]
    cfg = copy.deepcopy(config)
    if "eval" in cfg:
        cfg.eval.trim_silence = False   # the AUCs here need the as-is view only
    tests = [f"{data}:{s}" for s in SPLITS]
    reports = protocols.evaluate_tests(cfg, workdir, tests, data_dir)
    videos = {s: reports[t]["videos"] for s, t in zip(SPLITS, tests)}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"config": key, "videos": videos}, f)
    os.replace(path + ".tmp", path)
    return videos


def run(config: ml_collections.ConfigDict, data: str, data_dir: str | None, workdir: str,
        sources: Sequence[str] | None = None, top: int = 4, log=print) -> dict[str, Any]:
    """Train the reference and one model per held-out source, score every clip, and
    build the table: ``{'table' (Markdown), 'rows', 'paths'}``."""
    config = bind_dataset(config, data, data_dir)
    rows = clip_rows(metadata.dataset_metadata(data, config.data.data_dir))
    if sources:
        known = {r["source"] for r in rows}
        unknown = sorted(set(sources) - known)
        if unknown:
            raise ConfigError(f"--sources {unknown} are not sources of {data}")
        roles = {role: [s for s in sources if any(
            r["source"] == s and not r["pseudo"] and r["label"] == (1 if role == "fake" else 0)
            for r in rows)] for role in ROLES}
    else:
        roles = largest_sources(rows, top)
    held = list(dict.fromkeys(roles["fake"] + roles["real"]))
    t0 = time.perf_counter()
    scored: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate([REFERENCE] + held):
        cfg = copy.deepcopy(config)
        cfg.data.train_exclude_sources = () if name == REFERENCE else (name,)
        wd = os.path.join(workdir, REFERENCE if name == REFERENCE else _folder(name))
        log(f"[{i + 1}/{len(held) + 1}] {'train on every source' if name == REFERENCE else 'hold out ' + name} -> {wd}")
        _, reused = protocols.train_once(cfg, wd)
        scored[name] = attach_scores(rows, video_scores(cfg, wd, data, config.data.data_dir))
        log(f"      {'reused' if reused else 'trained'}; every split scored")
    table = []
    for role in ROLES:
        for s in roles[role]:
            table.append({"source": s, "role": role,
                          "held_out": held_out_figures(scored[s], s, role),
                          "reference": held_out_figures(scored[REFERENCE], s, role)})
    text = markdown(table, data, config.train.steps)
    os.makedirs(workdir, exist_ok=True)
    paths = (os.path.join(workdir, "loso.md"), os.path.join(workdir, "loso.json"))
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(text)
    with open(paths[1], "w", encoding="utf-8") as f:
        json.dump({"data": data, "steps": config.train.steps, "rows": table,
                   "seconds": round(time.perf_counter() - t0, 1)}, f, indent=1)
    return {"table": text, "rows": table, "paths": paths}


def _cell(f: Mapping[str, Any]) -> str:
    auc = "–" if f["auc"] is None else f"{f['auc']:.3f}"
    return f"{auc} ({f['n_source']}+{f['n_other']})"


def markdown(table: Sequence[Mapping[str, Any]], data: str, steps: int) -> str:
    """The LOSO table: one row per (source, role); 'held out / reference' in each cell."""
    lines = [f"Leave-one-source-out on `{data}` ({steps} steps per run). Video AUC, held-out "
             "model / reference model (trained on every source), (source clips + "
             "counterpart clips). Fake source: its generated fakes vs the test split's "
             "reals; real source: its reals vs the test split's generated fakes, and vs "
             "the pseudo-fakes made from its own clips.", "",
             "| held-out source | role | clips train/val/test | test split | val + test "
             "| all its clips | vs own pseudo-fakes: test | all |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        h, r = row["held_out"], row["reference"]
        c = h["clips"]
        cells = [f"{_cell(h[v])} / {_cell(r[v])}" if v in h else "–"
                 for v in ("test", "val_test", "all", "own_pf_test", "own_pf_all")]
        lines.append(f"| {row['source']} | {row['role']} | {c['train']}/{c['validation']}/"
                     f"{c['test']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avdetect.loso",
                                description="Leave-one-source-out runs (module docstring).")
    p.add_argument("--config", required=True, help="configs/<m>.py[:arg]")
    p.add_argument("--data", required=True, help="dataset NAME[/CONFIG] with a source column")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--workdir", required=True)
    p.add_argument("--sources", default=None, help="comma-separated sources to hold out")
    p.add_argument("--top", type=int, default=4, help="without --sources: the N largest "
                   "sources of fakes and of reals")
    p.add_argument("--steps", type=int, default=None, help="override config.train.steps")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="config override (repeatable)")
    a = p.parse_args(argv)

    def run_from_args() -> dict[str, Any]:
        config = apply_overrides(load_config(a.config), a.overrides)
        if a.steps:
            config.train.steps = int(a.steps)
        sources = [s.strip() for s in a.sources.split(",") if s.strip()] if a.sources else None
        return run(config, a.data, a.data_dir, os.path.abspath(os.path.expanduser(a.workdir)),
                   sources, a.top)
    return protocols.run_command(run_from_args)


if __name__ == "__main__":
    sys.exit(main())
