"""Landmark stage (avdetect.preprocess.landmarks), alignment (align) and their models.

Real footage: fixture clips, a realtalk clip, and a tight face crop of it made here with
ffmpeg (generators often output 128-256 px faces that fill the frame).  Geometry: a clip
rotated and shifted by known amounts must give the same aligned mouth.  Smoothing and
interpolation are checked against NumPy / SciPy references.
"""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from avdetect import contract
from avdetect.bench import landmark_bench
from avdetect.media import decode
from avdetect.preprocess import align, landmarks, pipeline
from avdetect.pretrained import tflite_models

import media_factory

REALTALK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realtalk"
REALTALK_CLIP = "real_Hangz-nju-cuhk-Talking-Face_PC-AVS_1.mp4"


def test_face_models_are_installed():
    """A clear message when the --no-deps model package or the runtime is missing."""
    try:
        for name in (tflite_models.FACE_DETECTION_SHORT, tflite_models.FACE_DETECTION_FULL,
                     tflite_models.FACE_LANDMARK):
            tflite_models.load(name)
    except tflite_models.TFLiteModelError as e:
        pytest.fail(f"face models unavailable ({e}); run launch/install.sh, which installs "
                    f"requirements-nodeps.txt with pip --no-deps")
    mesh = tflite_models.load(tflite_models.FACE_LANDMARK)
    assert mesh.input_shape == (1, 192, 192, 3)
    with pytest.raises(ValueError, match="input must be"):
        mesh(np.zeros((1, 128, 128, 3), np.float32))


def _write_clip(path: pathlib.Path, frames: list[np.ndarray]) -> pathlib.Path:
    return media_factory.write_frames(path, frames, crf=12)


def _found_ratio(path) -> float:
    tracker = landmarks.LandmarkTracker()
    hits = [tracker.update(f)[0] is not None for f in decode.iter_frames(path)]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def tight_clip(tmp_path_factory) -> pathlib.Path:
    """A realtalk clip cropped so the face fills the frame (cut at forehead and chin),
    160x160, like the tight outputs of several generators."""
    src = REALTALK / REALTALK_CLIP
    if not src.is_file():
        pytest.fail(f"realtalk clip missing: {src} (expected beside the repository)")
    out = tmp_path_factory.mktemp("tight") / "tight.mp4"
    return landmark_bench.tight_crop(src, out, size=160, max_frames=75)


@pytest.mark.parametrize("name", ["real_video-retalking_2.mp4",
                                  "fake_SadTalker-Video-Lip-Sync_wav2lip_1.mp4"])
def test_landmarks_in_98_percent_of_fixture_frames(realav_dir, name):
    assert _found_ratio(realav_dir / name) >= 0.98


def test_landmarks_in_98_percent_of_a_tight_face_crop(tight_clip):
    frame = next(iter(decode.iter_frames(tight_clip)))
    assert frame.shape[:2] == (160, 160)
    assert _found_ratio(tight_clip) >= 0.98


# ----------------------------------------------------------------- rotated / shifted clip


@pytest.fixture(scope="module")
def rotated_pair(tmp_path_factory, realav_dir):
    """The same 30 frames pasted upright into a 480x480 canvas and rotated by 12 degrees
    about a point off the face plus shifted by (+40, -25) px."""
    frames = list(decode.iter_frames(realav_dir / "real_video-retalking_3.mp4"))[:30]
    d = tmp_path_factory.mktemp("rotated")
    canvas = lambda f: cv2.copyMakeBorder(f, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    m = cv2.getRotationMatrix2D((200.0, 260.0), 12.0, 1.0)
    m[:, 2] += (40.0, -25.0)
    moved = [cv2.warpAffine(canvas(f), m, (480, 480), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
             for f in frames]
    base = pipeline.preprocess_video(_write_clip(d / "base.mp4", [canvas(f) for f in frames]))
    rot = pipeline.preprocess_video(_write_clip(d / "rot.mp4", moved))
    return base, rot


def test_rotated_shifted_clip_gives_the_same_aligned_mouth(rotated_pair):
    base, rot = rotated_pair
    assert base.face_found.all() and rot.face_found.all()
    # Lip centre in the reference frame (pixels of the 256 aligned face): within 2 px.
    cb = base.lips.mean(axis=1) * align.REF_SIZE
    cr = rot.lips.mean(axis=1) * align.REF_SIZE
    assert np.abs(cb - cr).max() < 2.0, np.abs(cb - cr).max()
    # The crops themselves agree up to a small shift (phase correlation) ...
    for t in (0, 10, 20, 29):
        (sx, sy), _ = cv2.phaseCorrelate(base.mouth[t].astype(np.float32),
                                         rot.mouth[t].astype(np.float32))
        assert math.hypot(sx, sy) < 2.0, (t, sx, sy)
    # ... and the source-pixel face boxes moved as the picture did.
    m = cv2.getRotationMatrix2D((200.0, 260.0), 12.0, 1.0)
    m[:, 2] += (40.0, -25.0)
    c_base = base.boxes[:, :2] + base.boxes[:, 2:] / 2
    c_rot = rot.boxes[:, :2] + rot.boxes[:, 2:] / 2
    want = c_base @ m[:, :2].T + m[:, 2]
    assert np.abs(c_rot - want).max() < 3.0


# -------------------------------------------------------------- alignment and crops


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (6, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -40.0])
    m_true = np.array([[s * math.cos(a), -s * math.sin(a), t[0]],
                       [s * math.sin(a), s * math.cos(a), t[1]]])
    dst = src @ m_true[:, :2].T + m_true[:, 2]
    np.testing.assert_allclose(align.similarity(src, dst), m_true, atol=1e-9)
    # Noisy points: the least-squares fit equals OpenCV's partial-affine estimate (its
    # Levenberg-Marquardt refinement over all points, every one an inlier here).
    noisy = dst + rng.normal(0, 2.0, dst.shape)
    ref, inliers = cv2.estimateAffinePartial2D(src, noisy, method=cv2.LMEDS)
    assert inliers.all()
    np.testing.assert_allclose(align.similarity(src, noisy), ref, atol=1e-4)
    with pytest.raises(ValueError, match="coincide"):
        align.similarity(np.ones((3, 2)), dst[:3])


def test_mouth_crop_is_centred_on_the_mouth_and_has_contract_shape():
    """A synthetic frame with a dark disc at a known spot: the mouth crop, aligned from
    mean-face points scaled/rotated into the frame, has the disc at its centre."""
    a, s, t = -0.2, 1.3, np.array([150.0, 90.0])
    m = np.array([[s * math.cos(a), -s * math.sin(a), t[0]], [s * math.sin(a), s * math.cos(a), t[1]]])
    stable_src = align.apply(m, align.MEAN_FACE)
    mouth_ref = np.array([128.0, 168.0])
    mouth_src = align.apply(m, mouth_ref)
    frame = np.full((480, 640, 3), 200, np.uint8)
    cv2.circle(frame, (int(round(mouth_src[0] * 16)), int(round(mouth_src[1] * 16))), 10 * 16,
               (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    to_ref = align.to_reference(stable_src)
    np.testing.assert_allclose(align.apply(to_ref, mouth_src), mouth_ref, atol=1e-6)
    crop = align.mouth_crop(frame, to_ref, mouth_ref)
    assert crop.shape == (contract.MOUTH_SIZE, contract.MOUTH_SIZE) and crop.dtype == np.uint8
    dark = np.argwhere(crop < 110)
    centre = dark.mean(axis=0)[::-1] + 0.5                        # (x, y), continuous
    np.testing.assert_allclose(centre, [contract.MOUTH_SIZE / 2] * 2, atol=0.5)
    # The disc (radius 10 px source) has radius 10 / s px in the reference frame.
    radius = math.sqrt(len(dark) / math.pi)
    assert abs(radius - 10 / s) < 0.6
    face = align.face_crop(frame, to_ref, 112)
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8


def test_roi_maps_crop_points_back_to_the_image():
    roi = landmarks.Roi(200.0, 150.0, 120.0, 0.4)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 400, (10, 2))
    crop_pts = align.apply(roi.to_crop(192), pts)
    np.testing.assert_allclose(roi.from_crop(crop_pts, 192), pts, atol=1e-9)
    # The ROI centre lands at the crop centre, its x axis along the angle.
    np.testing.assert_allclose(align.apply(roi.to_crop(192), [[200.0, 150.0]]), [[96, 96]])


# ----------------------------------------------------------- smoothing / interpolation


def test_smoothing_reduces_jitter_and_matches_the_streaming_version():
    rng = np.random.default_rng(3)
    t = np.arange(200)
    truth = np.stack([100 + 20 * np.sin(t / 25), 80 + 10 * np.cos(t / 40)], 1)   # slow motion
    noisy = truth + rng.normal(0, 1.5, truth.shape)
    found = rng.uniform(size=len(t)) > 0.1
    found[0] = True
    windows = [5, 1]
    off = landmarks.smooth_track(noisy, found, windows)
    # Reference: np.interp over the misses, then SciPy's edge-padded moving average.
    k = np.flatnonzero(found)
    filled = np.stack([np.interp(t, k, noisy[k, d]) for d in range(2)], 1)
    np.testing.assert_allclose(off[:, 0], uniform_filter1d(filled[:, 0], 5, mode="nearest"))
    np.testing.assert_allclose(off[:, 1], filled[:, 1])
    # Jitter (frame-to-frame step minus the true step) falls by > 2x with the 5-frame window.
    jit = lambda x: np.std(np.diff(x) - np.diff(truth[:, 0]))
    assert jit(off[:, 0]) < 0.5 * jit(filled[:, 0])
    # The streaming smoother gives the same rows, each at most (window // 2 + gap) late.
    sm = landmarks.TrackSmoother(windows)
    got = {}
    for i in t:
        for j, row in sm.push(noisy[i] if found[i] else None):
            got[j] = row
    for j, row in sm.finish():
        got[j] = row
    assert sorted(got) == list(t)
    np.testing.assert_allclose(np.stack([got[j] for j in t]), off, atol=1e-9)


def test_interpolation_over_misses_is_linear_and_held_at_the_ends():
    vals = np.array([[0.0], [0], [10], [0], [0], [40], [0]])
    found = np.array([False, False, True, False, False, True, False])
    out = landmarks.smooth_track(vals, found, [1])[:, 0]
    np.testing.assert_allclose(out, [10, 10, 10, 20, 30, 40, 40])
    with pytest.raises(ValueError, match="at least one found"):
        landmarks.smooth_track(vals, np.zeros(7, bool), [1])
    with pytest.raises(ValueError, match="odd"):
        landmarks.TrackSmoother([4])


def test_tracker_reports_misses_and_rejects_bad_frames():
    tracker = landmarks.LandmarkTracker()
    pts, conf = tracker.update(np.full((120, 160, 3), 128, np.uint8))
    assert pts is None and conf == 0.0 and tracker.last_event == "miss"
    with pytest.raises(ValueError, match="uint8"):
        tracker.update(np.zeros((120, 160), np.uint8))


# --------------------------------------------------------------- the 'lips' stream


def test_lips_stream_goes_through_cache_shard_example_and_window_cutter(realav_clips, tmp_path):
    """preprocess_video's lips -> cache (clips._encode_clip) -> TFDS example
    (builder.example_from_cache) -> WindowMaker.cut with 'lips' opted in via inputs; and
    the same window from avdetect detect's clip example."""
    import types

    from avdetect import detect
    from avdetect.data import clips, codec
    from avdetect.data.builder import example_from_cache
    from avdetect.data.windows import WindowMaker

    feats = pipeline.preprocess_video(realav_clips[0], face_size=16)
    T = feats.num_frames
    assert feats.lips.shape == (T, contract.NUM_LIPS, 2)
    # Lips sit inside the aligned face, the mouth centre where the mean face has it.
    assert (feats.lips > 0).all() and (feats.lips < 1).all()
    centre = feats.lips.mean(axis=(0, 1)) * align.REF_SIZE
    np.testing.assert_allclose(centre, np.asarray(align.REF_EYE_CENTRE)
                               + align.REF_EYE_DIST * np.asarray(align.MEAN_MOUTH_UNITS), atol=8)
    task = clips.ClipTask(key="c0", path=str(realav_clips[0]), rel_path="c0.mp4", label=0,
                          video_fake=False, audio_fake=False, method="real", identity="x")
    spec = clips.PreprocessSpec(face_size=16, encoding=codec.EncodingParams(), teacher_dim=4,
                                preprocess=lambda task, face_size: feats)
    out = clips.process_clip(task, spec, str(tmp_path / "c0.npz"))
    assert out.status == "done", out
    ex = example_from_cache(task, out.cache_file)
    assert ex["has_lips"] and ex["lips"].dtype == np.float32
    np.testing.assert_array_equal(ex["lips"], feats.lips)
    ex.update(category=0, _record=0)
    maker = WindowMaker(window=8, method_ids={"real": 0}, face_size=16,
                        streams=frozenset({"lips"}))
    win = maker.cut(ex, start=T - 5)                                  # 5 real frames + 3 pad
    assert win["lips"].shape == (8, contract.NUM_LIPS, 2) and "mouth" not in win
    np.testing.assert_array_equal(win["lips"][:5], feats.lips[T - 5:])
    assert not win["lips"][5:].any()
    # 'lips' is opt-in: default streams do not include it; a dataset without it fails clearly.
    assert "lips" not in contract.DEFAULT_STREAMS and "lips" in contract.OPT_IN_STREAMS
    with pytest.raises(ValueError, match="no 'lips' landmark stream"):
        maker.cut({**ex, "has_lips": False}, start=0)
    model = types.SimpleNamespace(preprocess={"encoding": {}}, inputs=("lips",))
    dex = detect.clip_example(feats, model)
    dex.update(method="real")
    np.testing.assert_array_equal(maker.cut(dex, start=T - 5)["lips"], win["lips"])


def test_format_3_builds_without_lips_stay_readable():
    """Shard format 3 is format 4 without the opt-in 'lips' stream (the Haar-crop builds):
    the loader opens it (asking it for lips fails in the window cutter, tested above);
    older formats are refused with the rebuild hint."""
    from avdetect.data import codec, metadata
    from avdetect.errors import ConfigError

    assert codec.SHARD_FORMAT_VERSION in codec.READABLE_SHARD_FORMATS
    for version in (3, 4, None):
        metadata.check_shard_format("x", {"shard_format_version": version})
    with pytest.raises(ConfigError, match="shard format 2.*rebuild"):
        metadata.check_shard_format("x", {"shard_format_version": 2})


# ------------------------------------------------- landmark_bench's jitter decomposition


def test_white_noise_step_estimates_landmark_noise_under_slow_motion():
    """White noise of s px per axis gives an RMS frame-to-frame step of 2 s (NumPy on the
    noise alone); slow motion added on top hardly changes the estimate."""
    rng = np.random.default_rng(0)
    t = np.arange(20000)
    noise = rng.normal(0, 0.7, (len(t), 2))
    slow = np.stack([5 * np.sin(t / 30), 3 * np.cos(t / 45)], 1)
    noise_step = np.sqrt((np.diff(noise, axis=0) ** 2).sum(1).mean())
    assert abs(noise_step - 2 * 0.7) < 0.02
    got = landmark_bench.white_noise_step(slow + noise)
    assert abs(got - noise_step) < 0.03 * noise_step
    # NaN rows (frames without landmarks) are skipped, not propagated.
    holed = slow + noise
    holed[::50] = np.nan
    assert abs(landmark_bench.white_noise_step(holed) - noise_step) < 0.03 * noise_step


def test_step_where_counts_only_steps_inside_the_kept_frames():
    pos = np.array([[0.0, 0], [3, 4], [3, 4], [3, 5], [9, 9], [9, 10]])
    keep = np.array([True, True, True, True, False, True])
    # steps 0-1 (5), 1-2 (0), 2-3 (1); 3-4 and 4-5 touch a dropped frame
    assert landmark_bench.step_where(pos, keep) == pytest.approx(np.sqrt((25 + 0 + 1) / 3))
    assert math.isnan(landmark_bench.step_where(pos, np.zeros(6, bool)))


def test_bench_places_the_new_crop_as_the_pipeline_does(realav_clips):
    """landmark_bench.aligned with the default windows places the mouth crop exactly as
    preprocess_video does, so the bench measures the crops builds store."""
    frames = list(decode.iter_frames(realav_clips[0]))[:40]
    found, points, table, _ = landmark_bench.new_stage(frames)
    assert found.all() and points["lipc"].shape == (40, 2)
    placed = landmark_bench.aligned(table, found)
    feats = pipeline.preprocess_video(realav_clips[0], face_size=16)
    # the last frames' windows reach past frame 40
    half = max(landmarks.SMOOTH_WINDOW, landmarks.CENTRE_WINDOW) // 2
    for t in range(40 - half):
        m, c = placed[t]
        gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)     # the pipeline's order
        np.testing.assert_array_equal(align.mouth_crop(gray, m, c), feats.mouth[t])
