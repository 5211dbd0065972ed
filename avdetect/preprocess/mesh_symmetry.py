"""Left/right symmetry of MediaPipe's 468-point face mesh, for mirror test-time averaging.

The face mesh run on a horizontally mirrored crop returns the mirrored face: its point i
lands where the *symmetric* point ``MIRROR[i]`` of the plain pass lies (the subject's
right eye corner 33 where the left one, 263, was).  ``mirror_points`` maps such an
output back onto the plain crop (mirror x, then reorder), so the two passes can be
averaged (``landmarks.FaceMesh`` with ``mirror_average``).

``MIRROR`` is measured, not typed in: ``derive_mirror`` matches the two passes' points
over many frames (the assignment with the least summed squared distance, each pass
centred first, so a constant offset between the passes cannot pull points onto their
neighbours).  On 216 frames (every 5th of the first 60 of the 6 real fixture clips and
of every 6th real realtalk clip) it is an involution with 28 points on the midline, and
a disjoint set (every 6th real realtalk clip from the 3rd, 127 frames) gives the same
permutation; the RMS residual per point, the two passes' disagreement, is median 1.0 px,
at most 2.1 (of the 192 px crop).  Reproduce:

    python -m avdetect.bench.landmark_bench --derive-mirror ../shared/fixtures/realav/real_*.mp4 \\
        $(ls ../shared/realtalk/real_*.mp4 | awk 'NR%6==1')

Coordinates are continuous (pixel i covers [i, i + 1)), so mirroring an n-pixel crop
maps x to n - x.
"""

from __future__ import annotations

import numpy as np

NUM_POINTS = 468

# MIRROR[i]: the face-mesh point symmetric to point i (i itself on the midline).
MIRROR = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
    18, 19, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265,
    266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283,
    284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301,
    302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319,
    320, 321, 322, 323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336,
    337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354,
    355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372,
    373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385, 386, 387, 388,
    389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403,
    404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197,
    420, 199, 200, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435,
    436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453,
    454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 3, 7, 20, 21,
    22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39,
    40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
    76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93,
    95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
    113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130,
    131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148,
    149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
    190, 191, 192, 193, 194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211,
    212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229,
    230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247,
)


def mirror_points(pts: np.ndarray, n: int) -> np.ndarray:
    """Face-mesh output [468, 2] on the mirrored n-pixel crop -> the same points on the
    plain crop (float64; exact: ``mirror_points(mirror_points(p, n), n) == p``)."""
    pts = np.asarray(pts, np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"mirror_points wants face-mesh points [{NUM_POINTS}, 2], got {pts.shape}")
    out = pts[list(MIRROR)]
    out[:, 0] = n - out[:, 0]
    return out


def derive_mirror(plain: np.ndarray, mirrored: np.ndarray, n: int) -> np.ndarray:
    """The symmetry permutation [468] from face-mesh outputs on F crops, ``plain``, and on
    the same crops mirrored, ``mirrored`` (both [F, 468, 2], crop px, crop side n): the
    assignment of mirrored-pass points (x mapped back to n - x) to plain-pass points with
    the least squared distance summed over the frames, each pass's points centred per
    frame.  Raises if the result is not an involution (then the data did not decide it)."""
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(plain, np.float64)
    b = np.asarray(mirrored, np.float64).copy()
    if a.shape != b.shape or a.ndim != 3 or a.shape[1:] != (NUM_POINTS, 2):
        raise ValueError(f"derive_mirror wants two [F, {NUM_POINTS}, 2] arrays, got "
                         f"{a.shape} and {b.shape}")
    b[..., 0] = n - b[..., 0]
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    cost = np.zeros((NUM_POINTS, NUM_POINTS))
    for fa, fb in zip(a, b):
        cost += ((fb[:, None] - fa[None]) ** 2).sum(-1)
    _, perm = linear_sum_assignment(cost)
    if not np.array_equal(perm[perm], np.arange(NUM_POINTS)):
        raise ValueError("derive_mirror: the matching is not an involution; use more frames "
                         "of frontal faces")
    return perm
