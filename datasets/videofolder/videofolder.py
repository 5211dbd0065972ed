"""TFDS builder `videofolder`: any folder of videos (your own recordings, a VoxCeleb2 or
LRS3 subset, ...), optionally labelled by a CSV. How a user brings their own footage.

``--manual_dir`` is required and names the folder. Exact layout::

    <dir>/**/<name>.<ext>   videos, found recursively; ext one of mp4, avi, mov, mkv, webm
                            (any case); hidden files and folders are ignored
    <dir>/labels.csv        optional; columns file,label,method,identity
                            (+ optional video_fake, audio_fake as 0/1, source)

- Without ``labels.csv`` every video is a real clip (method ``real``) and its identity is
  the first path component under the folder, e.g. VoxCeleb2's ``id00017/yt_id/00001.mp4``
  -> ``id00017`` (a video directly in the folder is its own identity: its file stem).
- With ``labels.csv``: ``file`` is the path relative to the folder; ``label`` is
  ``real``/``fake`` (or 0/1); ``method`` defaults to ``real`` / ``fake``; an empty
  ``identity`` falls back to the first path component; a fake is video-fake and not
  audio-fake unless the optional columns say otherwise. Rows with a bad label or a
  missing file, and videos the CSV does not list, are listed in the build report
  (never dropped silently); files that cannot be decoded are skipped and listed there
  too.

Splits ``train`` / ``validation`` / ``test`` are identity-disjoint, by the same stable
hash of the identity as ``realtalk`` (:func:`avdetect.data.splits.split_of`; rule,
fractions, salt and identity lists in the metadata under ``source.split``).

Configs ``face112`` (with build-time pseudo-fakes) and ``nopf``:
:func:`avdetect.data.builder.pseudo_fake_configs`.
"""

from __future__ import annotations

import csv
import pathlib

import tensorflow_datasets as tfds

from avdetect.data import splits as splits_lib
from avdetect.data.builder import AVClipBuilder, manual_dir_of, pseudo_fake_configs
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
LABELS_CSV = "labels.csv"
_TRUE = ("1", "true", "yes", "fake")
_FALSE = ("0", "false", "no", "real", "")

EXPECTED = (f"videofolder needs --manual_dir DIR: a folder holding videos "
            f"({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}; searched recursively) and "
            f"optionally {LABELS_CSV} with columns file,label,method,identity (file relative "
            f"to DIR; without the CSV every video is real and its identity is the first path "
            f"component under DIR)")


def find_videos(root: pathlib.Path) -> list[pathlib.Path]:
    """Every video under ``root`` (recursive, sorted), skipping hidden files/folders."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            out.append(p)
    return out


def identity_of(rel: str) -> str:
    """First path component under the folder; a top-level file is its own identity."""
    parts = pathlib.PurePosixPath(rel).parts
    return parts[0] if len(parts) > 1 else pathlib.PurePosixPath(rel).stem


def _flag(value: str | None, default: bool) -> bool | None:
    v = (value or "").strip().lower()
    if not v:
        return default
    return True if v in _TRUE else False if v in _FALSE else None


class Videofolder(AVClipBuilder):
    """A folder of videos (+ optional labels.csv), identity-disjoint train/validation/test."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "First version.",
                     "1.1.0": "face112: pf_rerender (the mouth re-rendered, driven by another "
                              "identity's speech); pf_blend blends the face crop's mouth "
                              "square too.",
                     "1.2.0": "Mouth crops steadied by the head's image motion "
                              "(avdetect.preprocess.stabilize; lips and face crops unchanged)."}
    BUILDER_CONFIGS = pseudo_fake_configs()
    DESCRIPTION = __doc__ + pseudo_fake_configs.__doc__
    MANUAL_DOWNLOAD_INSTRUCTIONS = EXPECTED

    FRACTIONS = splits_lib.DEFAULT_FRACTIONS
    SALT = splits_lib.DEFAULT_SALT

    def _list_clips(self, dl_manager) -> Listing:
        root = manual_dir_of(dl_manager)
        if root is None:
            given = getattr(dl_manager, "_manual_dir", None)
            raise ConfigError(EXPECTED + (f"; {given} is not a folder" if given else
                                          "; none was given"))
        videos = find_videos(root)
        listing = Listing(source_info={"root": str(root)})
        csv_path = root / LABELS_CSV
        if csv_path.is_file():
            self._from_csv(root, csv_path, videos, listing)
            listing.source_info["labels"] = str(csv_path)
        else:
            if not videos:
                raise ConfigError(f"videofolder: no video under {root}. {EXPECTED}")
            for p in videos:
                rel = p.relative_to(root).as_posix()
                self._add(listing, ClipTask(
                    key=rel, path=str(p), rel_path=rel, label=0, video_fake=False,
                    audio_fake=False, method="real", identity=identity_of(rel),
                    attributes={"source": pathlib.PurePosixPath(rel).parts[0]
                                if "/" in rel else ""}))
            listing.source_info["labels"] = "none: every video real"
        listing.splits = {s: listing.splits.get(s, []) for s in self.FRACTIONS}
        listing.source_info["split"] = splits_lib.split_record(
            (t.identity for t in listing.tasks.values()), self.FRACTIONS, self.SALT)
        return listing

    def _add(self, listing: Listing, task: ClipTask) -> None:
        listing.add(task, splits_lib.split_of(task.identity, self.FRACTIONS, self.SALT))

    def _from_csv(self, root: pathlib.Path, csv_path: pathlib.Path,
                  videos: list[pathlib.Path], listing: Listing) -> None:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("file", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"videofolder: {csv_path} lacks the column(s) {missing}; "
                                  f"it has {reader.fieldnames}. {EXPECTED}")
            rows = list(reader)
        listed = set()
        for line, row in enumerate(rows, start=2):
            rel = (row.get("file") or "").strip()
            rel = rel[2:] if rel.startswith("./") else rel
            path = root / rel
            where = f"{LABELS_CSV} line {line}"
            label = (row.get("label") or "").strip().lower()
            fake = {"real": False, "0": False, "fake": True, "1": True}.get(label)
            # a real clip has no fake stream, whatever the optional columns say
            vf = _flag(row.get("video_fake"), True) if fake else False
            af = _flag(row.get("audio_fake"), False) if fake else False
            problem = None
            if fake is None:
                problem = ("bad_label", f"{where}: label {row.get('label')!r} is not "
                                        "real/fake/0/1")
            elif None in (vf, af):
                problem = ("bad_flag", f"{where}: video_fake/audio_fake must be 0/1, got "
                                       f"{row.get('video_fake')!r}/{row.get('audio_fake')!r}")
            elif fake and not (vf or af):
                problem = ("bad_flag", f"{where}: a fake with video_fake=0 and audio_fake=0")
            elif not rel or not path.is_file():
                problem = ("missing_file", f"{where}: {rel!r} not found under {root}")
            elif rel in listed:
                problem = ("duplicate_row", f"{where}: {rel!r} listed twice (first row kept)")
            if problem:
                listing.problems.append(Problem(str(path), *problem))
                continue
            listed.add(rel)
            method = (row.get("method") or "").strip() or ("fake" if fake else "real")
            if not fake:
                method = "real"
            identity = (row.get("identity") or "").strip() or identity_of(rel)
            extra = {k: v for k, v in row.items()
                     if k not in ("file", "label", "method", "identity") and k}
            self._add(listing, ClipTask(
                key=rel, path=str(path), rel_path=rel, label=int(fake), video_fake=bool(vf),
                audio_fake=bool(af), method=method, identity=identity, attributes=extra,
                row=row))
        for p in videos:
            rel = p.relative_to(root).as_posix()
            if rel not in listed and not any(
                    pr.path == str(p) for pr in listing.problems):
                listing.problems.append(Problem(str(p), "not_in_csv",
                                                f"video not listed in {LABELS_CSV}"))
