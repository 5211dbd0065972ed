"""landmark_bench's image measure of crop motion: ``register`` (ECC translation fit started
from phase correlation) and ``image_motion`` (per-clip step / drift of the crop content).

References are independent of the code under test: crops translated by known sub-pixel
amounts with ``cv2.warpAffine`` (a smooth random texture, and a real fixture frame cut by
the aligned-crop path at known offsets), NumPy for the expected step / drift.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avdetect import contract
from avdetect.bench import landmark_bench
from avdetect.media import decode
from avdetect.preprocess import align, landmarks

N = contract.MOUTH_SIZE


def _texture(seed: int = 0, side: int = 200) -> np.ndarray:
    """Gray uint8 image of blurred noise (blobs of ~3 px: like skin, nostrils, lips at
    the 88 crop's scale)."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 2.5)
    return np.round(255 * (x - x.min()) / (x.max() - x.min())).astype(np.uint8)


def _shifted(image: np.ndarray, dx: float, dy: float, at: int = 56) -> np.ndarray:
    """The N x N crop of ``image`` at (at, at) whose content has moved by (+dx, +dy)."""
    m = np.float32([[1, 0, dx - at], [0, 1, dy - at]])
    return cv2.warpAffine(image, m, (N, N), flags=cv2.INTER_LINEAR)


def test_register_recovers_known_subpixel_shifts():
    """Random shifts up to 4 px in each axis are recovered within 0.05 px (worst case),
    far better than the phase-correlation peak alone (biased towards whole pixels)."""
    tex = _texture()
    ref = _shifted(tex, 0, 0)
    rng = np.random.default_rng(1)
    err_ecc, err_pc = [], []
    for d in rng.uniform(-4, 4, (40, 2)):
        img = _shifted(tex, *d)
        err_ecc.append(np.linalg.norm(landmark_bench.register(ref, img) - d))
        win = cv2.createHanningWindow((N, N), cv2.CV_32F)
        pc, _ = cv2.phaseCorrelate(ref.astype(np.float32), img.astype(np.float32), win)
        err_pc.append(np.linalg.norm(np.array(pc) - d))
    assert max(err_ecc) < 0.05
    assert np.median(err_ecc) < np.median(err_pc) / 3
    # Larger shifts need the phase-correlation start (ECC alone converges only nearby).
    assert np.linalg.norm(landmark_bench.register(ref, _shifted(tex, 11.3, -9.6))
                          - [11.3, -9.6]) < 0.05


def test_register_on_a_real_aligned_mouth_crop(realav_clips):
    """A fixture frame cut by the aligned-crop path (``align.mouth_crop``) with its mouth
    centre moved by known sub-pixel amounts: the content moves the opposite way, and
    ``register`` recovers it within 0.05 px (the uint8 crops' own rounding leaves ~0.03),
    on the whole crop and on its top ``UPPER_ROWS`` band."""
    frame = next(iter(decode.iter_frames(realav_clips[0])))
    pts, _ = landmarks.LandmarkTracker().update(frame)
    assert pts is not None
    lp = landmarks.LandmarkParams()
    m = align.to_reference(pts[list(lp.stable_points)])
    c = align.apply(m, pts[list(lp.lip_points)].mean(0))
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    ref = align.mouth_crop(gray, m, c)
    for d in ([0.3, 0.0], [-0.7, 0.45], [1.6, -1.2], [0.05, 0.1]):
        img = align.mouth_crop(gray, m, c - np.array(d))
        assert np.linalg.norm(landmark_bench.register(ref, img) - d) < 0.05
        band = slice(0, landmark_bench.UPPER_ROWS)
        assert np.linalg.norm(landmark_bench.register(ref[band], img[band]) - d) < 0.05


def test_register_fails_cleanly_on_a_flat_image():
    flat = np.full((N, N), 128, np.uint8)
    assert np.isnan(landmark_bench.register(flat, flat)).all()


def _sequence(shifts: np.ndarray) -> np.ndarray:
    tex = _texture(2)
    return np.stack([_shifted(tex, *d) for d in shifts])


def test_image_motion_is_zero_on_an_identical_sequence():
    crops = _sequence(np.zeros((12, 2)))
    keep = np.ones(12, bool)
    got = landmark_bench.image_motion(crops, keep, keep)
    for k in ("step", "step_closed", "drift", "step_upper", "step_closed_upper",
              "drift_upper", "step_lower", "step_closed_lower", "drift_lower", "fail"):
        assert got[k] == pytest.approx(0.0, abs=1e-3), k


def test_image_motion_matches_numpy_on_known_motion():
    """Known positions p_t: step = median |p_t+1 - p_t| and drift = RMS distance from the
    mean position (NumPy on p), within 0.05 px; frames outside ``keep`` and pairs outside
    ``closed`` are left out as documented."""
    rng = np.random.default_rng(3)
    p = np.cumsum(rng.normal(0, 0.6, (30, 2)), axis=0)
    p -= p.mean(0)
    keep = np.ones(30, bool)
    keep[[7, 20]] = False
    closed = np.zeros(30, bool)
    closed[10:18] = True
    got = landmark_bench.image_motion(_sequence(p), keep, closed)
    steps = np.linalg.norm(np.diff(p, axis=0), axis=1)
    pairs = keep[:-1] & keep[1:]
    q = p[keep]
    drift = np.sqrt(((q - q.mean(0)) ** 2).sum(1).mean())
    for suffix in ("", "_upper", "_lower"):
        assert got[f"step{suffix}"] == pytest.approx(np.median(steps[pairs]), abs=0.05)
        assert got[f"step_closed{suffix}"] == pytest.approx(
            np.median(steps[closed[:-1] & closed[1:]]), abs=0.05)
        assert got[f"drift{suffix}"] == pytest.approx(drift, abs=0.05)
    assert got["fail"] == 0.0


def test_a_moving_mouth_in_a_fixed_crop_reads_as_almost_no_motion():
    """Fixed geometry, a dark mouth-shaped ellipse below the top band opening and closing
    frame by frame (lower lip dropping, like speech): the full crop reads a small step
    (the changing part pulls a little), the top band none."""
    tex = _shifted(_texture(4), 0, 0)
    crops = []
    for t in range(16):
        x = tex.copy()
        open_px = 2 + 6 * abs(np.sin(t / 2.5))
        cv2.ellipse(x, (44, 50 + int(round(open_px / 2))), (22, int(round(open_px))), 0, 0, 360,
                    30, -1, cv2.LINE_AA)
        crops.append(x)
    keep = np.ones(16, bool)
    got = landmark_bench.image_motion(np.stack(crops), keep, keep)
    assert got["step_upper"] < 0.02 and got["drift_upper"] < 0.02
    assert got["step"] < 0.3 and got["drift"] < 0.3


def test_one_euro_without_speed_term_is_a_first_order_low_pass():
    """beta = 0: the cutoff is fixed, so the filter is y_t = y_t-1 + a (x_t - y_t-1) with
    a = 1 / (1 + fps / (2 pi fc)) -- scipy.signal.lfilter's IIR with y_0 = x_0."""
    from scipy.signal import lfilter
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(0, 1, (200, 3)), axis=0)
    got = landmark_bench.one_euro(x, fc_min=2.0, beta=0.0)
    a = 1 / (1 + contract.VIDEO_FPS / (2 * np.pi * 2.0))
    want = np.stack([lfilter([a], [1, a - 1], c[1:], zi=[(1 - a) * c[0]])[0] for c in x.T], 1)
    np.testing.assert_allclose(got[1:], want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(got[0], x[0])
    # With a speed term, a fast ramp is followed more closely (less lag) than without.
    ramp = np.arange(100.0)[:, None] * 3
    lag = lambda y: float(np.mean(ramp[50:] - y[50:]))
    assert lag(landmark_bench.one_euro(ramp, beta=0.5)) < lag(landmark_bench.one_euro(ramp, beta=0))


def test_filter_variants_include_the_pipeline_placement(realav_clips):
    """``filtered_placements['stab']`` is ``aligned`` (the pipeline's placement, itself tested
    equal to preprocess_video in test_landmarks.py), ``'ma5'`` the unstabilised 5-frame
    placement (the lip centre's own mean: the head motion folded back); every variant
    places every frame."""
    frames = list(decode.iter_frames(realav_clips[0]))[:30]
    found, points, table, _ = landmark_bench.new_stage(frames)
    variants = landmark_bench.filtered_placements(table, found, points)
    assert tuple(variants) == landmark_bench.FILTERS
    for (m, c), (m2, c2) in zip(variants["stab"], landmark_bench.aligned(table, found)):
        np.testing.assert_array_equal(m, m2)
        np.testing.assert_array_equal(c, c2)
    lipc5 = landmarks.smooth_track(points["lipc"], found, 5)       # lip centre, 5-frame mean
    for (m, c), q in zip(variants["ma5"], lipc5):
        np.testing.assert_allclose(c, align.apply(m, q), atol=1e-9)
    for name, placed in variants.items():
        assert len(placed) == 30 and all(np.isfinite(m).all() and np.isfinite(c).all()
                                         for m, c in placed), name
