"""Params-only export (avdetect.export, `avdetect export`) and its reader
(avdetect.inference.load_model).

The round trip is checked leaf by leaf against the orbax checkpoint read independently
(``checkpointing.load_state_numpy``); the file is parsed with the plain ``msgpack``
package to show it holds only maps, strings and raw array bytes (no pickle); the two
ways of loading must give identical predictions; damaged files give CheckpointError
naming the file.
"""

from __future__ import annotations

import json
import pathlib

import jax
import msgpack
import numpy as np
import pytest

import tiny_checkpoint
from avdetect import cli, detect, export, inference
from avdetect.checkpointing import load_state_numpy
from avdetect.errors import CheckpointError


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tiny_checkpoint.train_toy_workdir(tmp_path_factory.mktemp("toy") / "wd")


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "toy.msgpack"
    return export.export_model(str(workdir), str(path))


def _leaves(tree):
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_round_trip_equals_the_checkpoint(workdir, exported):
    state = load_state_numpy(workdir / "checkpoints")
    expected = _leaves({"params": state["params"], **state["model_state"]})
    assert any("batch_stats" in k for k in expected)             # the toy net has BatchNorm
    model = inference.load_model(exported)
    got = _leaves(model.variables)
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    from_dir = inference.load_model(workdir)
    assert model.config.to_dict() == from_dir.config.to_dict()
    report = json.loads((workdir / "eval_validation.json").read_text())
    assert model.threshold == from_dir.threshold == report["threshold"]["value"]
    assert model.threshold_origin == "report" and "validation" in model.threshold_source
    assert model.category_names == from_dir.category_names == ("RVRA", "RVFA", "FVRA", "FVFA")
    assert model.method_names == ("real", "random_a", "random_b")
    assert model.source["kind"] == "export" and model.step == from_dir.step == 4
    assert model.preprocess == from_dir.preprocess
    assert model.window == tiny_checkpoint.TOY_WINDOW and model.inputs == ("mouth", "logmel")
    # Same predictions from both.
    rng, w = np.random.default_rng(0), model.window
    batch = {"mouth": rng.integers(0, 256, (2, w, 88, 88), dtype=np.uint8),
             "logmel": rng.standard_normal((2, 4 * w, 80), dtype=np.float32),
             "frame_mask": np.r_[np.ones(w), np.ones(w // 2), np.zeros(w - w // 2)]
             .reshape(2, w).astype(np.float32)}
    a, b = model.predict(batch), from_dir.predict(batch)
    np.testing.assert_array_equal(a["score"], b["score"])
    np.testing.assert_array_equal(a["frame_score"], b["frame_score"])


def test_file_is_plain_msgpack_without_optimizer_state(workdir, exported):
    data = pathlib.Path(exported).read_bytes()
    ext_codes = set()

    def ext_hook(code, payload):      # flax stores arrays as ext types of raw bytes
        ext_codes.add(code)
        return payload

    top = msgpack.unpackb(data, raw=False, ext_hook=ext_hook, strict_map_key=False)
    assert set(top) == {"header", "variables", "traced_predict"}
    assert isinstance(top["traced_predict"], bytes) and len(top["traced_predict"]) > 1000
    header = json.loads(top["header"])
    assert header["format"] == inference.FORMAT
    assert header["format_version"] == inference.FORMAT_VERSION
    assert header["config"]["method"] == "toy_method:build"
    assert header["source"]["step"] == 4
    assert set(top["variables"]) == {"params", "batch_stats"}
    assert ext_codes and not data.startswith(b"\x80")            # no pickle stream
    ckpt_bytes = sum(f.stat().st_size for f in (workdir / "checkpoints" / "4").rglob("*") if f.is_file())
    assert len(data) < ckpt_bytes                                  # no Adam moments, no RNG


def test_export_command_and_steps(workdir, tmp_path, capsys):
    assert cli.main(["export", str(workdir)]) == 0
    default = workdir / "model-4.msgpack"
    assert default.is_file() and str(default) in capsys.readouterr().out
    out = tmp_path / "m2.msgpack"
    assert cli.main(["export", str(workdir), "--step", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m2 = inference.load_model(out)
    assert m2.step == 2
    state2 = load_state_numpy(workdir / "checkpoints", 2)
    np.testing.assert_array_equal(m2.variables["params"]["head"]["kernel"], state2["params"]["head"]["kernel"])
    # The report's threshold was chosen for step 4 (the end of training): said so.
    assert any("step 4" in n and "step 2" in n for n in m2.notes)
    assert "note:" in printed
    # A step folder and the checkpoints folder work as sources too.
    assert inference.load_model(workdir / "checkpoints" / "2").step == 2
    assert inference.load_model(workdir / "checkpoints").step == 4
    assert cli.main(["export", str(tmp_path / "nowhere")]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_detect_gives_the_same_result_from_the_export(workdir, exported, realav_clips):
    clip = next(p for p in realav_clips if p.name == "real_video-retalking_6.mp4")
    traced, pre = inference.load_model(workdir), inference.load_model(exported)
    a = detect.score_video(clip, traced)
    b = detect.score_video(clip, pre)
    # The workdir is traced here; the file's pre-traced (jax.export) function is used.
    assert set(traced.compile_paths.values()) == {"traced"}
    assert set(pre.compile_paths.values()) == {"exported"}
    assert a.verdict == b.verdict and a.threshold == b.threshold
    # Same network, same XLA: equal up to float32 reassociation in the compiled program.
    np.testing.assert_allclose(b.score, a.score, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.frame_scores, a.frame_scores, rtol=1e-6, atol=1e-6)


def test_pretraced_predict_takes_any_batch_and_falls_back_when_unreadable(exported, tmp_path,
                                                                         caplog):
    model = inference.load_model(exported)
    rng, w = np.random.default_rng(1), model.window
    reference = inference.load_model(exported)
    reference._traced_predict = None                 # force the tracing path
    for n in (1, 3):                                  # one export serves every batch size
        batch = {"mouth": rng.integers(0, 256, (n, w, 88, 88), dtype=np.uint8),
                 "logmel": rng.standard_normal((n, 4 * w, 80), dtype=np.float32),
                 "frame_mask": np.ones((n, w), np.float32)}
        got, want = model.predict(batch), reference.predict(batch)
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6, atol=1e-6)
    assert list(model.compile_paths.values()) == ["exported", "exported"]
    assert list(reference.compile_paths.values()) == ["traced", "traced"]
    # A damaged pre-traced blob: a warning naming the file, then tracing, same scores.
    top = msgpack.unpackb(pathlib.Path(exported).read_bytes(), raw=False, strict_map_key=False,
                          ext_hook=lambda code, data: msgpack.ExtType(code, data))
    top["traced_predict"] = b"not a serialized module"
    damaged = tmp_path / "damaged.msgpack"
    damaged.write_bytes(msgpack.packb(top, use_bin_type=True))
    broken = inference.load_model(damaged)
    with caplog.at_level("WARNING"):
        out = broken.predict(batch)
    assert "pre-traced model cannot be used" in caplog.text and str(damaged) in caplog.text
    assert list(broken.compile_paths.values()) == ["traced"]
    np.testing.assert_allclose(out["score"], want["score"], rtol=1e-6, atol=1e-6)


def test_warm_up_compiles_in_the_background(exported):
    model = inference.load_model(exported)
    model.warm_up(1)
    model._warmup.join(timeout=120)
    assert model.warmup_seconds > 0 and len(model.compile_paths) == 1
    w = model.window
    model.predict({"mouth": np.zeros((1, w, 88, 88), np.uint8),
                   "logmel": np.zeros((1, 4 * w, 80), np.float32),
                   "frame_mask": np.ones((1, w), np.float32)})
    assert len(model.compile_paths) == 1            # the warm-up's program was reused


def test_bad_model_files_name_the_file(exported, tmp_path):
    data = pathlib.Path(exported).read_bytes()
    header = json.loads(msgpack.unpackb(data, raw=False, ext_hook=lambda c, p: p,
                                        strict_map_key=False)["header"])
    header["format_version"] = 99
    future = tmp_path / "future.msgpack"
    from flax import serialization
    restored = serialization.msgpack_restore(data)
    restored["header"] = json.dumps(header)
    future.write_bytes(serialization.msgpack_serialize(restored))
    cases = {
        "missing": (tmp_path / "absent.msgpack", "no such model"),
        "empty": (tmp_path / "empty.msgpack", "empty file"),
        "text": (tmp_path / "notes.msgpack", "not an exported avdetect model"),
        "truncated": (tmp_path / "half.msgpack", "not an exported avdetect model"),
        "future": (future, "format version 99"),
        "not a workdir": (tmp_path, "not a training workdir"),
    }
    (tmp_path / "empty.msgpack").write_bytes(b"")
    (tmp_path / "notes.msgpack").write_text("hello\n" * 20)
    (tmp_path / "half.msgpack").write_bytes(data[: len(data) // 2])
    for name, (path, words) in cases.items():
        with pytest.raises(CheckpointError) as info:
            inference.load_model(path)
        assert str(path) in str(info.value) and words in str(info.value), (name, info.value)
    with pytest.raises(CheckpointError, match="workdirs only"):
        inference.load_model(exported, step=2)


def test_config_json_restores_tuples():
    from configs import corrdistill
    config = corrdistill.get_config("tiny")
    back = inference.config_from_json(config.to_json_best_effort())
    assert back.model.visual.widths == config.model.visual.widths            # a tuple again
    assert isinstance(back.data.inputs, tuple) and back.data.inputs == tuple(config.data.inputs)
    assert back.mesh == tuple(tuple(x) for x in config.mesh)


def _hide_pretrained_sources(monkeypatch):
    """Make every way to CAD's pretrained encoder weights fail: the locators and loaders
    raise, and the loaders' caches are emptied (so a cached load cannot hide a re-read).
    (The face-mesh .tflite file itself stays: detect's preprocessing tracks landmarks
    with it, avdetect.preprocess.landmarks; only the encoder's path to it is cut.)"""
    from avdetect.pretrained import clip, face_mesh, whisper
    from avdetect.pretrained.errors import WeightFileError

    def gone(*_a, **_k):
        raise WeightFileError("hidden", "pretrained source hidden by the test")
    for fn in (whisper._load_whisper, face_mesh._load_face_mesh, clip._load_clip):
        fn.cache_clear()
    monkeypatch.setattr(whisper, "default_tiny_en_dir", gone)
    monkeypatch.setattr(face_mesh, "default_face_mesh_path", gone)
    monkeypatch.setattr(face_mesh, "load_face_mesh_params", gone)
    monkeypatch.setattr(whisper, "_load_whisper", gone)
    monkeypatch.setattr(face_mesh, "_load_face_mesh", gone)


def test_exported_cad_scores_with_the_pretrained_sources_hidden(realav_clips, tmp_path,
                                                                monkeypatch):
    """CAD's default (Whisper tiny.en + face mesh, real weights put in by the trainer's
    hook) exported, then scored with the Whisper package and the face-mesh file out of
    reach: same score as before hiding, and the frozen weights come from the file."""
    from avdetect.bench import common
    from avdetect.errors import AVDetectError
    from avdetect.methods import build_method

    model = common.random_model("cad:tiny")
    model.variables = model.method.load_pretrained(model.variables)
    path = export.export_model(model, str(tmp_path / "cad.msgpack"))
    header = json.loads(msgpack.unpackb(pathlib.Path(path).read_bytes(), raw=False)["header"])
    assert header["config"]["model"]["audio"]["arch"]["d_model"] == 384     # tiny.en sizes
    before = detect.score_video(realav_clips[0], inference.load_model(path))

    _hide_pretrained_sources(monkeypatch)
    with pytest.raises(AVDetectError):              # the hiding works: a fresh config fails
        build_method(model.config)
    loaded = inference.load_model(path)
    after = detect.score_video(realav_clips[0], loaded)
    assert np.isfinite(before.score)
    assert after.score == pytest.approx(before.score, abs=1e-6)
    np.testing.assert_allclose(after.frame_scores, before.frame_scores, atol=1e-6)
    want, got = _leaves(model.variables), _leaves(loaded.variables)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
