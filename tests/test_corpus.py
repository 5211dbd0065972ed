"""The bad-input corpus: the strange files the real world sends, generated here (nothing
committed), through ``avdetect detect`` and through the dataset build.

Every kind is a file made from a real fixture clip (2 s of a real talking face, 360x360,
25 fps, AAC 16 kHz mono) with one property changed, or one of the media factory's
broken files. For each kind:

* detect: the file gets its typed error (kind + reason, one line on stderr naming the
  file) or a score whose JSON validates against the result schema and whose flags /
  media record say what is odd -- never an internal error, never a traceback;
* build: the file is written as an example (read back from the shards, with the same
  frame count detect saw) or listed in the build report with the same error kind;
  every good file is kept.

References are independent of the code under test: frame counts from the clip lengths
(seconds x 25), source rates from how the files were made, the box of a two-face clip
against the frame's halves, the score of a renamed file against the same bytes under
their real name.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
from typing import Callable

import jsonschema
import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_factory as mf
import tiny_checkpoint
from avdetect import cli, contract, detect, errors, result
from avdetect.data import build
from avdetect.data.builder import format_report
from avdetect.preprocess import pipeline

FPS = contract.VIDEO_FPS
SECONDS = 2.0                      # most kinds: 50 frames, one toy-model window
LONG_SECONDS = 600.0               # the 10-minute video


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of file: how to make it, and what detect and the build must do with it.

    ``error``: the MediaError class detect raises and the build reports (None: usable).
    ``check``: for usable kinds, a function of (detect's JSON document, the whole
    :class:`Detected` run) that asserts what must be true of its score, flags and media
    record."""

    name: str
    file: str
    error: type[errors.MediaError] | None = None
    check: Callable[[dict, "Detected"], None] | None = None


@dataclasses.dataclass
class Corpus:
    root: pathlib.Path
    base: pathlib.Path                 # the good 2 s clip every variant is made from
    paths: dict[str, pathlib.Path]     # kind name -> file


# ----------------------------------------------------------------------------- checks

def _frames_about(doc: dict, seconds: float) -> None:
    assert abs(doc["num_frames"] - seconds * FPS) <= 1, doc["num_frames"]


def _clean(doc: dict) -> None:
    """Face and (non-silent) audio in every frame, nothing corrupt."""
    f = doc["flags"]
    assert f["no_face_frames"]["count"] == 0, f["no_face_frames"]
    assert not f["no_audio"] and f["silent_audio_frames"]["count"] == 0, f
    assert f["corrupt_frames"] == 0 and f["corrupt_audio_packets"] == 0


def check_video_only(doc, run):
    _frames_about(doc, SECONDS)
    assert doc["flags"]["no_audio"] and sum(doc["audio_present"]) == 0
    assert doc["media"]["audio_codec"] is None
    assert any("no audio track" in w for w in doc["warnings"])


def check_silent(doc, run):
    _frames_about(doc, SECONDS)
    f = doc["flags"]
    assert not f["no_audio"] and doc["media"]["audio_codec"] == "aac"
    assert f["silent_audio_frames"]["count"] == doc["num_frames"]
    assert f["silent_audio_frames"]["ranges_s"] == [[0.0, doc["num_frames"] / FPS]]
    assert any("digital silence in 100%" in w for w in doc["warnings"])


def check_two_faces(doc, run):
    _frames_about(doc, SECONDS)
    _clean(doc)
    assert doc["media"]["width"] == 720 and doc["media"]["height"] == 360
    # The tracker must stay on one face: every smoothed box centre in the same half.
    feats = pipeline.preprocess_video(run.corpus.paths["two_faces"])
    cx = feats.boxes[:, 0] + feats.boxes[:, 2] / 2
    assert (cx < 360).all() or (cx > 360).all(), (cx.min(), cx.max())


def check_ten_minutes(doc, run):
    t = doc["num_frames"]
    assert abs(t - LONG_SECONDS * FPS) <= FPS, t          # within a second of 15000
    assert doc["duration_s"] == pytest.approx(LONG_SECONDS, abs=1.0)
    w = doc["window"]["frames"]
    assert len(doc["windows"]) == math.ceil(t / w)
    assert [x["start_frame"] for x in doc["windows"]] == list(range(0, t, w))
    assert len(doc["frame_scores"]) == t and np.isfinite(doc["frame_scores"]).all()
    assert doc["flags"]["no_face_frames"]["fraction"] < 0.05


def check_4k(doc, run):
    _frames_about(doc, 1.2)
    assert (doc["media"]["width"], doc["media"]["height"]) == (3840, 2160)
    _clean(doc)


def _check_rate(fps: float, vfr: bool):
    def check(doc, run):
        _frames_about(doc, SECONDS)
        _clean(doc)
        assert doc["media"]["vfr"] is vfr
        if not vfr:
            assert doc["media"]["src_fps"] == pytest.approx(fps, abs=0.01)
    return check


def _check_audio_rate(rate: int):
    def check(doc, run):
        _frames_about(doc, SECONDS)
        _clean(doc)
        assert doc["media"]["src_sample_rate"] == rate
    return check


def check_wrong_extension(doc, run):
    # The same bytes as the base clip under an .avi name: the content decides, so the
    # result is the base clip's, frame for frame.
    base = run.docs[str(run.corpus.base)]
    assert doc["media"]["container"] == base["media"]["container"]
    assert doc["score"] == base["score"] and doc["frame_scores"] == base["frame_scores"]


def check_corrupt_middle(doc, run):
    # Packet 25 of 50 (presentation order) zeroed: one frame lost and replaced by the
    # previous one, the length (and audio sync) unchanged.
    assert doc["num_frames"] == SECONDS * FPS
    assert doc["flags"]["corrupt_frames"] == 1 and doc["flags"]["corrupt_audio_packets"] == 0
    assert any("corrupt video frame" in w for w in doc["warnings"])


KINDS = [
    Kind("truncated_mp4", "truncated.mp4", errors.CorruptMediaError),
    # The same interrupted download of a web-optimised mp4 (index first): it opens, and
    # the missing data is found in the middle of decoding.
    Kind("truncated_faststart_mp4", "truncated_faststart.mp4", errors.CorruptMediaError),
    Kind("zero_byte", "empty.mp4", errors.EmptyFileError),
    Kind("text_as_mp4", "notes.mp4", errors.NotMediaError),
    Kind("audio_only", "voice.m4a", errors.NoVideoStreamError),
    Kind("video_only", "video_only.mp4", check=check_video_only),
    Kind("silent_audio", "silent.mp4", check=check_silent),
    Kind("no_face", "stripes.mp4", errors.NoFaceError),
    Kind("two_faces", "two_faces.mp4", check=check_two_faces),
    Kind("single_frame", "one_frame.mp4", errors.TooShortError),
    Kind("ten_minutes", "ten_minutes.mp4", check=check_ten_minutes),
    Kind("frame_4k", "uhd.mp4", check=check_4k),
    Kind("fps_29_97", "ntsc.mp4", check=_check_rate(30000 / 1001, vfr=False)),
    Kind("fps_60", "sixty.mp4", check=_check_rate(60.0, vfr=False)),
    Kind("variable_frame_rate", "vfr.mp4", check=_check_rate(0.0, vfr=True)),
    Kind("audio_8khz", "rate8k.mp4", check=_check_audio_rate(8000)),
    Kind("audio_48khz", "rate48k.mp4", check=_check_audio_rate(48000)),
    Kind("stereo_audio", "stereo.mp4", check=_check_audio_rate(16000)),
    Kind("wrong_extension", "really_mp4.avi", check=check_wrong_extension),
    Kind("corrupt_frame_middle", "corrupt_middle.mp4", check=check_corrupt_middle),
]
BY_NAME = {k.name: k for k in KINDS}


# ----------------------------------------------------------------------------- the corpus

@pytest.fixture(scope="module")
def corpus(realav_dir, tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    face = realav_dir / "real_video-retalking_1.mp4"           # 6.1 s, 360x360, speech
    other = realav_dir / "real_video-retalking_4.mp4"
    base = mf.transcode(face, root / "base.mp4", seconds=SECONDS)
    p = {k.name: root / k.file for k in KINDS}
    mf.truncate_copy(base, p["truncated_mp4"], 0.5)            # index (moov) lost
    mf.truncate_copy(mf.faststart_copy(base, root / "faststart.mp4"),
                     p["truncated_faststart_mp4"], 0.5)
    mf.make_empty_file(p["zero_byte"])
    mf.make_text_file(p["text_as_mp4"])
    mf.transcode(base, p["audio_only"], video=False)
    mf.transcode(base, p["video_only"], audio=False)
    mf.transcode(base, p["silent_audio"], audio_filter="volume=0")
    mf.make_video(p["no_face"], seconds=SECONDS, size=(160, 120))
    mf.side_by_side(face, other, p["two_faces"], SECONDS)
    mf.transcode(base, p["single_frame"], frames=1)
    # 10 minutes cheaply: 6 s at 160x160 and 5 fps (faces still found), looped by stream
    # copy; the decoder still yields 15000 frames at 25 fps.
    seg = mf.transcode(face, root / "segment.mp4", seconds=6.0, video_filter="scale=160:160,fps=5")
    mf.looped(seg, p["ten_minutes"], LONG_SECONDS)
    mf.transcode(base, p["frame_4k"], seconds=1.2,
                 video_filter="scale=-2:2160,pad=3840:2160:(ow-iw)/2:0")
    mf.transcode(base, p["fps_29_97"], video_filter="fps=30000/1001")
    mf.transcode(base, p["fps_60"], video_filter="fps=60")
    # Every third frame dropped, the rest keeping their times: gaps of 40 and 80 ms.
    mf.transcode(base, p["variable_frame_rate"], video_filter=r"select='not(eq(mod(n\,3)\,1))'",
                 vfr=True)
    mf.transcode(base, p["audio_8khz"], sample_rate=8000)
    mf.transcode(base, p["audio_48khz"], sample_rate=48000)
    mf.transcode(base, p["stereo_audio"], channels=2)
    mf.copy_as(base, p["wrong_extension"])
    mf.corrupt_frame(base, p["corrupt_frame_middle"], 25)
    return Corpus(root, base, p)


# ----------------------------------------------------------------------------- detect

@dataclasses.dataclass
class Detected:
    """One `avdetect detect` run over the corpus."""

    corpus: Corpus
    code: int
    stdout: str
    stderr: str
    summary: dict
    docs: dict[str, dict]          # file -> its result JSON (scored files)


@pytest.fixture(scope="module")
def detected(corpus, tmp_path_factory) -> Detected:
    """`avdetect detect` over the whole corpus (and the base clip) in one run, as a user
    would, with the toy model of the inference tests."""
    model = tiny_checkpoint.train_toy_workdir(tmp_path_factory.mktemp("toy") / "wd")
    out = tmp_path_factory.mktemp("detect_out")
    paths = [str(corpus.base)] + [str(corpus.paths[k.name]) for k in KINDS]
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.environ.get("AVDETECT_COMPILE_CACHE")
    os.environ["AVDETECT_COMPILE_CACHE"] = "off"     # a process-wide JAX setting: not in tests
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(["detect", *paths, "--model", str(model), "--out", str(out),
                             "--no-png", "--no-progress"])
    finally:
        if previous is None:
            os.environ.pop("AVDETECT_COMPILE_CACHE", None)
        else:
            os.environ["AVDETECT_COMPILE_CACHE"] = previous
    summary = json.loads((out / "summary.json").read_text())
    docs = {e["file"]: json.loads(pathlib.Path(e["json"]).read_text())
            for e in summary["files"] if e["status"] == "scored"}
    return Detected(corpus, code, stdout.getvalue(), stderr.getvalue(), summary, docs)


def _entry(summary: dict, path: pathlib.Path) -> dict:
    (entry,) = [e for e in summary["files"] if e["file"] == str(path)]
    return entry


def test_detect_never_crashes_on_the_corpus(corpus, detected):
    n_bad = sum(k.error is not None for k in KINDS)
    assert detected.code == detect.EXIT_PARTIAL
    assert detected.summary["counts"] == {"files": len(KINDS) + 1,
                                          "scored": len(KINDS) + 1 - n_bad, "failed": n_bad}
    assert "Traceback" not in detected.stdout + detected.stderr
    kinds = [e["error"]["kind"] for e in detected.summary["files"] if e["status"] == "error"]
    assert "internal_error" not in kinds
    assert _entry(detected.summary, corpus.base)["status"] == "scored"
    for k in KINDS:                                   # the table names every file
        assert corpus.paths[k.name].name in detected.stdout


@pytest.mark.parametrize("kind", [k.name for k in KINDS])
def test_detect_on_each_kind(kind, corpus, detected):
    k, path = BY_NAME[kind], corpus.paths[kind]
    entry = _entry(detected.summary, path)
    if k.error is not None:
        assert entry["status"] == "error", entry
        assert entry["error"]["kind"] == k.error.kind and entry["error"]["reason"]
        # One clear line on stderr naming the file, the reason and the kind.
        assert (f"cannot score {path}: {entry['error']['reason']} [{k.error.kind}]"
                in detected.stderr)
        with pytest.raises(k.error) as info:        # the library raises the same typed error
            detect.preprocess_file(str(path), _ModelStub())
        assert str(path) in str(info.value)
        return
    assert entry["status"] == "scored", entry
    doc = detected.docs[str(path)]
    jsonschema.validate(doc, result.RESULT_SCHEMA)
    assert np.isfinite(doc["score"]) and doc["verdict"] in ("real", "fake")
    k.check(doc, detected)


class _ModelStub:
    """What ``detect.preprocess_file`` uses of a model: its preprocessing record, the
    streams it reads, and ``warm_up`` (called once a file passes the probe; a stub has
    nothing to compile)."""

    preprocess = {"face_size": contract.FACE_SIZE_DEFAULT, "params": {}}
    inputs = ("mouth", "face", "logmel")

    def warm_up(self, batch_size: int = 1) -> None:
        pass

# ----------------------------------------------------------------------------- build

@dataclasses.dataclass
class Built:
    report: dict
    records: dict[str, dict]       # video_id -> fields read back from the shards


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Built:
    """The realav builder over a folder holding the whole corpus (and the base clip),
    every file listed in its manifest, real preprocessing in 2 worker processes."""
    src = tmp_path_factory.mktemp("corpus_src")
    files = [corpus.base] + [corpus.paths[k.name] for k in KINDS]
    with open(src / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "category"])
        w.writeheader()
        for p in files:
            os.symlink(p, src / p.name)
            w.writerow({"file": p.name, "label": "real", "category": "RVRA"})
    data_dir = tmp_path_factory.mktemp("corpus_data")
    _, report = build.build("realav/face112", data_dir=str(data_dir), manual_dir=str(src),
                            workers=2, cache_dir=str(data_dir / "cache"))
    ds = tfds.data_source("realav/face112", split="test", data_dir=str(data_dir))
    records = {}
    for i in range(len(ds)):
        ex = ds[i]
        records[ex["video_id"].decode()] = {"num_frames": int(ex["num_frames"]),
                                            "has_audio": bool(ex["has_audio"]),
                                            "mouth_frames": len(ex["mouth"])}
    return Built(report, records)


def _video_id(path: pathlib.Path) -> str:
    return path.name.rsplit(".", 1)[0]        # the realav builder's key: the file stem


def test_build_keeps_every_good_file_and_reports_the_bad(corpus, built):
    good = [corpus.base] + [corpus.paths[k.name] for k in KINDS if k.error is None]
    bad = [k for k in KINDS if k.error is not None]
    assert sorted(built.records) == sorted(_video_id(p) for p in good)
    assert built.report["written"] == {"test": len(good)}
    assert built.report["internal_errors"] == 0 and built.report["listing_problems"] == 0
    assert built.report["skipped_clips"] == len(bad)
    assert {pathlib.Path(s["path"]).name for s in built.report["skipped"]} == \
        {corpus.paths[k.name].name for k in bad}
    text = format_report(built.report)
    for k in bad:
        assert corpus.paths[k.name].name in text


@pytest.mark.parametrize("kind", [k.name for k in KINDS])
def test_build_on_each_kind(kind, corpus, built, detected):
    k, path = BY_NAME[kind], corpus.paths[kind]
    if k.error is not None:
        (row,) = [s for s in built.report["skipped"] if pathlib.Path(s["path"]).name == path.name]
        assert row["kind"] == k.error.kind and row["reason"], row
        assert _video_id(path) not in built.records
        return
    rec = built.records[_video_id(path)]
    doc = detected.docs[str(path)]
    # Stored exactly as detect saw it: same length, audio present or not.
    assert rec["num_frames"] == doc["num_frames"] == rec["mouth_frames"]
    assert rec["has_audio"] == (not doc["flags"]["no_audio"])
