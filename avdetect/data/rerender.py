"""The mouth of a real clip re-rendered by the synthetic generator's renderer, driven by
another person's speech (pseudo-fake ``pf_rerender``, :mod:`avdetect.data.pseudo_fakes`).

The clip keeps its own audio; its lips move to a donor's speech, so lips and audio
disagree while everything a frame shows above the mouth is the clip's own.

How, per clip (all in the aligned crops the cache stores, never on the video):

1. **Rest frame**: the frame with the smallest inner-lip opening (:func:`lip_opening`,
   the measure the synthetic stills are picked by: inner-lip gap / mouth width) among the
   frames with a face. Its mouth is (nearly) closed, so the renderer can open it.
2. **Geometry** (:func:`reference_geometry`): the renderer's
   :class:`~datasets.synthetic_av.faces.FaceGeometry` in the aligned reference frame
   (256 px, :mod:`avdetect.preprocess.align`): lip junction = midpoint of the inner-lip
   points 13/14 of the rest frame, mouth width = its corner distance, eyes from the mean
   face, face size (the renderer's unit, a Haar box width) = ``FACE_PER_EYE_DIST`` outer
   eye-corner distances. The same geometry is mapped into the face crop (x S/256) and the
   mouth crop (a shift: 1 mouth px = 1 reference px).
3. **Drive**: :func:`datasets.synthetic_av.visemes.envelope_articulation` of the DONOR's
   audio (the talking-head drive of the synthetic benchmark: opening from the speech
   energy envelope), its opening times a gain drawn per clip. That drive keeps the lips'
   width fixed, and a real mouth's width moves with speech (the lip stream's width varies
   by 3.4 % on realtalk's train reals, 0 with a fixed width: a free cue), so the width
   follows the donor's own lips (:func:`donor_width`) when the donor has lip points.
   Both streams are cut to the shorter of clip and donor (as ``pf_swap``; nothing is
   padded).
4. **Pixels**: every frame is :func:`datasets.synthetic_av.render.render_face` of the rest
   frame's crop with that frame's mouth state (jaw warp + painted opening), with a little
   sensor noise (:func:`~datasets.synthetic_av.render.sensor_noise`), pasted into the
   frame's own crop through :func:`region_mask` (1 where the renderer's warp moves a
   pixel by >= 2.5 px at full opening, 0 below 0.5 px, feathered): the face
   crop outside the mouth/jaw region is the frame's own. The mouth crop is rendered on
   the rest frame's mouth crop and shifted so that it stays centred on the new lip centre,
   as the preprocessing centres every mouth crop on its lips.
5. **Lips** (:func:`driven_lips`; the recipe reads the lip stream, so it must move with
   the pixels): the rest frame's 20 lip points, widened about the mouth centre by the
   renderer's ``width_scale``, the upper-lip points raised by the renderer's lip lift
   (``UPPER_LIP_LIFT`` x drop) and the lower-lip points lowered by 0.92 x drop (where
   :func:`~datasets.synthetic_av.render.opening` puts the lower edge of the opening),
   both times ``sqrt(1 - (dx / half width)^2)`` -- the opening ellipse's profile -- so the
   corners stay put. Plus landmark noise (``LIP_NOISE_PX``), since real lip points
   jitter from frame to frame and rendered ones would not.
"""

from __future__ import annotations

import cv2
import numpy as np

from avdetect import contract
from avdetect.preprocess import align

# Face-box width (the renderer's size unit: a Haar box) in outer eye-corner distances:
# 1.97, 2.04 and 1.74 on three of the synthetic benchmark's stills (grid_A, grid_F,
# vox_pcavs_00067; faces._load_still's box width / mesh points 33-263 distance).
FACE_PER_EYE_DIST = 1.95
# Indices into the 20 lip points (avdetect.preprocess.landmarks.LIP_POINTS order).
CORNERS = contract.LIP_CORNERS
UPPER = (1, 2, 3, 4, 5, 13, 14, 15)            # outer 40 37 0 267 270, inner 81 13 311
LOWER = (7, 8, 9, 10, 11, 17, 18, 19)           # outer 321 314 17 84 91, inner 402 14 178
INNER_GAP = contract.LIP_INNER_MIDDLES          # mesh 13 (upper), 14 (lower)
NOISE_SIGMA = 1.0                               # sensor noise on rendered pixels (levels)
MASK_PX = (0.5, 2.5)           # warp displacement (px) where the render starts / takes over
# Landmark noise on the driven lip points, reference px (Gaussian per point and frame):
# on realtalk's 37 train reals the lips' median |second difference over time| is 0.375
# ref px, which white noise of sigma s gives at 0.83 s (s ~ 0.45; speech adds to it, so
# a little less). Reproduce: python -m avdetect.data.rerender realtalk/face112 --data_dir D
# --splits train (its 'lip motion' lines).
LIP_NOISE_PX = 0.4
WIDTH_RANGE = (0.85, 1.15)     # donor width scale limits (a bad landmark frame stays sane)


def lip_opening(lips: np.ndarray) -> np.ndarray:
    """Inner-lip gap / mouth width per frame (float [T]) of lip points [T, 20, 2]."""
    lips = np.asarray(lips, np.float64)
    gap = np.linalg.norm(lips[:, INNER_GAP[0]] - lips[:, INNER_GAP[1]], axis=-1)
    width = np.linalg.norm(lips[:, CORNERS[0]] - lips[:, CORNERS[1]], axis=-1)
    return gap / np.maximum(width, 1e-6)


def rest_frame(lips: np.ndarray, face_found: np.ndarray) -> int:
    """The frame of smallest lip opening among frames with a face (earliest on ties)."""
    opening = lip_opening(lips)
    found = np.asarray(face_found, bool) & (np.linalg.norm(
        lips[:, CORNERS[0]] - lips[:, CORNERS[1]], axis=-1) > 0)
    if not found.any():
        raise ValueError("no frame with a face and lip points to re-render from")
    return int(np.argmin(np.where(found, opening, np.inf)))


def reference_geometry(rest_lips: np.ndarray):
    """The renderer's face geometry of lip points [20, 2] (reference frame / 256) in
    reference pixels."""
    from datasets.synthetic_av.faces import FaceGeometry

    pts = np.asarray(rest_lips, np.float64) * align.REF_SIZE
    mouth = 0.5 * (pts[INNER_GAP[0]] + pts[INNER_GAP[1]])
    width = float(np.linalg.norm(pts[CORNERS[0]] - pts[CORNERS[1]]))
    eyes = align.MEAN_FACE
    left, right = 0.5 * (eyes[0] + eyes[1]), 0.5 * (eyes[2] + eyes[3])
    size = FACE_PER_EYE_DIST * align.REF_EYE_DIST
    ex, ey = align.REF_EYE_CENTRE
    return FaceGeometry(box=(ex - size / 2, ey - 0.35 * size, size, size),
                        mouth=(float(mouth[0]), float(mouth[1])), mouth_width=width,
                        eyes=(tuple(map(float, left)), tuple(map(float, right))))


def driven_lips(rest_lips: np.ndarray, geometry, state) -> np.ndarray:
    """Lip points [20, 2] (reference / 256) of the rest shape under a renderer mouth
    state whose pixels are reference pixels (module docstring, step 5)."""
    from datasets.synthetic_av.render import UPPER_LIP_LIFT

    pts = np.asarray(rest_lips, np.float64) * align.REF_SIZE
    mx, my = geometry.mouth
    dx = pts[:, 0] - mx
    half = 0.5 * geometry.mouth_width * state.width_scale
    x = mx + dx * state.width_scale
    profile = np.sqrt(np.clip(1.0 - (dx * state.width_scale / max(half, 1e-6)) ** 2, 0, 1))
    y = pts[:, 1].copy()
    up, low = list(UPPER), list(LOWER)
    y[up] -= UPPER_LIP_LIFT * state.drop * profile[up]
    y[low] += 0.92 * state.drop * profile[low]
    return (np.stack([x, y], axis=1) / align.REF_SIZE).astype(np.float32)


def region_mask(geometry, shape: tuple[int, int]) -> np.ndarray:
    """float32 [H, W]: 1 where the renderer's jaw warp at full opening (and widest lips)
    moves a pixel by at least ``MASK_PX[1]`` px, 0 below ``MASK_PX[0]`` px (a smoothstep
    between), feathered by a 1 px Gaussian: the only pixels a re-rendered frame takes
    from the render."""
    from datasets.synthetic_av import render

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([xx, yy, np.zeros_like(xx)], axis=-1)
    state = render.mouth_state(1.0, 1.0, 0.0, geometry)
    moved = render.warp_mouth(coords.copy(), geometry, state)
    disp = np.hypot(moved[..., 0] - xx, moved[..., 1] - yy)
    # Ramp from MASK_PX[0] to MASK_PX[1] of displacement: where the warp barely moves a
    # pixel the frame's own (lit, posed) pixel is worth more than the rest frame's.
    lo, hi = MASK_PX
    ramp = np.clip((disp - lo) / (hi - lo), 0.0, 1.0)
    mask = cv2.GaussianBlur(ramp * ramp * (3 - 2 * ramp), (0, 0), 1.0)
    mask[mask < 1e-3] = 0.0
    return mask.astype(np.float32)


def _colours(face: np.ndarray, lips_px: np.ndarray, geometry) -> tuple[np.ndarray, np.ndarray]:
    """(lip colour, skin colour) float32 [3] of a face crop: medians inside the outer-lip
    polygon and of a cheek patch below the image-left eye."""
    poly = np.round(lips_px[:12]).astype(np.int32)
    inside = np.zeros(face.shape[:2], np.uint8)
    cv2.fillPoly(inside, [poly], 1)
    lip = face[inside > 0].reshape(-1, 3).astype(np.float32)
    ex, ey = geometry.eyes[0]
    r = max(2, int(0.05 * geometry.size))
    cy, cx = int(ey + 0.2 * geometry.size), int(ex)
    skin = face[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r].reshape(-1, 3).astype(np.float32)
    lip_c = np.median(lip, axis=0) if len(lip) else np.median(face.reshape(-1, 3), axis=0)
    skin_c = np.median(skin, axis=0) if len(skin) else lip_c
    return lip_c.astype(np.float32), skin_c.astype(np.float32)


def donor_width(donor_lips: np.ndarray | None, num_frames: int) -> np.ndarray:
    """The renderer's ``width`` drive (float32 [T] in [0, 1]) from a donor's lip points
    [Td >= T, 20, 2]: its mouth width per frame over its median width, mapped through
    :func:`datasets.synthetic_av.render.mouth_state`'s ``width_scale = 1 + 0.3 (width -
    0.5)`` (no rounding); neutral (0.5) without usable donor lips."""
    neutral = np.full(num_frames, 0.5, np.float32)
    if donor_lips is None or len(donor_lips) < num_frames:
        return neutral
    lips = np.asarray(donor_lips[:num_frames], np.float64)
    w = np.linalg.norm(lips[:, CORNERS[0]] - lips[:, CORNERS[1]], axis=-1)
    ok = w > 0
    if ok.sum() < 2:
        return neutral
    scale = np.clip(np.where(ok, w / np.median(w[ok]), 1.0), *WIDTH_RANGE)
    return np.clip(0.5 + (scale - 1.0) / 0.3, 0.0, 1.0).astype(np.float32)


def rerender_mouth(mouth: np.ndarray, face: np.ndarray, lips: np.ndarray,
                   face_found: np.ndarray, drive_open: np.ndarray, drive_width: np.ndarray,
                   drive_round: np.ndarray, gain: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mouth [T, 88, 88] uint8, face [T, S, S, 3] uint8, lips [T, 20, 2] float32) of a
    clip whose mouth follows the drive curves (float [T] in [0, 1]); module docstring."""
    from datasets.synthetic_av import render
    from datasets.synthetic_av.faces import IdentityImage

    T, S = len(face), face.shape[1]
    rest = rest_frame(lips, face_found)
    g_ref = reference_geometry(lips[rest])
    k = S / align.REF_SIZE
    g_face = g_ref.transformed(np.array([[k, 0.0, 0.0], [0.0, k, 0.0]]))
    # The mouth crop: the 96 px ROI centred on the lip centre, its middle 88 px.
    centre = lips[rest].astype(np.float64).mean(axis=0) * align.REF_SIZE
    o = centre - (contract.MOUTH_ROI / 2 - (contract.MOUTH_ROI - contract.MOUTH_SIZE) // 2)
    g_mouth = g_ref.transformed(np.array([[1.0, 0.0, -o[0]], [0.0, 1.0, -o[1]]]))
    lip_c, skin_c = _colours(face[rest], lips[rest] * S, g_face)
    base_face = IdentityImage(image=face[rest], geometry=g_face, lip_color=lip_c,
                              skin_color=skin_c)
    # Gray as RGB: the painted colours become gray exactly as the preprocessing converts
    # an RGB frame (cv2 RGB2GRAY), and R = G = B pixels stay what they were.
    base_mouth = IdentityImage(image=np.repeat(mouth[rest][..., None], 3, axis=-1),
                               geometry=g_mouth, lip_color=lip_c, skin_color=skin_c)
    m_face = region_mask(g_face, (S, S))[..., None]
    m_mouth = region_mask(g_mouth, mouth.shape[1:3])
    out_mouth = np.empty_like(mouth)
    out_face = np.empty_like(face)
    out_lips = np.empty((T, lips.shape[1], 2), np.float32)
    for t in range(T):
        args = (float(drive_open[t]), float(drive_width[t]), float(drive_round[t]))
        st_face = render.mouth_state(*args, g_face, gain)
        st_ref = render.mouth_state(*args, g_ref, gain)     # = the mouth crop's pixels
        out_lips[t] = driven_lips(lips[rest], g_ref, st_ref) + rng.normal(
            0.0, LIP_NOISE_PX / align.REF_SIZE, size=out_lips[t].shape)
        img = render.sensor_noise(render.render_face(base_face, st_face, 0.0), rng,
                                  NOISE_SIGMA)
        out_face[t] = np.clip(m_face * img + (1 - m_face) * face[t] + 0.5, 0, 255)
        gray = cv2.cvtColor(render.render_face(base_mouth, st_ref, 0.0), cv2.COLOR_RGB2GRAY)
        # Keep the crop centred on the (moved) lip centre, as the preprocessing does.
        shift = centre - out_lips[t].astype(np.float64).mean(axis=0) * align.REF_SIZE
        gray = cv2.warpAffine(gray, np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]),
                              gray.shape[::-1], flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        gray = render.sensor_noise(gray, rng, NOISE_SIGMA)
        out_mouth[t] = np.clip(m_mouth * gray + (1 - m_mouth) * mouth[t] + 0.5, 0, 255)
    return out_mouth, out_face, out_lips


# ---------------------------------------------------------------------------------------
# Check of a built dataset
# ---------------------------------------------------------------------------------------

def _energy_db(audio: np.ndarray, num_frames: int) -> np.ndarray:
    f = np.asarray(audio[:num_frames * contract.SAMPLES_PER_FRAME], np.float64)
    f = f.reshape(num_frames, contract.SAMPLES_PER_FRAME)
    return 10 * np.log10(np.mean(f * f, axis=1) + 1.0)


def lip_motion(lips: np.ndarray) -> tuple[float, float]:
    """(median |second difference over time| of the lip points in reference px -- landmark
    jitter plus fast motion --, std of the mouth width over its mean)."""
    lips = np.asarray(lips, np.float64)
    second = lips[1:-1] - 0.5 * (lips[:-2] + lips[2:])
    w = np.linalg.norm(lips[:, CORNERS[0]] - lips[:, CORNERS[1]], axis=-1)
    return (float(np.median(np.abs(second)) * align.REF_SIZE),
            float(np.std(w / max(w.mean(), 1e-9))))


def follow_table(data_dir: str, name: str, splits) -> dict:
    """Per pf_rerender clip of a build: the correlation of its lip opening with the
    donor's speech energy (dB per frame) and with its own audio's, and the same for the
    source real's own lips and audio: the lips must follow the donor. Also the median
    :func:`lip_motion` of the reals and of the pf_rerender clips."""
    import json
    import tensorflow_datasets as tfds

    rows = []
    motion: dict[str, list] = {"real": [], "pf_rerender": []}
    for split in splits:
        ds = tfds.data_source(name, split=split, data_dir=data_dir)
        exs = {ds[i]["video_id"].decode(): ds[i] for i in range(len(ds))}
        for ex in exs.values():
            method = ex["method"].decode()
            if method in motion and bool(ex["has_lips"]):
                motion[method].append(lip_motion(ex["lips"]))
            if method != "pf_rerender":
                continue
            a = json.loads(ex["attributes"].decode())
            src, donor = exs[a["pf_source"]], exs[a["pf_donor"]]
            T = int(ex["num_frames"])
            op = lip_opening(ex["lips"])
            rows.append((np.corrcoef(op, _energy_db(donor["audio"], T))[0, 1],
                         np.corrcoef(op, _energy_db(src["audio"], T))[0, 1],
                         np.corrcoef(lip_opening(src["lips"][:T]),
                                     _energy_db(src["audio"], T))[0, 1]))
    r = np.array(rows).reshape(-1, 3)
    if not len(r):
        return {"clips": 0}
    med = {m: np.median(np.array(v).reshape(-1, 2), axis=0) for m, v in motion.items()}
    return {"clips": len(r), "motion": {m: (len(motion[m]), *med[m]) for m in med},
            "to_donor": float(np.median(r[:, 0])),
            "to_own_audio": float(np.median(r[:, 1])),
            "source_to_own_audio": float(np.median(r[:, 2])),
            "donor_wins": float(np.mean(r[:, 0] > r[:, 1]))}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m avdetect.data.rerender",
        description="Do the re-rendered lips follow the donor's speech? Median correlations "
                    "over the pf_rerender clips of a built dataset.")
    parser.add_argument("dataset", help="NAME/CONFIG, e.g. realtalk/face112")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--splits", default="train,validation,test")
    args = parser.parse_args(argv)
    t = follow_table(args.data_dir, args.dataset, args.splits.split(","))
    if not t["clips"]:
        print(f"no pf_rerender clip in {args.dataset} under {args.data_dir}")
        return 1
    print(f"pf_rerender clips: {t['clips']}; median correlation of the lip opening with the "
          f"donor's speech energy {t['to_donor']:.2f}, with the clip's own audio "
          f"{t['to_own_audio']:.2f} (the source real's lips with its audio: "
          f"{t['source_to_own_audio']:.2f}); donor above own audio in "
          f"{100 * t['donor_wins']:.0f}% of clips")
    for m, (n, jitter, width) in t["motion"].items():
        print(f"lip motion, {m} ({n} clips): median |second difference| {jitter:.3f} "
              f"reference px, mouth width std / mean {width:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
