"""Left/right symmetry of the face mesh (avdetect.preprocess.mesh_symmetry) and the mirror
test-time averaging built on it (landmarks.FaceMesh(mirror_average=True)), on real
fixture frames."""

from __future__ import annotations

import numpy as np
import pytest

from avdetect.bench import landmark_bench
from avdetect.media import decode
from avdetect.preprocess import landmarks, mesh_symmetry

MIRROR = np.asarray(mesh_symmetry.MIRROR)
CLIP = "real_video-retalking_2.mp4"


@pytest.fixture(scope="module")
def frame_and_roi(realav_dir):
    """The 10th frame of a real fixture clip (tracked from the first) and its mesh ROI."""
    tracker = landmarks.LandmarkTracker()
    for i, f in enumerate(decode.iter_frames(realav_dir / CLIP)):
        pts, _ = tracker.update(f)
        if i == 9:
            assert pts is not None, f"{CLIP}: no face on frame 9"
            return f, landmarks.roi_from_points(pts)
    pytest.fail(f"{CLIP}: fewer than 10 frames")


def test_permutation_is_an_involution_pairing_known_points():
    assert sorted(MIRROR) == list(range(468))
    np.testing.assert_array_equal(MIRROR[MIRROR], np.arange(468))
    # MediaPipe's documented pairs: outer / inner eye corners, mouth corners; the nose
    # bridge and inner-lip midpoints lie on the midline.
    for a, b in ((33, 263), (133, 362), (61, 291), (78, 308)):
        assert MIRROR[a] == b and MIRROR[b] == a
    for m in (0, 1, 6, 13, 14, 17, 168):
        assert MIRROR[m] == m


def _rigid_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance after the best rotation + uniform scale + translation of b onto a
    (Umeyama; proper rotations only)."""
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0] * (a.shape[1] - 1) + [d])
    r = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (b0 ** 2).sum()
    return float(np.sqrt(((scale * b0 @ r - a0) ** 2).sum(1).mean()))


def test_permutation_maps_the_mesh_onto_its_mirror_image(frame_and_roi):
    """The mesh's 3D output mirrored (x -> -x) and reordered by MIRROR is the same face
    up to a rigid motion (faces are near-symmetric): residual < 3% of the eye distance,
    and far below what the mirror without the reordering leaves."""
    frame, roi = frame_and_roi
    mesh = landmarks.FaceMesh()
    out = mesh.model(mesh.crop(frame, roi)[None])
    p3 = next(o for o in out if o.size == 468 * 3).reshape(468, 3).astype(np.float64)
    mirrored = p3 * [-1, 1, 1]
    eye = np.linalg.norm(p3[33, :2] - p3[263, :2])
    good = _rigid_residual(p3, mirrored[MIRROR])
    bad = _rigid_residual(p3, mirrored)
    assert good < 0.03 * eye, (good, eye)
    assert bad > 5 * good, (bad, good)


def test_derivation_from_fixture_clips_reproduces_the_constant(realav_dir):
    """An independent derivation on the 6 real fixture clips (12 frames each)."""
    clips = sorted(realav_dir.glob("real_*.mp4"))
    assert len(clips) == 6
    perm = landmark_bench.mirror_from_clips(clips)
    np.testing.assert_array_equal(perm, MIRROR)


def test_mirrored_pass_agrees_with_the_plain_pass(frame_and_roi):
    frame, roi = frame_and_roi
    mesh = landmarks.FaceMesh()
    x = mesh.crop(frame, roi)
    plain, _ = mesh.on_crop(x)
    back = mesh_symmetry.mirror_points(mesh.on_crop(np.ascontiguousarray(x[:, ::-1]))[0], 192)
    d = np.linalg.norm(back - plain, axis=1)          # px of the 192 crop
    assert np.median(d) < 4.0 and d.max() < 8.0, (np.median(d), d.max())
    # mirror_points is its own inverse
    np.testing.assert_array_equal(mesh_symmetry.mirror_points(
        mesh_symmetry.mirror_points(plain, 192), 192), plain)


def test_mirror_average_of_a_mirrored_crop_is_the_mirrored_average(frame_and_roi):
    frame, roi = frame_and_roi
    mesh = landmarks.FaceMesh(mirror_average=True)
    x = mesh.crop(frame, roi)
    pts, presence = mesh.on_crop(x)
    pts_f, presence_f = mesh.on_crop(np.ascontiguousarray(x[:, ::-1]))
    np.testing.assert_allclose(pts_f, mesh_symmetry.mirror_points(pts, 192), rtol=0, atol=1e-9)
    assert presence_f == pytest.approx(presence, abs=1e-12)
    # and lies between the two passes: the average of plain and mapped-back mirrored
    plain, _ = landmarks.FaceMesh().on_crop(x)
    assert 0 < np.abs(pts - plain).max() < 4.0


def test_mirror_average_on_the_mirrored_frame(frame_and_roi):
    """Whole frames: the mirrored frame through the mirrored ROI gives the mirrored
    landmarks (up to the resampling of the crop, < 0.05 px)."""
    frame, roi = frame_and_roi
    mesh = landmarks.FaceMesh(mirror_average=True)
    pts, _ = mesh(frame, roi)
    w = frame.shape[1]
    roi_m = landmarks.Roi(w - roi.cx, roi.cy, roi.side, -roi.angle)
    pts_m, _ = mesh(np.ascontiguousarray(frame[:, ::-1]), roi_m)
    expect = pts[MIRROR] * [-1, 1] + [w, 0]
    np.testing.assert_allclose(pts_m, expect, atol=0.05)


def test_option_is_recorded_and_tracks_a_real_clip(realav_dir):
    lp = landmarks.LandmarkParams(mirror_average=True)
    assert lp.as_dict()["mirror_average"] is True
    assert landmarks.LandmarkParams().as_dict()["mirror_average"] is False
    tracker = landmarks.LandmarkTracker(lp)
    assert tracker.mesh.mirror_average
    hits = [tracker.update(f)[0] is not None
            for i, f in zip(range(50), decode.iter_frames(realav_dir / CLIP))]
    assert np.mean(hits) >= 0.98
