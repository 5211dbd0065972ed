"""The head-motion stabiliser of the mouth crop (avdetect.preprocess.stabilize).

References are independent of the code under test: real fixture frames moved by known
sub-pixel amounts with ``cv2.warpAffine``; the expected head motion is the known shift,
and the expected crop content is that of the unmoved frames cut by the same pipeline.
"""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from avdetect import detect
from avdetect.media import decode
from avdetect.preprocess import align, landmarks, pipeline, stabilize


def _moved(rgb: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The frame with its content moved by (+dx, +dy) px (bilinear, edges replicated)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, m, rgb.shape[1::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def real_frames(realav_dir) -> list[np.ndarray]:
    return list(decode.iter_frames(realav_dir / "real_video-retalking_6.mp4"))[:40]


@pytest.fixture(scope="module")
def first_face(real_frames):
    lp = landmarks.LandmarkParams()
    pts, _ = landmarks.LandmarkTracker(lp).update(real_frames[0])
    assert pts is not None
    return pts[list(lp.stable_points)], pts[list(lp.lip_points)].mean(axis=0)


def test_head_motion_recovers_known_shifts_despite_landmark_noise(real_frames, first_face):
    """One real frame moved along a random walk of sub-pixel steps; the landmarks given
    with each frame are the true ones plus 1.5 px of noise.  Each step of the summed image
    motion is the true step within 0.3 px (mean error < 0.1 px, part of it OpenCV's
    1/32-px grid in the warps that made the frames): the landmarks' noise cancels, as both
    frames of a step are warped by the same matrix.  (What little bias is
    left adds up along a clip; ``test_a_linear_drift_of_the_head_motion_cancels`` shows
    why that does not move the crop.)"""
    rng = np.random.default_rng(0)
    stable, lip_c = first_face
    walk = np.cumsum(np.vstack([[0, 0], rng.uniform(-1.5, 1.5, (29, 2))]), axis=0)
    motion = stabilize.HeadMotion()
    heads = []
    for d in walk:
        noisy = stable + d + rng.normal(0, 1.5, stable.shape)
        heads.append(motion.update(_moved(real_frames[0], *d), align.to_reference(noisy),
                                   lip_c + d + rng.normal(0, 1.5, 2)))
    assert motion.counts == {"image": 29, "landmark": 0}
    err = np.linalg.norm(np.diff(heads, axis=0) - np.diff(walk, axis=0), axis=1)
    assert err.max() < 0.3 and err.mean() < 0.1, (err.max(), err.mean())
    # The landmarks' own steps are off by their noise (~2 px): what the image removes.
    lip_steps = np.linalg.norm(np.diff(rng.normal(0, 1.5, (30, 2)), axis=0), axis=1)
    assert lip_steps.mean() > 20 * err.mean()


def test_a_linear_drift_of_the_head_motion_cancels():
    """The mouth centre is P + mean(lip centre - P) over a centred window: a drift of P
    that is linear in time (a constant bias of the image steps) leaves it unchanged away
    from the clip's ends, because a centred mean passes a straight line unchanged."""
    lp = landmarks.LandmarkParams()
    rng = np.random.default_rng(3)
    t = 40
    pts = rng.normal(100, 20, (t, 468, 2))
    head = np.cumsum(rng.normal(0, 1, (t, 2)), axis=0)
    ramp = 0.04 * np.arange(t)[:, None] * np.array([1.0, -0.5])
    found = np.ones(t, bool)
    centres = []
    for h in (head, head + ramp):
        rows = np.stack([pipeline.track_row(p, lp, q) for p, q in zip(pts, h)])
        smooth = landmarks.smooth_track(rows, found, pipeline.row_windows(lp))
        centres.append(np.stack([pipeline.split_row(r, lp)[2] for r in smooth]))
    half = lp.centre_window // 2
    np.testing.assert_allclose(centres[1][half:-half], centres[0][half:-half], atol=1e-9)
    assert np.abs(centres[1][:half] - centres[0][:half]).max() > 1e-3   # the ends do move


def test_a_frame_without_a_face_falls_back_to_the_lip_centre_step(real_frames, first_face):
    stable, lip_c = first_face
    m = align.to_reference(stable)
    motion = stabilize.HeadMotion()
    p0 = motion.update(real_frames[0], m, lip_c)
    np.testing.assert_array_equal(p0, lip_c)                 # starts at the lip centre
    assert motion.update(real_frames[1], None, None) is None
    jump = np.array([3.0, -2.0])
    p2 = motion.update(_moved(real_frames[0], *jump), m, lip_c + jump)
    np.testing.assert_allclose(p2 - p0, jump)                # the landmarks' step
    assert motion.counts == {"image": 0, "landmark": 1}
    with pytest.raises(ValueError, match="motion patch"):
        stabilize.HeadMotion((10, 10, 5, 20))


def _crops(frames, lp):
    """The pipeline's mouth crops of in-memory frames (its offline definition)."""
    tracker, make_row = landmarks.LandmarkTracker(lp), pipeline.RowMaker(lp)
    rows, found = [], []
    for f in frames:
        pts, _ = tracker.update(f)
        found.append(pts is not None)
        row = make_row(f, pts)
        rows.append(row if row is not None else np.zeros(2 * 6 + 40 + 4))
    found = np.asarray(found)
    assert found.all()
    smooth = landmarks.smooth_track(np.stack(rows), found, pipeline.row_windows(lp))
    out = []
    for f, row in zip(frames, smooth):
        stable, _, c = pipeline.split_row(row, lp)
        m = align.to_reference(stable)
        out.append(align.mouth_crop(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), m, align.apply(m, c)))
    return np.asarray(out)


def test_stabilised_crops_hold_still_when_the_picture_shakes(real_frames):
    """Each frame of a real clip moved by its own random 1.5 px (camera shake).  The crop
    content of each shaken frame, registered against the unshaken frame's crop, should sit
    at the same offset in every frame.  Stabilised: within 0.5 px (RMS about its mean);
    the unstabilised 5-frame placement passes most of the shake on, as landmarks that
    follow the picture averaged over 5 frames must.  What the stabilised crops keep is the
    landmarks' own noise averaged over ``centre_window`` frames (the face mesh errs
    differently on the shaken frames), not the shake."""
    rng = np.random.default_rng(1)
    shake = rng.normal(0, 1.5, (len(real_frames), 2))
    shaken = [_moved(f, *d) for f, d in zip(real_frames, shake)]
    spread = {}
    for name, lp in (("stabilised", landmarks.LandmarkParams()),
                     ("previous", landmarks.LandmarkParams(stabilize=False, centre_window=5))):
        ref, moved = _crops(real_frames, lp), _crops(shaken, lp)
        off = np.stack([stabilize.register(a, b) for a, b in zip(ref, moved)])
        assert np.isfinite(off).all()
        spread[name] = float(np.sqrt(((off - off.mean(0)) ** 2).sum(1).mean()))
    assert spread["stabilised"] < 0.5, spread
    assert spread["previous"] > 4 * spread["stabilised"], spread


def test_warp_to_a_rectangle_is_the_square_warp_cut():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for scale in (1.3, 0.3):                       # the upsampling and the area paths
        m = np.array([[scale, 0.1, -5.0], [-0.1, scale, 7.0]])
        np.testing.assert_array_equal(align.warp(img, m, (50, 20)), align.warp(img, m, 50)[:20])


def test_models_built_before_the_stabiliser_keep_their_crops():
    """``avdetect detect`` reproduces the recorded preprocessing: a build whose landmark
    record has no ``stabilize`` placed the mouth on the lip centre's 5-frame mean."""
    def kwargs(record):
        model = types.SimpleNamespace(preprocess={"face_size": 112,
                                                  "params": {"landmarks": record}},
                                      inputs=("mouth",))
        return detect.preprocess_kwargs(model)["landmark_params"]
    old = kwargs({"smooth_window": 5, "lip_points": list(landmarks.LIP_POINTS)})
    assert old.stabilize is False and old.centre_window == 5
    new = kwargs(landmarks.LandmarkParams().as_dict())
    assert new == landmarks.LandmarkParams()
