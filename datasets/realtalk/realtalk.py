"""TFDS builder `realtalk`: 210 short clips of real people speaking and of AI-generated
talking faces (Wav2Lip and variants, AniTalker, SadTalker, EDTalk, MuseTalk, StyleTalk,
DINet, KDTalker, DFDC face-swaps), cut from the demo media of public repositories
(``../shared/realtalk/README.md``). Research use only; never committed to the project.

Source folder: ``--manual_dir`` if given, else ``../shared/realtalk`` beside the
repository. Exact layout::

    <dir>/manifest.csv      columns file,label,method,identity,source_repo,commit,
                            source_path,start,dur,crop,notes,license_note
    <dir>/<file>            every .mp4 the manifest lists (flat folder)

Splits ``train`` / ``validation`` / ``test`` are identity-disjoint: an identity goes to a
split by a stable hash of its tag (:func:`avdetect.data.splits.split_of`, fractions
0.6/0.15/0.25, salt ``avdetect-splits-v1``); the rule, fractions, salt and every split's
identity list are in the dataset metadata under ``source.split``. (The manifest's tags
were given per source repository, so the same face may carry two tags; see its README.)

Labels: ``label`` from the manifest; a fake is video-fake, and audio-fake as well when its
manifest notes name TTS as the audio (``audio_fake``; the others are driven by recorded
speech). ``method`` = the manifest's method (``real`` for reals), ``identity`` = the
manifest's identity tag; the other manifest fields are kept in ``attributes``, and the
split index in the metadata has a ``source`` column (``source_repo``) for
leave-one-source-out runs.

Configs ``face112`` (with build-time pseudo-fakes) and ``nopf``:
:func:`avdetect.data.builder.pseudo_fake_configs`.
"""

from __future__ import annotations

import csv
import pathlib
import re

import tensorflow_datasets as tfds

from avdetect.data import splits as splits_lib
from avdetect.data.builder import AVClipBuilder, manual_dir_of, pseudo_fake_configs
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "realtalk"
MANIFEST = "manifest.csv"
REQUIRED_COLUMNS = ("file", "label", "method", "identity")
ATTRIBUTE_COLUMNS = ("source_repo", "commit", "source_path", "start", "dur", "crop", "notes",
                     "license_note")
_TTS = re.compile(r"\btts\b|edge-tts", re.IGNORECASE)


def audio_is_tts(notes: str) -> bool:
    """A fake whose manifest notes name TTS as its audio has generated audio too."""
    return bool(_TTS.search(notes or ""))


def read_manifest(root: pathlib.Path) -> list[dict[str, str]]:
    """The manifest rows; ConfigError naming the folder when the file or a column is
    missing."""
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"realtalk: {root} has no {MANIFEST}; expected the realtalk folder "
                          f"(manifest.csv + the listed .mp4 files), by default "
                          f"{DEFAULT_DIR}, or pass --manual_dir")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"realtalk: {path} lacks the column(s) {missing}; it has "
                              f"{reader.fieldnames}")
        return list(reader)


class Realtalk(AVClipBuilder):
    """Real and AI-generated talking faces, identity-disjoint train/validation/test."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {"1.0.0": "Real clips and realtalk's generated fakes.",
                     "1.1.0": "Pseudo-fakes of every split's reals (config face112); nopf.",
                     "1.2.0": "face112: pf_rerender (the mouth re-rendered by the synthetic "
                              "generator's renderer, driven by another identity's speech: "
                              "mouth and face crops and lip points); pf_blend blends the "
                              "face crop's mouth square too.",
                     "1.3.0": "Mouth crops steadied by the head's image motion "
                              "(avdetect.preprocess.stabilize; lips and face crops unchanged)."}
    BUILDER_CONFIGS = pseudo_fake_configs()
    DESCRIPTION = __doc__ + pseudo_fake_configs.__doc__
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: pass --manual_dir to a folder laid out like ../shared/realtalk "
        "(manifest.csv + the listed .mp4 files, flat); the default is that folder.")

    FRACTIONS = splits_lib.DEFAULT_FRACTIONS
    SALT = splits_lib.DEFAULT_SALT

    def _list_clips(self, dl_manager) -> Listing:
        root = manual_dir_of(dl_manager) or DEFAULT_DIR
        rows = read_manifest(root)
        listing = Listing(source_info={"root": str(root)})
        for i, row in enumerate(rows, start=2):        # line numbers as in the file
            task = self._task(root, row, i, listing)
            if task is not None:
                listing.add(task, splits_lib.split_of(task.identity, self.FRACTIONS,
                                                      self.SALT))
        listed = {r.get("file", "") for r in rows}
        for p in sorted(root.glob("*.mp4")):
            if p.name not in listed:
                listing.problems.append(Problem(str(p), "not_in_manifest",
                                                f"video file not listed in {MANIFEST}"))
        # Every split exists even when empty (the report names it), in a fixed order.
        listing.splits = {s: listing.splits.get(s, []) for s in self.FRACTIONS}
        listing.source_info["split"] = splits_lib.split_record(
            (t.identity for t in listing.tasks.values()), self.FRACTIONS, self.SALT)
        return listing

    @staticmethod
    def _task(root: pathlib.Path, row: dict[str, str], line: int,
              listing: Listing) -> ClipTask | None:
        file = (row.get("file") or "").strip()
        path = root / file
        label = (row.get("label") or "").strip().lower()
        identity = (row.get("identity") or "").strip()
        where = f"{MANIFEST} line {line}"
        problem = None
        if label not in ("real", "fake"):
            problem = ("bad_label", f"{where}: label {row.get('label')!r} is not real/fake")
        elif not identity:
            problem = ("no_identity", f"{where}: empty identity (splits need one)")
        elif not file or not path.is_file():
            problem = ("missing_file", f"{where}: listed but not found")
        if problem:
            listing.problems.append(Problem(str(path), *problem))
            return None
        fake = label == "fake"
        method = "real" if not fake else (row.get("method") or "").strip() or "unknown"
        return ClipTask(
            key=file.rsplit(".", 1)[0], path=str(path), rel_path=file, label=int(fake),
            video_fake=fake, audio_fake=fake and audio_is_tts(row.get("notes", "")),
            method=method, identity=identity,
            attributes={k: row.get(k, "") for k in ATTRIBUTE_COLUMNS}, row=row)
