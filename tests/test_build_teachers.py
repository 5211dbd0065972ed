"""Teachers by name in every dataset builder: each builder's fake manual folder (laid out as
the real dataset, from tests/test_builders.py) built with a registered teacher, checking
that the teacher gets the clip's own audio (the borrowed file for CMDFD's W2L clips),
that shards record which sides were filled (float32, absent side = zeros + flag False),
and the synthetic benchmark through the build command with ``--teacher oracle``."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from avdetect import contract, teachers
from avdetect.data import build, clips
from avdetect.data.cache_entry import teacher_row
from avdetect.errors import ConfigError
from avdetect.media.decode import load_audio
# fake FakeAVCeleb / CMDFD trees and the fast stand-in preprocessing
from test_builders import _clip, cmdfd_tree, fav_tree, standin_preprocess  # noqa: F401

K = 3


class _AudioProbe:
    """An audio-side teacher whose posteriors encode the audio it was given: column 0 is
    the per-frame RMS of the waveform (checked against an independent decode of the file
    the clip's audio should come from)."""
    name, num_classes, sides = "probe", K, frozenset({"audio"})

    def __call__(self, *, audio, mouth, num_frames, meta):
        if audio is None:
            return None
        frames = np.asarray(audio, np.float64).reshape(num_frames, -1)
        out = np.zeros((num_frames, K), np.float32)
        out[:, 0] = np.sqrt((frames ** 2).mean(1))
        out[:, 1] = 1.0
        return out, np.ones((num_frames, K), np.float32)     # video side: not claimed


def _frame_rms(path, num_frames) -> np.ndarray:
    wav = load_audio(str(path), num_frames=num_frames).astype(np.float64)
    return np.sqrt((wav.reshape(num_frames, -1) ** 2).mean(1))


@pytest.fixture(scope="module")
def probe():
    saved = dict(teachers.TEACHERS)
    teachers.register_teacher("probe", lambda **kw: _AudioProbe())
    yield teachers.resolve_teacher("probe")
    teachers.TEACHERS.clear()
    teachers.TEACHERS.update(saved)


def _build(name, manual_dir, data_dir, teacher):
    builder, report = build.build(name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                                  workers=0, preprocess_fn=standin_preprocess, teacher=teacher)
    return f"{builder.name}/{builder.builder_config.name}", report


def _examples(data_dir, name):
    out = {}
    for split in tfds.builder(name, data_dir=str(data_dir)).info.splits:
        ds = tfds.data_source(name, split=split, data_dir=str(data_dir))
        for i in range(len(ds)):
            out[ds[i]["video_id"].decode()] = ds[i]
    return out, ds.dataset_info.metadata


def _check_audio_side(ex, source_file):
    """The stored audio side is the probe's output on ``source_file``'s audio; the video
    side it does not claim is stored absent."""
    T = int(ex["num_frames"])
    assert ex["teacher_audio"].dtype == np.float32 and ex["teacher_audio"].shape == (T, K)
    np.testing.assert_allclose(ex["teacher_audio"][:, 0], _frame_rms(source_file, T),
                               rtol=1e-4, atol=1e-6)
    assert ex["has_teacher_audio"] and not ex["has_teacher_video"] and not ex["has_teacher"]
    assert not ex["teacher_video"].any()


def test_fakeavceleb_rows_with_bare_file_names_reach_the_audio(fav_tree, probe, tmp_path):
    name, report = _build("fakeavceleb/face112", fav_tree.parent, tmp_path, probe)
    assert name == "fakeavceleb/face112_probe" and report["internal_errors"] == 0
    exs, meta = _examples(tmp_path, name)
    assert meta["teacher"]["sides"] == ["audio"] and meta["teacher"]["dim"] == K
    assert meta["teacher"]["clips"] == {"audio": len(exs), "video": 0}
    for key, ex in exs.items():
        _check_audio_side(ex, fav_tree / ex["source_path"].decode())


def test_cmdfd_teacher_hears_the_borrowed_audio(cmdfd_tree, probe, tmp_path):
    name, report = _build("cmdfd/face112", cmdfd_tree.parent, tmp_path, probe)
    exs, meta = _examples(tmp_path, name)
    assert meta["teacher"]["clips"]["audio"] == report["clips"] == 8
    # W2L has no audio of its own: the teacher hears the borrowed origin clip
    _check_audio_side(exs["wav2lip/id00001-id00002"],
                      cmdfd_tree / "origin/id00002_BBBBBBB-BBB.mp4")
    _check_audio_side(exs["VideoReTalk/id00001-id00002"],
                      cmdfd_tree / "VideoReTalk/id00001-id00002.mp4")
    _check_audio_side(exs["origin/id00003_CCCCCCCCCCC"],
                      cmdfd_tree / "origin/id00003_CCCCCCCCCCC.mp4")


@pytest.mark.parametrize("dataset", ["realtalk", "videofolder"])
def test_real_footage_builders_with_a_teacher(dataset, probe, tmp_path):
    src = tmp_path / "src"
    files = ["spk_a_1.mp4", "spk_b_1.mp4", "spk_c_1.mp4", "spk_d_1.mp4"]
    for i, f in enumerate(files):
        _clip(src / f, hz=250 + 150 * i, seed=i)
    with open(src / ("manifest.csv" if dataset == "realtalk" else "labels.csv"), "w",
              newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "method", "identity"])
        for i, f in enumerate(files):
            w.writerow([f, "real" if i % 2 == 0 else "fake", "" if i % 2 == 0 else "wav2lip",
                        f"id{i}"])
    # config nopf: the real clips alone (face112 adds build-time pseudo-fakes)
    name, report = _build(f"{dataset}/nopf", src, tmp_path / "d", probe)
    assert report["internal_errors"] == 0
    exs, meta = _examples(tmp_path / "d", name)
    assert len(exs) == len(files) and meta["teacher"]["sides"] == ["audio"]
    for ex in exs.values():
        _check_audio_side(ex, src / ex["source_path"].decode())


def test_synthetic_benchmark_with_the_oracle_through_the_build_command(
        tmp_path, monkeypatch, capsys):
    """``python -m avdetect.data.build synthetic_av/tiny --teacher oracle`` writes
    ``synthetic_av/tiny_oracle`` (K = 14, both sides = the generator's viseme tracks);
    a later build of the same config with another teacher is refused, not reused."""
    from datasets.synthetic_av import generate
    gen = tmp_path / "gen"
    generate.generate(gen, num_clips=12, seed=0, seconds=1.2, size=96, workers=2,
                      progress=False, method_weights={"lipsync": 1.0, "desync": 1.0})
    monkeypatch.setattr(clips, "default_preprocess", standin_preprocess)
    argv = ["synthetic_av/tiny", "--data_dir", str(tmp_path / "d"), "--manual_dir", str(gen),
            "--workers", "0", "--teacher", "oracle"]
    assert build.main(argv) == 0
    assert "dataset: synthetic_av/tiny_oracle" in capsys.readouterr().out
    exs, meta = _examples(tmp_path / "d", "synthetic_av/tiny_oracle")
    assert meta["teacher"]["sides"] == ["audio", "video"] and meta["teacher"]["dim"] == 14
    assert meta["teacher"]["spec"] == "oracle" and len(exs) == 12
    for key, ex in exs.items():
        assert ex["has_teacher"] and ex["has_teacher_audio"] and ex["has_teacher_video"]
        T = int(ex["num_frames"])
        with np.load((gen / ex["source_path"].decode()).with_suffix(".npz")) as z:
            np.testing.assert_array_equal(ex["teacher_audio"].argmax(1), z["viseme"][:T])
        np.testing.assert_allclose(ex["teacher_video"].sum(1), 1.0, atol=1e-6)
    # the same dataset asked for with another teacher: refused with the way out named
    import dataclasses
    from datasets.synthetic_av.synthetic_av import SyntheticAv
    same = dataclasses.replace(SyntheticAv.builder_configs["tiny"], name="tiny_oracle",
                               teacher_dim=14)
    with pytest.raises(ConfigError, match="--overwrite"):
        build.build("synthetic_av", data_dir=str(tmp_path / "d"), manual_dir=str(gen),
                    workers=0, builder_kwargs={"config": same},
                    teacher=teachers.resolve_teacher("oracle:label_smoothing=0.2"))
    # a teacher that refuses (e.g. vsr_self without weights) is a clean usage error
    # (exit status 2), before anything is built
    def untrained(**kw):
        raise ConfigError("teacher 'untrained' is not trained yet")
    monkeypatch.setitem(teachers.TEACHERS, "untrained", untrained)
    assert build.main(argv[:-1] + ["untrained"]) == 2
    assert "not trained yet" in capsys.readouterr().err


def test_teacher_row_names_the_files():
    task = clips.ClipTask(key="k", path="/data/a/b.mp4", rel_path="b.mp4", label=0,
                          video_fake=False, audio_fake=False, method="real", identity="i",
                          row={"path": "b.mp4", "race": "x"})
    assert teacher_row(task) == {"path": "/data/a/b.mp4", "audio_path": "/data/a/b.mp4",
                                       "race": "x"}
    assert teacher_row(task, "/data/o.mp4")["audio_path"] == "/data/o.mp4"
    assert contract.SAMPLES_PER_FRAME == 640       # _frame_rms reshapes by frame


def test_an_old_format_build_is_rebuilt_not_reused(tmp_path):
    """Shards of an older format cannot be read (float16 posteriors, no side flags): a
    build over one rebuilds it (the preprocessing cache is kept) instead of reusing it."""
    import json
    src = tmp_path / "src"
    _clip(src / "id0" / "a.mp4", seed=0)
    kw = dict(data_dir=str(tmp_path / "d"), manual_dir=str(src), workers=0,
              preprocess_fn=standin_preprocess)
    builder, _ = build.build("videofolder/face112", **kw)
    _, again = build.build("videofolder/face112", **kw)
    assert again.get("reused_existing")
    meta_file = pathlib.Path(builder.data_dir) / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["shard_format_version"] = 2
    meta_file.write_text(json.dumps(meta))
    _, rebuilt = build.build("videofolder/face112", **kw)
    assert not rebuilt.get("reused_existing") and rebuilt["from_cache"] > 0
