"""TFDS builder `synthetic_av`: the generated audio-visual deepfake benchmark
(``datasets/synthetic_av/generate.py``), with configs for its preset sizes.

Source clips: ``--manual_dir`` pointing at a folder the generator wrote (holding
``meta_data.csv``), or, without it, the builder runs the generator itself with the
config's preset (``generate.PRESETS[<config>]``, seed 0) into
``<cache_dir>/source/<config>-<preset hash>/`` and reuses that folder on later builds.

Every row of ``meta_data.csv`` (``path,clip_id,split,label,category,method,identity,
video_fake,audio_fake,sync_fake,...``) becomes one example of the split named in its
``split`` column ('val' / 'valid' / 'dev' are written as 'validation'); the columns the
data contract has no field for (sync_fake, ...) are kept in ``attributes``. The teacher
slots are empty unless a teacher is passed to the build (``teacher(features, row)``; the
row carries ``path`` and ``clip_id``, so an oracle teacher can read the generator's
ground-truth ``<clip_id>.npz`` beside the video).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil

import tensorflow_datasets as tfds

from avdetect import contract
from avdetect.data.builder import AVBuilderConfig, AVClipBuilder, manual_dir_of
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

REQUIRED_COLUMNS = ("path", "clip_id", "split", "label", "method", "identity", "video_fake",
                    "audio_fake")
_TRUE = {"1", "true", "yes", "fake"}
# The TFDS / project name of the held-out split used to choose thresholds.
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


@dataclasses.dataclass(eq=False)
class SyntheticAvConfig(AVBuilderConfig):
    preset: str = "tiny"          # key of generate.PRESETS
    seed: int = 0


def _flag(value: str) -> bool:
    return str(value).strip().lower() in _TRUE


def generated_source(cache_dir: str, preset: str, seed: int) -> pathlib.Path:
    """Run the generator for ``preset`` (once) and return its output folder."""
    from datasets.synthetic_av import generate as gen

    if preset not in gen.PRESETS:
        raise ConfigError(f"synthetic_av: unknown preset {preset!r}; "
                          f"known: {sorted(gen.PRESETS)}")
    spec = gen.PRESETS[preset]
    tag = hashlib.sha256(json.dumps([spec, seed], sort_keys=True, default=str).encode()
                         ).hexdigest()[:10]
    out = pathlib.Path(cache_dir) / "source" / f"{preset}-{tag}"
    if (out / "meta_data.csv").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)            # an interrupted generation: start over
    tmp.mkdir(parents=True)
    kwargs = dict(spec) if isinstance(spec, dict) else {"num_clips": int(spec)}
    kwargs.setdefault("seed", seed)
    gen.generate(tmp, **kwargs)
    os.replace(tmp, out)              # publish only a complete folder
    return out


def list_synthetic(root: pathlib.Path) -> Listing:
    """One task per row of the generator's meta_data.csv, in the row's split."""
    meta = root / "meta_data.csv"
    listing = Listing(source_info={"root": str(root)})
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"synthetic_av: {meta} lacks columns {missing}")
        rows = list(reader)
    for line_no, row in enumerate(rows, start=2):
        path = root / row["path"]
        if not path.is_file():
            listing.problems.append(Problem(str(path), "missing_file",
                                            f"listed in meta_data.csv line {line_no} "
                                            "but not found"))
            continue
        split = row["split"].strip()
        split = SPLIT_ALIASES.get(split.lower(), split)
        if not split.replace("_", "").isalnum():
            listing.problems.append(Problem(str(path), "bad_row",
                                            f"line {line_no}: bad split name {split!r}"))
            continue
        video_fake, audio_fake = _flag(row["video_fake"]), _flag(row["audio_fake"])
        stated = (row.get("category") or "").strip()
        if stated in contract.CATEGORIES and stated != contract.category_of(video_fake,
                                                                            audio_fake):
            listing.problems.append(Problem(str(path), "bad_row",
                                            f"line {line_no}: category {stated} contradicts "
                                            f"video_fake={row['video_fake']}, "
                                            f"audio_fake={row['audio_fake']}"))
            continue
        label = int(_flag(row["label"]) or video_fake or audio_fake or
                    _flag(row.get("sync_fake", "0")))
        extra = {k: v for k, v in row.items()
                 if k not in REQUIRED_COLUMNS and k != "category" and k is not None}
        listing.add(ClipTask(
            key=row["clip_id"], path=str(path), rel_path=row["path"], label=label,
            video_fake=video_fake, audio_fake=audio_fake, method=row["method"] or "real",
            identity=row["identity"], attributes=extra,
            row={**row, "path": str(path)}), split)
    return listing


class SyntheticAv(AVClipBuilder):
    """The generated benchmark (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = [
        SyntheticAvConfig(name="tiny", preset="tiny", face_size=112,
                          description="The tiny preset: tests and CPU smoke runs."),
        SyntheticAvConfig(name="demo", preset="demo", face_size=112,
                          description="The demo preset."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: --manual_dir pointing at a folder written by "
        "`datasets/synthetic_av/generate.py` (it holds meta_data.csv). Without it the "
        "builder generates the config's preset itself.")
    DESCRIPTION = __doc__

    def _list_clips(self, dl_manager) -> Listing:
        cfg = self.builder_config
        root = manual_dir_of(dl_manager)
        if root is None:
            root = generated_source(self.cache_dir, cfg.preset, cfg.seed)
        elif not (root / "meta_data.csv").is_file():
            raise ConfigError(f"synthetic_av: {root} has no meta_data.csv (not a generator "
                              "output folder)")
        listing = list_synthetic(root)
        listing.source_info.update(preset=cfg.preset, seed=cfg.seed)
        return listing
