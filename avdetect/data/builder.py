"""The TFDS builder every avdetect dataset subclasses (:class:`AVClipBuilder`), its
configs, and the build report. The build process and command it serves are described in
:mod:`avdetect.data.build`: a dataset package under ``datasets/`` only lists its clips
(:meth:`AVClipBuilder._list_clips`); preprocessing, the report, the shards and the
metadata are done here the same way for every dataset.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from avdetect import contract
from avdetect.data import clips as clips_lib
from avdetect.data import codec
from avdetect.data import features as feat
from avdetect.data import pseudo_fakes
from avdetect.data.cache_entry import Outcome, TeacherFn, callable_id, unpack_frames
from avdetect.data.clips import (ClipTask, Listing, PreprocessFn, PreprocessSpec, Problem,
                                 preprocess_all)
from avdetect.errors import ConfigError


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def make_report(name: str, listing: Listing, outcomes: Mapping[str, Outcome], *,
                seconds: float, workers: int, cache_dir: str) -> dict[str, Any]:
    """The build report: counts, every skipped file with its reason, per-clip notes."""
    skipped = list(p.as_dict() for p in listing.problems)
    for key, o in sorted(outcomes.items()):
        if o.status in ("skipped", "error"):
            task = listing.tasks[key]
            skipped.append(Problem(task.path, o.kind, o.reason, key,
                                   listing.splits_of(key)).as_dict())
    notes = list(listing.notes)
    for key, o in sorted(outcomes.items()):
        for n in o.notes:
            notes.append({"key": key, "path": listing.tasks[key].path, "note": n})
    good = {k for k, o in outcomes.items() if o.status in ("done", "cached")}
    splits = {s: {"listed": len(keys), "good": sum(k in good for k in keys)}
              for s, keys in listing.splits.items()}
    status = [o.status for o in outcomes.values()]
    return {
        "dataset": name,
        "source_root": str(listing.source_info.get("root", "")),
        "seconds": round(seconds, 2),
        "workers": workers,
        "cache_dir": cache_dir,
        "clips": len(listing.tasks),
        "preprocessed": status.count("done"),
        "from_cache": status.count("cached"),
        "skipped_clips": status.count("skipped"),
        "internal_errors": status.count("error"),
        "listing_problems": len(listing.problems),
        "clips_per_s": round(status.count("done") / seconds, 3) if seconds > 0 else None,
        "splits": splits,
        "skipped": skipped,
        "notes": notes,
    }


def format_report(report: Mapping[str, Any], max_rows: int = 60) -> str:
    """A human-readable table of the report."""
    lines = [f"Build report for {report['dataset']}",
             f"  clips listed: {report['clips']}   preprocessed: {report['preprocessed']}   "
             f"from cache: {report['from_cache']}   skipped: {report['skipped_clips']}   "
             f"internal errors: {report['internal_errors']}   "
             f"listing problems: {report['listing_problems']}",
             f"  preprocessing: {report['seconds']} s with {report['workers']} worker(s)"
             + (f", {report['clips_per_s']} clips/s" if report.get("clips_per_s") else "")]
    if "written" in report:
        lines.append("  split                     listed    good  written")
        for s, c in report["splits"].items():
            lines.append(f"  {s:<24}{c['listed']:>7}{c['good']:>8}"
                         f"{report['written'].get(s, 0):>9}")
    if report.get("empty_splits"):
        lines.append(f"  splits with no usable clip (not written): "
                     f"{', '.join(report['empty_splits'])}")
    skipped = report["skipped"]
    if skipped:
        lines.append(f"  skipped files ({len(skipped)}):")
        lines.append(f"    {'kind':<18} {'file':<60} reason")
        for p in skipped[:max_rows]:
            lines.append(f"    {p['kind']:<18} {_short(p['path'], 60):<60} {p['reason']}")
        if len(skipped) > max_rows:
            lines.append(f"    ... {len(skipped) - max_rows} more in the JSON report")
    if report["notes"]:
        lines.append(f"  notes ({len(report['notes'])}), first ones:")
        for n in report["notes"][:10]:
            lines.append(f"    {_short(n['path'], 60):<60} {n['note']}")
    return "\n".join(lines)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else "..." + s[-(n - 3):]


# ---------------------------------------------------------------------------------------
# TFDS builder base class
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class AVBuilderConfig(tfds.core.BuilderConfig):
    """Options that change the written data (so each config is its own dataset dir)."""

    face_size: int = contract.FACE_SIZE_DEFAULT
    mouth_codec: str = "png"
    face_codec: str = "jpeg"
    jpeg_quality: int = 90
    teacher_dim: int = codec.TEACHER_DIM_DEFAULT
    # Pseudo-fakes made from every split's real clips, into the same split
    # (avdetect.data.pseudo_fakes): kinds (method names), how many of each per real clip,
    # the |k| range of pf_shift in frames, the shortest result kept. () = none.
    pseudo_fakes: tuple[str, ...] = ()
    pf_per_kind: int = 1
    pf_shift_frames: tuple[int, int] = (3, 12)
    pf_min_frames: int = 25

    @property
    def pseudo_fake_options(self) -> pseudo_fakes.Options | None:
        if not self.pseudo_fakes:
            return None
        return pseudo_fakes.Options(kinds=tuple(self.pseudo_fakes), per_kind=self.pf_per_kind,
                                    shift_frames=tuple(self.pf_shift_frames),
                                    min_frames=self.pf_min_frames)

    @property
    def encoding(self) -> codec.EncodingParams:
        return codec.EncodingParams(mouth_codec=self.mouth_codec, face_codec=self.face_codec,
                                   jpeg_quality=self.jpeg_quality)


def pseudo_fake_configs() -> list[AVBuilderConfig]:
    """The builder configs of the real-footage builders (``realtalk``, ``videofolder``).
    A config name gives the *face* crop side only: the mouth crops are 88x88 in every
    config (``contract.MOUTH_SIZE``, the LRS convention).

    - ``face112``: 112x112 face crops; every real clip of every split also gives one
      pseudo-fake of each kind (``pf_shift``, ``pf_swap``, ``pf_reverse``,
      ``pf_other_sentence``, ``pf_tts``, ``pf_freeze``, ``pf_blend``, ``pf_rerender``;
      :mod:`avdetect.data.pseudo_fakes`), in its own split only, donors from that split;
      label fake, method = the kind, ``attributes`` = the source's plus ``pseudo_fake``,
      ``pf_source``, ``pf_donor``, ``pf_params`` (k, voice, segment, ...). Pseudo-fakes
      that a clip cannot give (too short for the shift, no other clip of the identity, no
      speech for the TTS) are listed in the build report (notes or skipped files).
    - ``nopf``: the same without pseudo-fakes.

    Other counts or kinds: a config with ``pseudo_fakes=(...)``, ``pf_per_kind=N``,
    ``pf_shift_frames=(lo, hi)`` (:class:`AVBuilderConfig`).
    """
    return [
        AVBuilderConfig(name="face112", face_size=112, pseudo_fakes=pseudo_fakes.ALL_KINDS,
                        description="112x112 face crops (mouth crops 88x88); every split's reals "
                                    "also give one pseudo-fake of each kind (pf_*), in the "
                                    "same split."),
        AVBuilderConfig(name="nopf", face_size=112,
                        description="112x112 face crops (mouth crops 88x88), no "
                                    "pseudo-fakes."),
    ]


def face_size_configs(config_cls: type = AVBuilderConfig, note: str = "", **fields
                      ) -> list[AVBuilderConfig]:
    """The configs of the labelled-dataset builders (``cmdfd``, ``fakeavceleb``,
    ``realav``): ``face112`` (112x112 face crops) and ``face224`` (224x224, for CLIP-style
    image encoders): the name gives the face side only, the mouth crops are 88x88 in both
    (``contract.MOUTH_SIZE``). ``note`` ends each description,
    ``fields`` are further config fields (``config_cls``'s)."""
    end = f"; {note}." if note else "."
    return [config_cls(name="face112", face_size=112,
                       description=f"112x112 face crops (mouth crops 88x88){end}", **fields),
            config_cls(name="face224", face_size=224,
                       description=f"224x224 face crops (CLIP-style image encoders; mouth "
                                   f"crops 88x88){end}", **fields)]


def required_manual_dir(dl_manager, dataset: str, what: str,
                        instructions: str) -> pathlib.Path:
    """The ``--manual_dir`` of a builder that cannot run without one (ConfigError naming
    ``what`` it must hold, and the download instructions, otherwise)."""
    manual = manual_dir_of(dl_manager)
    if manual is None:
        raise ConfigError(f"{dataset} needs --manual_dir ({what}).\n{instructions}")
    return manual


def manual_dir_of(dl_manager) -> pathlib.Path | None:
    """The manual dir given to the build (``--manual_dir``), or None when none was given or
    it does not exist (TFDS's own ``dl_manager.manual_dir`` raises instead)."""
    d = getattr(dl_manager, "_manual_dir", None)
    return pathlib.Path(os.fspath(d)) if d and os.path.isdir(os.fspath(d)) else None


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


class AVClipBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC, skip_registration=True):
    """Base of every avdetect dataset builder: subclasses implement :meth:`_list_clips`
    (and set VERSION, BUILDER_CONFIGS, MANUAL_DOWNLOAD_INSTRUCTIONS if any)."""

    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS locates a builder's file through importlib.resources on the top-level
        # package; `datasets/` is a namespace package (no __init__.py), which that
        # lookup cannot handle. The class's own file is what it looks for.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, workers: int | None = None, cache_dir: str | None = None,
                 preprocess_fn: PreprocessFn | None = None, teacher: TeacherFn | None = None,
                 **kwargs):
        self._workers = workers if workers is not None else _env_int(
            "AVDETECT_BUILD_WORKERS", min(2, os.cpu_count() or 1))
        self._cache_dir_arg = cache_dir or os.environ.get("AVDETECT_CACHE_DIR")
        self._preprocess_fn = preprocess_fn
        self._teacher = teacher
        self.build_report: dict[str, Any] | None = None
        # array_record is the only format TFDS writes and reads without TensorFlow.
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # -- to implement --------------------------------------------------------------
    @abc.abstractmethod
    def _list_clips(self, dl_manager: tfds.download.DownloadManager) -> Listing:
        """List every clip of the dataset and the splits it belongs to."""

    # -- TFDS hooks ------------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=feat.clip_features(cfg.teacher_dim),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    @property
    def cache_dir(self) -> str:
        if self._cache_dir_arg:
            return os.fspath(self._cache_dir_arg)
        return os.path.join(os.fspath(self.data_dir_root), "avdetect_cache", self.name)

    def _spec(self) -> PreprocessSpec:
        cfg = self.builder_config
        return PreprocessSpec(face_size=cfg.face_size, encoding=cfg.encoding,
                              teacher_dim=cfg.teacher_dim, preprocess=self._preprocess_fn,
                              teacher=self._teacher)

    def _split_generators(self, dl_manager):
        listing = self._list_clips(dl_manager)
        tasks = [listing.tasks[k] for k in sorted(listing.tasks)]
        t0 = time.perf_counter()
        name = f"{self.name}/{self.builder_config.name}"
        outcomes = preprocess_all(tasks, self._spec(), self.cache_dir, workers=self._workers,
                                  desc=f"preprocessing {name}")
        pf_options = self.builder_config.pseudo_fake_options
        if pf_options is not None:
            # Planned over the usable reals only: a file that could not be preprocessed
            # gives no pseudo-fakes and is nobody's donor.
            usable = {k for k, o in outcomes.items() if o.status in ("done", "cached")}
            listed = set(listing.tasks)
            pseudo_fakes.add_pseudo_fakes(listing, pf_options, usable=usable)
            listing.source_info["pseudo_fakes"] = dataclasses.asdict(pf_options)
            derived = [listing.tasks[k] for k in sorted(set(listing.tasks) - listed)]
            outcomes.update(preprocess_all(derived, self._spec(), self.cache_dir,
                                           workers=self._workers, known=outcomes,
                                           desc=f"pseudo-fakes {name}"))
        report = make_report(f"{self.name}/{self.builder_config.name}", listing, outcomes,
                             seconds=time.perf_counter() - t0, workers=self._workers,
                             cache_dir=self.cache_dir)
        good = {k: o for k, o in outcomes.items() if o.status in ("done", "cached")}
        splits = {s: [k for k in keys if k in good] for s, keys in listing.splits.items()}
        empty = sorted(s for s, keys in splits.items() if not keys)
        if empty:
            report["empty_splits"] = empty   # TFDS cannot write a split with no example
        splits = {s: keys for s, keys in splits.items() if keys}
        if not splits:
            self.build_report = report
            raise ConfigError(f"{self.name}: no usable clip at all.\n{format_report(report)}")
        self._record_metadata(listing, splits, good, report)
        self.build_report = report
        return {s: self._generate_examples(keys, {k: good[k].cache_file for k in keys}, listing)
                for s, keys in splits.items()}

    def _record_metadata(self, listing: Listing, splits: Mapping[str, list[str]],
                         good: Mapping[str, Outcome], report: dict) -> None:
        params = {json.dumps(o.params, sort_keys=True) for o in good.values()}
        if len(params) > 1:
            raise ConfigError(f"{self.name}: clips were preprocessed with different parameters "
                              f"({len(params)} sets); clear the cache dir {self.cache_dir}")
        cfg = self.builder_config
        methods = sorted({listing.tasks[k].method for keys in splits.values() for k in keys})
        index = {}
        for s, keys in splits.items():
            ts = [listing.tasks[k] for k in keys]
            index[s] = {
                "video_id": [t.key for t in ts],
                "num_frames": [good[t.key].num_frames for t in ts],
                "label": [int(t.label) for t in ts],
                "category": [contract.CATEGORIES.index(t.category) for t in ts],
                "method": [t.method for t in ts],
                "identity": [t.identity for t in ts],
                # where the clip comes from (leave-one-source-out runs): the row's
                # source_repo / source attribute, '' when the dataset has none
                "source": [source_of(t) for t in ts],
            }
        meta = self.info.metadata
        meta.update({
            "shard_format_version": codec.SHARD_FORMAT_VERSION,
            "contract": codec.contract_constants(),
            "encoding": {"face_size": cfg.face_size, **cfg.encoding.as_dict()},
            "preprocessing": json.loads(params.pop()) if params else {},
            "preprocess_fn": (callable_id(self._preprocess_fn)
                              or callable_id(clips_lib.default_preprocess)),
            "teacher": teacher_metadata(self._teacher, cfg.teacher_dim, good),
            "method_names": methods,
            "index": index,
            "source": listing.source_info,
            "build_report": report,
        })

    def _generate_examples(self, keys: Sequence[str], cache_files: Mapping[str, str],
                           listing: Listing):
        for key in keys:
            yield key, example_from_cache(listing.tasks[key], cache_files[key])


def source_of(task: ClipTask) -> str:
    """The source a clip comes from (a repository, a sub-corpus), from its attributes."""
    a = task.attributes
    return str(a.get("source_repo") or a.get("source") or "")


def teacher_metadata(teacher: TeacherFn | None, dim: int,
                     good: Mapping[str, Outcome]) -> dict[str, Any]:
    """The metadata's ``teacher`` entry: name (None: built without one), dimension K, the
    sides the teacher fills (``[]`` without one) and how many clips got each side.
    ``avdetect.teachers.requirements`` refuses to train a method that needs a side the
    dataset lacks."""
    if teacher is None:
        return {"name": None, "dim": dim, "sides": [], "clips": {"audio": 0, "video": 0},
                "spec": None}
    from avdetect.teachers import teacher_sides
    filled = {"audio": 0, "video": 0}
    for o in good.values():
        with np.load(o.cache_file) as z:
            filled["audio"] += bool(z["has_teacher_audio"])
            filled["video"] += bool(z["has_teacher_video"])
    return {"name": callable_id(teacher), "dim": dim, "sides": teacher_sides(teacher),
            "clips": filled, "spec": getattr(teacher, "name", None)}


def example_from_cache(task: ClipTask, cache_file: str) -> dict[str, Any]:
    """The TFDS example of a task from its cache entry."""
    with np.load(cache_file) as z:
        return {
            "video_id": task.key,
            "source_path": task.rel_path,
            "num_frames": np.int32(len(z["mouth_offsets"]) - 1),
            "mouth": unpack_frames(z["mouth_data"], z["mouth_offsets"]),
            "face": unpack_frames(z["face_data"], z["face_offsets"]),
            "logmel": z["logmel"],
            "audio": z["audio"],
            "face_found": z["face_found"],
            "boxes": z["boxes"],
            "lips": z["lips"],
            "has_lips": bool(z["has_lips"]),
            "has_audio": bool(z["has_audio"]),
            "audio_source": str(z["audio_source"]),
            "teacher_audio": z["teacher_audio"],
            "teacher_video": z["teacher_video"],
            "has_teacher": bool(z["has_teacher"]),
            "has_teacher_audio": bool(z["has_teacher_audio"]),
            "has_teacher_video": bool(z["has_teacher_video"]),
            "label": int(task.label),
            "video_fake": bool(task.video_fake),
            "audio_fake": bool(task.audio_fake),
            "category": task.category,
            "method": task.method,
            "identity": task.identity,
            "src_fps": float(z["src_fps"]),
            "src_sample_rate": int(z["src_sample_rate"]),
            "duration_s": float(z["duration_s"]),
            "attributes": feat.attributes_json(task.attributes),
        }
