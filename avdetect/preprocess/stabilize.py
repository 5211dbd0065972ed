"""The head's frame-to-frame motion measured on the image, to steady the mouth crop.

The face mesh's lip points carry per-frame noise of about a pixel (BENCHMARKS.md
"Landmark stage": white-noise step 0.86 px of the lip centre at the 88 crop's scale, more on
small or blurred faces); a centred moving average trades that noise for lag, and the crop
placed from it still moves against the face.  The image knows the head's motion far more
precisely: a patch of the face that moves rigidly with the head -- nose and cheeks, between
the eyes (which blink) and the lips (which speak) -- registered from one frame to the next
recovers its shift within a few hundredths of a pixel.  That motion is relative: summed
over a clip its errors drift, and it says nothing about where the mouth is.  So the mouth
centre is fused from the two, a complementary filter (``pipeline.track_row``):

    centre_t = P_t + mean over ``centre_window`` frames of (lip centre - P)

``P`` the summed image motion (``HeadMotion``): the fast part of the motion comes from the
image, the slow part and the absolute position from the landmarks.  Within a window the
crop then moves with the head, not with the landmarks' noise; speech moves the lips inside
it as on the face.

``register`` is the sub-pixel translation fit (also the measure of crop motion in
``avdetect.bench.landmark_bench``, applied there to the mouth crop, not to this patch).
"""

from __future__ import annotations

import cv2
import numpy as np

from avdetect.preprocess import align

# The rigid patch, reference-frame pixels (x0, y0, x1, y1): below the eyes (y = 96), above
# the upper lip (the lip centre sits at y ~ 168; the upper lip's top at ~ 155), across the
# nose and the inner cheeks.
MOTION_PATCH = (72, 112, 184, 150)
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)
ECC_BLUR = 3        # findTransformECC's Gaussian pre-filter: damps codec noise


def register(template: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(dx, dy), px: how far the content of ``image`` sits right / below where it sits in
    ``template`` (same-size gray arrays), i.e. ``image(x + d) ~ template(x)``; NaN where
    the fit fails (flat or unrelated images).

    A translation fit by ECC (OpenCV's ``findTransformECC``: iterative, sub-pixel, and
    indifferent to brightness / contrast changes between frames), started from the phase
    correlation peak (Hanning window; it finds shifts of many px, where ECC alone would
    converge only within a few).  Phase correlation alone is biased towards whole pixels
    (``tests/test_landmark_bench.py``: on known sub-pixel shifts ECC errs < 0.05 px, under
    a third of the peak's median error)."""
    a = np.asarray(template, np.float32)
    b = np.asarray(image, np.float32)
    (sx, sy), _ = cv2.phaseCorrelate(a, b, cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F))
    starts = [(sx, sy), (0.0, 0.0)] if max(abs(sx), abs(sy)) < min(a.shape) / 4 else [(0.0, 0.0)]
    for x0, y0 in starts:
        w = np.array([[1, 0, x0], [0, 1, y0]], np.float32)
        try:
            _, w = cv2.findTransformECC(a, b, w, cv2.MOTION_TRANSLATION, ECC_CRITERIA, None,
                                        ECC_BLUR)
        except cv2.error:         # did not converge from this start
            continue
        return w[:, 2].astype(np.float64)
    return np.full(2, np.nan)


def patch_matrix(to_ref: np.ndarray, patch: tuple[int, int, int, int] = MOTION_PATCH
                 ) -> np.ndarray:
    """Source -> patch-pixel matrix: the reference frame ``to_ref`` cut to ``patch``."""
    x0, y0 = patch[0], patch[1]
    return align.compose(np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), to_ref)


class HeadMotion:
    """Streaming sum ``P`` (source px) of the head's frame-to-frame motion.

    ``update(rgb, to_ref, lip_centre)`` per frame with a face (``to_ref`` the frame's own
    unsmoothed source -> reference matrix, ``lip_centre`` its raw lip centre, source px),
    ``update(rgb, None, None)`` for a frame without one; returns ``P`` for the frame, or
    None without a face.  Two consecutive frames with a face: both are warped by the
    *earlier* frame's matrix into ``MOTION_PATCH`` and registered, the shift mapped back to
    source pixels -- the same warp on both sides, so the landmarks' noise cancels.  Where
    the fit fails, or the previous frame had no face, the step is the lip centre's own
    (``P`` then moves with the landmarks, and ``lip centre - P`` stays continuous).
    ``counts`` tallies "image" / "landmark" steps."""

    def __init__(self, patch: tuple[int, int, int, int] = MOTION_PATCH):
        x0, y0, x1, y1 = patch
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"motion patch must be (x0, y0, x1, y1) with x1 > x0, y1 > y0, "
                             f"got {patch}")
        self.patch = tuple(patch)
        self._size = (x1 - x0, y1 - y0)
        self._prev: tuple[np.ndarray, np.ndarray] | None = None   # (patch, matrix) of t - 1
        self._last_centre: np.ndarray | None = None                # lip centre, last face
        self._p = np.zeros(2)
        self.counts = {"image": 0, "landmark": 0}

    def _warp(self, rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
        patch = align.warp(rgb, m, self._size)
        return cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY) if patch.ndim == 3 else patch

    def update(self, rgb: np.ndarray, to_ref: np.ndarray | None,
               lip_centre: np.ndarray | None) -> np.ndarray | None:
        if to_ref is None:
            self._prev = None
            return None
        lip_centre = np.asarray(lip_centre, np.float64)
        m = patch_matrix(to_ref, self.patch)
        step = None
        if self._prev is not None:
            prev_patch, prev_m = self._prev
            d = register(prev_patch, self._warp(rgb, prev_m))
            if np.isfinite(d).all():
                step = np.linalg.solve(prev_m[:, :2], d)       # patch px -> source px
                self.counts["image"] += 1
        if step is None:
            if self._last_centre is None:
                self._p = lip_centre.copy()                    # first face: start there
            else:
                step = lip_centre - self._last_centre
                self.counts["landmark"] += 1
        if step is not None:
            self._p = self._p + step
        self._prev = (self._warp(rgb, m), m)
        self._last_centre = lip_centre
        return self._p.copy()
