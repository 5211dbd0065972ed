"""Per-video preprocessing (avdetect.preprocess.pipeline) and the contact sheet.

Every fixture clip is preprocessed once per session; synthetic clips are written once per
module from real fixture frames (moved, blanked, cut short) so that the expected boxes
and flags are known.
"""

from __future__ import annotations

import json
import pathlib

import av
import cv2
import librosa
import numpy as np
import pytest

from avdetect import contract
from avdetect.errors import MediaError, NoFaceError, NotMediaError, NoVideoStreamError, TooShortError
from avdetect.media import decode
from avdetect.media.probe import probe
from avdetect.preprocess import align, contact_sheet, landmarks, logmel, pipeline, stabilize

import media_factory

# ---------------------------------------------------------------------------- helpers


def write_clip(path: pathlib.Path, frames: list[np.ndarray]) -> pathlib.Path:
    return media_factory.write_frames(path, frames, crf=10)


def write_wav(path: pathlib.Path, seconds: float = 1.0) -> pathlib.Path:
    """An audio-only file (16 kHz mono PCM tone)."""
    sr = contract.AUDIO_SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(sr * seconds)) / sr) * 32767)
    with av.open(str(path), mode="w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone.astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = sr
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def paste(canvas_hw, img, x, y, fill=110):
    out = np.full((*canvas_hw, 3), fill, np.uint8)
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def centres(boxes):
    b = np.asarray(boxes, np.float64)
    return b[:, :2] + b[:, 2:] / 2


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def fixture_features(realav_clips) -> dict[str, pipeline.ClipFeatures]:
    """Every fixture clip preprocessed with the defaults (once per session)."""
    return {p.name: pipeline.preprocess_video(p) for p in realav_clips}


@pytest.fixture(scope="module")
def source_frames(realav_dir) -> list[np.ndarray]:
    """60 RGB frames [360, 360, 3] of a real clip, to build synthetic videos from."""
    return list(decode.iter_frames(realav_dir / "real_video-retalking_4.mp4"))[:60]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, source_frames) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("synthetic")
    canvas = (400, 480)
    flat = np.full((*canvas, 3), 110, np.uint8)
    rng = np.random.default_rng(0)
    return {
        "base": write_clip(d / "base.mp4", [paste(canvas, f, 0, 0) for f in source_frames[:50]]),
        "moved": write_clip(d / "moved.mp4", [paste(canvas, f, 96, 40) for f in source_frames[:50]]),
        "gap": write_clip(d / "gap.mp4", [paste(canvas, f, 40, 20) for f in source_frames[:20]]
                          + [flat] * 20
                          + [paste(canvas, f, 40, 20) for f in source_frames[40:60]]),
        "noise": write_clip(d / "noise.mp4", [rng.integers(0, 256, (96, 128, 3), np.uint8)
                                               for _ in range(40)]),
        "short": write_clip(d / "short.mp4", source_frames[:10]),
        "audio_only": write_wav(d / "tone.wav"),
        "text": _write_text(d / "notes.mp4"),
    }


def _write_text(path: pathlib.Path) -> pathlib.Path:
    path.write_text("this is not a video\n")
    return path


# ------------------------------------------------------------------- real fixture clips


def test_face_found_in_at_least_95_percent_of_every_fixture_clip(fixture_features):
    rates = {name: f.face_found_ratio for name, f in fixture_features.items()}
    print("face_found per clip:", json.dumps(rates, indent=1))
    assert len(rates) == 16
    low = {k: v for k, v in rates.items() if v < 0.95}
    assert not low, low


def test_outputs_have_the_contract_shapes(fixture_features, realav_dir):
    for name, f in fixture_features.items():
        t = probe(realav_dir / name).num_frames
        assert f.num_frames == t
        assert f.mouth.shape == (t, contract.MOUTH_SIZE, contract.MOUTH_SIZE)
        assert f.face.shape == (t, contract.FACE_SIZE_DEFAULT, contract.FACE_SIZE_DEFAULT, 3)
        assert f.logmel.shape == (contract.MEL_PER_FRAME * t, contract.N_MELS)
        assert f.boxes.shape == (t, 4) and f.face_found.shape == (t,)
        assert (f.mouth.dtype, f.face.dtype, f.logmel.dtype) == (np.uint8, np.uint8, np.float32)
        assert f.boxes.dtype == np.float32 and f.face_found.dtype == bool
        assert f.has_audio and np.isfinite(f.logmel).all() and np.isfinite(f.boxes).all()
        # Boxes in source pixels: the aligned face square may reach past the border (a
        # face near the edge), but its centre is inside the frame.
        w, h = f.info.width, f.info.height
        c = centres(f.boxes)
        assert (f.boxes[:, 2:] > 0).all()
        assert ((c >= 0) & (c <= [w, h])).all(), name
        assert f.lips.shape == (t, 20, 2) and f.lips.dtype == np.float32
        assert f.confidence.shape == (t,) and f.confidence.dtype == np.float32


def test_boxes_move_smoothly_on_real_clips(fixture_features):
    for name, f in fixture_features.items():
        c = centres(f.boxes)
        width = f.boxes[:, 2].astype(np.float64)
        centre_step = np.abs(np.diff(c, axis=0)).max(axis=1) / width[1:]
        size_step = np.abs(np.diff(width)) / width[1:]
        assert centre_step.max() < 0.04, (name, centre_step.max())
        # The box is the upright hull of the aligned (rotated) face square: its size also
        # follows head roll, hence a looser bound than the centre's.
        assert size_step.max() < 0.04, (name, size_step.max())


def test_logmel_is_the_clip_audio_aligned_to_its_frames(fixture_features, realav_dir):
    name = "real_video-retalking_1.mp4"
    f = fixture_features[name]
    t = f.num_frames
    audio = decode.load_audio(realav_dir / name, num_frames=t)
    assert audio.shape == (t * contract.SAMPLES_PER_FRAME,)
    np.testing.assert_array_equal(f.logmel, logmel.log_mel(audio, num_frames=t))
    # Independent reference: librosa's centred mel spectrogram has 4T + 1 frames.
    ref = librosa.feature.melspectrogram(
        y=audio, sr=contract.AUDIO_SR, n_fft=contract.MEL_NFFT, win_length=contract.MEL_WIN,
        hop_length=contract.MEL_HOP, n_mels=contract.N_MELS, center=True, pad_mode="constant")
    ref = np.log(ref[:, :contract.MEL_PER_FRAME * t].T + contract.LOG_FLOOR)
    np.testing.assert_allclose(f.logmel, ref, atol=2e-3, rtol=1e-4)


def test_each_crop_comes_from_its_own_frame(fixture_features, realav_dir):
    """The streaming pipeline equals its offline definition: landmarks of every frame,
    interpolated and smoothed as a whole (``landmarks.smooth_track``), each frame aligned
    and cropped from its own frame (catches an off-by-one between the frame buffer and
    the delayed rows)."""
    name = "fake_video-retalking_full_1.mp4"
    f = fixture_features[name]
    lp = landmarks.LandmarkParams()
    frames = list(decode.iter_frames(realav_dir / name))
    pts, conf = landmarks.track_video(frames, lp)
    found = conf >= lp.min_presence
    np.testing.assert_array_equal(f.face_found, found)
    np.testing.assert_allclose(f.confidence, conf)
    # The head's image motion, frame by frame, from each frame's own raw landmarks.
    motion, rows = stabilize.HeadMotion(), []
    for p, ok, rgb in zip(pts, found, frames):
        to_ref = align.to_reference(p[list(lp.stable_points)]) if ok else None
        lip_c = p[list(lp.lip_points)].mean(axis=0) if ok else None
        head = motion.update(rgb, to_ref, lip_c)
        rows.append(pipeline.track_row(p, lp, head) if ok else np.zeros(2 * 6 + 40 + 4))
    assert motion.counts["image"] >= 0.9 * len(frames)
    rows = np.stack(rows)
    smooth = landmarks.smooth_track(rows, found, pipeline.row_windows(lp))
    for t, rgb in enumerate(frames):
        stable, lips, lip_c = pipeline.split_row(smooth[t], lp)
        m = align.to_reference(stable)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(f.mouth[t], align.mouth_crop(gray, m, align.apply(m, lip_c)))
        np.testing.assert_array_equal(f.face[t], align.face_crop(rgb, m, 112))
        np.testing.assert_allclose(f.lips[t], align.lips_normalised(lips, m), atol=1e-5)


def test_tiny_frame_buffer_gives_identical_output(fixture_features, realav_dir):
    """With room for 1 frame (less than the smoother's lag) most crops are made in the
    second decoding pass: the result must not change."""
    name = "real_video-retalking_6.mp4"
    small = pipeline.preprocess_video(realav_dir / name, max_buffer_mb=0.5)
    ref = fixture_features[name]
    for field in ("mouth", "face", "boxes", "face_found", "logmel", "lips", "confidence"):
        np.testing.assert_array_equal(getattr(small, field), getattr(ref, field), err_msg=field)


def test_params_record_every_setting_and_serialise(fixture_features):
    p = next(iter(fixture_features.values())).params
    json.dumps(p)
    assert p["detector"].startswith("mediapipe")
    assert p["landmarks"]["smooth_window"] == landmarks.SMOOTH_WINDOW
    assert p["landmarks"]["stabilize"] is True
    assert p["landmarks"]["centre_window"] == landmarks.CENTRE_WINDOW
    assert p["head_motion"]["patch_ref_px"] == list(stabilize.MOTION_PATCH)
    assert len(p["landmarks"]["lip_points"]) == 20 and len(p["landmarks"]["models"]) == 3
    assert p["alignment"]["ref_size"] == align.REF_SIZE
    assert p["fps"] == contract.VIDEO_FPS and p["sample_rate"] == contract.AUDIO_SR
    assert p["mouth_roi"] == 96 and p["mouth_size"] == 88 and p["face_size"] == 112
    assert p["mel"]["n_mels"] == contract.N_MELS and p["mel"]["hop"] == contract.MEL_HOP
    other = pipeline.preprocessing_params(
        face_size=224, landmark_params=landmarks.LandmarkParams(smooth_window=3))
    assert other["face_size"] == 224 and other["landmarks"]["smooth_window"] == 3


def test_face_size_and_smoothing_are_honoured(realav_dir):
    f = pipeline.preprocess_video(realav_dir / "fake_video-retalking_enet_1.mp4", face_size=64,
                                  landmark_params=landmarks.LandmarkParams(smooth_window=3))
    assert f.face.shape[1:] == (64, 64, 3) and f.lips.shape == (f.num_frames, 20, 2)
    assert f.params["landmarks"]["smooth_window"] == 3 and f.face_found_ratio >= 0.95


# ------------------------------------------------------------------------ synthetic clips


def test_boxes_and_crops_move_with_the_picture(synthetic):
    base = pipeline.preprocess_video(synthetic["base"])
    moved = pipeline.preprocess_video(synthetic["moved"])
    assert base.face_found.all() and moved.face_found.all()
    shift = np.median(centres(moved.boxes) - centres(base.boxes), axis=0)
    width = float(base.boxes[:, 2].mean())
    np.testing.assert_allclose(shift, [96, 40], atol=0.05 * width)
    np.testing.assert_allclose(moved.boxes[:, 2].mean(), width, rtol=0.05)
    # Same mouth: the crops agree up to a small displacement (phase correlation).
    for t in (0, 25, 49):
        (sx, sy), _ = cv2.phaseCorrelate(base.mouth[t].astype(np.float32),
                                         moved.mouth[t].astype(np.float32))
        assert np.hypot(sx, sy) < 2.0, (t, sx, sy)      # aligned: within 2 of 88 px


def test_video_without_audio_gets_flag_and_zero_logmel(synthetic):
    f = pipeline.preprocess_video(synthetic["base"])
    assert f.has_audio is False and not f.info.has_audio
    assert f.logmel.shape == (4 * f.num_frames, contract.N_MELS)
    assert not f.logmel.any()


def test_missing_face_is_flagged_and_its_boxes_interpolated(synthetic):
    f = pipeline.preprocess_video(synthetic["gap"])
    assert f.num_frames == 60
    assert f.face_found[:20].all() and f.face_found[45:].all()
    assert not f.face_found[21:40].any()                 # nothing found on the flat frames
    # Inside the gap (beyond the smoothing half-window from found frames), boxes lie on a
    # straight line between the last box before and the first after the gap.
    c = centres(f.boxes)[26:34]
    np.testing.assert_allclose(np.diff(c, 2, axis=0), 0.0, atol=1e-3)


def test_no_face_raises_naming_the_file(synthetic):
    with pytest.raises(NoFaceError) as e:
        pipeline.preprocess_video(synthetic["noise"])
    assert str(synthetic["noise"]) in str(e.value) and e.value.kind == "no_face"


def test_too_short_raises(synthetic):
    with pytest.raises(TooShortError, match="10 frames") as e:
        pipeline.preprocess_video(synthetic["short"])
    assert e.value.path == str(synthetic["short"])
    with pytest.raises(TooShortError):
        pipeline.preprocess_video(synthetic["base"], min_frames=51)
    assert pipeline.preprocess_video(synthetic["short"], min_frames=10).num_frames == 10


def test_decoder_errors_propagate_typed(synthetic):
    with pytest.raises(NoVideoStreamError):
        pipeline.preprocess_video(synthetic["audio_only"])
    with pytest.raises(NotMediaError) as e:
        pipeline.preprocess_video(synthetic["text"])
    assert isinstance(e.value, MediaError) and str(synthetic["text"]) in str(e.value)


# ------------------------------------------------------------------------ contact sheet


def test_contact_sheet_png(fixture_features, synthetic, tmp_path):
    f = fixture_features["real_video-retalking_3.mp4"]
    out = contact_sheet.save_contact_sheet(f, tmp_path / "sheet.png", n=16)
    img = cv2.imread(out)
    assert img is not None and img.shape == contact_sheet.render_contact_sheet(f, 16).shape
    assert img.shape[0] == 2 * (2 * 128 + 16 + 6) and img.shape[1] == 8 * 134
    np.testing.assert_array_equal(contact_sheet.sample_indices(f.num_frames, 16)[[0, -1]],
                                  [0, f.num_frames - 1])
    # Tile borders: green where the face was found, red where the box was interpolated.
    gap = pipeline.preprocess_video(synthetic["gap"])
    sheet = contact_sheet.render_contact_sheet(gap, n=16)
    idx = contact_sheet.sample_indices(gap.num_frames, 16)
    for k, t in enumerate(idx):
        r, c = divmod(k, 8)
        corner = sheet[r * (2 * 128 + 16 + 6) + 1, c * 134 + 1]
        want = (0, 200, 0) if gap.face_found[t] else (230, 0, 0)
        np.testing.assert_array_equal(corner, want, err_msg=f"tile {k} (frame {t})")
