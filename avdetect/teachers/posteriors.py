"""Turning hard per-frame labels into soft per-frame posteriors (shared by the oracle and
the forced-alignment teacher).

Two knobs, both documented where the teachers expose them:

* label smoothing ``eps``: every row is (1 - eps) * evidence + eps / K. A teacher is never
  certain, and the student's divergence-based target r_t = 1 - D(p_t, q_t) needs p and q
  strictly positive: with pure one-hots D is infinite (the reference adds 1e-10 inside its
  log to survive). With eps = 0.1 and K = 14, two frames with different labels have a
  class-averaged symmetric KL (the reference's "JS") of 0.31, so r_t stays in [0.69, 1].
* temporal blur ``sigma`` (in video frames): a Gaussian over time. Phone boundaries are only
  known to about one frame (alignment resolution, coarticulation: the lips start moving
  before the sound), so a hard switch at the boundary overstates the evidence. The kernel
  is truncated at 2 sigma and edge frames are replicated, so rows stay probability
  vectors. With sigma <= 0.75 the centre weight exceeds 1/2, which keeps every frame's
  argmax equal to its own label (checked in the tests); larger sigmas trade that for
  smoother targets.
"""

from __future__ import annotations

import numpy as np

from avdetect import contract


def fit_length(track: np.ndarray, length: int) -> np.ndarray:
    """Cut ``track`` (any [N, ...]) to ``length`` rows, or extend it by repeating its last
    row. Used when a ground-truth track and the decoded video differ by a frame or two
    (container rounding); repeating the edge is what the frame would most plausibly show."""
    return contract.fit_length(track, length, mode="edge")


def label_histogram(labels: np.ndarray, num_classes: int, per_row: int = 1) -> np.ndarray:
    """Fraction of each class among consecutive groups of ``per_row`` labels.

    labels int [per_row * T] -> float32 [T, K]. With per_row = 4 this turns a 10 ms phone
    track into 40 ms video-frame distributions (a frame half /m/ and half /a/ is 50/50).
    """
    labels = np.asarray(labels, np.int64)
    if labels.size % per_row:
        raise ValueError(f"{labels.size} labels do not split into groups of {per_row}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    onehot = np.eye(num_classes, dtype=np.float32)[labels]             # [per_row*T, K]
    return onehot.reshape(-1, per_row, num_classes).mean(axis=1)


def smooth_labels(dist: np.ndarray, eps: float) -> np.ndarray:
    """(1 - eps) * dist + eps / K on float [T, K] rows that each sum to 1."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1), got {eps}")
    k = dist.shape[-1]
    return ((1.0 - eps) * dist + eps / k).astype(np.float32)


def temporal_blur(dist: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of [T, K] rows along time (sigma in frames, 0 = none), truncated at
    2 sigma, edges replicated. Each output row is a convex combination of input rows."""
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    radius = int(2.0 * sigma + 0.5)                 # scipy.ndimage's rounding of truncate*sigma
    if radius == 0 or dist.shape[0] == 0:
        return np.asarray(dist, np.float32)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    padded = np.pad(dist, ((radius, radius), (0, 0)), mode="edge")
    t = dist.shape[0]
    out = sum(w * padded[radius + o: radius + o + t] for o, w in zip(offsets, weights))
    return np.asarray(out, np.float32)


def soften(dist: np.ndarray, *, eps: float, sigma: float) -> np.ndarray:
    """Label smoothing then temporal blur; rows renormalised against float drift."""
    out = temporal_blur(smooth_labels(dist, eps), sigma)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def uniform(num_frames: int, num_classes: int) -> np.ndarray:
    """float32 [T, K] of 1/K: the 'no information' side of a one-sided teacher."""
    return np.full((num_frames, num_classes), 1.0 / num_classes, np.float32)
