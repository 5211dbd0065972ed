"""Real face stills and the synthetic identities built on them.

Base stills: one frame of each distinct person among the real fixture clips
(``../shared/fixtures/realav/real_video-retalking_{1..6}.mp4``; the fake_* clips reuse
these people) and scikit-image's public-domain astronaut photo. The frame of each clip
was picked by eye as one where the mouth is closed (``STILL_SOURCES``), because the
renderer opens the mouth itself. Each still is located once with the project's Haar
detector (``avdetect.preprocess.face_detect.detect_largest_face``), cropped to a square
around the face and given a geometry: the mouth line is the darkest row (the lip
junction) 0.72-0.90 face-box heights below the box top (for the smiling astronaut:
the gap between her teeth), eye centres the darkest blobs near the usual
proportions.

An identity is a base still plus an appearance (mirror flip, zoom/shift of the framing,
colour grade, a tinted background) plus a voice (``tts.Voice``). Its base image is
rendered once at the output size; ``render.py`` animates it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import av
import cv2
import numpy as np

from avdetect.errors import FileMissingError, NoFaceError
from avdetect.preprocess.face_detect import detect_largest_face

from datasets.synthetic_av.tts import Voice

# Stills are kept at this resolution (square) before identities are framed from them.
STILL_SIDE = 288
# Crop side around the detected face, in face-box widths: room for head motion and hair.
CROP_FACES = 2.2

_REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = _REPO.parent / "shared" / "fixtures" / "realav"
FIXTURES_ENV = "AVDETECT_REALAV_DIR"


@dataclasses.dataclass(frozen=True)
class StillSource:
    name: str
    file: str | None     # fixture clip file name; None = skimage.data.astronaut()
    frame: int           # frame index with a closed mouth (checked by eye)
    gender: str          # "m" / "f": picks a matching voice family


STILL_SOURCES: tuple[StillSource, ...] = (
    StillSource("realav1", "real_video-retalking_1.mp4", 140, "m"),
    StillSource("realav2", "real_video-retalking_2.mp4", 78, "m"),
    StillSource("realav3", "real_video-retalking_3.mp4", 63, "f"),
    StillSource("realav4", "real_video-retalking_4.mp4", 36, "f"),
    StillSource("realav5", "real_video-retalking_5.mp4", 69, "f"),
    StillSource("realav6", "real_video-retalking_6.mp4", 45, "f"),
    StillSource("astronaut", None, 0, "f"),
)


@dataclasses.dataclass(frozen=True)
class FaceGeometry:
    """Landmarks of a face in some image's pixel frame (x right, y down)."""
    box: tuple[float, float, float, float]    # Haar face box (x, y, w, h)
    mouth: tuple[float, float]                # centre of the lip junction line
    mouth_width: float                        # corner to corner
    eyes: tuple[tuple[float, float], tuple[float, float]]   # (left-in-image, right)

    @property
    def size(self) -> float:
        return float(self.box[2])

    def transformed(self, m: np.ndarray, flip_eyes: bool = False) -> "FaceGeometry":
        """Geometry after the 2x3 affine ``m`` (a similarity: uniform scale)."""
        def pt(p):
            return tuple(float(v) for v in m[:, :2] @ np.asarray(p, float) + m[:, 2])
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        x, y, w, h = self.box
        corners = np.array([pt((x, y)), pt((x + w, y + h))])
        lo, hi = corners.min(0), corners.max(0)
        eyes = (pt(self.eyes[0]), pt(self.eyes[1]))
        if flip_eyes or eyes[0][0] > eyes[1][0]:
            eyes = (eyes[1], eyes[0])
        return FaceGeometry(box=(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]),
                                 float(hi[1] - lo[1])),
                            mouth=pt(self.mouth), mouth_width=self.mouth_width * scale,
                            eyes=eyes)


@dataclasses.dataclass(frozen=True)
class Still:
    name: str
    gender: str
    image: np.ndarray          # uint8 [STILL_SIDE, STILL_SIDE, 3] RGB
    geometry: FaceGeometry


def fixtures_dir() -> pathlib.Path:
    """Folder of the real fixture clips: $AVDETECT_REALAV_DIR, else ../shared/fixtures/realav
    beside the repository."""
    return pathlib.Path(os.environ.get(FIXTURES_ENV, DEFAULT_FIXTURES))


def _read_frame(path: pathlib.Path, index: int) -> np.ndarray:
    if not path.is_file():
        raise FileMissingError(path, f"real fixture clip not found (set ${FIXTURES_ENV} to "
                                     "the folder of the realav fixture clips)")
    last = None
    with av.open(str(path)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            last = frame
            if k == index:
                break
    if last is None:
        raise NoFaceError(path, "has no decodable video frame")
    return last.to_ndarray(format="rgb24")


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _darkest_row(gray: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    """Row (image y) of minimum mean brightness in the band, smoothed over 3 rows."""
    band = gray[int(y0):int(y1), int(x0):int(x1)].astype(np.float32).mean(axis=1)
    band = np.convolve(np.pad(band, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    return float(int(y0) + int(np.argmin(band)))


def _darkest_point(gray: np.ndarray, cx: float, cy: float, r: float) -> tuple[float, float]:
    """Centre of the darkest blob (pupil / lashes) in a square of half-side r."""
    x0, y0 = int(max(cx - r, 0)), int(max(cy - r, 0))
    patch = cv2.GaussianBlur(gray[y0:int(cy + r), x0:int(cx + r)], (0, 0), r / 4)
    iy, ix = np.unravel_index(int(np.argmin(patch)), patch.shape)
    # Pull half-way back to the geometric guess: glasses frames and brows are dark too.
    return (0.5 * (x0 + ix) + 0.5 * cx, 0.5 * (y0 + iy) + 0.5 * cy)


def measure_geometry(image: np.ndarray, where: str) -> FaceGeometry:
    """Face box, mouth line and eye centres of the largest face in ``image``."""
    gray = _gray(image)
    box = detect_largest_face(gray)
    if box is None:
        raise NoFaceError(where, "no face found in the still")
    x, y, w, h = box
    mouth_y = _darkest_row(gray, x + 0.38 * w, x + 0.62 * w, y + 0.72 * h, y + 0.90 * h)
    eyes = (_darkest_point(gray, x + 0.31 * w, y + 0.40 * h, 0.09 * w),
            _darkest_point(gray, x + 0.69 * w, y + 0.40 * h, 0.09 * w))
    return FaceGeometry(box=(x, y, w, h), mouth=(x + 0.5 * w, mouth_y),
                        mouth_width=0.40 * w, eyes=eyes)


def _load_still(src: StillSource, folder: pathlib.Path) -> Still:
    if src.file is None:
        import skimage.data
        image, where = skimage.data.astronaut(), "skimage.data.astronaut()"
    else:
        where = str(folder / src.file)
        image = _read_frame(folder / src.file, src.frame)
    box = detect_largest_face(_gray(image))
    if box is None:
        raise NoFaceError(where, f"no face found in frame {src.frame}")
    x, y, w, h = box
    # The square to keep: CROP_FACES face widths, a little below the box centre (keep the
    # chin), shrunk and moved where needed to stay inside the image (no smeared borders).
    ih, iw = image.shape[:2]
    side = min(CROP_FACES * w, ih, iw)
    cx = float(np.clip(x + w / 2, side / 2, iw - side / 2))
    cy = float(np.clip(y + 0.55 * h, side / 2, ih - side / 2))
    s = STILL_SIDE / side
    m = np.array([[s, 0, STILL_SIDE / 2 - s * cx], [0, s, STILL_SIDE / 2 - s * cy]])
    crop = cv2.warpAffine(image, m, (STILL_SIDE, STILL_SIDE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    return Still(name=src.name, gender=src.gender, image=crop,
                 geometry=measure_geometry(crop, f"{where} (crop)"))


@functools.lru_cache(maxsize=4)
def load_stills(folder: str | None = None) -> tuple[Still, ...]:
    """All base stills (``STILL_SOURCES`` order), read from the fixture folder."""
    root = pathlib.Path(folder) if folder else fixtures_dir()
    return tuple(_load_still(src, root) for src in STILL_SOURCES)


# --------------------------------------------------------------------------------------
# identities


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How an identity differs from its base still (all drawn per identity)."""
    flip: bool
    zoom: float                          # face size relative to the default framing
    shift: tuple[float, float]           # framing offset, fraction of the output side
    gains: tuple[float, float, float]    # per-channel colour gains
    gamma: float
    saturation: float
    background: tuple[int, int, int]     # tint colour outside the head
    background_alpha: float


@dataclasses.dataclass(frozen=True)
class Identity:
    """A synthetic person: base still + appearance + voice, in one split."""
    id: str                  # "id00003"
    still: str               # base still name
    gender: str
    appearance: Appearance
    voice: Voice
    articulation: float      # how wide this speaker opens the mouth (gain on opening)
    split: str


def random_appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        flip=bool(rng.random() < 0.5), zoom=float(rng.uniform(0.92, 1.12)),
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.04))),
        gains=tuple(float(g) for g in rng.uniform(0.88, 1.12, size=3)),
        gamma=float(rng.uniform(0.85, 1.18)), saturation=float(rng.uniform(0.75, 1.25)),
        background=tuple(int(c) for c in rng.integers(0, 256, size=3)),
        background_alpha=float(rng.uniform(0.0, 0.45)))


@dataclasses.dataclass(frozen=True)
class IdentityImage:
    """An identity's still framed at the output size, with its geometry there."""
    image: np.ndarray        # uint8 [S, S, 3]
    geometry: FaceGeometry
    lip_color: np.ndarray    # float32 [3]: mean colour of the lips
    skin_color: np.ndarray   # float32 [3]: cheek colour (eyelids)


def _grade(img: np.ndarray, a: Appearance) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    x = x ** a.gamma * np.asarray(a.gains, np.float32)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * a.saturation
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def head_mask(shape: tuple[int, int], g: FaceGeometry, feather: float) -> np.ndarray:
    """Soft mask (float32 [H, W], 1 inside) of head and shoulders around a face."""
    h, w = shape
    x, y, fw, fh = g.box
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = x + fw / 2, y + 0.45 * fh
    head = ((xx - cx) / (0.68 * fw)) ** 2 + ((yy - cy) / (0.85 * fh)) ** 2
    body = (yy > y + 1.05 * fh) & (np.abs(xx - cx) < 1.3 * fw)
    d = np.sqrt(head) - 1.0
    m = np.clip(0.5 - d * fw / feather, 0, 1)
    m[body] = 1.0
    return cv2.GaussianBlur(m, (0, 0), feather / 2)


def identity_image(still: Still, appearance: Appearance, size: int) -> IdentityImage:
    """Frame ``still`` for ``appearance`` at ``size`` x ``size`` (zoom, shift, mirror,
    colour grade, background tint)."""
    s = size / STILL_SIDE * appearance.zoom
    c = STILL_SIDE / 2
    m = np.array([[s, 0.0, size / 2 - s * c + appearance.shift[0] * size],
                  [0.0, s, size / 2 - s * c + appearance.shift[1] * size]])
    if appearance.flip:
        m = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    img = cv2.warpAffine(still.image, m, (size, size), flags=cv2.INTER_AREA,
                         borderMode=cv2.BORDER_REFLECT)
    geometry = still.geometry.transformed(m, flip_eyes=appearance.flip)
    img = _grade(img, appearance)
    if appearance.background_alpha > 0:
        keep = head_mask((size, size), geometry, feather=0.12 * geometry.size)[..., None]
        tint = np.asarray(appearance.background, np.float32)
        mixed = img * (1 - appearance.background_alpha) + tint * appearance.background_alpha
        img = np.clip(img * keep + mixed * (1 - keep) + 0.5, 0, 255).astype(np.uint8)
    mx, my = geometry.mouth
    mw = geometry.mouth_width
    lips = img[int(my - 0.12 * mw):int(my + 0.24 * mw),
               int(mx - 0.3 * mw):int(mx + 0.3 * mw)].reshape(-1, 3).astype(np.float32)
    cheek_y = int(geometry.eyes[0][1] + 0.2 * geometry.size)
    cheek_x = int(geometry.eyes[0][0])
    r = max(2, int(0.05 * geometry.size))
    skin = img[cheek_y - r:cheek_y + r, cheek_x - r:cheek_x + r].reshape(-1, 3).astype(np.float32)
    return IdentityImage(image=img, geometry=geometry,
                         lip_color=np.median(lips, axis=0), skin_color=np.median(skin, axis=0))
