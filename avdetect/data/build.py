"""The dataset build command, and how a build goes.

A dataset builder (one package per dataset under ``datasets/``) only lists its clips
(:class:`avdetect.data.clips.ClipTask`: file, labels, which splits) and the problems it
found while listing (rows naming missing files, ...). The builder base class it subclasses
(:mod:`avdetect.data.builder`, which a builder imports along with
:mod:`avdetect.data.clips`) and this command do the rest, the same way for every dataset:

1. **Preprocess every clip once**, in a pool of worker processes (``workers``, default 2),
   with a progress bar, before any shard is written. Each result is cached as one
   ``.npz`` per video under ``cache_dir``, keyed by sha256(file bytes) (+ the borrowed
   audio file's bytes) and a hash of every parameter and of the preprocessing code; an
   interrupted build re-run skips the work already done.
2. **Report**: a file that cannot be used (typed ``avdetect.errors.MediaError``: missing,
   empty, not media, corrupt, no face, ...) is skipped and listed with its reason; so is
   every listing problem. Nothing is dropped silently: after writing, the number of
   examples in every split is checked against the number of good clips.
3. **Write** array_record shards through TFDS (TF-free), examples in listing order
   (``disable_shuffling``: training shuffles in Grain), and record in the dataset metadata
   every preprocessing parameter, the encoding, the data-contract constants, the teacher,
   a per-split index (video id, length, labels, method: the loader counts windows and
   filters methods from it) and the build report.

Build command (the ``tfds build`` CLI of tensorflow-datasets 4.9.10 imports TensorFlow at
start-up, so it cannot be used without it; this command does the same job TF-free)::

    python -m avdetect.data.build NAME[/CONFIG] --data_dir DIR [--manual_dir DIR]
        [--workers N] [--cache_dir DIR] [--teacher SPEC] [--overwrite] [--strict]

e.g. ``python -m avdetect.data.build synthetic_av/tiny --data_dir ~/tensorflow_datasets``.
``--teacher`` takes ``NAME[:ARGS]`` (``oracle``, ``asr_align``, ``vsr_self``,
``deep_avsr:DIR``), a pair ``AUDIO+VIDEO`` or ``package.module:function``
(:func:`avdetect.teachers.resolve_teacher`); a named teacher writes its own config
``<CONFIG>_<teacher>`` with K slots (``synthetic_av/tiny --teacher oracle`` ->
``synthetic_av/tiny_oracle``), and the metadata records which sides it filled.
The report is printed and written to ``<dataset dir>/build_report.json``. Defaults can also
come from ``AVDETECT_BUILD_WORKERS`` / ``AVDETECT_CACHE_DIR`` (e.g. for builders made
through ``tfds.builder``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Mapping, Sequence

import tensorflow_datasets as tfds

from avdetect.data import codec
from avdetect.data.builder import AVClipBuilder, format_report
from avdetect.data.cache_entry import TeacherFn, callable_id
from avdetect.data.clips import PreprocessFn
from avdetect.data.metadata import metadata_of
from avdetect.errors import AVDetectError, ConfigError

REPORT_NAME = "build_report.json"


# ---------------------------------------------------------------------------------------
# Build command
# ---------------------------------------------------------------------------------------

def builder_class(name: str) -> type[AVClipBuilder]:
    """Import ``datasets/<name>`` and return its builder class."""
    try:
        importlib.import_module(f"datasets.{name}.{name}")
    except ModuleNotFoundError as e:
        known = sorted(p.name for p in (pathlib.Path(__file__).resolve().parents[2]
                                        / "datasets").iterdir()
                       if (p / f"{p.name}.py").is_file())
        raise ConfigError(f"no dataset builder {name!r} ({e}); known: {known}") from e
    return tfds.builder_cls(name)


def build(name_config: str, *, data_dir: str, manual_dir: str | None = None,
          workers: int | None = None, cache_dir: str | None = None, overwrite: bool = False,
          preprocess_fn: PreprocessFn | None = None, teacher: TeacherFn | None = None,
          builder_kwargs: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Build (or reuse) one dataset; returns (builder, report).

    Raises ConfigError if the shards do not hold exactly the good clips of the report.
    """
    name, _, config = name_config.partition("/")
    cls = builder_class(name)
    kwargs = dict(builder_kwargs or {})
    if config:
        kwargs["config"] = config
    if teacher is not None:
        kwargs["config"] = teacher_config(cls, kwargs.get("config"), teacher)
    def make():
        return cls(data_dir=data_dir, workers=workers, cache_dir=cache_dir,
                   preprocess_fn=preprocess_fn, teacher=teacher, **kwargs)

    builder = make()
    if not overwrite and _old_format(builder):
        # shards of an older format cannot be read by this code: rebuild (cache kept)
        print(f"{name_config}: the existing build in {builder.data_dir} has shard format "
              f"{_old_format(builder)}, not {codec.SHARD_FORMAT_VERSION}: rebuilding it")
        overwrite = True
    if not overwrite:
        _check_same_teacher(builder, teacher)
    if overwrite and os.path.isdir(os.fspath(builder.data_dir)):
        # Remove the finished shards only; the preprocessing cache is kept, so a rebuild
        # re-encodes nothing that is still valid.
        shutil.rmtree(os.fspath(builder.data_dir))
        builder = make()
    dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=dl_config)
    report = builder.build_report
    if report is None:   # already built earlier: show that build's report
        report = dict(metadata_of(builder).get("build_report", {}))
        report["reused_existing"] = True
    written = {s: int(info.num_examples) for s, info in builder.info.splits.items()}
    report["written"] = written
    lost = {s: (c["good"], written.get(s, 0)) for s, c in report.get("splits", {}).items()
            if c["good"] != written.get(s, 0)}
    _verify_order(builder, data_dir)
    report_path = os.path.join(os.fspath(builder.data_dir), REPORT_NAME)
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    report["report_path"] = report_path
    if lost:
        raise ConfigError(f"{name_config}: split sizes differ from the good clips "
                          f"(good, written): {lost}; see {report_path}")
    return builder, report


def teacher_slug(teacher: TeacherFn) -> str:
    """The config-name suffix of a teacher ('asr_align+vsr_self' -> 'asr_align_vsr_self')."""
    import re
    name = str(getattr(teacher, "name", None) or callable_id(teacher) or "teacher")
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def teacher_config(cls, config: Any, teacher: TeacherFn):
    """The builder config a build with ``teacher`` writes.

    A teacher that declares its alphabet size (``num_classes``: every registered one)
    gets its own dataset: config ``<config>_<teacher>`` with ``teacher_dim`` = K (so
    ``synthetic_av/tiny --teacher oracle`` writes ``synthetic_av/tiny_oracle``, K = 14, and
    a teacher-less ``synthetic_av/tiny`` is never silently reused). A config object given
    by the caller is kept, and must have K slots. A user function without
    ``num_classes`` fills the named config's ``teacher_dim`` slots.
    """
    k = getattr(teacher, "num_classes", None)
    if k is None:
        return config
    if isinstance(config, tfds.core.BuilderConfig):
        if config.teacher_dim != k:
            raise ConfigError(f"{cls.name}/{config.name}: config has teacher_dim "
                              f"{config.teacher_dim} but teacher {teacher_slug(teacher)} "
                              f"emits K = {k} classes")
        return config
    base = (cls.builder_configs.get(config) if config else
            (cls.BUILDER_CONFIGS[0] if cls.BUILDER_CONFIGS else None))
    if base is None:
        raise ConfigError(f"{cls.name}: no builder config {config!r}; known: "
                          f"{sorted(cls.builder_configs)}")
    slug = teacher_slug(teacher)
    return dataclasses.replace(
        base, name=f"{base.name}_{slug}", teacher_dim=int(k),
        description=f"{base.description} With the {slug} teacher's posteriors (K={k}).")


def _old_format(builder) -> int | None:
    """The shard format of an existing build when it is not this code's, else None."""
    if not os.path.isdir(os.fspath(builder.data_dir)):
        return None
    version = metadata_of(builder).get("shard_format_version")
    return version if version is not None and version != codec.SHARD_FORMAT_VERSION else None


def _check_same_teacher(builder, teacher: TeacherFn | None) -> None:
    """A finished dataset is reused only when it was built with the same teacher."""
    if not os.path.isdir(os.fspath(builder.data_dir)):
        return
    stored = (metadata_of(builder).get("teacher") or {}).get("name")
    wanted = callable_id(teacher)
    if stored != wanted:
        raise ConfigError(f"{builder.name}/{builder.builder_config.name} in "
                          f"{builder.data_dir} was built with teacher {stored!r}, not "
                          f"{wanted!r}: pass --overwrite to rebuild it (the preprocessing "
                          "cache is kept)")


def _verify_order(builder, data_dir: str) -> None:
    """Spot-check that records sit in the order of the stored index (the loader relies on
    it to name videos and count windows without reading records)."""
    index = metadata_of(builder).get("index", {})
    for split, cols in index.items():
        ids = cols["video_id"]
        ds = builder.as_data_source(split=split)
        if len(ds) != len(ids):
            raise ConfigError(f"{builder.name}:{split} holds {len(ds)} records but its index "
                              f"lists {len(ids)}")
        for i in sorted({0, len(ids) // 2, len(ids) - 1}):
            got = ds[i]["video_id"]
            got = got.decode() if isinstance(got, bytes) else str(got)
            if got != ids[i]:
                raise ConfigError(f"{builder.name}:{split} record {i} is {got!r}, the index "
                                  f"says {ids[i]!r}: the shards are not in index order")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avdetect.data.build",
        description="Build an avdetect dataset (TFDS array_record shards, no TensorFlow).")
    parser.add_argument("dataset", help="NAME or NAME/CONFIG, e.g. synthetic_av/tiny, "
                                        "fakeavceleb/face112, cmdfd, realav")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
    parser.add_argument("--manual_dir", default=None,
                        help="folder holding the manually downloaded dataset")
    parser.add_argument("--workers", type=int, default=None,
                        help="preprocessing processes (default 2; 0 = in-process)")
    parser.add_argument("--cache_dir", default=None,
                        help="per-video preprocessing cache (default DATA_DIR/avdetect_cache)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild even if the dataset exists (the cache is kept)")
    parser.add_argument("--teacher", default=None,
                        help="teacher filling the posterior slots: a registered NAME[:ARGS] "
                             "(oracle, asr_align, vsr_self, deep_avsr:DIR), a pair AUDIO+VIDEO "
                             "(e.g. asr_align+vsr_self), or 'package.module:function' = "
                             "teacher(features, row) -> (audio [T,K], video [T,K]) or None. "
                             "A named teacher writes config CONFIG_<teacher> (K = its classes)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 if any file was skipped")
    args = parser.parse_args(argv)
    try:
        from avdetect.teachers import resolve_teacher
        teacher = resolve_teacher(args.teacher) if args.teacher else None
        builder, report = build(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir,
                          workers=args.workers, cache_dir=args.cache_dir,
                          overwrite=args.overwrite, teacher=teacher)
    except AVDetectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"dataset: {builder.name}/{builder.builder_config.name} in {args.data_dir}")
    print(f"report: {report['report_path']}")
    if report.get("internal_errors"):
        print(f"WARNING: {report['internal_errors']} clip(s) failed with an internal error "
              "(a bug or an unforeseen library failure): see the report", file=sys.stderr)
    if args.strict and report.get("skipped"):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
