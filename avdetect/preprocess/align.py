"""Landmark alignment to a mean face, and the aligned mouth / face crops.

Each frame is mapped into a *reference frame* of ``REF_SIZE`` pixels by the similarity
transform (rotation, uniform scale, translation; least squares) that takes its stable
landmarks -- the four eye corners and two nose-bridge points of the face mesh, which move
rigidly with the head, unlike jaw and lips -- onto the mean face ``MEAN_FACE``.  In that
frame (the LRS / AV-HuBERT convention):

* the mouth crop is the ``contract.MOUTH_ROI`` (96) square centred on the mouth landmarks'
  centre, centre-cropped to ``contract.MOUTH_SIZE`` (88), grayscale;
* the face crop is the whole reference square, resized to the face size;
* the lip stream is the 20 lip landmarks divided by ``REF_SIZE`` (so [0, 1] spans the
  aligned face).

The mean face was measured, not guessed: 349 face-mesh shapes (every 5th of the first
100 frames of the 6 real fixture clips and of every 6th real realtalk clip), Procrustes-
aligned on the stable points, averaged, levelled and mirror-symmetrised; units are the
distance between the outer eye corners, origin their midpoint.  On those clips the mouth
corners are 0.579 of that distance apart, so ``REF_EYE_DIST = 96`` gives a 56 px wide
mouth in the 96 px crop (58%, as the old Haar geometry and the LRS crops).  Reproduce:

    python -m avdetect.bench.landmark_bench --mean-face ../shared/fixtures/realav/real_*.mp4 \
        $(ls ../shared/realtalk/real_*.mp4 | awk 'NR%6==1')

Coordinates are continuous: pixel i covers [i, i + 1).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from avdetect import contract

REF_SIZE = 256                    # side of the reference (aligned face) frame, pixels
REF_EYE_DIST = 96.0               # outer eye corners apart in the reference frame
REF_EYE_CENTRE = (128.0, 96.0)    # their midpoint: leaves ~90 px of forehead above
# STABLE_POINTS of avdetect.preprocess.landmarks (33, 133, 362, 263, 168, 6), in units of
# the outer eye-corner distance from their midpoint (x right, y down).
MEAN_FACE_UNITS = np.array([[-0.5, 0.0], [-0.1919, 0.0099], [0.1919, 0.0099], [0.5, 0.0],
                            [0.0, -0.0661], [0.0, 0.0171]])
MEAN_MOUTH_UNITS = (0.0, 0.7485)   # the 20 lip points' centre on the mean face (not used to
                                  # place crops: each frame's own mouth centre is)
MEAN_FACE = np.asarray(REF_EYE_CENTRE) + REF_EYE_DIST * MEAN_FACE_UNITS   # [6, 2] ref px


def alignment_params() -> dict:
    """Every alignment constant, for the dataset metadata."""
    return {"ref_size": REF_SIZE, "ref_eye_dist": REF_EYE_DIST,
            "ref_eye_centre": list(REF_EYE_CENTRE),
            "mean_face_units": MEAN_FACE_UNITS.tolist(),
            "transform": "least-squares similarity from the stable points onto the mean face",
            "mouth_crop": f"{contract.MOUTH_ROI} ref px square on the lip centre, centre "
                          f"{contract.MOUTH_SIZE}, gray (cv2 RGB2GRAY, BT.601)",
            "face_crop": "the whole reference square, resized",
            "lips": "20 lip points in the reference frame / ref_size"}


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity transform (no reflection) minimising sum |M src_i - dst_i|^2.

    Closed form with points as complex numbers: dst ~ k * src + t, k = a + ib (rotation
    and scale), k = <src - mean, dst - mean> / |src - mean|^2."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity wants two [N >= 2, 2] point sets, got {src.shape} {dst.shape}")
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(), zd.mean()
    den = np.vdot(zs - ms, zs - ms).real
    if not den > 0:
        raise ValueError("similarity: the source points coincide")
    k = np.vdot(zs - ms, zd - md) / den
    t = md - k * ms
    return np.array([[k.real, -k.imag, t.real], [k.imag, k.real, t.imag]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points [..., 2]."""
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer(inner(p))``."""
    return np.concatenate([outer[:, :2] @ inner[:, :2],
                           (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def scale_of(m: np.ndarray) -> float:
    """Output pixels per input pixel of a similarity matrix."""
    return math.sqrt(abs(np.linalg.det(m[:, :2])))


def warp(image: np.ndarray, m: np.ndarray, n: int | tuple[int, int],
         border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """``image`` resampled to n x n (or ``n = (width, height)``) by the continuous-coordinate
    2x3 matrix ``m``.

    OpenCV samples at pixel centres, hence the half-pixel shift.  A shrink by more than
    2x (where bilinear sampling would skip source pixels and alias) warps to k times the
    size with k = floor(1 / scale) and averages k x k blocks (INTER_AREA, integer factor)."""
    w, h = (n, n) if isinstance(n, (int, np.integer)) else (int(n[0]), int(n[1]))
    s = scale_of(m)
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"warp: degenerate transform {m.tolist()}")
    k = 1 if s >= 0.5 else int(1.0 / s)
    mk = m * k
    lin, t = mk[:, :2], mk[:, 2]
    t_idx = t + 0.5 * lin.sum(axis=1) - 0.5
    out = cv2.warpAffine(image, np.concatenate([lin, t_idx[:, None]], axis=1), (w * k, h * k),
                         flags=cv2.INTER_LINEAR, borderMode=border)
    if k > 1:
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
    return out


def to_reference(stable: np.ndarray) -> np.ndarray:
    """Source -> reference-frame matrix from a frame's stable landmarks [6, 2]."""
    return similarity(stable, MEAN_FACE)


def mouth_matrix(to_ref: np.ndarray, mouth_centre_ref: np.ndarray) -> np.ndarray:
    """Source -> 96 x 96 mouth ROI matrix (the ROI centred on the mouth, reference scale)."""
    shift = np.array([[1.0, 0.0, contract.MOUTH_ROI / 2 - mouth_centre_ref[0]],
                      [0.0, 1.0, contract.MOUTH_ROI / 2 - mouth_centre_ref[1]]])
    return compose(shift, to_ref)


def mouth_crop(frame: np.ndarray, to_ref: np.ndarray, mouth_centre_ref: np.ndarray) -> np.ndarray:
    """Aligned grayscale mouth crop uint8 [88, 88] from an RGB [H, W, 3] or gray [H, W]
    frame."""
    roi = warp(frame, mouth_matrix(to_ref, mouth_centre_ref), contract.MOUTH_ROI)
    if roi.ndim == 3:
        roi = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY)
    o = (contract.MOUTH_ROI - contract.MOUTH_SIZE) // 2
    return np.ascontiguousarray(roi[o:o + contract.MOUTH_SIZE, o:o + contract.MOUTH_SIZE])


def face_crop(frame_rgb: np.ndarray, to_ref: np.ndarray, size: int) -> np.ndarray:
    """Aligned RGB face crop uint8 [size, size, 3]: the reference square resized."""
    return warp(frame_rgb, (size / REF_SIZE) * to_ref, size)


def lips_normalised(lips_src: np.ndarray, to_ref: np.ndarray) -> np.ndarray:
    """Lip landmarks [20, 2] (source px) -> reference frame / REF_SIZE, float32."""
    return (apply(to_ref, lips_src) / REF_SIZE).astype(np.float32)


def face_box(to_ref: np.ndarray) -> np.ndarray:
    """The source-pixel axis-aligned box (x, y, w, h) around the reference square (what
    the shards' ``boxes`` field holds)."""
    inv = cv2.invertAffineTransform(to_ref)
    corners = apply(inv, np.array([[0, 0], [REF_SIZE, 0], [0, REF_SIZE], [REF_SIZE, REF_SIZE]]))
    lo, hi = corners.min(0), corners.max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32)
