"""Animate an identity's still: mouth and jaw from an articulation track, blinks, head
motion. Everything is plain NumPy + OpenCV on small frames.

Per frame, in the identity image's own coordinates:

1. **Jaw and lips** (``warp_mouth``): one ``cv2.remap`` over the lower face. Below the lip
   line the skin moves down by the jaw drop D (= ``open`` x ``JAW_DROP`` face widths,
   scaled by the speaker's articulation gain), fading out below the chin and towards the
   cheeks, so lower lip, chin and jaw line move together; the upper lip lifts by 15 % of
   D. The mouth region is stretched horizontally by the width/rounding targets (spread
   lips for /i/, pursed for /u/).
2. **Mouth interior** (``paint_mouth``): the gap between the lips is an anti-aliased
   ellipse with a dark interior, the upper teeth as a light band under the upper lip and,
   when wide open, a hint of the lower teeth. Rounding narrows the opening towards a
   circle.
3. **Blinks** (``paint_blink``): an eyelid (the colour of the skin fold above the eye, a
   dark lash line on its edge) slides
   over each eye ellipse by the closure fraction.
4. **Head motion** (``apply_motion``): a small smooth similarity transform (rotation,
   scale, translation) of the whole frame around the face.

Compression noise is added later by the H.264 encoder; a little sensor noise is added
here (``sensor_noise``) so flat regions are not perfectly clean.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from avdetect import contract

from datasets.synthetic_av.faces import FaceGeometry, IdentityImage

JAW_DROP = 0.14          # jaw drop at full opening, in face-box widths
UPPER_LIP_LIFT = 0.15    # upper lip rise, fraction of the jaw drop
EYE_HALF_W, EYE_HALF_H = 0.095, 0.045  # eye ellipse half-axes, face widths


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclasses.dataclass(frozen=True)
class MouthState:
    """The drive of one frame: jaw drop in pixels, horizontal lip scale, rounding."""
    drop: float
    width_scale: float
    round: float


def mouth_state(open_: float, width: float, round_: float, geometry: FaceGeometry,
                gain: float = 1.0) -> MouthState:
    """Pixels and scales for articulation values in [0, 1] (``visemes.Articulation``)."""
    drop = float(np.clip(open_ * gain, 0, 1)) * JAW_DROP * geometry.size
    return MouthState(drop=drop, width_scale=1.0 + 0.30 * (width - 0.5) - 0.12 * round_,
                      round=float(round_))


def mouth_roi(geometry: FaceGeometry, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the region the jaw warp and mouth painting can touch."""
    f = geometry.size
    mx, my = geometry.mouth
    h, w = shape
    return (max(0, int(mx - 0.62 * f)), max(0, int(my - 0.3 * f)),
            min(w, int(np.ceil(mx + 0.62 * f))), min(h, int(np.ceil(my + 0.85 * f))))


def mouth_box(geometry: FaceGeometry) -> tuple[float, float, float, float]:
    """(x, y, w, h) box that holds the mouth opening at any articulation: lip line centre
    +- half a mouth width, from just above the lip line to the lowest jaw drop."""
    f = geometry.size
    mx, my = geometry.mouth
    mw = geometry.mouth_width
    return (mx - 0.5 * mw, my - 0.04 * f, mw, (JAW_DROP + 0.06) * f)


@dataclasses.dataclass(frozen=True)
class Opening:
    """The gap between the lips for one mouth state: an ellipse in image pixels."""
    cx: float
    cy: float
    a: float          # half width
    b: float          # half height
    top: float
    bottom: float


def opening(geometry: FaceGeometry, state: MouthState) -> Opening:
    """Where the lips part: from the lifted upper lip to the dropped lower lip, as wide as
    the lips allow (narrow when barely open, rounder when rounded)."""
    f = geometry.size
    mx, my = geometry.mouth
    top = my - UPPER_LIP_LIFT * state.drop - 0.01 * f
    bottom = my + 0.92 * state.drop
    b = 0.5 * (bottom - top)
    apart = np.clip(state.drop / (0.05 * f), 0.0, 1.0)
    a = 0.5 * geometry.mouth_width * state.width_scale * (0.45 + 0.30 * apart) * (
        1.0 - 0.45 * state.round)
    if state.round > 0.5:                      # pursed lips: a near-circular opening
        a = max(a, 0.9 * b)
    return Opening(cx=mx, cy=0.5 * (top + bottom), a=float(a), b=float(b), top=top,
                   bottom=bottom)


def warp_mouth(img: np.ndarray, geometry: FaceGeometry, state: MouthState) -> np.ndarray:
    """Jaw drop and lip stretch of ``img`` (uint8 [H, W, 3]) in place; returns img."""
    x0, y0, x1, y1 = mouth_roi(geometry, img.shape[:2])
    f = geometry.size
    mx, my = geometry.mouth
    op = opening(geometry, state)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)                 # [h, w]
    ax = np.abs(xx - mx)
    jaw_x = 1.0 - _smoothstep(ax, 0.22 * f, 0.55 * f)                   # jaw width falloff
    # Inside the opening the lips part: a tear at the lip line, covered by paint_mouth.
    # From the opening's corners outwards the skin stretches instead, over a band that
    # widens quickly, so no tear shows outside the painted gap.
    ramp = 0.5 + np.minimum(2.5 * np.maximum(ax - 0.6 * op.a, 0.0), 0.2 * f)
    chin_y = my + 0.28 * f
    jaw_y = _smoothstep(yy, my - ramp, my + ramp) * (
        1.0 - _smoothstep(yy, chin_y, chin_y + 0.5 * f))
    lift = np.exp(-0.5 * ((yy - my) / (0.07 * f)) ** 2) * (
        1.0 - _smoothstep(ax, 0.6 * op.a, 0.6 * op.a + 0.2 * f))
    dy = state.drop * (jaw_x * jaw_y - UPPER_LIP_LIFT * lift)
    lips = np.exp(-0.5 * ((yy - my - 0.3 * state.drop) / (0.11 * f)) ** 2) * (
        1.0 - _smoothstep(ax, 0.28 * f, 0.55 * f))
    src_x = xx + lips * (mx + (xx - mx) / state.width_scale - xx)
    src_y = yy - dy
    img[y0:y1, x0:x1] = cv2.remap(img, src_x, src_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
    return img


def paint_mouth(img: np.ndarray, base: IdentityImage, state: MouthState) -> np.ndarray:
    """Draw the open mouth (dark interior, teeth) into ``img`` in place."""
    g = base.geometry
    f = g.size
    if state.drop < 0.4:                       # lips closed: nothing between them
        return img
    op = opening(g, state)
    h, w = img.shape[:2]
    x0, x1 = max(int(op.cx - op.a - 2), 0), min(int(np.ceil(op.cx + op.a + 2)), w)
    y0, y1 = max(int(op.top - 2), 0), min(int(np.ceil(op.bottom + 2)), h)
    if x1 <= x0 or y1 <= y0:
        return img
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    rho = np.sqrt(((xx - op.cx) / op.a) ** 2 + ((yy - op.cy) / op.b) ** 2)
    inside = np.clip((1.0 - rho) * min(op.a, op.b) + 0.5, 0.0, 1.0)[..., None]  # anti-aliased
    shade = 0.5 + 0.5 * np.clip(rho, 0, 1)[..., None]                          # darker inside
    lum = float(base.skin_color.mean()) / 200.0
    interior = (0.30 * base.lip_color + np.array([18, 4, 6], np.float32)) * shade
    # Upper teeth: a band under the upper lip, narrower than the opening; lower teeth
    # only when the jaw is well open.
    teeth_h = min(0.4 * (op.bottom - op.top), 0.035 * f)
    across = np.clip((0.75 * op.a - np.abs(xx - op.cx)) + 0.5, 0.0, 1.0)
    teeth = (np.clip((op.top + teeth_h - yy) + 0.5, 0.0, 1.0) * across)[..., None]
    if state.drop > 0.09 * f:
        low = np.clip(yy - (op.bottom - 0.5 * teeth_h) + 0.5, 0, 1) * across
        teeth = np.maximum(teeth, 0.5 * low[..., None])
    tooth_color = np.array([214, 208, 194], np.float32) * min(1.05, lum) * (0.75 + 0.25 * shade)
    colour = interior * (1 - 0.9 * teeth) + tooth_color * 0.9 * teeth
    patch = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(patch * (1 - inside) + colour * inside + 0.5, 0, 255
                                ).astype(np.uint8)
    return img


def _lid_colour(img: np.ndarray, ex: float, ey: float, a: float, b: float) -> np.ndarray:
    """Median colour of the skin fold between eye and brow: what a closed lid looks like
    (shadowed, darker than the cheek)."""
    h, w = img.shape[:2]
    y0, y1 = int(max(ey - 2.6 * b, 0)), int(max(ey - 1.3 * b, 1))
    x0, x1 = int(max(ex - 0.6 * a, 0)), int(min(ex + 0.6 * a, w))
    patch = img[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
    return np.median(patch, axis=0) * 0.92 if len(patch) else np.full(3, 128, np.float32)


def paint_blink(img: np.ndarray, base: IdentityImage, closure: float) -> np.ndarray:
    """Close both eyelids by ``closure`` in [0, 1] (1 = shut), in place."""
    if closure <= 0.02:
        return img
    g = base.geometry
    f = g.size
    a, b = EYE_HALF_W * f, EYE_HALF_H * f
    h, w = img.shape[:2]
    for ex, ey in g.eyes:
        x0, y0 = max(int(ex - a - 2), 0), max(int(ey - b - 2), 0)
        x1, y1 = min(int(np.ceil(ex + a + 2)), w), min(int(np.ceil(ey + b + 2)), h)
        if x1 <= x0 or y1 <= y0:
            continue
        lid = _lid_colour(base.image, ex, ey, a, b)
        lash = lid * 0.35
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rho = np.sqrt(((xx - ex) / a) ** 2 + ((yy - ey) / b) ** 2)
        inside = np.clip((1.0 - rho) * b + 0.5, 0.0, 1.0)
        edge = ey - b + 1.8 * b * closure       # lower edge of the lid (lashes stay visible)
        cover = np.clip(edge - yy + 0.5, 0.0, 1.0) * inside
        line = np.clip(1.0 - np.abs(yy - edge), 0.0, 1.0) * inside * min(1.0, closure * 3)
        patch = img[y0:y1, x0:x1].astype(np.float32)
        out = patch * (1 - cover[..., None]) + lid * cover[..., None]
        out = out * (1 - line[..., None]) + lash * line[..., None]
        img[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return img


def render_face(base: IdentityImage, state: MouthState, closure: float) -> np.ndarray:
    """One frame of ``base`` with the given mouth state and eyelid closure (no head
    motion): uint8 [S, S, 3]."""
    img = base.image.copy()
    warp_mouth(img, base.geometry, state)
    paint_mouth(img, base, state)
    paint_blink(img, base, closure)
    return img


# --------------------------------------------------------------------------------------
# time tracks


@dataclasses.dataclass(frozen=True)
class Motion:
    """Head pose per frame: rotation (degrees), scale, translation (pixels)."""
    angle: np.ndarray     # float32 [T]
    scale: np.ndarray
    dx: np.ndarray
    dy: np.ndarray

    def matrix(self, t: int, center: tuple[float, float]) -> np.ndarray:
        """2x3 affine of frame t, rotating/scaling about ``center``."""
        m = cv2.getRotationMatrix2D(center, float(self.angle[t]), float(self.scale[t]))
        m[:, 2] += (self.dx[t], self.dy[t])
        return m


def _smooth_random(rng: np.random.Generator, n: int, amplitude: float, max_hz: float
                   ) -> np.ndarray:
    """Sum of three random low-frequency sinusoids, peak about ``amplitude``."""
    t = np.arange(n) / contract.VIDEO_FPS
    freqs = rng.uniform(0.08, max_hz, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.uniform(0.3, 1.0, size=3)
    x = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return (x / weights.sum() * amplitude).astype(np.float32)


def head_motion(rng: np.random.Generator, num_frames: int, size: int,
                amplitude: float = 1.0, max_hz: float = 0.7) -> Motion:
    """Smooth random head motion: about +-3 degrees, +-2.5 % scale, +-3 % of the frame
    side in translation, times ``amplitude`` (talking heads move less and slower)."""
    return Motion(angle=_smooth_random(rng, num_frames, 3.0 * amplitude, max_hz),
                  scale=1.0 + _smooth_random(rng, num_frames, 0.025 * amplitude, max_hz),
                  dx=_smooth_random(rng, num_frames, 0.03 * size * amplitude, max_hz),
                  dy=_smooth_random(rng, num_frames, 0.02 * size * amplitude, max_hz))


def blink_track(rng: np.random.Generator, num_frames: int,
                interval_s: tuple[float, float] = (2.0, 6.0)) -> np.ndarray:
    """Eyelid closure per frame (float32 [T]): blinks of 3 frames (half, shut, half)
    every ``interval_s`` seconds (uniform), the first one anywhere in the first interval."""
    closure = np.zeros(num_frames, np.float32)
    t = rng.uniform(0.0, interval_s[1]) * contract.VIDEO_FPS
    while t < num_frames:
        k = int(t)
        for j, c in enumerate((0.55, 1.0, 0.6)):
            if 0 <= k + j < num_frames:
                closure[k + j] = max(closure[k + j], c)
        t += rng.uniform(*interval_s) * contract.VIDEO_FPS
    return closure


def apply_motion(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Warp a frame with the 2x3 head-motion affine ``m``."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points [..., 2] through the 2x3 affine ``m``."""
    return pts @ m[:, :2].T + m[:, 2]


@functools.lru_cache(maxsize=8)
def _gaussian_lut(sigma: float) -> np.ndarray:
    """int16 [256]: byte value -> Gaussian noise quantile (inverse CDF at the byte's
    centre). Indexing it with random bytes is ~30x faster than drawing normals."""
    from scipy.special import ndtri
    return np.round(sigma * ndtri((np.arange(256) + 0.5) / 256)).astype(np.int16)


def sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 1.2) -> np.ndarray:
    """Add Gaussian-like pixel noise (camera sensor, quantised to integers) to a uint8
    frame."""
    noise = _gaussian_lut(sigma)[np.frombuffer(rng.bytes(img.size), np.uint8)]
    return np.clip(img.astype(np.int16) + noise.reshape(img.shape), 0, 255).astype(np.uint8)
