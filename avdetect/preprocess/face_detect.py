"""Frame-level face detection with OpenCV's Haar cascade (ships with opencv 4.x).

This module only finds face boxes in single images; tracking, smoothing and crops live
in ``avdetect.preprocess.face_track``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

# (x, y, w, h) in pixels of the image given to the detector.
Box = tuple[float, float, float, float]


@functools.lru_cache(maxsize=None)
def _cascade(name: str = "haarcascade_frontalface_default.xml") -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"{path}: Haar cascade missing; install opencv-python-headless<5")
    return cascade


def detect_faces(gray: np.ndarray, min_size_frac: float = 0.12, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> list[Box]:
    """All frontal faces in a grayscale uint8 image [H, W], largest first.

    ``min_size_frac`` is the smallest face side as a fraction of the image's shorter side.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"detect_faces wants a uint8 [H, W] image, got {gray.dtype} {gray.shape}")
    min_side = max(16, int(min(gray.shape) * min_size_frac))
    boxes = _cascade().detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                        minSize=(min_side, min_side))
    boxes = [tuple(float(v) for v in b) for b in np.asarray(boxes).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def detect_largest_face(gray: np.ndarray, **kwargs) -> Box | None:
    """The largest face box in a grayscale image, or None when there is none."""
    boxes = detect_faces(gray, **kwargs)
    return boxes[0] if boxes else None
