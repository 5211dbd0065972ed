"""Face tracker, box interpolation / smoothing and crops (avdetect.preprocess.face_track).

References are independent: np.interp for interpolation, scipy.ndimage.uniform_filter1d
for the moving average, a linear-ramp image (bilinear sampling reproduces it exactly)
for the crop geometry, and real fixture frames moved by known offsets for the tracker.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from avdetect import contract
from avdetect.preprocess import face_track as ft
from avdetect.preprocess.face_detect import detect_largest_face

# ------------------------------------------------------------------------ fixture frames


@pytest.fixture(scope="module")
def face_frames(realav_dir) -> list[np.ndarray]:
    """The first 40 RGB frames [360, 360, 3] of one real clip (decoded once)."""
    with av.open(str(realav_dir / "real_video-retalking_4.mp4")) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == 40:
                break
    return frames


def _gray_small(rgb: np.ndarray) -> np.ndarray:
    """Tracking image as the pipeline makes it for a 360 px clip: gray, halved."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (g.shape[1] // 2, g.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _paste(canvas_hw: tuple[int, int], img: np.ndarray, x: int, y: int,
           fill: int = 128) -> np.ndarray:
    out = np.full((*canvas_hw, *img.shape[2:]), fill, np.uint8)
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def _centre(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    return b[..., :2] + b[..., 2:] / 2


# ------------------------------------------------------------------ interpolate / smooth


def test_interpolate_matches_np_interp_with_held_ends():
    rng = np.random.default_rng(1)
    t = 40
    boxes = rng.uniform(20, 200, (t, 4))
    found = rng.random(t) < 0.4
    found[:3] = False                     # leading and trailing misses are held
    found[-4:] = False
    found[10] = True
    got = ft.interpolate_boxes(np.where(found[:, None], boxes, np.nan), found)
    k = np.flatnonzero(found)
    for col in range(4):
        ref = np.interp(np.arange(t), k, boxes[k, col])   # np.interp holds the end values
        np.testing.assert_allclose(got[:, col], ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got[found], boxes[found])


def test_interpolate_rejects_all_missing_and_bad_shapes():
    with pytest.raises(ValueError, match="at least one"):
        ft.interpolate_boxes(np.zeros((5, 4)), np.zeros(5, bool))
    with pytest.raises(ValueError, match="disagree"):
        ft.interpolate_boxes(np.zeros((5, 4)), np.ones(4, bool))


@pytest.mark.parametrize("window,size_window", [(1, 1), (5, 5), (5, 11), (3, 9)])
def test_smooth_is_a_centred_moving_average_of_centre_and_size(window, size_window):
    rng = np.random.default_rng(window * 100 + size_window)
    boxes = rng.uniform(10, 300, (33, 4))
    got = ft.smooth_boxes(boxes, window, size_window)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    ref_c = uniform_filter1d(centre, window, axis=0, mode="nearest")
    ref_s = uniform_filter1d(boxes[:, 2:], size_window, axis=0, mode="nearest")
    np.testing.assert_allclose(got[:, 2:], ref_s, atol=1e-9)
    np.testing.assert_allclose(got[:, :2] + got[:, 2:] / 2, ref_c, atol=1e-9)


def test_smooth_keeps_linear_motion_and_rejects_even_windows():
    t = np.arange(30, dtype=np.float64)
    boxes = np.stack([10 + 2 * t, 5 - t, 50 + 0.5 * t, 50 + 0.5 * t], axis=1)
    got = ft.smooth_boxes(boxes, 5, 11)
    # A moving average leaves a straight line unchanged away from the padded edges.
    np.testing.assert_allclose(got[5:-5], boxes[5:-5], atol=1e-9)
    with pytest.raises(ValueError, match="odd"):
        ft.smooth_boxes(boxes, 4)


def test_dropped_detections_are_bridged_and_smoothed():
    """A face moving at constant speed, detected with +-3 px centre noise and +-4 px size
    noise, 40% of frames missed: the final track stays close to the truth and moves
    smoothly."""
    rng = np.random.default_rng(7)
    t = np.arange(120, dtype=np.float64)
    centre = np.stack([160 + 0.8 * t, 120 + 0.3 * t], 1)
    size = np.full((120, 2), 120.0)
    truth = np.concatenate([centre - size / 2, size], 1)
    n_centre = centre + rng.uniform(-3, 3, (120, 2))
    n_size = size + rng.uniform(-4, 4, (120, 1))
    noisy = np.concatenate([n_centre - n_size / 2, n_size], 1)
    found = rng.random(120) > 0.4
    found[50:62] = False                              # and one long gap
    final = ft.smooth_boxes(ft.interpolate_boxes(noisy, found), 5, 11)
    err = np.abs(_centre(final) - _centre(truth))
    assert err.max() < 3.0, err.max()                 # never worse than one raw detection
    assert err.mean() < 1.2, err.mean()               # and much better on average
    step = np.abs(np.diff(_centre(final), axis=0))    # frame-to-frame motion
    raw_step = np.abs(np.diff(_centre(ft.interpolate_boxes(noisy, found)), axis=0))
    assert step.max() < 0.5 * raw_step.max()
    # Centre speed 0.8 px/frame (+ noise / 5 frames): steps stay near it.
    assert step[:, 0].max() < 0.8 + 6.0 / 5 and step[:, 1].max() < 0.3 + 6.0 / 5
    # Inside the long gap, away from its ends, the track is a straight line.
    gap_c = _centre(final)[55:58]
    np.testing.assert_allclose(np.diff(gap_c, 2, axis=0), 0.0, atol=1e-9)


def test_streaming_smoother_equals_offline_definition():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(1, 70))
        window, size_window = int(rng.choice([1, 3, 5])), int(rng.choice([1, 5, 11]))
        boxes = rng.uniform(10, 100, (n, 4))
        found = rng.random(n) < rng.uniform(0.05, 1.0)
        found[rng.integers(n)] = True
        ref = ft.smooth_boxes(ft.interpolate_boxes(boxes, found), window, size_window)
        sm = ft.BoxSmoother(window, size_window)
        out, lag = [], []
        for i, (b, f) in enumerate(zip(boxes, found)):
            ready = sm.push(b if f else None)
            out += ready
            lag += [i - t for t, _ in ready]
        out += sm.finish()
        assert [t for t, _ in out] == list(range(n)), trial
        np.testing.assert_allclose(np.array([b for _, b in out]), ref, atol=1e-9)
        if found.all():      # without misses every box is final half a window later
            assert max(lag, default=0) <= max(window, size_window) // 2


def test_streaming_smoother_without_any_box_raises():
    sm = ft.BoxSmoother(5)
    assert sm.push(None) == [] and not sm.any_found
    with pytest.raises(ValueError, match="no frame"):
        sm.finish()


# ---------------------------------------------------------------------------- crops


def _ramp(h: int, w: int, channels: int | None = None) -> np.ndarray:
    """float32 image I(x, y) = 2 x + 3 y + 5 at pixel centres (x, y integer)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 2 * x + 3 * y + 5
    return np.repeat(img[..., None], channels, 2) if channels else img


@pytest.mark.parametrize("side,out", [(40.0, 96), (150.0, 96), (300.0, 64), (61.3, 88)])
def test_crop_square_samples_the_requested_square(side, out):
    """Output pixel u must sample source x = cx - side/2 + (u + 0.5) side/out - 0.5:
    bilinear sampling (and k x k averaging) reproduce a linear ramp exactly, up to
    OpenCV's 1/32 px coordinate quantisation (error <= (2 + 3) / 32; a half-pixel
    geometry mistake would be off by >= 1)."""
    img = _ramp(700, 700)
    cx, cy = 351.7, 333.2
    got = ft.crop_square(img, cx, cy, side, out)
    u = np.arange(out)
    xs = cx - side / 2 + (u + 0.5) * side / out - 0.5
    ys = cy - side / 2 + (u + 0.5) * side / out - 0.5
    ref = 2 * xs[None, :] + 3 * ys[:, None] + 5
    assert got.shape == (out, out)
    np.testing.assert_allclose(got, ref, rtol=0, atol=5 / 32 + 1e-3)


def test_crop_square_replicates_the_border_outside_the_image():
    img = _ramp(100, 100)
    got = ft.crop_square(img, 0.0, 50.0, 40.0, 40)     # left half lies outside the image
    # Columns left of the image repeat column 0 (value 2*0 + 3y + 5).
    y = 50 - 20 + np.arange(40) + 0.5 - 0.5
    np.testing.assert_allclose(got[:, :19], np.repeat((3 * y + 5)[:, None], 19, 1), atol=1e-3)
    assert np.isfinite(got).all()
    with pytest.raises(ValueError, match="positive"):
        ft.crop_square(img, 10, 10, 0.0, 8)


def test_mouth_and_face_crop_shapes_dtypes_and_geometry(face_frames):
    rgb = face_frames[0]
    box = np.array([120.0, 40.0, 130.0, 130.0])
    mouth = ft.mouth_crop(rgb, box)
    assert mouth.shape == (contract.MOUTH_SIZE, contract.MOUTH_SIZE) and mouth.dtype == np.uint8
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Cropping the gray frame or cropping RGB then converting: the same up to rounding.
    assert np.abs(ft.mouth_crop(gray, box).astype(int) - mouth.astype(int)).max() <= 2
    for size in (112, 224):
        face = ft.face_crop(rgb, box, size)
        assert face.shape == (size, size, 3) and face.dtype == np.uint8
    geo = ft.CropGeometry()
    cx, cy, side = geo.mouth_region(box)
    assert (cx, cy, side) == (185.0, 40.0 + geo.mouth_y * 130, geo.mouth_side * 130)
    # The mouth crop is the centre 88 of the 96 px region around (cx, cy).
    ref = cv2.cvtColor(ft.crop_square(rgb, cx, cy, side, contract.MOUTH_ROI), cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(mouth, ref[4:92, 4:92])


# ---------------------------------------------------------------------------- tracker


def test_tracker_finds_the_face_in_every_frame_and_uses_detector_every_k(face_frames):
    grays = [_gray_small(f) for f in face_frames]
    params = ft.TrackerParams(detect_every=5)
    tracker = ft.FaceTracker(params)
    events = []
    for g in grays:
        assert tracker.update(g) is not None
        events.append(tracker.last_event)
    assert events[0] == "detect"
    # Between detections the box is tracked; a detection happens at least every k frames.
    gaps = np.diff([i for i, e in enumerate(events) if e in ("detect", "redetect")])
    assert gaps.max() <= 2 * params.detect_every   # a failed re-detection retries k later
    assert events.count("track") >= len(events) // 2
    # Agreement with the plain detector run on every frame (the reference).
    boxes, found = ft.track_boxes(grays, params)
    assert found.all()
    ref = np.array([detect_largest_face(g) for g in grays])
    err = np.abs(_centre(boxes) - _centre(ref)).max(axis=1) / ref[:, 2]
    assert np.median(err) < 0.05 and err.max() < 0.12, err


@pytest.mark.parametrize("dx,dy", [(60, 30), (10, 84)])
def test_box_and_crops_follow_a_translated_face(face_frames, dx, dy):
    """Moving the whole picture by (dx, dy) moves the box by (dx, dy): the mouth crop
    shows the same mouth."""
    frames = face_frames[:12]
    canvas = (480, 480)
    base_boxes, base_found = ft.track_boxes([_gray_small(_paste(canvas, f, 0, 0)) for f in frames])
    moved = [_paste(canvas, f, dx, dy) for f in frames]
    boxes, found = ft.track_boxes([_gray_small(m) for m in moved])
    assert base_found.all() and found.all()
    shift = _centre(boxes * 2) - _centre(base_boxes * 2)            # source pixels
    # Haar boxes are quantised by its scan grid and 10% scale steps: a few pixels.
    width = 2 * base_boxes[:, 2].mean()
    np.testing.assert_allclose(np.median(shift, axis=0), [dx, dy], atol=0.05 * width)
    # Mouth crops of the moved frames at the moved boxes == crops of the originals.
    for t in (0, 6, 11):
        a = ft.mouth_crop(_paste(canvas, frames[t], 0, 0), base_boxes[t] * 2).astype(int)
        b = ft.mouth_crop(moved[t], base_boxes[t] * 2 + [dx, dy, 0, 0]).astype(int)
        np.testing.assert_array_equal(a, b)
        # The tracker's own box on the moved frame shows the same mouth, displaced by at
        # most the Haar quantisation (5% of the face width, in mouth-crop pixels), as
        # measured by phase correlation of the two crops.
        c = ft.mouth_crop(moved[t], boxes[t] * 2)
        (sx, sy), _ = cv2.phaseCorrelate(a.astype(np.float32), c.astype(np.float32))
        limit = 0.05 / ft.CropGeometry().mouth_side * contract.MOUTH_ROI
        assert np.hypot(sx, sy) < limit, (sx, sy)


def test_tracker_loses_a_vanished_face_and_reacquires_it(face_frames):
    blank = np.full_like(_gray_small(face_frames[0]), 90)
    seq = [_gray_small(f) for f in face_frames[:10]] + [blank] * 12 + \
          [_gray_small(f) for f in face_frames[10:20]]
    boxes, found = ft.track_boxes(seq)
    assert found[:10].all()
    assert not found[10:22].any()                       # nothing invented on a flat frame
    assert found[22 + ft.TrackerParams().detect_every:].all()   # searched for every k frames
    first, back = boxes[0], boxes[-1]
    assert ft.iou(first, back) > 0.6


def test_tracker_follows_the_largest_face_then_stays_on_it(face_frames):
    """Two faces: the larger is acquired; a still larger one appearing later does not
    steal the track (the re-detection keeps the box overlapping the tracked one)."""
    small = [cv2.resize(f, (240, 240), interpolation=cv2.INTER_AREA) for f in face_frames[:24]]
    tiny = [cv2.resize(f, (150, 150), interpolation=cv2.INTER_AREA) for f in face_frames[:24]]
    seq = []
    for t in range(24):
        canvas = _paste((320, 720), small[t], 420, 40)
        canvas[100:250, 40:190] = tiny[t]               # a smaller face on the left
        seq.append(canvas)
    boxes, found = ft.track_boxes([cv2.cvtColor(s, cv2.COLOR_RGB2GRAY) for s in seq[:8]])
    assert found.all() and (_centre(boxes)[:, 0] > 420).all()     # the larger one, right
    # Now a larger face appears on the left from frame 8 on: the tracker stays right.
    big = [cv2.resize(f, (300, 300), interpolation=cv2.INTER_AREA) for f in face_frames[:24]]
    later = []
    for t in range(24):
        canvas = _paste((320, 720), small[t], 420, 40)
        if t >= 8:
            canvas[10:310, 20:320] = big[t]
        later.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY))
    boxes, found = ft.track_boxes(later)
    assert found.all()
    assert (_centre(boxes)[:, 0] > 420).all(), _centre(boxes)[:, 0]
    assert detect_largest_face(later[-1])[0] < 320   # the largest is left


def test_tracker_rejects_bad_frames_and_params():
    with pytest.raises(ValueError, match="uint8"):
        ft.FaceTracker().update(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="detect_every"):
        ft.TrackerParams(detect_every=0)


@pytest.mark.parametrize("hw", [(360, 360), (338, 338), (720, 1280), (1080, 1920), (641, 479)])
def test_tracking_image_is_the_block_mean_at_a_power_of_two(hw):
    f = ft.tracking_decimation(*hw, 320)
    assert f & (f - 1) == 0 and max(hw) / f <= 320 < 2 * max(hw) / f
    gray = np.random.default_rng(0).integers(0, 256, hw).astype(np.uint8)
    small = ft.tracking_image(gray, f)
    h, w = hw[0] // f, hw[1] // f
    ref = gray[:h * f, :w * f].reshape(h, f, w, f).mean(axis=(1, 3))   # NumPy block mean
    assert small.shape == (h, w)
    # Each 2x halving rounds once: at most log2(f) * 0.5 grey levels away.
    assert np.abs(small - ref).max() <= 0.5 * max(1, np.log2(f)) + 1e-9
