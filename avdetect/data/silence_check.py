"""How much a folder of labelled videos can be told apart by digital silence alone.

    python -m avdetect.data.silence_check FOLDER [--csv FILE]

FakeAVCeleb's fakes begin with digital silence and separate from its reals on that alone
(AVH-Align); before trusting a detector on any labelled set, check its leading and
trailing silence per class. Every video's audio is decoded as the dataset build decodes it
(16 kHz mono on the video's time axis, fitted to its 25 fps frames, int16), and
:func:`avdetect.contract.digital_silence` gives its leading/trailing silent frames. The
table: per class and per manipulation (the ``method`` column), how many clips have
leading / trailing silence and the mean run, and the AUC of ``lead + trail`` frames used
as the fake score (a manipulation's row: all reals + its fakes). 0.5 = no silence shortcut.

The CSV (default ``FOLDER/labels.csv``, else ``FOLDER/manifest.csv``) has columns
``file`` (relative to FOLDER), ``label`` (real/fake or 0/1) and optionally ``method``;
``videofolder``'s labels.csv and ``../shared/realtalk/manifest.csv`` both qualify.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
from typing import Sequence

import numpy as np

from avdetect import contract, evaluation
from avdetect.errors import AVDetectError, ConfigError

_LABELS = {"real": 0, "0": 0, "fake": 1, "1": 1}


def clip_silence(path: str | pathlib.Path) -> tuple[int, int, int]:
    """``(lead, trail, T)`` in frames for one video, its audio decoded as the build does."""
    from avdetect.media.decode import load_audio
    from avdetect.media.probe import probe

    info = probe(path)
    n = info.num_frames or None
    audio = contract.to_int16(load_audio(path, num_frames=n, info=info))
    lead, trail = contract.digital_silence(audio)
    return lead, trail, len(audio) // contract.SAMPLES_PER_FRAME


def read_labels(folder: pathlib.Path, csv_path: pathlib.Path | None
                ) -> list[tuple[str, int, str]]:
    """``[(file, label, method)]`` from the CSV (see the module docstring)."""
    if csv_path is None:
        csv_path = next((p for p in (folder / "labels.csv", folder / "manifest.csv")
                         if p.is_file()), None)
        if csv_path is None:
            raise ConfigError(f"{folder}: no labels.csv or manifest.csv; give --csv")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows, start=2):
        label = _LABELS.get(str(row.get("label", "")).strip().lower())
        if not row.get("file") or label is None:
            raise ConfigError(f"{csv_path}, line {i}: needs a file and a label real/fake "
                              f"(got file={row.get('file')!r}, label={row.get('label')!r})")
        method = (row.get("method") or "").strip() or ("real" if label == 0 else "fake")
        out.append((row["file"].strip(), label, method))
    return out


def summarize(labels: np.ndarray, methods: np.ndarray, lead: np.ndarray, trail: np.ndarray
              ) -> list[dict]:
    """One row per class and per manipulation (the labels' ``method`` column; see the
    module docstring)."""
    rows = []
    real = labels == 0
    groups = [("class: real", real), ("class: fake", ~real)] + [
        (f"manipulation: {m}", ~real & (methods == m)) for m in sorted(set(methods[~real]))]
    for name, members in groups:
        keep = real | members
        both = members.any() and (~real & keep).any() and real.any()
        rows.append({
            "group": name, "clips": int(members.sum()),
            "with_lead": int((lead[members] > 0).sum()),
            "mean_lead": float(lead[members].mean()) if members.any() else None,
            "with_trail": int((trail[members] > 0).sum()),
            "mean_trail": float(trail[members].mean()) if members.any() else None,
            "auc": (evaluation.roc_auc(labels[keep], (lead + trail)[keep])
                    if both and name != "class: real" else None),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    def f(x, fmt):
        return "–" if x is None else format(x, fmt)
    lines = ["| group | clips | with leading silence | mean lead (frames) | with trailing "
             "silence | mean trail (frames) | AUC of lead+trail (vs all reals) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['clips']} | {r['with_lead']} | "
                     f"{f(r['mean_lead'], '.1f')} | {r['with_trail']} | "
                     f"{f(r['mean_trail'], '.1f')} | {f(r['auc'], '.3f')} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avdetect.data.silence_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--csv", default=None, help="labels CSV (default FOLDER/labels.csv or "
                   "FOLDER/manifest.csv)")
    a = p.parse_args(argv)
    folder = pathlib.Path(a.folder).expanduser()
    try:
        entries = read_labels(folder, pathlib.Path(a.csv) if a.csv else None)
        spans = [clip_silence(folder / name) for name, _, _ in entries]
    except AVDetectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = np.array([lab for _, lab, _ in entries])
    methods = np.array([m for _, _, m in entries], dtype=object)
    lead, trail = (np.array([s[k] for s in spans]) for k in (0, 1))
    print(f"{len(entries)} clips under {folder}; digital silence = |x| <= 2 int16 steps over "
          "whole 640-sample frames\n")
    print(markdown(summarize(labels, methods, lead, trail)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
