"""Real face stills and the synthetic identities built on them.

Base stills: one frame of each of 8 people of the realtalk corpus (``../shared/realtalk``,
or ``$AVDETECT_REALTALK_DIR``), taken from a real clip (manifest label ``real``) of an
identity in realtalk's **train** split, by the realtalk builder's own rule
(``avdetect.data.splits.split_of`` with its default fractions and salt, as
``datasets/realtalk/realtalk.py`` calls it), plus scikit-image's public-domain astronaut
photo. ``load_stills`` checks every source against the manifest and the rule and refuses
any other (``check_source``), so no realtalk validation/test clip shows a person the
synthetic benchmark trains on. The fixture clips (``../shared/fixtures/realav``) are no
longer a source, and realtalk left out their people (its README).

``STILL_SOURCES`` (identity tag, clip, frame the picker chooses, gender)::

    akash_assign_bearded_man  real_darshithachinta-wav2lip-assignment_1.mp4          78  m
    drishti_interview_woman   real_InternVoiceShop-data_1.mp4                       156  f
    adapta_ceo_man            real_SOBANEJAZ-Mass_Deepfaker_API_1.mp4                80  m
    yiranran_data31_woman     real_yiranran-Audio-driven-TalkingFace-HeadPose_1.mp4  42  f
    grid_A                    real_rizkiarm-LipNet_1.mp4                              2  m
    grid_F                    real_rizkiarm-LipNet_6.mp4                             70  f
    vox_pcavs_00067           real_Hangz-nju-cuhk-Talking-Face_PC-AVS_7.mp4          82  m
    grid_I                    real_rizkiarm-LipNet_9.mp4                             32  m

Why these: of the 24 train-split identities with real clips, ones with a frontal,
open-eyed, closed-mouth frame (``still_frames``), every woman the corpus offers that
qualifies (genders from the tags, and by eye for the GRID/VoxCeleb tags; with the
astronaut 4 f / 5 m), from several sources. Left out: himanshu_saffron_robe_man, trump,
vox_pcavs_517600055 and the lrs2_* tags (heads turned in most or all frames; LRS2 crops
are 160 px), vox_pcavs_796100172 (eyes cast down), mead_M030 (a crying expression), grid_E
(cannot be told apart by eye from grid_B, a validation identity), vox_pcavs_00473 (a
letterbox bar in the frame, which would move with the rendered head),
dfdc_lynaeydofd_couch_man (gender unclear for the voice), vox_pcavs_00104 (tinted glasses
under the rendered eyelids) and the remaining men (grid_C/G, vox_pcavs_620900105).
The realtalk sources that also hold validation/test identities (GRID, VoxCeleb) tag each
speaker separately; their other-split speakers were checked by eye to be other people.
For an identity with several clips, the one with the largest face.
(Reproduce the frame column: ``python -c "from datasets.synthetic_av import faces,
still_frames as s; [print(x.name, s.pick_frame(faces.realtalk_dir() / x.file)[0]) for x
in faces.STILL_SOURCES if x.file]"``.)

The frame of each clip is picked automatically (``still_frames.pick_frame``: the frame of
smallest mouth opening among frontal, open-eyed frames of the landmark stage,
deterministic), because the renderer opens the mouth itself. Each still is located with
the project's Haar detector (``avdetect.preprocess.face_detect.detect_largest_face``),
cropped to a square around the face and given a geometry: the Haar box sets the scale,
and the lip junction, mouth corners and eye centres come from the face mesh
(``avdetect.preprocess.landmarks``) run on the crop (for the smiling astronaut the lip
junction lies between her teeth).

An identity is a base still plus an appearance (mirror flip, zoom/shift of the framing,
colour grade, a tinted background) plus a voice (``tts.Voice``). Its base image is
rendered once at the output size; ``render.py`` animates it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import pathlib

import cv2
import numpy as np

from avdetect.data import splits as splits_lib
from avdetect.errors import ConfigError, FileMissingError, NoFaceError
from avdetect.preprocess.face_detect import detect_largest_face

from datasets.synthetic_av import still_frames
from datasets.synthetic_av.tts import Voice

# Stills are kept at this resolution (square) before identities are framed from them.
STILL_SIDE = 288
# Crop side around the detected face, in face-box widths: room for head motion and hair.
CROP_FACES = 2.2

_REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_REALTALK = _REPO.parent / "shared" / "realtalk"
REALTALK_ENV = "AVDETECT_REALTALK_DIR"
REALTALK_MANIFEST = "manifest.csv"
# The realtalk builder's split rule (datasets/realtalk/realtalk.py: Realtalk.FRACTIONS,
# Realtalk.SALT); imported from the rule's home, not from the builder, which pulls in TFDS.
REALTALK_FRACTIONS = splits_lib.DEFAULT_FRACTIONS
REALTALK_SALT = splits_lib.DEFAULT_SALT
STILL_SPLIT = "train"



@dataclasses.dataclass(frozen=True)
class StillSource:
    name: str            # the realtalk identity tag ("astronaut" for the photo)
    file: str | None     # realtalk real clip of that identity; None = skimage astronaut
    gender: str          # "m" / "f": picks a matching voice family


STILL_SOURCES: tuple[StillSource, ...] = (
    StillSource("akash_assign_bearded_man", "real_darshithachinta-wav2lip-assignment_1.mp4", "m"),
    StillSource("drishti_interview_woman", "real_InternVoiceShop-data_1.mp4", "f"),
    StillSource("adapta_ceo_man", "real_SOBANEJAZ-Mass_Deepfaker_API_1.mp4", "m"),
    StillSource("yiranran_data31_woman",
                "real_yiranran-Audio-driven-TalkingFace-HeadPose_1.mp4", "f"),
    StillSource("grid_A", "real_rizkiarm-LipNet_1.mp4", "m"),
    StillSource("grid_F", "real_rizkiarm-LipNet_6.mp4", "f"),
    StillSource("vox_pcavs_00067", "real_Hangz-nju-cuhk-Talking-Face_PC-AVS_7.mp4", "m"),
    StillSource("grid_I", "real_rizkiarm-LipNet_9.mp4", "m"),
    StillSource("astronaut", None, "f"),
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
    source: str = ""           # where it was cut from: "<realtalk clip> frame <k>"


def realtalk_dir() -> pathlib.Path:
    """Folder of the realtalk corpus: $AVDETECT_REALTALK_DIR, else ../shared/realtalk
    beside the repository."""
    return pathlib.Path(os.environ.get(REALTALK_ENV, DEFAULT_REALTALK))


def _manifest(folder: pathlib.Path) -> dict[str, dict[str, str]]:
    """The realtalk manifest's rows by file name (a plain CSV read: the builder module
    that also reads it imports TFDS)."""
    if not folder.is_dir():
        raise FileMissingError(folder, f"realtalk folder not found; the face stills come from "
                                       f"its real clips (set ${REALTALK_ENV} to another copy)")
    path = folder / REALTALK_MANIFEST
    if not path.is_file():
        raise FileMissingError(path, "realtalk manifest not found; expected the realtalk "
                                     f"folder (manifest.csv + clips) at {folder}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"file", "label", "identity"} - set(rows[0] if rows else ())
    if missing:
        raise ConfigError(f"{path}: lacks the column(s) {sorted(missing)}")
    return {r["file"]: r for r in rows}


def check_source(src: StillSource, manifest: dict[str, dict[str, str]], where: pathlib.Path
                 ) -> None:
    """A still must be a real clip of its identity, and that identity in realtalk's train
    split (by the builder's rule), so no evaluation on realtalk shares a person with the
    synthetic faces the model trains on."""
    row = manifest.get(src.file or "")
    if row is None:
        raise ConfigError(f"{where}: still source {src.file} is not in the manifest")
    if row["label"] != "real" or row["identity"] != src.name:
        raise ConfigError(f"{where}: still source {src.file} must be a real clip of "
                          f"{src.name}; the manifest says label {row['label']}, identity "
                          f"{row['identity']}")
    split = splits_lib.split_of(src.name, REALTALK_FRACTIONS, REALTALK_SALT)
    if split != STILL_SPLIT:
        raise ConfigError(f"{where}: still identity {src.name} is in realtalk's {split} "
                          f"split; face stills may come from {STILL_SPLIT} identities only")


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def measure_geometry(image: np.ndarray, where: str) -> FaceGeometry:
    """Face box (Haar: the renderer's size unit) of the largest face in ``image``, and its
    lip junction, mouth corners and eye centres from the face mesh (measured: the old
    darkest-row guess took a moustache for the lip line)."""
    box = detect_largest_face(_gray(image))
    if box is None:
        raise NoFaceError(where, "no face found in the still")
    pts = still_frames.mesh_points(image)
    if pts is None:
        raise NoFaceError(where, "the face mesh finds no face in the still")
    lm = still_frames.geometry_points(pts)
    return FaceGeometry(box=tuple(float(v) for v in box), mouth=lm["mouth"],
                        mouth_width=lm["mouth_width"], eyes=lm["eyes"])


def _load_still(src: StillSource, folder: pathlib.Path,
                manifest: dict[str, dict[str, str]]) -> Still:
    if src.file is None:
        import skimage.data
        image, where = skimage.data.astronaut(), "skimage.data.astronaut()"
        source = where
    else:
        check_source(src, manifest, folder / REALTALK_MANIFEST)
        path = folder / src.file
        if not path.is_file():
            raise FileMissingError(path, f"realtalk clip not found (set ${REALTALK_ENV} to "
                                         "the folder of the realtalk corpus)")
        index, image = still_frames.pick_frame(path)
        where = f"{path} frame {index}"
        source = f"{src.file} frame {index}"
    box = detect_largest_face(_gray(image))
    if box is None:
        raise NoFaceError(where, "no face found")
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
                 geometry=measure_geometry(crop, f"{where} (crop)"), source=source)


@functools.lru_cache(maxsize=4)
def load_stills(folder: str | None = None) -> tuple[Still, ...]:
    """All base stills (``STILL_SOURCES`` order) from the realtalk folder (default
    ``realtalk_dir()``)."""
    root = pathlib.Path(folder) if folder else realtalk_dir()
    manifest = _manifest(root)
    return tuple(_load_still(src, root, manifest) for src in STILL_SOURCES)


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
