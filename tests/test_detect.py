"""`avdetect detect` and its library (avdetect.detect, avdetect.timeline).

References: window scores are recomputed by hand (NumPy slicing of the preprocessed
clip, the shard codecs done with OpenCV directly, ``method.predict`` called directly);
flags are checked against clips edited with ffmpeg at known times (black video, muted
audio, no audio track, one corrupt MJPEG frame); the timeline PNG is read back and its
strips' pixels checked at those times; every bad-input kind must give its typed error
and the documented exit code.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import types

import cv2
import jax
import jsonschema
import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg

import media_factory as mf
import tiny_checkpoint
from avdetect import cli, contract, detect, errors, result, timeline
from avdetect.checkpointing import load_state_numpy
from avdetect.data.windows import window_starts
from avdetect.inference import load_model
from avdetect.preprocess.pipeline import preprocess_video

REPO = pathlib.Path(__file__).resolve().parents[1]
FPS = contract.VIDEO_FPS


@pytest.fixture(autouse=True)
def _no_compile_cache(monkeypatch):
    # The CLI turns on JAX's persistent cache (a process-wide setting): not in tests.
    monkeypatch.setenv("AVDETECT_COMPILE_CACHE", "off")


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
    return tiny_checkpoint.train_toy_workdir(tmp_path_factory.mktemp("toy") / "wd")


@pytest.fixture(scope="module")
def toy_model(toy_workdir):
    return load_model(toy_workdir)


@pytest.fixture(scope="module")
def clip(realav_clips):
    """A real 6.1 s clip (153 frames, face everywhere, audio everywhere)."""
    return next(p for p in realav_clips if p.name == "real_video-retalking_1.mp4")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def edited(clip, tmp_path_factory):
    """Clips edited at known times: black video 2.0-3.0 s and muted audio 4.0-5.0 s
    (PCM audio in MKV, so the silence is exact); no audio track; 1.2 s long; one
    corrupt frame (MJPEG AVI, frame 40)."""
    root = tmp_path_factory.mktemp("edited")
    masked = root / "masked.mkv"
    _ffmpeg("-i", str(clip), "-vf", "drawbox=enable='between(t,2,3)':x=0:y=0:w=iw:h=ih:color=black:t=fill",
            "-af", "volume=enable='between(t,4,5)':volume=0", "-c:v", "libx264", "-preset",
            "ultrafast", "-c:a", "pcm_s16le", str(masked))
    silent = root / "silent.mp4"
    _ffmpeg("-i", str(clip), "-an", "-c:v", "copy", str(silent))
    short = root / "short.mp4"
    _ffmpeg("-i", str(clip), "-t", "1.2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
            str(short))
    mjpeg = root / "clean.avi"
    _ffmpeg("-i", str(clip), "-c:v", "mjpeg", "-q:v", "3", "-c:a", "pcm_s16le", str(mjpeg))
    mf.corrupt_frame(mjpeg, root / "corrupt.avi", 40)
    # 2 s of the clip's video with its sound replaced: full-scale white noise (log-mel
    # near 0 and above: loud) and exact digital silence (PCM zeros).
    loud, hushed = root / "loud.mkv", root / "hushed.mkv"
    for out, src in ((loud, "anoisesrc=a=0.9:c=white:r=16000:seed=1"), (hushed, "anullsrc=r=16000:cl=mono")):
        _ffmpeg("-i", str(clip), "-f", "lavfi", "-i", src, "-map", "0:v", "-map", "1:a", "-t", "2",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le", str(out))
    return {"masked": masked, "silent": silent, "short": short, "corrupt": root / "corrupt.avi",
            "loud": loud, "hushed": hushed,
            "tiny": mf.transcode(clip, root / "tiny.mp4", frames=7)}      # 0.28 s


# ----------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [1, 24, 25, 26, 50, 51, 153])
@pytest.mark.parametrize("w", [25, 50])
def test_window_plan(t, w):
    assert detect.window_plan(t, w, w) == window_starts(t, w)
    for stride in (1, w // 2, w - 1):
        starts = detect.window_plan(t, w, stride)
        assert starts[0] == 0 and np.all(np.diff(starts) == stride)
        assert starts[-1] + w >= t                               # the end is covered
        assert len(starts) == 1 or starts[-2] + w < t            # by the first window to reach it
    with pytest.raises(ValueError):
        detect.window_plan(t, w, 0)


def test_frame_ranges_against_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random(rng.integers(0, 40)) < rng.random()
        runs, start = [], None
        for i, v in enumerate(mask.tolist() + [False]):
            if v and start is None:
                start = i
            elif not v and start is not None:
                runs.append((start, i))
                start = None
        assert result.frame_ranges(mask) == runs


def test_expand_paths_and_output_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sub").mkdir()
    for rel in ("a/x.mp4", "a/y.MOV", "a/notes.txt", "a/sub/x.mp4"):
        (tmp_path / rel).write_bytes(b"0")
    files, problems = detect.expand_paths([str(tmp_path / "a")])
    assert [pathlib.Path(f).name for f in files] == ["x.mp4", "y.MOV"] and not problems
    files, _ = detect.expand_paths([str(tmp_path / "a")], recursive=True)
    assert len(files) == 3
    files, _ = detect.expand_paths([str(tmp_path / "a" / "*.mp4"), str(tmp_path / "a" / "x.mp4")])
    assert files == [str(tmp_path / "a" / "x.mp4")]               # duplicates dropped
    files, problems = detect.expand_paths([str(tmp_path / "a" / "sub" / "*.avi"),
                                           str(tmp_path / "a" / "sub"), str(tmp_path / "gone.mp4")])
    assert files == [str(tmp_path / "a" / "sub" / "x.mp4"), str(tmp_path / "gone.mp4")]
    assert len(problems) == 1 and "matches no file" in problems[0]
    _, problems = detect.expand_paths([str(tmp_path / "a" / "sub" / "nothing")])
    assert problems == []                                         # a plain path: scored -> error
    (tmp_path / "empty").mkdir()
    _, problems = detect.expand_paths([str(tmp_path / "empty")])
    assert "no video files" in problems[0]
    assert detect.output_names(["a/x.mp4", "b/x.mp4", "x.mov", "y.mp4"]) == [
        "x.mp4", "x.mp4-2", "x.mov", "y"]


def test_output_names_never_collide():
    # The reported bug: a-2.mp4's own name was also the suffix given to the second 'a'.
    assert detect.output_names(["a.mp4", "a.webm", "a-2.mp4"]) == ["a.mp4", "a.webm", "a-2"]
    assert detect.output_names(["d1/a.mp4", "d2/a.mp4", "a.mp4-2"]) == ["a.mp4", "a.mp4-3", "a.mp4-2"]
    rng = np.random.default_rng(0)
    parts = ["a", "A", "a-2", "a-3", "b", "a.mp4"]
    for _ in range(500):
        paths = [f"{rng.choice(['', 'x/', 'y/'])}{rng.choice(parts)}{rng.choice(['.mp4', '.webm', '.MP4', ''])}"
                 for _ in range(rng.integers(1, 9))]
        names = detect.output_names(paths)
        # Unique even on a case-insensitive file system; the same list gives the same names.
        assert len({n.casefold() for n in names}) == len(paths), (paths, names)
        assert detect.output_names(list(paths)) == names
        for p, n in zip(paths, names):                   # each name comes from its own file
            assert n.startswith(pathlib.PurePath(p).stem or "video"), (p, n)


def test_exit_code_rule():
    assert detect.exit_code(3, 0) == 0
    assert detect.exit_code(2, 1) == 3
    assert detect.exit_code(0, 2) == 4


# ----------------------------------------------------------------------------------
# Scores against a hand-built reference (real methods, random weights)
# ----------------------------------------------------------------------------------

def _jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _reference_windows(feats, starts, w, inputs, face_size):
    """Windows cut by hand: zero padding, float16 log-mel, JPEG(q90) faces resized."""
    out = []
    for s in starts:
        n = min(w, feats.num_frames - s)
        win = {"frame_mask": np.r_[np.ones(n), np.zeros(w - n)].astype(np.float32)}
        if "mouth" in inputs:
            win["mouth"] = np.zeros((w, 88, 88), np.uint8)
            win["mouth"][:n] = feats.mouth[s:s + n]
        if "logmel" in inputs:
            win["logmel"] = np.zeros((4 * w, 80), np.float32)
            win["logmel"][:4 * n] = feats.logmel[4 * s:4 * (s + n)].astype(np.float16)
        if "face" in inputs:
            win["face"] = np.zeros((w, face_size, face_size, 3), np.uint8)
            for i in range(n):
                f = _jpeg_roundtrip(feats.face[s + i], 90)
                win["face"][i] = cv2.resize(f, (face_size, face_size), interpolation=cv2.INTER_AREA)
        out.append(win)
    return out


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


@pytest.mark.parametrize("method", ["corrdistill", "cad"])
def test_scores_equal_the_method_on_hand_cut_windows(method, clip, tmp_path):
    # CAD's random stand-in encoders: window cutting and score pooling are under test.
    arg = "tiny,data=random" + (",encoders=random" if method == "cad" else "")
    wd = tiny_checkpoint.random_init_workdir(tmp_path / method, method, arg)
    model = load_model(wd)
    assert model.threshold_origin == "default" and model.threshold == 0.0
    assert model.score_scale == "log_odds"
    feats = preprocess_video(clip, face_size=contract.FACE_SIZE_DEFAULT)
    state = load_state_numpy(wd / "checkpoints")
    for path, v in jax.tree_util.tree_leaves_with_path(state["params"]):   # the checkpoint's weights
        np.testing.assert_array_equal(v, _get(model.variables["params"], path))
    w, b = model.window, 4
    for stride in (w, w // 2):
        res = detect.score_video(clip, model, stride=stride, batch_size=b)
        starts = detect.window_plan(feats.num_frames, w, stride)
        wins = _reference_windows(feats, starts, w, model.inputs, int(model.config.data.face_size))
        # The method on the hand-cut windows, in batches of the same size (one compilation).
        wins += [{k: np.zeros_like(v) for k, v in wins[0].items()}] * (-len(wins) % b)
        parts = [model.predict({k: np.stack([x[k] for x in wins[i:i + b]]) for k in wins[0]})
                 for i in range(0, len(wins), b)]
        out = {k: np.concatenate([p[k] for p in parts])[:len(starts)] for k in parts[0]}
        n = np.array([x["frame_mask"].sum() for x in wins[:len(starts)]])
        assert [x.start for x in res.windows] == starts
        assert [x.num_frames for x in res.windows] == n.astype(int).tolist()
        np.testing.assert_allclose([x.score for x in res.windows], out["score"], rtol=1e-4, atol=1e-5)
        assert res.score == pytest.approx(float(np.sum(out["score"] * n) / n.sum()), rel=1e-4, abs=1e-6)
        frame_sum, frame_cnt = np.zeros(feats.num_frames), np.zeros(feats.num_frames)
        for s, fs, k in zip(starts, out["frame_score"], n.astype(int)):
            frame_sum[s:s + k] += fs[:k]
            frame_cnt[s:s + k] += 1
        np.testing.assert_allclose(res.frame_scores, frame_sum / frame_cnt, rtol=1e-4, atol=1e-5)
        assert res.verdict == ("fake" if res.score >= 0.0 else "real")
        assert res.stride == stride and res.window == w


# ----------------------------------------------------------------------------------
# Flags and the timeline picture
# ----------------------------------------------------------------------------------

def _pixel(png: np.ndarray, ax, t: float, y: float = 0.5) -> np.ndarray:
    x_disp, y_disp = ax.transData.transform((t, y))
    return png[int(round(png.shape[0] - y_disp)), int(round(x_disp)), :3]


def _hex(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0


def test_flags_and_timeline_of_an_edited_clip(toy_model, edited, tmp_path):
    res = detect.score_video(edited["masked"], toy_model)
    flags = res.flags
    (a, b), = flags["no_face_frames"]["ranges_s"]                # black video 2.0-3.0 s
    assert a == pytest.approx(2.0, abs=2 / FPS) and 3.0 - 1e-6 <= b <= 3.0 + 6 / FPS
    # Muted audio 4.0-5.0 s. ffmpeg's `enable` acts on whole audio frames (1024 samples =
    # 1.6 video frames) and a frame's 4 mel windows reach 200 samples beyond it: +-3 frames.
    (c, d), = flags["silent_audio_frames"]["ranges_s"]
    assert 4.0 <= c <= 4.0 + 3 / FPS and d == pytest.approx(5.0, abs=3 / FPS)
    assert flags["no_face_frames"]["count"] == round((b - a) * FPS)
    assert flags["no_face_frames"]["fraction"] == pytest.approx((b - a) * FPS / res.num_frames, abs=1e-4)
    assert not flags["no_audio"] and not flags["too_short"] and flags["corrupt_frames"] == 0
    for win in res.windows:                                       # per-window shares
        seg = slice(win.start, win.start + win.num_frames)
        assert win.face_fraction == pytest.approx(res.face_found[seg].mean())
        assert win.audio_fraction == pytest.approx(res.audio_present[seg].mean())
    assert any("no face in" in s for s in res.warnings)

    fig = timeline.timeline_figure(res)
    FigureCanvasAgg(fig).draw()
    path = tmp_path / "t.png"
    fig.savefig(path, dpi=timeline.DPI)
    png = mpimg.imread(path)
    w_in, h_in = timeline.SIZE_IN
    assert png.shape[:2] == (round(h_in * timeline.DPI), round(w_in * timeline.DPI))
    _, ax_face, ax_audio = fig.axes
    green, red, grey = (_hex(timeline.COLORS[k]) for k in ("present", "missing", "silent"))
    np.testing.assert_allclose(_pixel(png, ax_face, 1.0), green, atol=0.02)
    np.testing.assert_allclose(_pixel(png, ax_face, 2.5), red, atol=0.02)
    np.testing.assert_allclose(_pixel(png, ax_audio, 4.5), grey, atol=0.02)
    np.testing.assert_allclose(_pixel(png, ax_audio, 2.5), green, atol=0.02)


def test_no_audio_short_and_corrupt_clips(toy_model, edited, tmp_path):
    res = detect.score_video(edited["silent"], toy_model)
    assert res.flags["no_audio"] and not res.audio_present.any()
    assert res.flags["silent_audio_frames"]["count"] == res.num_frames
    assert any("no audio track" in s for s in res.warnings)
    timeline.save_timeline(res, tmp_path / "silent.png")            # drawn, not crashing
    assert mpimg.imread(tmp_path / "silent.png").shape[2] == 4

    res = detect.score_video(edited["short"], toy_model)             # 30 frames < window 50
    assert res.flags["too_short"] and res.num_frames == 30
    assert [(w.start, w.num_frames) for w in res.windows] == [(0, 30)]
    assert res.score == pytest.approx(res.windows[0].score)
    assert any("20 missing frames are masked out" in s for s in res.warnings)

    with pytest.warns() as record:                                   # nothing re-emitted
        res = detect.score_video(edited["corrupt"], toy_model)
        import warnings
        warnings.warn("sentinel")
    assert [str(r.message) for r in record] == ["sentinel"]
    assert res.flags["corrupt_frames"] == 1 and res.flags["corrupt_audio_packets"] == 0


# ----------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------

def test_detect_command_on_two_fixture_clips(toy_workdir, realav_clips, tmp_path, capsys):
    clips = [p for p in realav_clips if p.name in ("real_video-retalking_1.mp4",
                                                   "fake_video-retalking_full_1.mp4")]
    out = tmp_path / "out"
    code = cli.main(["detect", *map(str, clips), "--model", str(toy_workdir), "--out", str(out),
                     "--timings", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == detect.EXIT_OK
    report = json.loads((toy_workdir / "eval_validation.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"files": 2, "scored": 2, "failed": 0} and summary["exit_code"] == 0
    for clip_path in clips:
        doc = json.loads((out / f"{clip_path.stem}.json").read_text())
        jsonschema.Draft202012Validator(result.RESULT_SCHEMA).validate(doc)
        assert doc["threshold"]["value"] == pytest.approx(report["threshold"]["value"])
        assert doc["threshold"]["origin"] == "report"
        assert doc["verdict"] == ("fake" if doc["score"] >= doc["threshold"]["value"] else "real")
        n = np.array([w["num_frames"] for w in doc["windows"]])
        s = np.array([w["score"] for w in doc["windows"]])
        assert doc["score"] == pytest.approx(float((n * s).sum() / n.sum()))
        assert n.sum() == doc["num_frames"] == len(doc["frame_scores"]) == len(doc["face_found"])
        assert doc["windows"][-1]["end_s"] == pytest.approx(doc["num_frames"] / FPS)
        png = out / f"{clip_path.stem}.timeline.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(png).ndim == 3
        assert doc["file"] == str(clip_path) and doc["status"] == "scored"
        assert not doc["flags"]["too_short"] and doc["window"]["frames"] == tiny_checkpoint.TOY_WINDOW
        assert clip_path.name in stdout
        for stage in ("decode_video", "face_track", "logmel", "model", "total"):
            assert doc["timings_s"][stage] >= 0
        assert doc["timings_s"]["total"] >= doc["timings_s"]["preprocess"] + doc["timings_s"]["model"]
    assert "timings (s;" in stdout and "face_track" in stdout
    # 'silent 36%': this fake's audio starts with digital silence (fixture README).
    fake_row = next(line for line in stdout.splitlines() if line.startswith("fake_video"))
    assert "silent 36%" in fake_row


def test_detect_on_generated_clips_in_a_folder_tree(toy_workdir, tmp_path, capsys):
    """Clips of the synthetic benchmark generator (a real and a lip-synced fake, 2 s, in
    its FakeAVCeleb-like folder tree), found with --recursive."""
    from datasets.synthetic_av import faces, generate
    _, specs = generate.plan(num_clips=12, seconds=2.0)
    stills = {s.name: s for s in faces.load_stills()}
    picked = [next(s for s in specs if s.method == "real"), next(s for s in specs if s.method == "lipsync")]
    for spec in picked:
        generate.write_clip(spec, tmp_path / "gen", stills, 128, 2 * FPS)
    out = tmp_path / "out"
    code = cli.main(["detect", str(tmp_path / "gen"), "-r", "--model", str(toy_workdir),
                     "--out", str(out), "--no-progress", "--no-png"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(pathlib.Path(e["file"]).stem for e in summary["files"]) == sorted(s.clip_id for s in picked)
    for e in summary["files"]:
        doc = json.loads(pathlib.Path(e["json"]).read_text())
        truth = np.load(pathlib.Path(e["file"]).with_suffix(".npz"))
        assert doc["num_frames"] == len(truth["face_box"]) == 2 * FPS
        assert doc["flags"]["no_face_frames"]["fraction"] < 0.1     # the rendered face is found
        assert not doc["flags"]["no_audio"] and "timeline" not in e


def test_threshold_override_and_json_stdout(toy_workdir, clip, capsys):
    code = cli.main(["detect", str(clip), "--model", str(toy_workdir), "--threshold=-1e9",
                     "--format", "json", "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    entry, = summary["files"]
    assert entry["verdict"] == "fake" and entry["threshold"] == {
        "value": -1e9, "source": "given on the command line", "origin": "override"}


def test_default_threshold_is_named(toy_workdir, clip, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(toy_workdir, wd)
    for rep in wd.glob("eval_*"):
        rep.unlink()
    model = load_model(wd)
    assert model.threshold_origin == "default"
    assert "not a threshold chosen on validation data" in model.threshold_source
    res = detect.score_video(clip, model)
    assert res.to_json()["threshold"]["origin"] == "default"
    assert any("threshold is a default" in s for s in res.warnings)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clip):
    """name -> (path, expected MediaError class) for files detect cannot score."""
    root = tmp_path_factory.mktemp("bad")
    short = mf.transcode(clip, root / "two_frames.mp4", frames=2)      # < detect.MIN_FRAMES
    return {
        "missing": (root / "missing.mp4", errors.FileMissingError),
        "empty": (mf.make_empty_file(root / "empty.mp4"), errors.EmptyFileError),
        "text": (mf.make_text_file(root / "notes.mp4"), errors.NotMediaError),
        "truncated": (mf.truncate_copy(clip, root / "half.mp4", 0.5), errors.CorruptMediaError),
        "audio_only": (mf.make_video(root / "voice.m4a", seconds=2.0, video=False).path,
                       errors.NoVideoStreamError),
        "no_face": (mf.make_video(root / "stripes.mp4", seconds=2.0, size=(160, 120)).path,
                    errors.NoFaceError),
        "too_short": (short, errors.TooShortError),
    }


def test_every_bad_kind_gives_its_typed_error(toy_model, bad_files):
    for name, (path, expected) in bad_files.items():
        with pytest.raises(errors.MediaError) as info:
            detect.score_video(path, toy_model)
        assert type(info.value) is expected, (name, info.value)
        assert str(path) in str(info.value) and info.value.reason


def test_exit_codes_for_bad_and_mixed_batches(toy_workdir, bad_files, clip, tmp_path, capsys):
    paths = [str(p) for p, _ in bad_files.values()]
    out = tmp_path / "bad_out"
    code = cli.main(["detect", *paths, "--model", str(toy_workdir), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == detect.EXIT_NONE
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["scored"] == 0 and summary["exit_code"] == 4
    kinds = {e["file"]: e["error"]["kind"] for e in summary["files"]}
    assert kinds == {str(p): cls.kind for p, cls in bad_files.values()}
    for p in paths:                                   # one clear line per file, no traceback
        assert f"cannot score {p}:" in captured.err
        assert pathlib.Path(p).name in captured.out
    assert "Traceback" not in captured.err + captured.out

    code = cli.main(["detect", str(clip), paths[0], "--model", str(toy_workdir), "--no-progress"])
    assert code == detect.EXIT_PARTIAL
    assert "1 scored, 1 could not be scored" in capsys.readouterr().out


def test_usage_errors_exit_2(toy_workdir, clip, tmp_path, capsys):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    cases = {
        "folder without videos": ["detect", str(empty), "--model", str(toy_workdir)],
        "glob matching nothing": ["detect", str(tmp_path / "*.mp4"), "--model", str(toy_workdir)],
        "model missing": ["detect", str(clip), "--model", str(tmp_path / "no_model")],
        "model not a model": ["detect", str(clip), "--model", str(clip)],
        "no model": ["detect", str(clip)],
        "bad batch size": ["detect", str(clip), "--model", str(toy_workdir), "--batch-size", "0"],
        "stride over window": ["detect", str(clip), "--model", str(toy_workdir), "--stride", "51"],
    }
    for what, argv in cases.items():
        code = cli.main([*argv, "--no-progress"] if "--model" in argv else argv)
        err = capsys.readouterr().err
        assert code == detect.EXIT_USAGE, what
        assert err.strip() and "Traceback" not in err, what
    with pytest.raises(SystemExit) as info:           # argparse's own usage errors
        cli.main(["detect", str(clip), "--batch-size", "many"])
    assert info.value.code == 2


def test_python_m_avdetect_help_documents_exit_codes():
    out = subprocess.run([sys.executable, "-m", "avdetect", "detect", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for line in ("0  every file was scored", "2  usage error", "3  some files could not be scored",
                 "4  no file could be scored"):
        assert line in out


# ----------------------------------------------------------------------------------
# Silence is silence (log-mel 0 is loud); short clips are scored
# ----------------------------------------------------------------------------------

def test_audio_presence_reads_log_mel_zero_as_loud():
    t, m = 6, contract.MEL_PER_FRAME
    floor = np.log(contract.LOG_FLOOR)                       # the log-mel of digital silence
    logmel = np.zeros((m * t, contract.N_MELS), np.float32)  # mel energy 1: loud
    logmel[m * 2:m * 4] = floor                              # frames 2, 3 silent
    logmel[m * 4:m * 5] = floor
    logmel[m * 4 + 1, 7] = floor + np.log(20.0)              # frame 4: one band 20x the floor
    logmel[m * 5:] = floor + np.log(5.0)                     # frame 5: within 10x, silence
    feats = types.SimpleNamespace(num_frames=t, has_audio=True, logmel=logmel)
    np.testing.assert_array_equal(detect.audio_presence(feats), [1, 1, 0, 0, 1, 0])
    feats.has_audio = False                                  # no track: nothing is heard
    assert not detect.audio_presence(feats).any()


def test_silence_warnings_follow_the_sound(toy_model, edited):
    loud = detect.score_video(edited["loud"], toy_model)
    feats = preprocess_video(edited["loud"], face_size=8)
    assert feats.logmel.reshape(loud.num_frames, -1).max(axis=1).min() > -1.0   # loud throughout
    assert loud.audio_present.all() and not loud.flags["no_audio"]
    assert not any("silence" in w or "audio track" in w for w in loud.warnings), loud.warnings

    hushed = detect.score_video(edited["hushed"], toy_model)     # a track of digital silence
    assert not hushed.flags["no_audio"] and not hushed.audio_present.any()
    assert "digital silence in 100% of frames" in hushed.warnings
    assert not any("no audio track" in w for w in hushed.warnings)

    none = detect.score_video(edited["silent"], toy_model)       # no track at all
    msg, = [w for w in none.warnings if w.startswith("no audio track")]
    assert "silence" not in msg                    # the model is fed log-mel 0, not silence


def test_a_clip_under_one_second_is_scored_from_a_masked_window(toy_model, edited):
    res = detect.score_video(edited["tiny"], toy_model)
    w = toy_model.window
    assert res.num_frames == 7 and res.flags["too_short"]
    assert [(x.start, x.num_frames) for x in res.windows] == [(0, 7)]
    doc = res.to_json()
    jsonschema.Draft202012Validator(result.RESULT_SCHEMA).validate(doc)
    assert doc["flags"]["too_short"] and len(doc["frame_scores"]) == 7
    # The padded frames do not count: any content there gives the same score.
    feats, _, _ = detect.preprocess_file(str(edited["tiny"]), toy_model)
    window, = detect.cut_windows(feats, toy_model, [0])
    np.testing.assert_array_equal(window["frame_mask"], np.r_[np.ones(7), np.zeros(w - 7)])
    rng = np.random.default_rng(0)
    noisy = {k: v.copy() for k, v in window.items()}
    noisy["mouth"][7:] = rng.integers(0, 256, noisy["mouth"][7:].shape, dtype=np.uint8)
    noisy["logmel"][4 * 7:] = rng.normal(0, 3, noisy["logmel"][4 * 7:].shape)
    a, b = (toy_model.predict({k: v[None] for k, v in x.items()}) for x in (window, noisy))
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["frame_score"][0, :7], a["frame_score"][0, :7], rtol=1e-5, atol=1e-6)
    assert res.score == pytest.approx(float(a["score"][0]), rel=1e-5, abs=1e-6)

