"""TFDS builder `realav`: the real talking-face fixture clips of ../shared/fixtures/realav
(6 real videos and 10 lip-sync / talking-head fakes made from them by public tools), as
one 'test' split. For tests and demos of the real-video path, not for benchmarking.

Source folder: ``--manual_dir`` if given, else ``../shared/fixtures/realav`` beside the
repository. It must hold ``manifest.csv`` (columns ``file,label,category,source_repo,
source_path,...``) and the listed ``.mp4`` files.

Labels: ``label`` from the manifest; the fakes keep their recorded speech (the driving
audio), so they are FVRA (fake video, real audio); method = the generating tool as
named in the file name (``fake_<repo>_<method>_<n>.mp4``), 'real' for real clips.
Identity is unknown ('').
"""

from __future__ import annotations

import csv
import pathlib

import tensorflow_datasets as tfds

from avdetect.data.builder import AVClipBuilder, face_size_configs, manual_dir_of
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "realav"


def method_of(file_name: str, label: str) -> str:
    """'fake_video-retalking_enet_1.mp4' -> 'enet'; real clips -> 'real'."""
    if label == "real":
        return "real"
    stem = file_name.rsplit(".", 1)[0]
    parts = stem.split("_")
    # fake_<repo>_<method>_<n>: the method is the part before the trailing number
    return parts[-2] if len(parts) >= 4 and parts[-1].isdigit() else stem


class Realav(AVClipBuilder):
    """The real talking-face fixture clips as a tiny TFDS dataset (split 'test')."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = face_size_configs()
    DESCRIPTION = __doc__
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: pass --manual_dir to a folder laid out like ../shared/fixtures/realav "
        "(manifest.csv + the listed .mp4 files); the default is that folder.")

    def _list_clips(self, dl_manager) -> Listing:
        root = self._source_dir(dl_manager)
        listing = Listing(source_info={"root": str(root)})
        with open(root / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            path = root / row["file"]
            label = row["label"].strip().lower()
            if label not in ("real", "fake"):
                listing.problems.append(Problem(
                    str(path), "bad_label", f"manifest label {row['label']!r} is not real/fake"))
                continue
            if not path.is_file():
                listing.problems.append(Problem(str(path), "missing_file",
                                                "listed in manifest.csv but not found"))
                continue
            fake = label == "fake"
            key = row["file"].rsplit(".", 1)[0]
            listing.add(ClipTask(
                key=key, path=str(path), rel_path=row["file"], label=int(fake),
                video_fake=fake, audio_fake=False, method=method_of(row["file"], label),
                identity="",
                attributes={k: row.get(k, "") for k in ("category", "source_repo",
                                                         "source_path", "crop")},
                row=row), "test")
        listed = {r["file"] for r in rows}
        for p in sorted(root.glob("*.mp4")):
            if p.name not in listed:
                listing.problems.append(Problem(str(p), "not_in_manifest",
                                                "video file not listed in manifest.csv"))
        return listing

    def _source_dir(self, dl_manager) -> pathlib.Path:
        root = manual_dir_of(dl_manager) or DEFAULT_DIR
        if not (root / "manifest.csv").is_file():
            raise ConfigError(f"realav: {root} has no manifest.csv. "
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return root
