"""Per-video visual augmentation of the correlation-distillation paper.

For each training video one option is drawn at random from {original, horizontal flip,
random crop of 70-100 % of the side resized back, rotation of +-15 degrees}; its
parameters are drawn once and applied identically to every frame of the window, and to
both the mouth crops and the face crops (the crop and its offset are relative to the
image side, so a 88x88 mouth and a SxS face get the same relative crop).
Rotation is about the image centre with a zero (black) border, as the reference code's
``cv2.warpAffine`` does.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

AUG_OPS = ("orig", "flip", "crop", "rotate")


@dataclasses.dataclass(frozen=True)
class AugParams:
    """One draw of the per-video augmentation.

    op: which option ('orig', 'flip', 'crop', 'rotate').
    crop_frac: kept side fraction in [crop_min, 1] (op == 'crop').
    crop_x, crop_y: offset of the kept square as a fraction of the free margin, in [0, 1].
    angle_deg: rotation angle, counter-clockwise (op == 'rotate').
    """

    op: str = "orig"
    crop_frac: float = 1.0
    crop_x: float = 0.0
    crop_y: float = 0.0
    angle_deg: float = 0.0


def sample_aug_params(rng: np.random.Generator, *, ops=AUG_OPS, crop_min: float = 0.7,
                      max_angle_deg: float = 15.0) -> AugParams:
    """Draw one augmentation for a video: an op uniformly from ``ops``, then its params."""
    if not ops:
        return AugParams()
    bad = set(ops) - set(AUG_OPS)
    if bad:
        raise ValueError(f"unknown augmentation op(s) {sorted(bad)}; known: {AUG_OPS}")
    if not 0.0 < crop_min <= 1.0:
        raise ValueError(f"crop_min must be in (0, 1], got {crop_min}")
    op = str(ops[int(rng.integers(len(ops)))])
    # Draw every parameter regardless of op, so the random stream does not depend on it.
    crop_frac = float(rng.uniform(crop_min, 1.0))
    crop_x, crop_y = (float(v) for v in rng.uniform(0.0, 1.0, size=2))
    angle = float(rng.uniform(-max_angle_deg, max_angle_deg))
    return AugParams(op=op, crop_frac=crop_frac, crop_x=crop_x, crop_y=crop_y, angle_deg=angle)


def crop_box(side_h: int, side_w: int, params: AugParams) -> tuple[int, int, int, int]:
    """The (y0, x0, h, w) kept by a crop on an image of the given size."""
    h = max(1, int(side_h * params.crop_frac))
    w = max(1, int(side_w * params.crop_frac))
    y0 = int(round(params.crop_y * (side_h - h)))
    x0 = int(round(params.crop_x * (side_w - w)))
    return y0, x0, h, w


def apply_aug(frames: np.ndarray, params: AugParams) -> np.ndarray:
    """Apply one augmentation draw to every frame.

    frames: uint8 [N, H, W] or [N, H, W, C]. Returns an array of the same shape and dtype.
    """
    if params.op == "orig" or frames.shape[0] == 0:
        return frames
    n, h, w = frames.shape[:3]
    if params.op == "flip":
        return np.ascontiguousarray(frames[:, :, ::-1])
    if params.op == "crop":
        y0, x0, ch, cw = crop_box(h, w, params)
        out = np.empty_like(frames)
        for i in range(n):
            # Bilinear resize back to the original side, as the reference code does.
            out[i] = cv2.resize(frames[i, y0:y0 + ch, x0:x0 + cw], (w, h),
                                interpolation=cv2.INTER_LINEAR).reshape(frames.shape[1:])
        return out
    if params.op == "rotate":
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), params.angle_deg, 1.0)
        out = np.empty_like(frames)
        for i in range(n):
            out[i] = cv2.warpAffine(frames[i], m, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=0).reshape(frames.shape[1:])
        return out
    raise ValueError(f"unknown augmentation op {params.op!r}; known: {AUG_OPS}")
