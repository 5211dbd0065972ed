"""A contact sheet of one preprocessed clip: face and mouth crops sampled over time.

Each tile shows the face crop (with the mouth region drawn on it in yellow) above the
mouth crop, the frame index, and a border that is green where the face was really
detected / tracked in that frame and red where its box was interpolated or held.
It is the quick way to check the crop geometry by eye.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from avdetect import contract
from avdetect.preprocess.face_track import CropGeometry

_TILE = 128                  # pixels per crop in the sheet
_LABEL = 16                  # pixels of the caption strip under each tile
_BORDER = 3
_FOUND = (0, 200, 0)         # RGB
_MISSED = (230, 0, 0)
_MOUTH_BOX = (255, 220, 0)


def sample_indices(num_frames: int, n: int) -> np.ndarray:
    """``min(n, T)`` frame indices spread evenly over [0, T - 1] (first and last included)."""
    if num_frames <= 0:
        return np.zeros(0, int)
    return np.unique(np.round(np.linspace(0, num_frames - 1, min(n, num_frames))).astype(int))


def _mouth_square_in_face(box: np.ndarray, geometry: CropGeometry, size: int
                          ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Corners, in face-crop pixels, of the MOUTH_SIZE part of the mouth region."""
    fx, fy, fside = geometry.face_region(box)
    mx, my, mside = geometry.mouth_region(box)
    half = mside * contract.MOUTH_SIZE / contract.MOUTH_ROI / 2
    s = size / fside
    x0, y0 = (mx - half - (fx - fside / 2)) * s, (my - half - (fy - fside / 2)) * s
    x1, y1 = (mx + half - (fx - fside / 2)) * s, (my + half - (fy - fside / 2)) * s
    return (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))


def _mouth_square_from_lips(lips: np.ndarray, size: int
                            ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Corners, in face-crop pixels, of the MOUTH_SIZE square around the lip centre
    (aligned crops: the face crop is the reference square, lips are in its units)."""
    from avdetect.preprocess import align
    c = lips.astype(np.float64).mean(axis=0) * size
    half = contract.MOUTH_SIZE / 2 * size / align.REF_SIZE
    return ((int(round(c[0] - half)), int(round(c[1] - half))),
            (int(round(c[0] + half)), int(round(c[1] + half))))


def render_contact_sheet(features, n: int = 16, columns: int = 8) -> np.ndarray:
    """The sheet as an RGB uint8 image [rows * (2 * 128 + 16 + 6), columns * 134, 3].

    ``features`` is a ``ClipFeatures``; the mouth square drawn on each face crop comes
    from its lip landmarks (aligned crops) or, for Haar-box features without them, from
    ``params['crop_geometry']``.
    """
    idx = sample_indices(features.mouth.shape[0], n)
    if idx.size == 0:
        raise ValueError("contact sheet of a clip with no frames")
    geo = CropGeometry(**features.params.get("crop_geometry", {}))
    th, tw = 2 * _TILE + _LABEL + 2 * _BORDER, _TILE + 2 * _BORDER
    columns = min(columns, idx.size)
    rows = -(-idx.size // columns)
    sheet = np.full((rows * th, columns * tw, 3), 255, np.uint8)
    for k, t in enumerate(idx):
        face = cv2.resize(features.face[t], (_TILE, _TILE), interpolation=cv2.INTER_AREA)
        if getattr(features, "lips", None) is not None:
            (x0, y0), (x1, y1) = _mouth_square_from_lips(features.lips[t], _TILE)
        else:
            (x0, y0), (x1, y1) = _mouth_square_in_face(features.boxes[t].astype(np.float64),
                                                       geo, _TILE)
        cv2.rectangle(face, (x0, y0), (x1, y1), _MOUTH_BOX, 1)
        mouth = cv2.resize(features.mouth[t], (_TILE, _TILE), interpolation=cv2.INTER_LINEAR)
        tile = np.concatenate([face, cv2.cvtColor(mouth, cv2.COLOR_GRAY2RGB)], axis=0)
        colour = _FOUND if features.face_found[t] else _MISSED
        tile = cv2.copyMakeBorder(tile, _BORDER, _BORDER, _BORDER, _BORDER,
                                  cv2.BORDER_CONSTANT, value=colour)
        r, c = divmod(k, columns)
        y, x = r * th, c * tw
        sheet[y:y + tile.shape[0], x:x + tw] = tile
        label = f"t={t}" + ("" if features.face_found[t] else " interp")
        cv2.putText(sheet, label, (x + 4, y + tile.shape[0] + _LABEL - 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return sheet


def save_contact_sheet(features, path_png: str | os.PathLike, n: int = 16) -> str:
    """Write ``render_contact_sheet(features, n)`` as a PNG; returns the path."""
    path_png = os.fspath(path_png)
    sheet = render_contact_sheet(features, n)
    if not cv2.imwrite(path_png, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path_png}: could not write the contact sheet PNG")
    return path_png
