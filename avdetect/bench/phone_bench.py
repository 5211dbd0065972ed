"""The heard-phones statistic alone (``avdetect/phone_sync.py``) on a built dataset: no
network, its viseme opening table fitted leave-one-identity-out on the splits' real clips
(each clip is scored with a table that never saw its person), video AUC of the reals
against each manipulation's fakes.

  python -m avdetect.bench.phone_bench --data=realtalk/face112 --data_dir=D \\
      [--splits=train,validation] [--tolerance=2] [--max_offset=15]

The splits default to train + validation: the design choices of METHODS.md 8 ("Heard
phones against the lips") were made on them; the test split was not read for them.
Heard visemes are kept in ``<data_dir>/avdetect_cache/phone_visemes`` (the evaluator's
cache), so a second run costs seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

import numpy as np

from avdetect import phone_sync
from avdetect.data import metadata
from avdetect.evaluation import roc_auc


def clip_inputs(data: str, data_dir: str, splits: Sequence[str], cache: phone_sync.VisemeCache
                ) -> list[dict]:
    """One row per clip of ``splits``: identity, method, label, heard visemes, opening."""
    rows = []
    for split in splits:
        source, index, _ = metadata.open_split(data, data_dir, split)
        items, lips = [], []
        for r in range(len(source)):
            ex = source[r]
            t = int(ex["num_frames"])
            items.append((np.asarray(ex["audio"]), t))
            lips.append(np.asarray(ex["lips"])[:t])
        visemes = cache.visemes_many(items, workers=os.cpu_count() or 1)
        for r, (v, l) in enumerate(zip(visemes, lips)):
            rows.append({"identity": index.identity[r], "method": index.method[r],
                         "label": int(index.label[r]), "visemes": v,
                         "opening": phone_sync.lip_opening(l)})
    return rows


def loio_stats(rows: Sequence[dict], tolerance: int, max_offset: int) -> np.ndarray:
    """Each clip's statistic with a table fitted on the reals of every other identity."""
    out = np.zeros(len(rows))
    tables: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        who = row["identity"]
        if who not in tables:
            tables[who] = phone_sync.fit_opening_table(
                (r["visemes"], r["opening"]) for r in rows
                if r["label"] == 0 and r["identity"] != who)
        out[i] = phone_sync.phone_sync_stat(row["visemes"], row["opening"], tables[who],
                                            max_offset, tolerance)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a built dataset with audio and lips streams")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--splits", default="train,validation")
    p.add_argument("--tolerance", type=int, default=phone_sync.TOLERANCE)
    p.add_argument("--max_offset", type=int, default=phone_sync.MAX_OFFSET)
    a = p.parse_args(argv)
    splits = [s for s in a.splits.split(",") if s]
    t0 = time.perf_counter()
    cache = phone_sync.VisemeCache(os.path.join(a.data_dir, "avdetect_cache", "phone_visemes"))
    rows = clip_inputs(a.data, a.data_dir, splits, cache)
    stat = loio_stats(rows, a.tolerance, a.max_offset)
    label = np.array([r["label"] for r in rows])
    method = np.array([r["method"] for r in rows])
    reals = label == 0
    table = []
    for m in sorted(set(method[~reals])):
        fakes = method == m
        y = np.r_[np.zeros(reals.sum()), np.ones(fakes.sum())]
        table.append((m, f"{reals.sum()}+{fakes.sum()}",
                      f"{roc_auc(y, np.r_[stat[reals], stat[fakes]]):.3f}"))
    y = label.astype(int)
    table.append(("all", f"{reals.sum()}+{(~reals).sum()}", f"{roc_auc(y, stat):.3f}"))
    print(f"heard phones vs lips on {a.data} {'+'.join(splits)} (tolerance {a.tolerance}, "
          f"offsets +-{a.max_offset}; table fitted leave-one-identity-out; "
          f"{time.perf_counter() - t0:.0f} s)")
    print("| manipulation | reals + fakes | AUC |\n|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
