"""TFDS builder `fakeavceleb`: FakeAVCeleb v1.2 (Khalid et al., NeurIPS 2021 D&B) from a
manually downloaded copy.

Categories (folder = ``type`` column, ``category`` letter):
A RealVideo-RealAudio (RVRA, real), B RealVideo-FakeAudio (RVFA, RTVC voice cloning),
C FakeVideo-RealAudio (FVRA: faceswap, fsgan, wav2lip), D FakeVideo-FakeAudio (FVFA:
faceswap-wav2lip, fsgan-wav2lip, wav2lip, all with RTVC audio). ``method`` is the
``method`` column ('real' for A).

Splits:

* ``train`` / ``validation`` / ``test``: the real videos are split by identity,
  disjointly. ``test`` holds the identities of the correlation-distillation reference
  code's test arrangement (its FAV_{train,test}_REAL_A lists: 99 identities, about 20 % of
  every ethnicity x gender group). ``validation`` (where a decision threshold is chosen)
  holds a seeded ``validation_fraction`` (10 %) of the other identities of every race x
  gender group, ``train`` the rest. Every fake goes to the split of the identity whose
  folder holds it (the ``source`` column), so no real identity of the test or validation
  split is trained on. Config ``face112_reftrain`` has no validation split: its ``train``
  is exactly the reference code's train identities. ``split_scheme='hashed'`` takes a
  seeded 20 % of the identities of every race x gender group as ``test`` instead (for
  other versions of the dataset).
* ``method_<m>`` for every fake method m ('-' becomes '_', e.g. ``method_fsgan_wav2lip``):
  the test-split real videos plus the test-split fakes of method m, a ready evaluation
  set for leave-one-method-out runs (train on ``train`` with
  ``config.data.train_exclude_manipulations=('<m>',)``).

Every meta_data.csv row whose file is missing, every duplicate row and every video file
that no row lists is reported in the build report (never dropped silently).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import pathlib
import re

import tensorflow_datasets as tfds

from avdetect.data.builder import (AVBuilderConfig, AVClipBuilder, face_size_configs,
                                   required_manual_dir)
from avdetect.data.clips import ClipTask, Listing, Problem
from avdetect.errors import ConfigError

TYPES = {   # folder / `type` column -> (category letter, video_fake, audio_fake)
    "RealVideo-RealAudio": ("A", False, False),
    "RealVideo-FakeAudio": ("B", False, True),
    "FakeVideo-RealAudio": ("C", True, False),
    "FakeVideo-FakeAudio": ("D", True, True),
}
META_COLUMNS = ("source", "target1", "target2", "method", "category", "type", "race",
                "gender", "path")
TEST_FRACTION = 0.2

# The 99 real identities of the reference code's test arrangement
# (ljj898/CMDFD-Dataset-and-Deepfake-Detection, csvfile/FAV_test_REAL_A.csv), grouped as
# there by its v1.0 ethnicity names (Indian = Asian (South), Asian = Asian (East),
# American = Caucasian (American), AfricanAmerican = African, European = Caucasian (European)).
REFERENCE_TEST_IDS = frozenset("""
id07200 id07194 id07210 id07768 id07233 id07463 id08314 id08313 id08457 id07195
id07686 id07236 id07051 id07136 id07377 id07049 id07689 id07078 id06752 id07008
id08433 id09125 id09174 id08819 id08402 id09175 id09116 id09181 id09171
id09143 id08261 id09053 id08453 id09121 id09063 id06467 id09064 id06470 id07102
id03525 id04216 id01239 id04034 id04221 id04219 id04073 id03757 id03668 id03678
id03707 id03556 id02464 id03781 id02466 id01245 id01238 id03696 id03605 id01248
id05106 id04736 id04820 id04939 id05252 id05231 id05980 id05235 id05251 id04705
id04727 id02342 id02051 id02268 id01995 id02005 id02494 id02040 id02296 id02316
id03716 id03941 id03620 id03649 id03858 id03844 id03371 id03816 id03651 id03589
id01126 id01099 id01156 id01154 id01123 id01102 id01157 id03205 id01098 id02567
""".split())
assert len(REFERENCE_TEST_IDS) == 99

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request FakeAVCeleb from its authors (https://github.com/DASH-Lab/FakeAVCeleb, Google
form), download and unzip FakeAVCeleb_v1.2, and pass the unzipped folder as --manual_dir
(a folder holding a single FakeAVCeleb_v1.2/ or FakeAVCeleb/ subfolder also works).
Expected layout (as distributed; nothing needs renaming):

  <manual_dir>/
    meta_data.csv
    RealVideo-RealAudio/<race>/<gender>/<id>/<clip>.mp4     e.g. African/men/id00076/00109.mp4
    RealVideo-FakeAudio/<race>/<gender>/<id>/<clip>.mp4
    FakeVideo-RealAudio/<race>/<gender>/<id>/<clip>.mp4
    FakeVideo-FakeAudio/<race>/<gender>/<id>/<clip>.mp4

meta_data.csv has the header `source,target1,target2,method,category,type,race,gender,path,`
where `path` is the file name and the unnamed 10th column its folder
(`FakeAVCeleb/<type>/<race>/<gender>/<source>`; its first component is ignored). Without
that column the folder is <type>/<race>/<gender>/<source>.
"""


@dataclasses.dataclass(eq=False)
class FakeavcelebConfig(AVBuilderConfig):
    split_scheme: str = "reference"     # 'reference' | 'hashed'
    split_seed: int = 0                 # for 'hashed' and the validation draw
    validation_fraction: float = 0.1    # of the non-test identities; 0 = no validation split


def method_split_name(method: str) -> str:
    return "method_" + re.sub(r"\W", "_", method.strip().lower())


def hashed_test_ids(groups: dict[tuple[str, str], set[str]], seed: int,
                    fraction: float = TEST_FRACTION) -> set[str]:
    """A seeded ``fraction`` of the identities of every (race, gender) group."""
    test: set[str] = set()
    for ids in groups.values():
        ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        test.update(ranked[:int(fraction * len(ranked) + 0.5)])   # round half up
    return test


def find_root(manual: pathlib.Path) -> pathlib.Path:
    """The folder holding meta_data.csv: ``manual`` or its single dataset subfolder."""
    if (manual / "meta_data.csv").is_file():
        return manual
    for name in ("FakeAVCeleb_v1.2", "FakeAVCeleb"):
        if (manual / name / "meta_data.csv").is_file():
            return manual / name
    raise ConfigError(f"fakeavceleb: no meta_data.csv in {manual}.\n"
                      f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")


class Fakeavceleb(AVClipBuilder):
    """FakeAVCeleb v1.2 video-level examples (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = [
        *face_size_configs(FakeavcelebConfig, note="reference identity split"),
        FakeavcelebConfig(name="face112_reftrain", face_size=112, validation_fraction=0.0,
                          description="112x112 face crops; train = exactly the reference "
                                      "code's train identities, no validation split."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = __doc__
    HOMEPAGE = "https://github.com/DASH-Lab/FakeAVCeleb"
    CITATION = """@inproceedings{khalid2021fakeavceleb,
  title={FakeAVCeleb: A Novel Audio-Video Multimodal Deepfake Dataset},
  author={Khalid, Hasam and Tariq, Shahroz and Kim, Minha and Woo, Simon S.},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2021}}"""

    def _list_clips(self, dl_manager) -> Listing:
        manual = required_manual_dir(dl_manager, "fakeavceleb", "the unzipped dataset",
                                     MANUAL_DOWNLOAD_INSTRUCTIONS)
        return list_fakeavceleb(find_root(manual), self.builder_config)


def _row_folder(row: dict, extra: list[str]) -> pathlib.PurePosixPath:
    folder = (extra[0] if extra else "").strip().replace("\\", "/")
    if folder:
        parts = pathlib.PurePosixPath(folder).parts
        # 'FakeAVCeleb/<type>/...': drop the leading dataset-name component
        return pathlib.PurePosixPath(*parts[1:]) if parts[0] not in TYPES else \
            pathlib.PurePosixPath(*parts)
    return pathlib.PurePosixPath(row["type"], row["race"], row["gender"], row["source"])


def list_fakeavceleb(root: pathlib.Path, cfg: FakeavcelebConfig) -> Listing:
    """Read meta_data.csv, resolve files, assign splits (see the module docstring)."""
    listing = Listing(source_info={"root": str(root), "split_scheme": cfg.split_scheme,
                                   "split_seed": cfg.split_seed})
    with open(root / "meta_data.csv", newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        missing_cols = [c for c in META_COLUMNS if c not in header]
        if missing_cols:
            raise ConfigError(f"fakeavceleb: {root / 'meta_data.csv'} lacks columns "
                              f"{missing_cols}; header is {header}")
        rows = []
        for line_no, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            row = {c: v.strip() for c, v in zip(header, values) if c}
            extra = [v for c, v in zip(header, values) if not c] + values[len(header):]
            rows.append((line_no, row, extra))

    tasks: list[tuple[ClipTask, str]] = []       # (task, gender-group key) before splitting
    seen: dict[str, int] = {}
    for line_no, row, extra in rows:
        kind = row["type"]
        where = f"meta_data.csv line {line_no}"
        if kind not in TYPES:
            listing.problems.append(Problem(str(root / "meta_data.csv"), "bad_row",
                                            f"{where}: unknown type {kind!r}"))
            continue
        letter, video_fake, audio_fake = TYPES[kind]
        if row["category"] and row["category"] != letter:
            listing.problems.append(Problem(str(root / "meta_data.csv"), "bad_row",
                                            f"{where}: category {row['category']!r} does not "
                                            f"match type {kind!r} ({letter})"))
            continue
        rel = _row_folder(row, extra) / row["path"]
        path = root / rel
        if not path.is_file():
            listing.problems.append(Problem(str(path), "missing_file",
                                            f"listed in {where} but not found"))
            continue
        key = str(rel.with_suffix(""))
        if key in seen:
            listing.problems.append(Problem(str(path), "duplicate_row",
                                            f"{where} repeats line {seen[key]}; kept once"))
            continue
        seen[key] = line_no
        method = row["method"].lower() or ("real" if letter == "A" else "unknown")
        tasks.append((ClipTask(
            key=key, path=str(path), rel_path=str(rel), label=int(video_fake or audio_fake),
            video_fake=video_fake, audio_fake=audio_fake, method=method,
            identity=row["source"],
            attributes={"race": row["race"], "gender": row["gender"],
                        "target1": row["target1"], "target2": row["target2"],
                        "category_letter": letter},
            row=row), kind))

    listed = {t.path for t, _ in tasks} | {p.path for p in listing.problems}
    for kind in TYPES:
        for p in sorted((root / kind).rglob("*.mp4")):
            if str(p) not in listed:
                listing.problems.append(Problem(str(p), "not_in_metadata",
                                                "video file not listed in meta_data.csv"))

    real_groups: dict[tuple[str, str], set[str]] = {}
    for t, kind in tasks:
        if kind == "RealVideo-RealAudio":
            real_groups.setdefault((t.attributes["race"], t.attributes["gender"]),
                                   set()).add(t.identity)
    real_ids = set().union(*real_groups.values()) if real_groups else set()
    if cfg.split_scheme == "reference":
        test_ids = REFERENCE_TEST_IDS & real_ids
        if real_ids and not test_ids:
            raise ConfigError("fakeavceleb: none of the reference test identities is among "
                              "the real videos of this copy; use split_scheme='hashed'")
    elif cfg.split_scheme == "hashed":
        test_ids = hashed_test_ids(real_groups, cfg.split_seed)
    else:
        raise ConfigError(f"fakeavceleb: unknown split_scheme {cfg.split_scheme!r} "
                          "(expected 'reference' or 'hashed')")
    val_ids: set[str] = set()
    if cfg.validation_fraction > 0:
        rest = {g: ids - test_ids for g, ids in real_groups.items()}
        val_ids = hashed_test_ids(rest, cfg.split_seed + 1, cfg.validation_fraction)
    listing.source_info["test_identities"] = sorted(test_ids)
    listing.source_info["validation_identities"] = sorted(val_ids)

    for t, _ in sorted(tasks, key=lambda x: x[0].key):
        split = ("test" if t.identity in test_ids else
                 "validation" if t.identity in val_ids else "train")
        listing.add(t, split)
    test_real = [k for k in listing.splits.get("test", [])
                 if not listing.tasks[k].label]
    for t, _ in sorted(tasks, key=lambda x: x[0].key):
        if t.label and t.identity in test_ids:
            name = method_split_name(t.method)
            if name not in listing.splits:
                for k in test_real:
                    listing.add(listing.tasks[k], name)
            listing.add(t, name)
    return listing
