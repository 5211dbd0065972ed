"""Which frame of a real clip becomes a face still: frontal, eyes open, mouth closed.

The renderer opens the mouth itself and animates blinks and head motion, so a still must
show a face that looks into the camera with the lips together and the eyes open. The
frame is picked by measurement, not by eye: the project's landmark stage
(``avdetect.preprocess.landmarks``: BlazeFace + the 468-point face mesh, single-threaded
TFLite, so the same file gives the same points on every run) tracks every
``SCAN_STRIDE``-th frame, and among the frames that pass every check of ``FrameChecks``
the one with the smallest mouth opening wins (earliest on ties). A frame also has to be
found by the Haar detector, which places the still's crop and geometry
(``faces.measure_geometry``); candidates are tried in order of opening until one is.

Measures on the face mesh (MediaPipe canonical indices):

* mouth opening: inner-lip gap (points 13-14) / mouth width (corners 61-291);
* yaw: where the nose tip (1) falls between the outer eye corners (33, 263), minus 0.5
  (0 = frontal, +-0.5 = profile);
* roll: angle of the outer-eye-corner line;
* eye opening: lid gap (159-145, 386-374) / eye width (33-133, 362-263), both eyes'
  mean; a frame passes when it is at least ``min_eye_ratio`` of the clip's median (no
  blinks, no half-closed lids).
"""

from __future__ import annotations

import dataclasses
import pathlib

import cv2
import numpy as np

from avdetect.errors import NoFaceError
from avdetect.media.decode import iter_frames
from avdetect.preprocess.face_detect import detect_largest_face
from avdetect.preprocess.landmarks import LandmarkTracker

# Every other frame: halves the landmark cost; a closed mouth lasts several frames.
SCAN_STRIDE = 2
# Openings are compared rounded to this: float noise cannot reorder near-equal frames,
# and ties go to the earliest frame.
OPENING_STEP = 1e-3
# Candidates the Haar detector is tried on (the rest are not kept in memory).
MAX_TRIED = 16


@dataclasses.dataclass(frozen=True)
class FrameChecks:
    """What a frame must show to be a still."""
    min_presence: float = 0.9       # face-mesh face-presence probability
    max_abs_yaw: float = 0.10       # see the module docstring
    max_abs_roll_deg: float = 10.0
    min_eye_ratio: float = 0.8      # eye opening / the clip's median eye opening


@dataclasses.dataclass(frozen=True)
class FrameMeasures:
    """Per scanned frame (NaN where the landmark stage found no face)."""
    index: np.ndarray        # int [N]: frame index in the 25 fps clip
    presence: np.ndarray     # float [N]
    opening: np.ndarray
    yaw: np.ndarray
    roll_deg: np.ndarray
    eye: np.ndarray


def _dist(pts: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.hypot(*(pts[:, a] - pts[:, b]).T)


def measures_of(points: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth opening, yaw, roll (degrees) and eye opening of face-mesh points [N, 468, 2]."""
    eye_line = points[:, 263] - points[:, 33]
    return {
        "opening": _dist(points, 13, 14) / _dist(points, 61, 291),
        "yaw": (points[:, 1, 0] - points[:, 33, 0]) / eye_line[:, 0] - 0.5,
        "roll_deg": np.degrees(np.arctan2(eye_line[:, 1], eye_line[:, 0])),
        "eye": 0.5 * (_dist(points, 159, 145) / _dist(points, 33, 133)
                      + _dist(points, 386, 374) / _dist(points, 362, 263)),
    }


def mesh_points(image: np.ndarray) -> np.ndarray | None:
    """Face-mesh points [468, 2] of the face in one RGB image (a fresh tracker: nothing
    carried over from other images), or None."""
    pts, _ = LandmarkTracker().update(np.ascontiguousarray(image))
    return pts


def geometry_points(pts: np.ndarray) -> dict:
    """What ``faces.FaceGeometry`` needs from face-mesh points [468, 2]: the lip junction
    (midpoint of the inner lips 13, 14), mouth width (corners 61-291) and eye centres
    (midpoints of each eye's corners; image-left eye first)."""
    def mid(a: int, b: int) -> tuple[float, float]:
        return (float(0.5 * (pts[a, 0] + pts[b, 0])), float(0.5 * (pts[a, 1] + pts[b, 1])))
    eyes = sorted((mid(33, 133), mid(362, 263)))
    return {"mouth": mid(13, 14), "mouth_width": float(np.hypot(*(pts[61] - pts[291]))),
            "eyes": (eyes[0], eyes[1])}


def measure_clip(path: pathlib.Path) -> FrameMeasures:
    """Landmark measures of every ``SCAN_STRIDE``-th frame of a clip."""
    tracker = LandmarkTracker()
    index, presence, points = [], [], []
    for k, frame in enumerate(iter_frames(path)):
        if k % SCAN_STRIDE:
            continue
        pts, conf = tracker.update(np.ascontiguousarray(frame))
        index.append(k)
        presence.append(conf)
        points.append(pts if pts is not None else np.full((468, 2), np.nan))
    m = measures_of(np.asarray(points, np.float64))
    return FrameMeasures(index=np.asarray(index), presence=np.asarray(presence, np.float64),
                         **m)


def candidates(m: FrameMeasures, checks: FrameChecks = FrameChecks()) -> list[int]:
    """Frame indices that pass ``checks``, smallest mouth opening first (ties: earliest)."""
    found = m.presence >= checks.min_presence
    if not found.any():
        return []
    eye_median = float(np.median(m.eye[found]))
    with np.errstate(invalid="ignore"):
        ok = (found & (np.abs(m.yaw) <= checks.max_abs_yaw)
              & (np.abs(m.roll_deg) <= checks.max_abs_roll_deg)
              & (m.eye >= checks.min_eye_ratio * eye_median))
    keys = np.round(m.opening[ok] / OPENING_STEP)
    order = np.lexsort((m.index[ok], keys))          # last key sorts first
    return [int(i) for i in m.index[ok][order]]


def pick_frame(path: pathlib.Path, checks: FrameChecks = FrameChecks()
               ) -> tuple[int, np.ndarray]:
    """(frame index, RGB frame) of the clip's still: the best candidate the Haar detector
    also finds. NoFaceError naming the file when no frame qualifies."""
    order = candidates(measure_clip(path), checks)
    if not order:
        raise NoFaceError(path, f"no frame shows a frontal face with open eyes ({checks})")
    order = order[:MAX_TRIED]
    frames: dict[int, np.ndarray] = {}
    for k, frame in enumerate(iter_frames(path)):       # second pass: keep candidates only
        if k in order:
            frames[k] = np.array(frame)
    for k in order:
        if detect_largest_face(cv2.cvtColor(frames[k], cv2.COLOR_RGB2GRAY)) is not None:
            return k, frames[k]
    raise NoFaceError(path, f"the Haar detector finds no face in any of the {len(order)} "
                            "frontal closed-mouth candidate frames")
