"""Per-frame face landmarks from MediaPipe's pretrained BlazeFace + face-mesh networks.

``LandmarkTracker.update(rgb)`` returns the 468 face-mesh points of one face (source
pixels) and a confidence, or None.  The mesh runs on a rotated square region of interest
(ROI) around the face, 192x192: after a hit the next frame's ROI comes from the previous
frame's landmarks (MediaPipe's own tracking scheme: bounding square of the points grown
``ROI_SCALE`` times, rotated so the eye corners are level), so the detector runs only to
(re)acquire the face: on the first frame and whenever the mesh's face-presence score drops
below ``MIN_PRESENCE``.  Acquisition tries BlazeFace short range (faces filling a good
part of the frame), full range (small faces), and then the frame padded by
``PAD_FOR_TIGHT`` on every side: generator outputs that are tight 128-256 px face crops
have no background around the face, and the detectors were trained on faces with some.

``TrackSmoother`` interpolates frames without landmarks (linear between the neighbouring
found frames, held at the ends) and smooths every column with its own centred moving
average, streaming with a lag of a few frames (the same schedule as the Haar path's
``face_track.BoxSmoother``; its docstring explains the emission rule).  The pipeline
smooths the alignment points over ``SMOOTH_WINDOW`` frames, places the mouth centre from
the head's image motion plus the lip centre's smoothed offset from it (``CENTRE_WINDOW``
frames; ``avdetect.preprocess.stabilize``), and leaves the lip shape per frame (smoothing
it would blur the speech movements the lip stream exists for).

Coordinates are continuous: pixel i covers [i, i + 1).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

import cv2
import numpy as np

from avdetect.preprocess import mesh_symmetry
from avdetect.preprocess.align import warp
from avdetect.pretrained import tflite_models

# Face-mesh indices (MediaPipe canonical mesh, subject's right = image left).
# Alignment: the four eye corners and the nose bridge -- rigid, unlike the jaw and lips.
STABLE_POINTS = (33, 133, 362, 263, 168, 6)
# 20 lip points, dlib's 68-point layout of the mouth: 12 outer (from the image-left
# corner clockwise) and 8 inner.
LIP_POINTS = (61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
              78, 81, 13, 311, 308, 402, 14, 178)
EYE_LINE = (33, 263)                 # outer eye corners: sets the ROI rotation
NUM_MESH_POINTS = 468

MIN_DETECTION_SCORE = 0.5            # BlazeFace score (MediaPipe's default)
MIN_PRESENCE = 0.5                   # face-mesh face-presence probability to accept
ROI_SCALE = 1.5                      # mesh ROI side / face size (MediaPipe's value)
PAD_FOR_TIGHT = 0.5                  # last try: frame padded by this * side on every side
NMS_IOU = 0.3                        # detections overlapping the best are averaged
SMOOTH_WINDOW = 5                    # frames (0.2 s) of smoothing of the alignment points
CENTRE_WINDOW = 9                    # frames of smoothing of the mouth centre's landmark part


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


# ----------------------------------------------------------------------------------------
# Rotated square regions


@dataclasses.dataclass(frozen=True)
class Roi:
    """A square of ``side`` pixels centred on (cx, cy), its x axis at ``angle`` radians
    (image y points down, so a positive angle turns the x axis clockwise)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def to_crop(self, n: int) -> np.ndarray:
        """2x3 matrix taking image coordinates to the n x n crop's coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = n / self.side
        lin = k * np.array([[c, s], [-s, c]])                   # R^T scaled
        t = n / 2 - lin @ np.array([self.cx, self.cy])
        return np.concatenate([lin, t[:, None]], axis=1)

    def from_crop(self, pts: np.ndarray, n: int) -> np.ndarray:
        """Crop coordinates [..., 2] of an n x n crop -> image coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        q = (np.asarray(pts, np.float64) - n / 2) * (self.side / n)
        return np.stack([self.cx + c * q[..., 0] - s * q[..., 1],
                         self.cy + s * q[..., 0] + c * q[..., 1]], axis=-1)


def roi_from_points(pts: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The mesh ROI of a face from its landmarks [468, 2]: level the eye line, take the
    bounding square in that frame, grow it ``scale`` times."""
    (x0, y0), (x1, y1) = pts[EYE_LINE[0]], pts[EYE_LINE[1]]
    angle = math.atan2(y1 - y0, x1 - x0)
    c, s = math.cos(angle), math.sin(angle)
    u = pts[:, 0] * c + pts[:, 1] * s                  # coordinates along the eye line
    v = -pts[:, 0] * s + pts[:, 1] * c
    cu, cv_ = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = max(u.max() - u.min(), v.max() - v.min()) * scale
    return Roi(cu * c - cv_ * s, cu * s + cv_ * c, side, angle)


# ----------------------------------------------------------------------------------------
# BlazeFace


@dataclasses.dataclass(frozen=True)
class Detection:
    box: np.ndarray        # (cx, cy, w, h) image pixels
    keypoints: np.ndarray  # [6, 2] image pixels: eyes, nose tip, mouth, ears
    score: float


def _anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """SSD anchor centres [N, 2] in [0, 1] (BlazeFace's anchors all have unit size, so
    only their centres matter): per stride a grid of cells, ``per_cell`` anchors each."""
    out = []
    for stride, k in zip(strides, per_cell):
        g = size // stride
        yy, xx = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
        out.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), k, axis=0))
    return np.concatenate(out).astype(np.float64)


class BlazeFace:
    """One BlazeFace detector: short range (128 px input; strides 8 and 16 with 2 and 6
    anchors per cell) or full range (192 px; stride 4, 1 anchor per cell)."""

    def __init__(self, full_range: bool = False, min_score: float = MIN_DETECTION_SCORE,
                 nms_iou: float = NMS_IOU):
        self.min_score, self.nms_iou = min_score, nms_iou
        name = tflite_models.FACE_DETECTION_FULL if full_range else tflite_models.FACE_DETECTION_SHORT
        self.model = tflite_models.load(name)
        self.size = self.model.input_shape[1]
        self.anchors = (_anchors(192, (4,), (1,)) if full_range
                        else _anchors(128, (8, 16), (2, 6)))

    def __call__(self, rgb: np.ndarray, roi: Roi) -> list[Detection]:
        """Faces in the region ``roi`` of the RGB image (outside the image: black),
        best first; overlapping detections are averaged, weighted by score."""
        n = self.size
        x = warp(rgb, roi.to_crop(n), n, cv2.BORDER_CONSTANT).astype(np.float32) / 127.5 - 1.0
        out = self.model(x[None])
        reg, cls = (out[0], out[1]) if out[0].shape[-1] == 16 else (out[1], out[0])
        reg, scores = reg[0].astype(np.float64), sigmoid(cls[0, :, 0].astype(np.float64))
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        pts = reg[keep].reshape(-1, 8, 2) / n              # [K, 8, 2]: centre, size, 6 kps
        pts[:, 0] += self.anchors[keep]
        pts[:, 2:] += self.anchors[keep][:, None]
        scores = scores[keep]
        dets = []
        order = list(np.argsort(-scores))
        while order:
            best = order[0]
            o = _iou_cwh(pts[best, :2].ravel(), pts[order, :2].reshape(-1, 4))
            group = [order[j] for j in range(len(order)) if o[j] >= self.nms_iou]
            order = [i for i in order if i not in group]
            w = scores[group][:, None, None]
            mean = (pts[group] * w).sum(0) / w.sum()          # [8, 2] in [0, 1] crop units
            img = roi.from_crop(mean * n, n)                  # centre + keypoints -> image
            wh = mean[1] * roi.side
            dets.append(Detection(np.array([*img[0], *wh]), img[2:], float(scores[best])))
        return dets


def _iou_cwh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one (cx, cy, w, h) box with each of [N, 4]."""
    lo = np.maximum(a[:2] - a[2:] / 2, b[:, :2] - b[:, 2:] / 2)
    hi = np.minimum(a[:2] + a[2:] / 2, b[:, :2] + b[:, 2:] / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    return inter / (a[2] * a[3] + b[:, 2] * b[:, 3] - inter + 1e-12)


# ----------------------------------------------------------------------------------------
# Face mesh + tracking


class FaceMesh:
    """The 468-point face mesh on a rotated ROI: -> (points [468, 2] image pixels,
    face-presence probability).

    ``mirror_average``: run the mesh on the crop and on its horizontal mirror, map the
    mirrored output back (``mesh_symmetry.mirror_points``) and average the points and the
    presence: test-time averaging that lowers the per-frame landmark noise where the two
    passes' errors differ.  Twice the mesh cost.  By construction the averaged output of a
    mirrored crop is the mirror of the crop's.  Off in the pipeline: on the 72 real clips
    it lowers the landmark noise ~0.9x but the mouth crop's pixel step only 0.98x
    (``landmark_bench --mirror``; BENCHMARKS.md "Landmark stage")."""

    def __init__(self, mirror_average: bool = False):
        self.model = tflite_models.load(tflite_models.FACE_LANDMARK)
        self.size = self.model.input_shape[1]
        self.mirror_average = mirror_average

    def __call__(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        pts, presence = self.on_crop(self.crop(rgb, roi))
        return roi.from_crop(pts, self.size), presence

    def crop(self, rgb: np.ndarray, roi: Roi) -> np.ndarray:
        """The mesh's input for ``roi`` of a frame: float32 [n, n, 3] in [0, 1]."""
        n = self.size
        return warp(rgb, roi.to_crop(n), n, cv2.BORDER_REPLICATE).astype(np.float32) / 255.0

    def on_crop(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Mesh of one float32 [n, n, 3] crop in [0, 1] -> (points [468, 2] crop px,
        presence)."""
        pts, presence = self._run(x)
        if self.mirror_average:
            pts_m, presence_m = self._run(np.ascontiguousarray(x[:, ::-1]))
            pts = (pts + mesh_symmetry.mirror_points(pts_m, self.size)) / 2
            presence = (presence + presence_m) / 2
        return pts, presence

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        out = self.model(x[None])
        pts_out = next(o for o in out if o.size == NUM_MESH_POINTS * 3)
        flag = next(o for o in out if o.size == 1)
        pts = pts_out.reshape(NUM_MESH_POINTS, 3)[:, :2].astype(np.float64)
        return pts, float(sigmoid(flag.ravel()[0]))


@dataclasses.dataclass(frozen=True)
class LandmarkParams:
    """Every knob of the landmark stage (recorded in the dataset metadata)."""

    min_detection_score: float = MIN_DETECTION_SCORE
    min_presence: float = MIN_PRESENCE
    roi_scale: float = ROI_SCALE
    pad_for_tight: float = PAD_FOR_TIGHT
    nms_iou: float = NMS_IOU
    smooth_window: int = SMOOTH_WINDOW
    # The mouth centre: with ``stabilize``, the head's image motion plus the lip centre's
    # offset from it averaged over ``centre_window`` frames (``avdetect.preprocess.
    # stabilize``); without, the lip centre averaged over ``centre_window`` frames.
    stabilize: bool = True
    centre_window: int = CENTRE_WINDOW
    stable_points: tuple[int, ...] = STABLE_POINTS
    lip_points: tuple[int, ...] = LIP_POINTS
    mirror_average: bool = False     # FaceMesh: average with the mirrored crop's pass

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["models"] = {name: tflite_models.file_sha256(tflite_models.model_path(name))[:16]
                       for name in (tflite_models.FACE_DETECTION_SHORT,
                                    tflite_models.FACE_DETECTION_FULL,
                                    tflite_models.FACE_LANDMARK)}
        d["runtime"] = "ai-edge-litert " + _litert_version()
        return d


def _litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "?"


class LandmarkTracker:
    """Streaming single-face landmark tracker; feed RGB uint8 frames [H, W, 3] in order.

    ``update`` -> (points [468, 2] float64 image pixels, presence) or (None, 0.0).
    ``last_event`` is "track" (ROI from the previous landmarks), "detect" or "miss";
    ``counts`` tallies them.  While the face is lost, acquisition runs on every frame, so a
    face that comes back is found on its first frame."""

    def __init__(self, params: LandmarkParams = LandmarkParams()):
        self.params = params
        self.mesh = FaceMesh(params.mirror_average)
        self._short = BlazeFace(False, params.min_detection_score, params.nms_iou)
        self._full = BlazeFace(True, params.min_detection_score, params.nms_iou)
        self._prev: np.ndarray | None = None
        self.last_event = "miss"
        self.counts: collections.Counter = collections.Counter()

    def update(self, rgb: np.ndarray) -> tuple[np.ndarray | None, float]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"LandmarkTracker wants uint8 [H, W, 3] RGB frames, "
                             f"got {rgb.dtype} {rgb.shape}")
        if self._prev is not None:
            pts, presence = self.mesh(rgb, roi_from_points(self._prev, self.params.roi_scale))
            if presence >= self.params.min_presence:
                return self._hit("track", pts, presence)
        for det in self._detections(rgb):
            pts, presence = self.mesh(rgb, self._roi_from_detection(det))
            if presence >= self.params.min_presence:
                # A second pass from the mesh's own ROI centres the face as tracking will.
                pts2, presence2 = self.mesh(rgb, roi_from_points(pts, self.params.roi_scale))
                if presence2 >= self.params.min_presence:
                    pts, presence = pts2, presence2
                return self._hit("detect", pts, presence)
        self._prev = None
        self.last_event = "miss"
        self.counts["miss"] += 1
        return None, 0.0

    def _hit(self, how: str, pts: np.ndarray, presence: float):
        self._prev = pts
        self.last_event = how
        self.counts[how] += 1
        return pts, presence

    def _detections(self, rgb: np.ndarray):
        """Candidate faces, tried in order until the mesh accepts one: short range on the
        whole frame (letterboxed), full range, then short range on the padded frame."""
        h, w = rgb.shape[:2]
        whole = Roi(w / 2, h / 2, float(max(h, w)))
        padded = Roi(w / 2, h / 2, float(max(h, w)) * (1 + 2 * self.params.pad_for_tight))
        for detector, roi in ((self._short, whole), (self._full, whole), (self._short, padded)):
            dets = detector(rgb, roi)
            if self._prev is not None and dets:
                # Re-acquisition: prefer the face nearest the one we had.
                c = self._prev.mean(axis=0)
                dets = sorted(dets, key=lambda d: float(np.hypot(*(d.box[:2] - c))))
            yield from dets

    def _roi_from_detection(self, det: Detection) -> Roi:
        (x0, y0), (x1, y1) = det.keypoints[0], det.keypoints[1]
        if x1 < x0:                     # keypoint order: make the eye line point +x
            (x0, y0), (x1, y1) = (x1, y1), (x0, y0)
        angle = math.atan2(y1 - y0, x1 - x0)
        side = float(max(det.box[2], det.box[3])) * self.params.roi_scale
        return Roi(float(det.box[0]), float(det.box[1]), side, angle)


# ----------------------------------------------------------------------------------------
# Interpolation + smoothing


def smooth_track(values: np.ndarray, found: np.ndarray, windows) -> np.ndarray:
    """Offline reference of ``TrackSmoother``: [T, D] values (rows where ``found`` is
    False are ignored) -> interpolated (linear, held at the ends) and smoothed by a centred
    moving average of ``windows[d]`` frames per column (edges padded) -> float64 [T, D]."""
    values = np.asarray(values, np.float64)
    found = np.asarray(found, bool)
    if not found.any():
        raise ValueError("smooth_track needs at least one found frame")
    t = np.arange(len(found))
    k = np.flatnonzero(found)
    filled = np.stack([np.interp(t, k, values[k, d]) for d in range(values.shape[1])], 1)
    windows = np.broadcast_to(np.asarray(windows, int), (values.shape[1],))
    out = np.empty_like(filled)
    for d, win in enumerate(windows):
        _check_window(int(win))
        h = int(win) // 2
        padded = np.pad(filled[:, d], h, mode="edge")
        out[:, d] = np.convolve(padded, np.ones(win) / win, mode="valid")
    return out


def _check_window(window: int) -> None:
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be odd and >= 1, got {window}")


class TrackSmoother:
    """``smooth_track`` on a stream: ``push(row or None)`` -> the (frame index, final row)
    pairs that became final, ``finish()`` -> the rest.  A row is final once the next found
    frame (or the end) is known and half the longest window beyond it is filled in."""

    def __init__(self, windows):
        windows = [int(w) for w in windows]
        for w in windows:
            _check_window(w)
        self._half = max(windows) // 2
        offs = np.abs(np.arange(-self._half, self._half + 1))[:, None]      # [2H+1, 1]
        wins = np.array(windows)[None, :]                                   # [1, D]
        self._weights = np.where(offs <= wins // 2, 1.0 / wins, 0.0)        # [2H+1, D]
        self._n = 0
        self._last: tuple[int, np.ndarray] | None = None
        self._gap = 0
        self._filled: collections.deque[np.ndarray] = collections.deque()
        self._next_out = 0

    @property
    def any_found(self) -> bool:
        return self._last is not None

    def push(self, row: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
        i = self._n
        self._n += 1
        if row is None:
            self._gap += 1
            return []
        row = np.asarray(row, np.float64)
        if self._last is None:
            fill = [row] * (self._half + self._gap)
        else:
            j0, r0 = self._last
            fill = [r0 + (row - r0) * (m / (i - j0)) for m in range(1, self._gap + 1)]
        self._filled.extend(fill)
        self._filled.append(row)
        self._last = (i, row)
        self._gap = 0
        return self._emit()

    def finish(self) -> list[tuple[int, np.ndarray]]:
        if self._last is None:
            if self._n == 0:
                return []
            raise ValueError("TrackSmoother: no frame had landmarks")
        self._filled.extend([self._last[1]] * (self._gap + self._half))
        self._gap = 0
        return self._emit()

    def _emit(self) -> list[tuple[int, np.ndarray]]:
        out = []
        span = 2 * self._half + 1
        while len(self._filled) >= span:
            win = np.array(list(itertools.islice(self._filled, span)))     # [2H+1, D]
            out.append((self._next_out, (win * self._weights).sum(axis=0)))
            self._next_out += 1
            self._filled.popleft()
        return out


def track_video(frames, params: LandmarkParams = LandmarkParams()):
    """Offline convenience: landmarks of every RGB frame -> (points float64 [T, 468, 2]
    with NaN where missed, presence float32 [T])."""
    tracker = LandmarkTracker(params)
    pts, conf = [], []
    for f in frames:
        p, c = tracker.update(f)
        pts.append(p if p is not None else np.full((NUM_MESH_POINTS, 2), np.nan))
        conf.append(c)
    return np.asarray(pts), np.asarray(conf, np.float32)
