"""The per-video preprocessing cache and the build command: an interrupted build re-run
redoes no finished clip; cache keys follow file content and parameters; the teacher slot;
the command-line build with its report and exit status."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_factory as mf
from avdetect.data import build, clips, codec
from avdetect.data.builder import AVBuilderConfig
from avdetect.errors import ConfigError
from test_builders import standin_preprocess


class Interrupt(BaseException):
    """Stands for Ctrl-C / a killed job in the middle of preprocessing."""


@dataclasses.dataclass
class CountingPreprocess:
    """Logs every clip it preprocesses; raises ``Interrupt`` on call number ``stop_at``."""

    log: pathlib.Path
    stop_at: int | None = None
    cache_key: str = "counting-standin-v1"

    def calls(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def __call__(self, task, face_size):
        done = self.calls()
        if self.stop_at is not None and len(done) + 1 == self.stop_at:
            raise Interrupt()
        with open(self.log, "a") as f:
            f.write(task.key + "\n")
        return standin_preprocess(task, face_size)


def _folder(root: pathlib.Path, n: int) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["file,label,category"]
    for i in range(n):
        mf.make_video(root / f"real_clip_{i}.mp4", seconds=1.2, size=(64, 48),
                      tone_hz=300 + 100 * i, seed=i)
        lines.append(f"real_clip_{i}.mp4,real,real")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def folder(tmp_path):
    return _folder(tmp_path / "src", 4)


def _build(src, data_dir, cache_dir, pre, **kw):
    return build.build("realav/face112", data_dir=str(data_dir), manual_dir=str(src),
                       cache_dir=str(cache_dir), workers=0, preprocess_fn=pre, **kw)


def test_interrupted_build_resumes_without_redoing_finished_clips(folder, tmp_path):
    cache, data = tmp_path / "cache", tmp_path / "data"
    pre = CountingPreprocess(tmp_path / "calls.txt", stop_at=3)
    with pytest.raises(Interrupt):
        _build(folder, data, cache, pre)
    first = pre.calls()
    assert len(first) == 2
    assert not list(cache.rglob("*.tmp"))                       # nothing half-written
    assert len(list(cache.rglob("*.npz"))) == 2
    assert not (data / "realav/face112/1.0.0/dataset_info.json").exists()

    pre.stop_at = None
    _, report = _build(folder, data, cache, pre)
    second = pre.calls()[len(first):]
    assert sorted(first + second) == sorted(f"real_clip_{i}" for i in range(4))
    assert report["from_cache"] == 2 and report["preprocessed"] == 2
    ds = tfds.data_source("realav/face112", split="test", data_dir=str(data))
    assert len(ds) == 4

    _, again = _build(folder, data, cache, pre, overwrite=True)
    assert len(pre.calls()) == 4 and again["from_cache"] == 4


def test_cache_follows_content_not_path(folder, tmp_path):
    cache = tmp_path / "cache"
    pre = CountingPreprocess(tmp_path / "calls.txt")
    _build(folder, tmp_path / "d1", cache, pre)
    assert len(pre.calls()) == 4
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    # same bytes elsewhere: all cached; one file re-encoded: only it is redone
    mf.make_video(moved / "real_clip_2.mp4", seconds=1.2, size=(64, 48), tone_hz=555, seed=9)
    _, report = _build(moved, tmp_path / "d2", cache, pre)
    assert pre.calls()[4:] == ["real_clip_2"]
    assert report["from_cache"] == 3 and report["preprocessed"] == 1


def test_cache_key_covers_every_parameter():
    base = clips.PreprocessSpec(face_size=112, encoding=codec.EncodingParams(), teacher_dim=40)
    assert base.key() == clips.PreprocessSpec(face_size=112, encoding=codec.EncodingParams(),
                                              teacher_dim=40).key()
    variants = [
        dataclasses.replace(base, face_size=224),
        dataclasses.replace(base, encoding=codec.EncodingParams(jpeg_quality=80)),
        dataclasses.replace(base, encoding=codec.EncodingParams(mouth_codec="jpeg")),
        dataclasses.replace(base, teacher_dim=10),
        dataclasses.replace(base, teacher=_oracle_teacher),
        dataclasses.replace(base, preprocess=standin_preprocess),
    ]
    keys = {v.key() for v in variants} | {base.key()}
    assert len(keys) == len(variants) + 1


def test_face_size_config_gets_its_own_cache_entries(folder, tmp_path):
    cache = tmp_path / "cache"
    pre = CountingPreprocess(tmp_path / "calls.txt")
    _build(folder, tmp_path / "d1", cache, pre)
    small = AVBuilderConfig(name="face48", face_size=48)
    _, report = build.build("realav", data_dir=str(tmp_path / "d2"), manual_dir=str(folder),
                            cache_dir=str(cache), workers=0, preprocess_fn=pre,
                            builder_kwargs={"config": small})
    assert report["preprocessed"] == 4 and len(pre.calls()) == 8
    ds = tfds.data_source("realav/face48", split="test", data_dir=str(tmp_path / "d2"))
    assert codec.decode_frames(ds[0]["face"][:1], color=True).shape == (1, 48, 48, 3)
    assert ds.dataset_info.metadata["encoding"]["face_size"] == 48


# ------------------------------------------------------------------------ teacher slot

K = codec.TEACHER_DIM_DEFAULT


def _oracle_teacher(features, row):
    """Posteriors that encode the frame index and the clip (checkable after the build)."""
    T = features["mouth"].shape[0]
    clip = int(row["file"].split("_")[-1].split(".")[0])
    if clip == 1:
        return None                                             # no posteriors for this clip
    a = np.zeros((T, K), np.float32)
    a[np.arange(T), (np.arange(T) + clip) % K] = 1.0
    return a, a[:, ::-1].copy()


def _bad_teacher(features, row):
    return np.zeros((3, K)), np.zeros((3, K))


def test_teacher_posteriors_are_stored_per_frame(folder, tmp_path):
    _, report = build.build("realav/face112", data_dir=str(tmp_path / "d"),
                            manual_dir=str(folder), cache_dir=str(tmp_path / "c"), workers=0,
                            preprocess_fn=standin_preprocess, teacher=_oracle_teacher)
    ds = tfds.data_source("realav/face112", split="test", data_dir=str(tmp_path / "d"))
    teacher = ds.dataset_info.metadata["teacher"]
    assert teacher["name"].endswith("_oracle_teacher") and teacher["sides"] == ["audio", "video"]
    assert teacher["clips"] == {"audio": len(ds) - 1, "video": len(ds) - 1}   # clip 1: None
    for i in range(len(ds)):
        ex = ds[i]
        clip = int(ex["video_id"].decode().split("_")[-1])
        T = ex["num_frames"]
        if clip == 1:
            assert not ex["has_teacher"] and not ex["teacher_audio"].any()
            assert not ex["has_teacher_audio"] and not ex["has_teacher_video"]
            continue
        # float32: a posterior is stored as the teacher gave it (float16 flushed < 6e-8 to 0)
        assert ex["has_teacher"] and ex["teacher_audio"].dtype == np.float32
        assert ex["has_teacher_audio"] and ex["has_teacher_video"]
        np.testing.assert_array_equal(ex["teacher_audio"].argmax(1), (np.arange(T) + clip) % K)
        np.testing.assert_array_equal(ex["teacher_video"].argmax(1),
                                      K - 1 - (np.arange(T) + clip) % K)


def test_a_failing_teacher_is_reported_not_fatal(folder, tmp_path):
    with pytest.raises(ConfigError, match="no usable clip"):
        build.build("realav/face112", data_dir=str(tmp_path / "d"), manual_dir=str(folder),
                    cache_dir=str(tmp_path / "c"), workers=0, preprocess_fn=standin_preprocess,
                    teacher=_bad_teacher)
    outcomes = clips.preprocess_all(
        [clips.ClipTask(key="x", path=str(folder / "real_clip_0.mp4"), rel_path="x", label=0,
                        video_fake=False, audio_fake=False, method="real", identity="")],
        clips.PreprocessSpec(face_size=32, encoding=codec.EncodingParams(), teacher_dim=K,
                             preprocess=standin_preprocess, teacher=_bad_teacher),
        str(tmp_path / "c2"), workers=0)
    assert outcomes["x"].status == "error" and "teacher" in outcomes["x"].reason


# ------------------------------------------------------------------------ command line

def test_build_command_prints_the_report_and_sets_the_exit_status(realav_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(realav_dir / "real_video-retalking_6.mp4", src)
    mf.make_empty_file(src / "real_empty_1.mp4")
    (src / "manifest.csv").write_text("file,label,category\nreal_video-retalking_6.mp4,real,"
                                      "real\nreal_empty_1.mp4,real,real\n")
    cmd = [sys.executable, "-m", "avdetect.data.build", "realav/face112", "--data_dir",
           str(tmp_path / "data"), "--manual_dir", str(src), "--workers", "0"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd + ["--strict"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]            # a file was skipped
    assert "empty_file" in proc.stdout and "real_empty_1.mp4" in proc.stdout
    report = json.loads((tmp_path / "data/realav/face112/1.0.0/build_report.json").read_text())
    assert report["written"] == {"test": 1}
    # the dataset exists now: a plain re-run reuses it and succeeds
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "real_empty_1.mp4" in again.stdout
    bad = subprocess.run([sys.executable, "-m", "avdetect.data.build", "nosuchset",
                          "--data_dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 2 and "no dataset builder" in bad.stderr
