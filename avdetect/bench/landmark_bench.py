"""Old (Haar box + fixed mouth offset) vs new (face-mesh landmarks + alignment) face
stage on real clips: per-clip detection rate, mouth-centre jitter in the mouth crop, and
the per-frame cost.

    python -m avdetect.bench.landmark_bench [--out DIR] [--limit N] FILES_OR_DIRS...
    python -m avdetect.bench.landmark_bench --mean-face FILES...   # align.MEAN_FACE_UNITS
    python -m avdetect.bench.landmark_bench --dlib [--every K] FILES_OR_DIRS...
    python -m avdetect.bench.landmark_bench --tight DIR FILES...   # tight face crops first
    python -m avdetect.bench.landmark_bench --cost FILE   # CPU ms: one mesh call, one frame
    python -m avdetect.bench.landmark_bench --filters FILES...   # other temporal filters
    python -m avdetect.bench.landmark_bench --mirror ...     # new stage mirror-averaged
    python -m avdetect.bench.landmark_bench --derive-mirror FILES...  # mesh_symmetry.MIRROR

Per clip (every frame decoded once, both stages run on the same frames):

* rate: the share of frames with a face -- old: the Haar ``FaceTracker`` found or tracked
  one (what ``face_found`` meant before); new: the face mesh accepted one.
* jitter: where the mouth is inside each 88x88 mouth crop, frame to frame.  The mouth
  position is measured independently of either crop's placement: the centre of the 20
  *unsmoothed* face-mesh lip points of that frame, mapped into the crop.  Old crop: the
  square ``face_track.CropGeometry().mouth_region`` of the smoothed Haar box; new crop:
  ``align.mouth_matrix`` of the pipeline's smoothed landmarks.  Reported as the RMS
  frame-to-frame step of that position (px of the 88 crop; frames where both neighbours
  have landmarks) and its standard deviation over the clip (drift).  Its step holds the
  lip landmark's own per-frame noise; the image measure below has none.
* what the new crop's step is made of (columns ``new_*``; ``decompose`` explains each):
  the step on closed-mouth frames (speech removed), the white-noise step of the raw lip
  centre and of the nose tip in the head-locked frame (landmark noise: the measure's own
  floor), both crops measured with a 3-frame mean of the lip centre (most landmark noise
  removed: what is left is the crop's motion plus speech), and the step had the crop been
  placed with longer smoothing (mouth centre over 9 or 13 frames, as AV-HuBERT's ~12;
  alignment points over 13).  The new crop's position of the raw lip centre is
  ``A_t (l_t - l~_t)`` (``A_t`` the smoothed similarity's linear part, ``l~`` the
  smoothed lip centre), so the alignment's smoothing cannot move this measure, and
  following ``l`` more closely (a shorter window) lowers it only by copying the
  landmarks' noise into the crop.
* image measure (columns ``img_{old,prev,new}_*``; ``image_motion``): how the crop's
  *content* moves, with no landmark in the measure: consecutive 88x88 gray crops
  registered by a sub-pixel translation fit (``register``, ``avdetect.preprocess.
  stabilize``'s: the stabiliser fits it to a patch of nose and cheeks that overlaps the
  crop's top ~26 rows, this measure to the crop itself).  Per clip: ``step``, the median |d| of the
  frame-to-frame registration; ``drift``, the RMS spread of each frame's registration
  against the clip's median crop.  Speech moves pixels too, so each is also given on the
  top ``UPPER_ROWS`` rows (``_upper``: nose base and philtrum, rigid with the head), on
  the rows below the stabiliser's patch (``_lower``: lips and chin) and
  over low-speech pairs (``_closed``: both frames' inner-lip gap in the clip's lowest
  quartile, as ``decompose``).  Fixed before the figures were seen: the headline is the
  whole-crop step on all frames; the others are reported beside it (``_lower`` added
  with the stabiliser, 2026-12-07: the rows no pixel of its patch reaches).  Frames count
  where both stages found the face (interpolated frames left out on both sides).  Six
  registrations per frame and crop; ``--no-image`` skips them.
* cost: ms per frame of each stage (old: Haar tracker + box smoothing; new: landmark
  tracker + the head motion of ``stabilize``; not decoding, smoothing or crops).
* ``prev_*`` / ``img_prev_*``: the aligned crop as built before the head-motion stabiliser
  (lip centre averaged over 5 frames, ``unstabilized``; figures from ``decompose``), from
  the same landmarks, so the
  stabiliser's own gain is measured side by side.

Writes ``DIR/landmark_rates.csv`` (one row per clip) and prints the distribution.

``--tight DIR`` first writes a tight face crop of each file into DIR (``tight_crop``: the
square spanning 95% of the face mesh's brow-to-chin height on the first frame, scaled to
160x160, so the face fills the frame as in several generators' outputs) and measures
those instead.

``--filters`` measures the new crop only, placed with other temporal filters of the
alignment points and lip centre (``filtered_placements``; ``stab`` the pipeline's own
stabilised placement), by the image measure, and writes ``DIR/landmark_filters.csv``.

``--dlib`` measures the alternative that was not picked, dlib's HOG frontal face detector
+ 68-point shape predictor (``dlib-bin`` + ``face-recognition-models``, not project
dependencies: install them yourself), on every K-th frame of every clip (dlib has no
tracker of its own; HOG runs per frame): share of frames with a face, ms per frame.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import pathlib
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

from avdetect import contract
from avdetect.media import decode
from avdetect.preprocess import align, face_track, landmarks, mesh_symmetry, pipeline
from avdetect.preprocess.stabilize import register

HAAR_MAX_SIDE = 320          # the old pipeline's tracking-image side
HAAR_WINDOWS = (5, 11)       # the old pipeline's centre / size smoothing windows
OFFSET = (contract.MOUTH_ROI - contract.MOUTH_SIZE) / 2


def tight_crop(src: pathlib.Path, out: pathlib.Path, size: int = 160,
               max_frames: int | None = None) -> pathlib.Path:
    """Write ``src`` cropped to its face (see the module docstring) as ``out`` (ffmpeg)."""
    import subprocess
    first = next(iter(decode.iter_frames(src)))
    pts, _ = landmarks.LandmarkTracker().update(first)
    if pts is None:
        raise ValueError(f"{src}: no face on the first frame to crop around")
    lo, hi = pts.min(0), pts.max(0)                 # the mesh spans brows to chin
    side = int(0.95 * (hi[1] - lo[1])) // 2 * 2
    x, y = int((lo[0] + hi[0] - side) / 2), int((lo[1] + hi[1] - side) / 2)
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src)]
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-vf", f"crop={side}:{side}:{max(x, 0)}:{max(y, 0)},scale={size}:{size}", "-an",
            "-c:v", "libx264", "-crf", "18", str(out)]
    subprocess.run(cmd, check=True)
    return out


def old_stage(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """(found bool [T], smoothed boxes [T, 4] or None, seconds) of the old Haar path."""
    t0 = time.perf_counter()
    h, w = frames[0].shape[:2]
    f = face_track.tracking_decimation(h, w, HAAR_MAX_SIDE)
    grays = (face_track.tracking_image(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), f) for x in frames)
    boxes, found = face_track.track_boxes(grays)
    boxes = boxes.astype(np.float64) * f
    smooth = (face_track.smooth_boxes(face_track.interpolate_boxes(boxes, found), *HAAR_WINDOWS)
              if found.any() else None)
    return found, smooth, time.perf_counter() - t0


NOSE_TIP = 1                  # face-mesh nose tip: rigid with the head, not an alignment point
INNER_LIPS = (13, 14)         # face-mesh inner upper / lower lip midpoints: the mouth's opening


def new_stage(frames: list[np.ndarray], lp: landmarks.LandmarkParams = landmarks.LandmarkParams()):
    """(found [T], raw points {"lipc": lip centre, "nose": nose tip, "upper", "lower":
    inner-lip midpoints} [T, 2] (NaN where missed), smoother rows [T, D] (zeros where
    missed), seconds) of the landmark path."""
    t0 = time.perf_counter()
    tracker = landmarks.LandmarkTracker(lp)
    make_row = pipeline.RowMaker(lp)
    rows, found, raw = [], [], []
    for x in frames:
        pts, _ = tracker.update(x)
        found.append(pts is not None)
        rows.append(make_row(x, pts))
        raw.append(np.stack([pts[list(lp.lip_points)].mean(0), pts[NOSE_TIP],
                             pts[INNER_LIPS[0]], pts[INNER_LIPS[1]]])
                   if pts is not None else np.full((4, 2), np.nan))
    found = np.asarray(found)
    raw = np.asarray(raw, np.float64)
    points = dict(zip(("lipc", "nose", "upper", "lower"), raw.transpose(1, 0, 2)))
    table = None
    if found.any():
        dim = len(next(r for r in rows if r is not None))
        table = np.stack([r if r is not None else np.zeros(dim) for r in rows])
    return found, points, table, time.perf_counter() - t0


def aligned(table: np.ndarray, found: np.ndarray,
            lp: landmarks.LandmarkParams = landmarks.LandmarkParams(),
            stable_window: int | None = None, centre_window: int | None = None):
    """Per frame (source -> reference matrix, lip centre in reference px), smoothed as the
    pipeline does (``pipeline.row_windows``) or with other windows for the alignment
    points / the lip centre (the alternatives ``decompose`` measures)."""
    windows = list(pipeline.row_windows(lp))
    ns = 2 * len(lp.stable_points)
    if stable_window:
        windows[:ns] = [stable_window] * ns
    if centre_window:
        windows[-2:] = [centre_window] * 2
    return placed_from_rows(landmarks.smooth_track(table, found, windows), lp)


def unstabilized(table: np.ndarray, lp: landmarks.LandmarkParams
                 ) -> tuple[np.ndarray, landmarks.LandmarkParams]:
    """The rows and params of the aligned crop as built before the head-motion stabiliser
    (2026-12-06): ``track_row`` rows with the head motion folded back into the lip-centre
    columns (head motion zero, centre = the raw lip centre), the lip centre averaged over
    the alignment points' window."""
    out = np.array(table, np.float64, copy=True)
    out[:, -2:] += out[:, -4:-2]
    out[:, -4:-2] = 0.0
    return out, dataclasses.replace(lp, stabilize=False, centre_window=lp.smooth_window)


def placed_from_rows(rows: np.ndarray, lp: landmarks.LandmarkParams = landmarks.LandmarkParams()
                     ) -> list:
    """Per frame (source -> reference matrix, lip centre in reference px) of final rows."""
    out = []
    for row in rows:
        stable, _, c = pipeline.split_row(row, lp)
        m = align.to_reference(stable)
        out.append((m, align.apply(m, c)))
    return out


def old_mouth_position(boxes: np.ndarray, lipc: np.ndarray) -> np.ndarray:
    """Lip centre [T, 2] (source px) -> position in the old 88 crop."""
    geo = face_track.CropGeometry()
    out = np.empty_like(lipc)
    for t, (b, c) in enumerate(zip(boxes, lipc)):
        cx, cy, side = geo.mouth_region(b)
        out[t] = (c - (np.array([cx, cy]) - side / 2)) * contract.MOUTH_ROI / side - OFFSET
    return out


def new_mouth_position(mats: np.ndarray, lipc: np.ndarray) -> np.ndarray:
    return np.stack([align.apply(m, c) for m, c in zip(mats, lipc)]) - OFFSET


def jitter(pos: np.ndarray) -> tuple[float, float]:
    """(RMS frame-to-frame step, RMS deviation from the clip mean) of positions [T, 2]
    (NaN rows skipped)."""
    step = np.diff(pos, axis=0)
    step = step[np.isfinite(step).all(axis=1)]
    ok = pos[np.isfinite(pos).all(axis=1)]
    if len(step) == 0:
        return float("nan"), float("nan")
    return (float(np.sqrt((step ** 2).sum(1).mean())),
            float(np.sqrt(((ok - ok.mean(0)) ** 2).sum(1).mean())))


def white_noise_step(pos: np.ndarray) -> float:
    """The RMS frame-to-frame step that white noise alone would give a track [T, 2] with
    these second differences: white noise of variance s^2 per axis has E|d^2 p|^2 = 12 s^2
    and E|d p|^2 = 4 s^2.  Motion that is smooth over 3 frames adds little to d^2, so this
    estimates the landmark noise in a step (an upper bound where motion is jerky)."""
    d2 = pos[2:] - 2 * pos[1:-1] + pos[:-2]
    d2 = d2[np.isfinite(d2).all(axis=1)]
    return float(np.sqrt((d2 ** 2).sum(1).mean() / 3)) if len(d2) else float("nan")


def step_where(pos: np.ndarray, keep: np.ndarray) -> float:
    """RMS frame-to-frame step of ``pos`` [T, 2] over the steps t -> t+1 with both frames
    in ``keep``."""
    step = np.diff(pos, axis=0)
    ok = np.isfinite(step).all(axis=1) & keep[:-1] & keep[1:]
    return float(np.sqrt((step[ok] ** 2).sum(1).mean())) if ok.sum() >= 3 else float("nan")


# ------------------------------------------------------- image measure of crop motion
LOWER_FROM = 32     # rows of the 88 crop from here down (lips, chin) lie below the
                    # stabiliser's motion patch (stabilize.MOTION_PATCH ends at reference
                    # row 150; the crop's row 32 is reference row ~156): no pixel the
                    # stabiliser registered enters the ``_lower`` figures
UPPER_ROWS = 24     # top rows of the 88 crop: nose base and philtrum in both crops, rigid
                    # with the head (contact sheets), above the lips that move with speech
def image_motion(crops: np.ndarray, keep: np.ndarray, closed: np.ndarray) -> dict:
    """How the content of a clip's crops [T, H, W] moves, by ``register`` (px of the
    crop), over the frames in ``keep`` [T] (the face found by both stages):

    * ``step``: median |d| of consecutive frames' registration (pairs t, t+1 both kept);
      ``step_closed`` the same over pairs with both frames in ``closed`` (low speech);
    * ``drift``: RMS distance from its mean of each kept frame's position against the
      clip's median crop (per-pixel median of the kept frames);
    * ``_upper``: the same on the top ``UPPER_ROWS`` rows only (nose base, philtrum);
    * ``_lower``: the same on the rows from ``LOWER_FROM`` down (lips, chin: outside the
      stabiliser's patch, speech included);
    * ``fail``: the share of registrations that failed (left out).

    The step is a median, not an RMS: a few frames where the fit locks onto changed content
    (a sudden lip opening, motion blur, a cut) would otherwise set the figure."""
    if keep.sum() < 3:
        raise ValueError(f"image_motion: {int(keep.sum())} frames to measure, at least 3 needed")
    out, fails, tries = {}, 0, 0
    pairs = keep[:-1] & keep[1:]
    for suffix, rows in (("", slice(None)), ("_upper", slice(0, UPPER_ROWS)),
                         ("_lower", slice(LOWER_FROM, None))):
        c = crops[:, rows]
        d = np.full((len(c) - 1, 2), np.nan)
        for t in np.flatnonzero(pairs):
            d[t] = register(c[t], c[t + 1])
        size = np.linalg.norm(d, axis=1)
        ok = np.isfinite(size)
        both_closed = closed[:-1] & closed[1:]
        out[f"step{suffix}"] = float(np.median(size[ok])) if ok.any() else float("nan")
        out[f"step_closed{suffix}"] = (float(np.median(size[ok & both_closed]))
                                       if (ok & both_closed).sum() >= 3 else float("nan"))
        ref = np.median(c[keep], axis=0)
        pos = np.stack([register(ref, x) if k else np.full(2, np.nan) for x, k in zip(c, keep)])
        good = np.isfinite(pos).all(axis=1)
        out[f"drift{suffix}"] = jitter(pos)[1] if good.sum() >= 3 else float("nan")
        tries += int(pairs.sum() + keep.sum())
        fails += int((pairs & ~ok).sum() + (keep & ~good).sum())
    out["fail"] = fails / max(tries, 1)
    return out


def old_crops(frames: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """The old pipeline's 88 gray mouth crops [T, 88, 88] from its smoothed Haar boxes."""
    return np.stack([face_track.mouth_crop(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), b)
                     for x, b in zip(frames, boxes)])


def new_crops(frames: list[np.ndarray], placed: list) -> np.ndarray:
    """The pipeline's aligned 88 gray mouth crops [T, 88, 88] (``placed``: ``aligned``)."""
    return np.stack([align.mouth_crop(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), m, c)
                     for x, (m, c) in zip(frames, placed)])


def head_locked(mats: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Source points [T, 2] -> the smoothed reference frame (``mats`` [T, 2, 3])."""
    return np.stack([align.apply(m, q) for m, q in zip(mats, pts)])


def closed_mouth(found: np.ndarray, points: dict, mats: np.ndarray) -> np.ndarray:
    """Frames [T] whose inner-lip gap (face-mesh points 13 / 14, in the head-locked
    reference frame of the smoothed alignment ``mats``) is in the clip's lowest quartile:
    the mouth closed, so speech moves little."""
    gap = np.linalg.norm(head_locked(mats, points["upper"]) - head_locked(mats, points["lower"]),
                         axis=1)
    return found & (gap <= np.nanquantile(gap, 0.25))


def decompose(found: np.ndarray, points: dict, table: np.ndarray, boxes: np.ndarray,
              prev: list, lp: landmarks.LandmarkParams = landmarks.LandmarkParams()) -> dict:
    """What the new crop's mouth step is made of (px of the 88 crop; see the module
    docstring): ``new_step_closed`` (closed-mouth frames: the inner-lip gap in its clip's
    lowest quartile), ``lip_noise`` / ``nose_noise`` (``white_noise_step`` of the raw lip
    centre / nose tip in the head-locked reference frame), ``old_step3`` / ``new_step3``
    (measured with the 3-frame centred mean of the lip centre), ``new_step_c9`` /
    ``new_step_c13`` (+ ``_drift``: lip centre smoothed over 9 / 13 frames, unstabilised)
    and ``new_step_s13`` (alignment points over 13); ``prev_step`` / ``prev_drift`` /
    ``prev_step3``: the same measures of the crop placed before the stabiliser (``prev``:
    ``aligned`` of ``unstabilized``)."""
    base = aligned(table, found, lp)
    mats = np.asarray([m for m, _ in base])
    lipc = points["lipc"]

    closed = closed_mouth(found, points, mats)
    crop = np.asarray([align.mouth_matrix(m, c) for m, c in base])
    out = {"new_step_closed": step_where(new_mouth_position(crop, lipc), closed),
           "lip_noise": white_noise_step(head_locked(mats, lipc)),
           "nose_noise": white_noise_step(head_locked(mats, points["nose"]))}
    lipc3 = landmarks.smooth_track(np.nan_to_num(lipc), found, 3)
    lipc3[~found] = np.nan
    out["old_step3"] = jitter(old_mouth_position(boxes, lipc3))[0]
    out["new_step3"] = jitter(new_mouth_position(crop, lipc3))[0]
    plain, plain_lp = unstabilized(table, lp)
    prev_mats = np.asarray([align.mouth_matrix(m, c) for m, c in prev])
    out["prev_step"], out["prev_drift"] = jitter(new_mouth_position(prev_mats, lipc))
    out["prev_step3"] = jitter(new_mouth_position(prev_mats, lipc3))[0]
    for name, kw in (("c9", dict(centre_window=9)), ("c13", dict(centre_window=13)),
                     ("s13", dict(stable_window=13))):
        alt = np.asarray([align.mouth_matrix(m, c)
                          for m, c in aligned(plain, found, plain_lp, **kw)])
        out[f"new_step_{name}"], out[f"new_drift_{name}"] = jitter(new_mouth_position(alt, lipc))
    return out


# ------------------------------------------- other temporal filters of the new crop (--filters)
FILTERS = ("ma5", "ma3", "ma7", "ma9", "sg9", "sg15", "euro", "head25", "stab")


def one_euro(x: np.ndarray, fc_min: float = 1.0, beta: float = 0.05, fc_d: float = 1.0,
             fps: float = contract.VIDEO_FPS) -> np.ndarray:
    """Causal one-euro filter (Casiez et al., CHI 2012) of each column of ``x`` [T, D]: a
    first-order low-pass whose cutoff rises with the (low-passed) speed, ``fc_min + beta *
    |dx/dt|`` Hz, so still heads are smoothed hard and moving ones followed with less lag."""
    def alpha(fc):
        return 1.0 / (1.0 + fps / (2 * np.pi * fc))
    y = np.empty_like(x, dtype=np.float64)
    y[0] = x[0]
    dx = np.zeros(x.shape[1])
    for t in range(1, len(x)):
        dx = dx + alpha(fc_d) * ((x[t] - y[t - 1]) * fps - dx)
        y[t] = y[t - 1] + alpha(fc_min + beta * np.abs(dx)) * (x[t] - y[t - 1])
    return y


def filtered_placements(table: np.ndarray, found: np.ndarray, points: dict,
                        lp: landmarks.LandmarkParams = landmarks.LandmarkParams()) -> dict:
    """{name: per-frame (matrix, lip centre)} of the new crop with other temporal filters of
    the alignment points and the lip centre (the lip shape is not part of the placement):
    ``ma5`` the pipeline's centred 5-frame mean (``aligned``), ``ma3`` / ``ma7`` / ``ma9``
    other windows, ``sg9`` / ``sg15`` Savitzky-Golay (order 2: follows motion with less
    flattening), ``euro`` a causal one-euro filter (``one_euro`` defaults), ``head25`` the
    ma5 alignment with the lip centre averaged over 25 frames in the head-locked reference
    frame (the crop nearly rigid with the head)."""
    from scipy.signal import savgol_filter
    stab = aligned(table, found, lp) if lp.stabilize else None
    table, lp = unstabilized(table, lp)
    out = {f"ma{w}": aligned(table, found, lp, stable_window=w, centre_window=w)
           for w in (3, 7, 9)}
    out["ma5"] = aligned(table, found, lp)
    out["stab"] = stab if stab is not None else out["ma5"]
    filled = landmarks.smooth_track(table, found, 1)          # interpolated, not smoothed
    cols = list(range(2 * len(lp.stable_points))) + [filled.shape[1] - 2, filled.shape[1] - 1]
    for name, f in (("sg9", lambda v: savgol_filter(v, 9, 2, axis=0, mode="interp")),
                    ("sg15", lambda v: savgol_filter(v, 15, 2, axis=0, mode="interp")),
                    ("euro", one_euro)):
        rows = filled.copy()
        rows[:, cols] = f(filled[:, cols]) if len(rows) >= 15 else filled[:, cols]
        out[name] = placed_from_rows(rows, lp)
    mats = np.asarray([m for m, _ in out["ma5"]])
    centre = landmarks.smooth_track(head_locked(mats, np.nan_to_num(points["lipc"])), found, 25)
    out["head25"] = [(m, c) for (m, _), c in zip(out["ma5"], centre)]
    return {k: out[k] for k in FILTERS}


def measure_filters(path: pathlib.Path,
                    lp: landmarks.LandmarkParams = landmarks.LandmarkParams()) -> dict:
    """Per clip: ``image_motion`` of the new crop under each of ``filtered_placements``
    (frames with landmarks), as columns ``{filter}_{measure}``."""
    frames = list(decode.iter_frames(path))
    found, points, table, _ = new_stage(frames, lp)
    if found.sum() < 3:
        raise ValueError(f"{path}: {int(found.sum())} frames with a face, at least 3 needed")
    placed = filtered_placements(table, found, points, lp)
    closed = closed_mouth(found, points, np.asarray([m for m, _ in placed["ma5"]]))
    row = {"file": path.name}
    for name, p in placed.items():
        row.update({f"{name}_{k}": v
                    for k, v in image_motion(new_crops(frames, p), found, closed).items()})
    return row


def summarise_filters(rows: list[dict]) -> str:
    out = [f"new crop under other filters, {len(rows)} clips: median over clips (median of the "
           f"per-clip ratio to ma5)"]
    for k in ("step", "step_upper", "step_closed", "drift", "drift_upper"):
        base = np.array([r[f"ma5_{k}"] for r in rows])
        cells = []
        for name in FILTERS:
            v = np.array([r[f"{name}_{k}"] for r in rows])
            cells.append(f"{name} {np.nanmedian(v):.3f} ({np.nanmedian(v / base):.2f})")
        out.append(f"{k}: " + ", ".join(cells))
    return "\n".join(out)


def measure(path: pathlib.Path, image: bool = True,
            lp: landmarks.LandmarkParams = landmarks.LandmarkParams()) -> dict:
    frames = list(decode.iter_frames(path))
    old_found, old_boxes, old_s = old_stage(frames)
    new_found, points, table, new_s = new_stage(frames, lp)
    row = {"file": path.name, "frames": len(frames), "height": frames[0].shape[0],
           "width": frames[0].shape[1], "old_rate": old_found.mean(), "new_rate": new_found.mean(),
           "old_ms": 1e3 * old_s / len(frames), "new_ms": 1e3 * new_s / len(frames)}
    if old_boxes is not None and table is not None:
        placed = aligned(table, new_found, lp)
        mats = np.asarray([align.mouth_matrix(m, c) for m, c in placed])
        row["old_step"], row["old_drift"] = jitter(old_mouth_position(old_boxes, points["lipc"]))
        row["new_step"], row["new_drift"] = jitter(new_mouth_position(mats, points["lipc"]))
        # The aligned crop before the head-motion stabiliser, from the same landmarks.
        plain, plain_lp = unstabilized(table, lp)
        prev = aligned(plain, new_found, plain_lp)
        row.update(decompose(new_found, points, table, old_boxes, prev, lp))
        keep = old_found & new_found
        if image and keep.sum() >= 3:
            closed = closed_mouth(new_found, points, np.asarray([m for m, _ in placed]))
            for side, crops in (("old", old_crops(frames, old_boxes)),
                                ("prev", new_crops(frames, prev)),
                                ("new", new_crops(frames, placed))):
                row.update({f"img_{side}_{k}": v
                            for k, v in image_motion(crops, keep, closed).items()})
    return row


def quartiles(v: np.ndarray) -> str:
    q = np.quantile(v, [0.5, 0.25, 0.75])
    return f"{q[0]:.2f} [{q[1]:.2f}, {q[2]:.2f}]"


def summarise(rows: list[dict]) -> str:
    out = []
    for side in ("old", "new"):
        r = np.array([x[f"{side}_rate"] for x in rows])
        out.append(f"{side}: {int((r >= 0.98).sum())}/{len(r)} clips >= 98%, "
                   f"{int((r == 0).sum())} with none, {int(((r > 0) & (r < 0.98)).sum())} between "
                   f"(min {r.min():.3f}, median {np.median(r):.3f}); "
                   f"{np.mean([x[f'{side}_ms'] for x in rows]):.2f} ms/frame")
        low = sorted((x[f"{side}_rate"], x["file"]) for x in rows if x[f"{side}_rate"] < 0.98)
        if low:
            out.append("   below 98%: " + ", ".join(f"{n} {v:.2f}" for v, n in low))
    both = [x for x in rows if "old_step" in x]
    if both:
        for k in ("step", "drift", "step3"):
            o = np.array([x[f"old_{k}"] for x in both])
            n = np.array([x[f"new_{k}"] for x in both])
            pv = np.array([x.get(f"prev_{k}", np.nan) for x in both])
            out.append(f"mouth-centre {k} (px of the 88 crop, {len(both)} clips with both): "
                       f"old median {np.median(o):.2f} mean {o.mean():.2f}, new median "
                       f"{np.median(n):.2f} mean {n.mean():.2f}; new/old per clip median "
                       f"{np.median(n / o):.2f}; prev (unstabilised) median "
                       f"{np.nanmedian(pv):.2f}, prev/old {np.nanmedian(pv / o):.2f}")
        parts = ("new_step_closed", "lip_noise", "nose_noise", "new_step_c9", "new_drift_c9",
                 "new_step_c13", "new_drift_c13", "new_step_s13", "new_drift_s13")
        out.append("new step decomposed (medians): " + ", ".join(
            f"{k} {np.nanmedian([x[k] for x in both]):.2f}" for k in parts))
    img = [x for x in rows if "img_old_step" in x]
    for a, b in (("new", "old"), ("prev", "old"), ("new", "prev")):
        if not all(f"img_{a}_step" in x and f"img_{b}_step" in x for x in img):
            continue
        for k in ("step", "step_upper", "step_lower", "step_closed", "step_closed_upper",
                  "step_closed_lower", "drift", "drift_upper", "drift_lower"):
            o = np.array([x[f"img_{b}_{k}"] for x in img])
            n = np.array([x[f"img_{a}_{k}"] for x in img])
            ok = np.isfinite(o) & np.isfinite(n)
            if ok.any():
                r = n[ok] / o[ok]
                out.append(f"image {k} (px of the 88 crop, {int(ok.sum())} clips; median "
                           f"[quartiles]): {b} {quartiles(o[ok])}, {a} {quartiles(n[ok])}; "
                           f"{a}/{b} per clip {quartiles(r)}, {int((r <= 0.5).sum())} clips <= 0.5")
    if len(img) >= 3:
        from scipy.stats import spearmanr
        noise = [x["lip_noise"] for x in img]

        def rho(k):
            return spearmanr(noise, [x[f"img_new_{k}"] for x in img], nan_policy="omit")[0]
        out.append("across clips, Spearman rho of the landmark noise (lip_noise) with the new "
                   f"crop's image step: step {rho('step'):.2f}, step_upper {rho('step_upper'):.2f}")
    if img:
        fail = np.array([[x["img_old_fail"], x["img_new_fail"]] for x in img])
        out.append(f"image registrations failed: old {fail[:, 0].mean():.4f}, new "
                   f"{fail[:, 1].mean():.4f} (mean share per clip)")
    return "\n".join(out)


def dlib_rates(paths: list[pathlib.Path], every: int) -> list[dict]:
    """Per clip: share of every ``every``-th frame where dlib's HOG detector (upsample 0,
    then 1 when nothing is found) finds a face, and ms per frame of detector + 68 points."""
    import importlib.util
    try:
        import dlib
    except ImportError as e:
        raise SystemExit(f"--dlib needs dlib-bin ({e})") from e
    # face_recognition_models' own locator imports pkg_resources: find the file directly.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise SystemExit("--dlib needs face-recognition-models")
    model = os.path.join(list(spec.submodule_search_locations)[0], "models",
                         "shape_predictor_68_face_landmarks.dat")
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(model)
    rows = []
    for p in tqdm(paths, desc="dlib", unit="clip"):
        hits, n, t0 = 0, 0, time.perf_counter()
        for i, x in enumerate(decode.iter_frames(p)):
            if i % every:
                continue
            gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
            dets = detector(gray, 0) or detector(gray, 1)
            if dets:
                shape(gray, max(dets, key=lambda r: r.area()))
                hits += 1
            n += 1
        rows.append({"file": p.name, "dlib_rate": hits / max(n, 1),
                     "dlib_ms": 1e3 * (time.perf_counter() - t0) / max(n, 1)})
    return rows


def cpu_cost(path: pathlib.Path, calls: int = 300,
             lp: landmarks.LandmarkParams = landmarks.LandmarkParams()) -> str:
    """CPU milliseconds (this process, every thread) of one face-mesh call on a random
    input (both passes with ``lp.mirror_average``), and of ``LandmarkTracker.update`` per
    frame of ``path`` (decoding excluded)."""
    mesh = landmarks.FaceMesh(lp.mirror_average)
    x = np.random.default_rng(0).random((mesh.size, mesh.size, 3), np.float32)
    mesh.on_crop(x)
    c0 = time.process_time()
    for _ in range(calls):
        mesh.on_crop(x)
    per_call = 1e3 * (time.process_time() - c0) / calls
    frames = list(decode.iter_frames(path))
    tracker = landmarks.LandmarkTracker(lp)
    c0 = time.process_time()
    found = [tracker.update(f)[0] for f in frames]
    per_frame = 1e3 * (time.process_time() - c0) / len(frames)
    make_row = pipeline.RowMaker(dataclasses.replace(lp, stabilize=True))
    c0 = time.process_time()
    for f, pts in zip(frames, found):
        make_row(f, pts)
    head = 1e3 * (time.process_time() - c0) / len(frames)
    return (f"face mesh{' (mirror-averaged)' if lp.mirror_average else ''}: "
            f"{per_call:.2f} ms CPU per call ({calls} calls); tracker: "
            f"{per_frame:.2f} ms CPU per frame ({len(frames)} frames of {path.name}, "
            f"{frames[0].shape[1]}x{frames[0].shape[0]}; {dict(tracker.counts)}); head "
            f"motion (stabilize): {head:.2f} ms CPU per frame ({make_row.motion.counts})")


def mean_face(paths: list[pathlib.Path]) -> np.ndarray:
    """The mean of the stable + lip points over every 5th of the first 100 frames of each
    clip, Procrustes-aligned on the stable points, levelled and mirror-symmetrised: the
    stable points in units of the outer-eye-corner distance from their midpoint."""
    lp = landmarks.LandmarkParams()
    idx = list(lp.stable_points) + list(lp.lip_points)
    shapes = []
    for p in paths:
        tracker = landmarks.LandmarkTracker(lp)
        for i, x in enumerate(decode.iter_frames(p)):
            if i >= 100:
                break
            pts, _ = tracker.update(x)      # every frame: tracking needs the previous one
            if pts is not None and i % 5 == 0:
                shapes.append(pts[idx])
    ref = shapes[0][:6]
    for _ in range(5):
        ref = np.mean([align.apply(align.similarity(s[:6], ref), s) for s in shapes], 0)[:6]
    aligned = np.mean([align.apply(align.similarity(s[:6], ref), s) for s in shapes], 0)
    eo, ei = aligned[0], aligned[3]                              # outer corners 33, 263
    level = align.similarity(np.array([eo, ei]), np.array([[-0.5, 0.0], [0.5, 0.0]]))
    u = align.apply(level, aligned)
    mirror = u[[3, 2, 1, 0, 4, 5]] * [-1, 1]
    stable = (u[:6] + mirror) / 2
    lips = u[6:]
    print(f"{len(shapes)} shapes from {len(paths)} clips; mouth width "
          f"{np.linalg.norm(lips[6] - lips[0]):.3f}, lip centre {lips.mean(0).round(4)}")
    return stable


def mirror_from_clips(paths: list[pathlib.Path], frames: int = 60, every: int = 5
                      ) -> np.ndarray:
    """``mesh_symmetry.derive_mirror`` on every ``every``-th of the first ``frames``
    frames of each clip: the plain face mesh's crop (its tracked ROI) and that crop
    mirrored."""
    mesh = landmarks.FaceMesh()
    plain, mirrored = [], []
    for p in paths:
        tracker = landmarks.LandmarkTracker()
        for i, f in enumerate(decode.iter_frames(p)):
            if i >= frames:
                break
            pts, _ = tracker.update(f)       # every frame: tracking needs the previous one
            if pts is None or i % every:
                continue
            x = mesh.crop(f, landmarks.roi_from_points(pts))
            plain.append(mesh.on_crop(x)[0])
            mirrored.append(mesh.on_crop(np.ascontiguousarray(x[:, ::-1]))[0])
    if not plain:
        raise SystemExit("--derive-mirror: no face found in the given clips")
    return mesh_symmetry.derive_mirror(np.asarray(plain), np.asarray(mirrored), mesh.size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.bench.landmark_bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="video files or folders of .mp4 files")
    ap.add_argument("--out", default="demo_out/landmarks", help="folder for the CSV")
    ap.add_argument("--limit", type=int, default=0, help="only the first N files")
    ap.add_argument("--mean-face", action="store_true", help="print the measured mean face")
    ap.add_argument("--dlib", action="store_true", help="measure dlib HOG + 68 points instead")
    ap.add_argument("--every", type=int, default=5, help="--dlib: every K-th frame")
    ap.add_argument("--tight", metavar="DIR", help="measure tight face crops written here")
    ap.add_argument("--cost", action="store_true", help="CPU ms per mesh call and per frame")
    ap.add_argument("--filters", action="store_true",
                    help="the image measure of the new crop under other temporal filters")
    ap.add_argument("--no-image", action="store_true",
                    help="skip the image measure of crop motion (8 registrations per frame)")
    ap.add_argument("--mirror", action="store_true",
                    help="new stage with mirror-averaged face mesh (LandmarkParams.mirror_average)")
    ap.add_argument("--derive-mirror", action="store_true",
                    help="print the face mesh's left/right permutation (mesh_symmetry.MIRROR)")
    args = ap.parse_args(argv)
    lp = landmarks.LandmarkParams(mirror_average=args.mirror)
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, args.paths):
        files += sorted(p.glob("*.mp4")) if p.is_dir() else [p]
    if args.limit:
        files = files[:args.limit]
    if not files:
        raise SystemExit("no video files given")
    if args.mean_face:
        print(np.round(mean_face(files), 4).tolist())
        return 0
    if args.derive_mirror:
        perm = mirror_from_clips(files)
        print(f"{len(files)} clips; identical to mesh_symmetry.MIRROR: "
              f"{np.array_equal(perm, mesh_symmetry.MIRROR)}\n{perm.tolist()}")
        return 0
    cv2.setNumThreads(1)
    if args.cost:
        print(cpu_cost(files[0], lp=lp))
        return 0
    if args.tight:
        os.makedirs(args.tight, exist_ok=True)
        files = [tight_crop(p, pathlib.Path(args.tight) / f"tight_{p.name}") for p in files]
    if args.dlib:
        rows = dlib_rates(files, args.every)
        r = np.array([x["dlib_rate"] for x in rows])
        print(f"dlib: {int((r >= 0.98).sum())}/{len(r)} clips >= 98%, {int((r == 0).sum())} "
              f"with none (min {r.min():.3f}, median {np.median(r):.3f}); "
              f"{np.mean([x['dlib_ms'] for x in rows]):.1f} ms/frame")
        low = sorted((x["dlib_rate"], x["file"]) for x in rows if x["dlib_rate"] < 0.98)
        print("   below 98%: " + ", ".join(f"{n} {v:.2f}" for v, n in low))
        return 0
    rows = []
    for p in tqdm(files, desc="clips", unit="clip"):
        try:
            rows.append(measure_filters(p, lp) if args.filters
                        else measure(p, image=not args.no_image, lp=lp))
        except Exception as e:  # noqa: BLE001 - report the clip and go on
            tqdm.write(f"{p}: {type(e).__name__}: {e}")
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "landmark_filters.csv" if args.filters else "landmark_rates.csv")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "file", k))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    print(summarise_filters(rows) if args.filters else summarise(rows))
    print(f"per-clip rows: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
