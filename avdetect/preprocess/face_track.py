"""Face tracking over a video, box smoothing / interpolation, and the per-frame crops.

This is the *old* Haar path.  ``preprocess_video`` uses the landmark stage
(``avdetect.preprocess.landmarks`` + ``align``) since it measured better on every clip of
realtalk and the fixtures (``python -m avdetect.bench.landmark_bench``; BENCHMARKS.md);
this module stays as the baseline that benchmark compares against, and its Haar detector
picks faces for the synthetic generator's stills.

Three layers, each usable on its own:

1. ``FaceTracker`` -- a streaming single-face tracker over grayscale frames at a small
   *tracking scale* (longer side ``detect_max_side``).  The Haar detector
   (``face_detect.detect_faces``) is the expensive part (10-35 ms per 160-360 px frame),
   so it runs on the whole frame only to acquire a face, and afterwards every
   ``detect_every`` frames inside a small region around the tracked box, rescaled so the
   face is about ``roi_face_px`` pixels wide (six cascade scales: ~0.5-1 ms).
   In between, the box is tracked by normalised cross-correlation of a face template
   (taken at the last detection) inside a search window, both rescaled so the face is
   ``track_face_px`` wide.  A correlation peak below ``track_min_score`` counts as a loss
   of confidence and triggers an immediate re-detection.
   Several faces: the largest face is acquired; afterwards re-detections keep the box that
   overlaps the tracked one most (IoU), so the tracker stays on the same person even when
   another face becomes larger; it falls back to the largest face only after it lost the
   track (no detection and no confident template match).
2. ``interpolate_boxes`` / ``smooth_boxes`` (offline, on arrays) and ``BoxSmoother``
   (the same computation, streaming, with a lag of a few frames): boxes of frames where
   the face was missed are linearly interpolated between the neighbouring found frames
   (held constant before the first and after the last), then every coordinate of
   (centre x, centre y, w, h) is smoothed by a centred moving average of ``window``
   frames (edges padded by repeating the end values).
3. ``mouth_crop`` / ``face_crop`` with the geometry in ``CropGeometry``.

Boxes are float (x, y, w, h): top-left corner and size, in pixels of the image they were
measured on. (Over 450 lines: the three layers are one frozen baseline, kept together.)
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Iterable

import cv2
import numpy as np

from avdetect import contract
from avdetect.preprocess import face_detect
from avdetect.preprocess.landmarks import TrackSmoother, _check_window

# ----------------------------------------------------------------------------------------
# Small box helpers


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def square_affine(cx: float, cy: float, side: float, n: int) -> np.ndarray:
    """2x3 affine matrix (for cv2.warpAffine) taking the square of ``side`` pixels centred
    on (cx, cy) to an n x n image.

    Coordinates are continuous with pixel i covering [i, i + 1) (so a Haar box (x, y, w, h)
    has centre (x + w / 2, y + h / 2)); OpenCV samples at pixel centres, hence the half
    pixel terms: output pixel u samples source x = cx - side / 2 + (u + 0.5) / s - 0.5
    with s = n / side.
    """
    s = n / side
    tx = n / 2 - s * cx + 0.5 * (s - 1.0)
    ty = n / 2 - s * cy + 0.5 * (s - 1.0)
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


# ----------------------------------------------------------------------------------------
# Tracking


@dataclasses.dataclass(frozen=True)
class TrackerParams:
    """Every knob of ``FaceTracker`` (recorded in dataset metadata via ``asdict``)."""

    detect_every: int = 5          # re-detect (in a region around the box) every k frames
    track_min_score: float = 0.6   # NCC peak below this = tracking lost confidence
    track_face_px: int = 32        # face width in the template-matching images
    search_margin: float = 0.25    # search window = box grown by this * w on every side
    roi_margin: float = 0.2        # re-detection region = box grown by this * w per side
    roi_face_px: int = 28          # face width in the re-detection image (cost ~ scales)
    roi_scale_factor: float = 1.1  # cascade pyramid step in the re-detection image
    roi_min_neighbors: int = 3     # the region already holds the face: accept fewer votes
    min_face_frac: float = 0.1     # whole-frame detection: smallest face / shorter side
    # Whole-frame search: a coarse cascade pyramid first (~40% cheaper), the finer one
    # only when the coarse pass finds nothing.
    search_scale_factors: tuple[float, ...] = (1.2, 1.1)
    min_overlap: float = 0.3       # a re-detection must overlap the tracked box this much

    def __post_init__(self):
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if not 0.0 < self.track_min_score <= 1.0:
            raise ValueError(f"track_min_score must be in (0, 1], got {self.track_min_score}")


class FaceTracker:
    """Streaming tracker of one face; feed it grayscale uint8 frames [H, W] in order.

    ``update`` returns the box found in this frame (tracking-image pixels) or None when the
    face was neither detected nor confidently tracked.  ``last_event`` says how the box
    came about ("detect", "redetect", "track", or "miss") -- useful in tests and benchmarks.
    """

    def __init__(self, params: TrackerParams = TrackerParams()):
        self.params = params
        self._box: np.ndarray | None = None       # (x, y, w, h) float64
        self._template: np.ndarray | None = None  # uint8 face patch at template scale
        self._since_detect = 0                    # frames since the last detection
        self._since_search = 0                    # frames since the last whole-frame search
        self.last_event = "miss"
        self.counts = collections.Counter()

    # -- public ------------------------------------------------------------------------
    def update(self, gray: np.ndarray) -> np.ndarray | None:
        """Box of the tracked face in ``gray`` (uint8 [H, W]), or None if not found."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"FaceTracker wants uint8 [H, W] frames, got {gray.dtype} {gray.shape}")
        p = self.params
        self._since_detect += 1
        self._since_search += 1
        if self._box is None:
            # Lost (or not yet acquired): search the whole frame, but only every k frames
            # so that a long stretch without a face costs ~1/k of a detection per frame.
            if self._since_search >= p.detect_every or self.counts["search"] == 0:
                return self._search(gray)
            return self._event("miss", None)

        tracked, score = None, -1.0
        if self._since_detect < p.detect_every:
            tracked, score = self._match(gray)
            if score >= p.track_min_score:
                return self._event("track", tracked)
        # A re-detection is due, or the template match lost confidence.
        det = self._redetect(gray)
        if det is not None:
            return self._accept_detection(gray, det, "redetect")
        # Re-detection failed (e.g. a turned head, which the frontal cascade misses): keep
        # following the template while it still matches well, and retry the detector k
        # frames later rather than on every frame.
        if tracked is None:
            tracked, score = self._match(gray)
        if score >= p.track_min_score:
            self._since_detect = 0
            return self._event("track", tracked)
        self._box = None
        self._template = None
        return self._search(gray)

    # -- internals -----------------------------------------------------------------------
    def _event(self, name: str, box: np.ndarray | None) -> np.ndarray | None:
        self.last_event = name
        self.counts[name] += 1
        if box is not None:
            self._box = box
        return None if box is None else box.copy()

    def _search(self, gray: np.ndarray) -> np.ndarray | None:
        self._since_search = 0
        self.counts["search"] += 1
        boxes = []
        for factor in self.params.search_scale_factors:
            boxes = face_detect.detect_faces(gray, min_size_frac=self.params.min_face_frac,
                                             scale_factor=factor)
            if boxes:
                break
        if not boxes:
            return self._event("miss", None)
        return self._accept_detection(gray, np.asarray(boxes[0], np.float64), "detect")

    def _accept_detection(self, gray: np.ndarray, box: np.ndarray, how: str) -> np.ndarray:
        self._since_detect = 0
        self._template = self._patch(gray, box, 1.0, self.params.track_face_px / box[2])
        return self._event(how, box)

    @staticmethod
    def _patch(gray: np.ndarray, box: np.ndarray, grow: float, scale: float) -> np.ndarray:
        """The square region of ``box`` grown by ``grow`` (side = grow * w), resampled by
        ``scale`` (border replicated outside the image)."""
        side = box[2] * grow
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        n = max(8, int(round(side * scale)))
        m = square_affine(cx, cy, side, n)
        return cv2.warpAffine(gray, m, (n, n), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def _match(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """Template match in a window around the current box: (new box, NCC peak)."""
        box, tpl = self._box, self._template
        scale = tpl.shape[1] / box[2]                        # template px per image px
        grow = 1.0 + 2.0 * self.params.search_margin
        window = self._patch(gray, box, grow, scale)         # [n, n], n ~ grow * tpl side
        res = cv2.matchTemplate(window, tpl, cv2.TM_CCOEFF_NORMED)  # [n - t + 1]^2
        _, peak, _, (px, py) = cv2.minMaxLoc(res)
        dx = px + _subpixel(res[py, px - 1:px + 2]) if 0 < px < res.shape[1] - 1 else px
        dy = py + _subpixel(res[py - 1:py + 2, px]) if 0 < py < res.shape[0] - 1 else py
        # Offset of the best match from the window centre, back in image pixels.
        centre = (res.shape[1] - 1) / 2, (res.shape[0] - 1) / 2
        moved = box.copy()
        moved[0] += (dx - centre[0]) * (box[2] * grow) / window.shape[1]
        moved[1] += (dy - centre[1]) * (box[2] * grow) / window.shape[0]
        # The border-replicated margin can "match" a face leaving the picture: keep the
        # centre inside the image; the next re-detection settles where the face is.
        h, w = gray.shape
        moved[0] = min(max(moved[0], -moved[2] / 2), w - moved[2] / 2)
        moved[1] = min(max(moved[1], -moved[3] / 2), h - moved[3] / 2)
        return moved, float(peak) if np.isfinite(peak) else 0.0

    def _redetect(self, gray: np.ndarray) -> np.ndarray | None:
        """Detection in a small region around the box; the candidate overlapping it most."""
        p, box = self.params, self._box
        grow = 1.0 + 2.0 * p.roi_margin
        scale = p.roi_face_px / box[2]
        roi = self._patch(gray, box, grow, scale)            # [n, n], face ~ roi_face_px
        side = box[2] * grow
        x0, y0 = box[0] + box[2] / 2 - side / 2, box[1] + box[3] / 2 - side / 2
        to_img = side / roi.shape[0]
        # Faces from 0.6x the tracked size up (the cascade's own floor is 24 px).
        cands = face_detect.detect_faces(roi, min_size_frac=0.6 * p.roi_face_px / roi.shape[0],
                                         scale_factor=p.roi_scale_factor,
                                         min_neighbors=p.roi_min_neighbors)
        best, best_iou = None, p.min_overlap
        for c in cands:
            c = np.array([x0 + c[0] * to_img, y0 + c[1] * to_img, c[2] * to_img, c[3] * to_img])
            o = iou(c, box)
            if o >= best_iou:
                best, best_iou = c, o
        return best


def _subpixel(v: np.ndarray) -> float:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through 3 samples [v-1, v0, v+1]."""
    a, b, c = float(v[0]), float(v[1]), float(v[2])
    den = a - 2.0 * b + c
    if den >= 0:            # not a maximum (flat or numerically odd): no refinement
        return 0.0
    return min(0.5, max(-0.5, 0.5 * (a - c) / den))


def track_boxes(frames_gray: Iterable[np.ndarray], params: TrackerParams = TrackerParams()
                ) -> tuple[np.ndarray, np.ndarray]:
    """Run a ``FaceTracker`` over grayscale frames -> (raw boxes float32 [T, 4] with NaN
    where missed, found bool [T]).  Offline convenience for tests and tools."""
    tracker = FaceTracker(params)
    boxes, found = [], []
    for g in frames_gray:
        b = tracker.update(g)
        found.append(b is not None)
        boxes.append(b if b is not None else np.full(4, np.nan))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(found, bool)


# ----------------------------------------------------------------------------------------
# Tracking image (the Haar tracker runs on a small gray copy of each frame)


def tracking_decimation(height: int, width: int, max_side: int) -> int:
    """The power of two f so that the tracking image (longer side / f) is <= ``max_side``
    (and > max_side / 2)."""
    if max_side < 24:
        raise ValueError(f"detect_max_side must be >= 24 (the Haar window), got {max_side}")
    f = 1
    while max(height, width) > f * max_side:
        f *= 2
    return f


def tracking_image(gray: np.ndarray, decimate: int) -> np.ndarray:
    """Gray uint8 [H, W] -> [H // f, W // f] for f a power of two (see
    ``tracking_decimation``), each pixel the mean of an f x f block.

    Repeated 2x2 averaging (OpenCV's vectorised INTER_AREA halving) gives the same block
    means as one f x f INTER_AREA resize but 3-4x faster at 720p-1080p; an integer factor
    keeps box coordinates exact (multiply by f).  Odd trailing rows / columns are dropped
    at each halving."""
    while decimate > 1:
        h, w = gray.shape[0] // 2, gray.shape[1] // 2
        gray = cv2.resize(gray[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
        decimate //= 2
    return gray


# ----------------------------------------------------------------------------------------
# Interpolation and smoothing


def _to_centre(boxes: np.ndarray) -> np.ndarray:
    """(x, y, w, h) -> (cx, cy, w, h), float64 [..., 4]."""
    c = np.array(boxes, np.float64)
    c[..., :2] += c[..., 2:] / 2
    return c


def _from_centre(c: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x, y, w, h), float64 [..., 4]."""
    b = np.array(c, np.float64)
    b[..., :2] -= b[..., 2:] / 2
    return b


def interpolate_boxes(boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Fill the boxes of frames where ``found`` is False: linear in time between the found
    neighbours, held constant before the first and after the last found frame.

    boxes: [T, 4] (values where not found are ignored); found: bool [T], at least one True.
    Returns float64 [T, 4].
    """
    boxes = np.asarray(boxes, np.float64)
    found = np.asarray(found, bool)
    if boxes.shape != (found.shape[0], 4):
        raise ValueError(f"boxes {boxes.shape} and found {found.shape} disagree")
    if not found.any():
        raise ValueError("interpolate_boxes needs at least one found frame")
    t = np.arange(len(found))
    out = boxes.copy()
    k = np.flatnonzero(found)                       # [F]
    miss = np.flatnonzero(~found)                   # [T - F]
    if miss.size:
        nxt = np.searchsorted(k, miss)              # index into k of the next found frame
        lo = k[np.clip(nxt - 1, 0, len(k) - 1)]
        hi = k[np.clip(nxt, 0, len(k) - 1)]
        # Before the first / after the last found frame lo == hi: the box is held.
        frac = np.where(hi > lo, (t[miss] - lo) / np.maximum(hi - lo, 1), 0.0)[:, None]
        out[miss] = boxes[lo] + (boxes[hi] - boxes[lo]) * frac
    return out


def smooth_boxes(boxes: np.ndarray, window: int, size_window: int | None = None) -> np.ndarray:
    """Centred moving average of the box centre over ``window`` frames and of its size
    over ``size_window`` frames (default: ``window``; both odd), edges padded by repeating
    the first / last box.  [T, 4] (x, y, w, h) -> float64 [T, 4] (x, y, w, h).

    The size gets its own (usually longer) window because it only changes at detections
    (template tracking keeps it), i.e. it is a staircase with Haar's ~5% size noise."""
    size_window = window if size_window is None else size_window
    c = _to_centre(boxes)                                       # [T, 4] (cx, cy, w, h)
    out = np.empty_like(c)
    for cols, win in ((slice(0, 2), window), (slice(2, 4), size_window)):
        _check_window(win)
        h = win // 2
        padded = np.pad(c[:, cols], ((h, h), (0, 0)), mode="edge")      # [T + 2h, 2]
        csum = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)      # [T + 2h + 1, 2]
        out[:, cols] = (csum[win:] - csum[:-win]) / win                 # [T, 2]
    return _from_centre(out)


class BoxSmoother(TrackSmoother):
    """``smooth_boxes(interpolate_boxes(boxes, found), window, size_window)`` computed on a
    stream: :class:`avdetect.preprocess.landmarks.TrackSmoother` over centre-form boxes
    (cx, cy, w, h), the centre smoothed over ``window`` frames and the size over
    ``size_window``.

    ``push(box_or_None)`` returns the (frame index, final box) pairs that became final;
    ``finish()`` returns the rest.  A frame's box is final once the next found frame (or
    the end) is known and half a window of frames beyond it is interpolated, so the lag is
    ``max(window, size_window) // 2`` frames plus the length of a current run of missed
    frames.  Memory is O(window) whatever the gaps.
    """

    def __init__(self, window: int, size_window: int | None = None):
        size_window = window if size_window is None else size_window
        super().__init__([window, window, size_window, size_window])
        self.window, self.size_window = window, size_window

    def push(self, box: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
        """Add the next frame's box (None: missed) -> boxes that became final."""
        row = None if box is None else _to_centre(np.asarray(box, np.float64))
        return [(i, _from_centre(c)) for i, c in super().push(row)]

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """Flush at the end of the stream.  Raises ValueError if no box was ever found."""
        if not self.any_found and self._n:
            raise ValueError("BoxSmoother: no frame had a box")
        return [(i, _from_centre(c)) for i, c in super().finish()]


# ----------------------------------------------------------------------------------------
# Crops


@dataclasses.dataclass(frozen=True)
class CropGeometry:
    """Where the mouth and face crops sit relative to a Haar face box (x, y, w, h).

    Without landmarks the mouth centre is estimated from the box: horizontally its centre,
    vertically ``mouth_y`` box heights below its top.  The frontal Haar box spans roughly
    forehead to chin; 0.80 was set by looking at the contact sheets of all 16 fixture
    clips (``python -m avdetect.preprocess.pipeline --sheets DIR``): the lips sit at the
    centre of the crop (0.78 left them ~5% low).  The mouth region is a square of side
    ``mouth_side * w``: with 0.6 the mouth spans ~55-65% of the crop width with the nose
    tip at the top and the chin at the bottom, like the 96x96 LRS / AV-HuBERT ROIs.  It is
    resized to contract.MOUTH_ROI and centre-cropped to contract.MOUTH_SIZE, grayscale.

    The face crop is the box grown to a square of side ``face_scale * w`` (a margin of
    (face_scale - 1) / 2 * w = 0.2 w on every side, as syncnet's crop_scale 0.4), its
    centre moved down by ``face_shift * w`` so the whole chin is inside (the Haar box
    cuts it).
    """

    mouth_y: float = 0.80
    mouth_side: float = 0.6
    face_scale: float = 1.4
    face_shift: float = 0.1

    def mouth_region(self, box: np.ndarray) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the mouth square, in the box's pixels."""
        x, y, w, h = (float(v) for v in box)
        return x + w / 2, y + self.mouth_y * h, self.mouth_side * w

    def face_region(self, box: np.ndarray) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the face square, in the box's pixels."""
        x, y, w, h = (float(v) for v in box)
        return x + w / 2, y + h / 2 + self.face_shift * w, self.face_scale * w


def crop_square(image: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """The axis-aligned square (centre, side) of ``image`` resampled to [out, out, ...].

    Regions outside the image are filled by replicating its border (cv2.BORDER_REPLICATE),
    so a face at the edge still gives a full crop.  Upscaling (and downscaling by up to
    2x, where bilinear sampling still touches every source pixel) is one bilinear warp; a
    larger downscale warps to k * out pixels with k = floor(side / out) (a mild bilinear
    shrink, by less than 1.5x) and then averages k x k blocks (INTER_AREA with an integer
    factor: cheap, and no aliasing).
    """
    if not (side > 0 and math.isfinite(side)):
        raise ValueError(f"crop side must be a positive number, got {side}")
    k = 1 if side <= 2 * out else int(side // out)
    n = k * out
    patch = cv2.warpAffine(image, square_affine(cx, cy, side, n), (n, n), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        patch = cv2.resize(patch, (out, out), interpolation=cv2.INTER_AREA)
    return patch


def mouth_crop(frame: np.ndarray, box: np.ndarray,
               geometry: CropGeometry = CropGeometry()) -> np.ndarray:
    """Grayscale mouth crop, uint8 [MOUTH_SIZE, MOUTH_SIZE] (96 region, centre 88).

    ``frame`` is RGB uint8 [H, W, 3] or already gray [H, W] (cheaper: one channel to
    resample; the pipeline has the gray frame anyway for tracking)."""
    cx, cy, side = geometry.mouth_region(box)
    roi = crop_square(frame, cx, cy, side, contract.MOUTH_ROI)          # [96, 96(, 3)]
    if roi.ndim == 3:
        roi = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY)                      # [96, 96]
    o = (contract.MOUTH_ROI - contract.MOUTH_SIZE) // 2
    return np.ascontiguousarray(roi[o:o + contract.MOUTH_SIZE, o:o + contract.MOUTH_SIZE])


def face_crop(frame_rgb: np.ndarray, box: np.ndarray, size: int = contract.FACE_SIZE_DEFAULT,
              geometry: CropGeometry = CropGeometry()) -> np.ndarray:
    """RGB face crop with margin, uint8 [size, size, 3]."""
    cx, cy, side = geometry.face_region(box)
    return crop_square(frame_rgb, cx, cy, side, size)
