"""Lip-landmark visual encoder: mouth shape and motion from per-frame lip points.

Input: ``lips`` float [B, T, P, 2] - P lip landmarks per frame in the landmark-aligned
face frame (the shards' ``lips`` stream, issue 17: 20 mouth points divided by the
reference face size), ``mask`` [B, T] with 1 on real frames. Output [B, T, D].

Why a separate encoder: with a few dozen training identities, a CNN over mouth pixels
learns skin, lighting and identity as readily as mouth motion. Lip points in the aligned
face carry mouth shape only. Each clip is standardised over its own valid frames
(subtract the clip's mean shape, divide by its spread), so what is left is how the mouth
*moves* - the signal synchrony and lip-reading need - and not a person's lip shape.

Per frame: the points relative to their centroid (shape), the centroid itself (jaw /
head motion that alignment leaves), opening and width (two scalars every lip-sync cue
uses), and the first difference of all of these (velocity), then masked temporal
convolutions (padded frames are zeroed before every convolution, so they change no
valid frame's output).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avdetect import contract

Array = jax.Array

# Opening = inner upper-lip middle to inner lower-lip middle; width = outer mouth corners
# (indices into the 20-point lip stream: contract.LIP_CORNERS / LIP_INNER_MIDDLES).
OUTER_LEFT, OUTER_RIGHT = contract.LIP_CORNERS
INNER_TOP, INNER_BOTTOM = contract.LIP_INNER_MIDDLES


def lip_frame_features(lips: Array) -> Array:
    """[B, T, P, 2] lip points -> [B, T, F] per-frame shape features (before
    standardisation): centred points, centroid, opening, width."""
    centroid = lips.mean(axis=2)                                       # [B, T, 2]
    centred = lips - centroid[:, :, None, :]
    b, t = lips.shape[:2]
    feats = [centred.reshape(b, t, -1), centroid]
    if lips.shape[2] > max(OUTER_RIGHT, INNER_BOTTOM):
        opening = jnp.linalg.norm(lips[:, :, INNER_TOP] - lips[:, :, INNER_BOTTOM], axis=-1)
        width = jnp.linalg.norm(lips[:, :, OUTER_LEFT] - lips[:, :, OUTER_RIGHT], axis=-1)
        feats += [opening[..., None], width[..., None]]
    return jnp.concatenate(feats, axis=-1)


# features='distances': eight lip distances (pairs of indices into the 20 points, dlib's
# mouth order): the outer and inner widths, and three vertical spans of each lip contour.
LIP_DISTANCES = ((0, 6), (12, 16), (2, 10), (3, 9), (4, 8), (13, 19), (14, 18), (15, 17))


def lip_distances(lips: Array) -> Array:
    """[B, T, 20, 2] lip points -> [B, T, 8] distances (:data:`LIP_DISTANCES`): how far the
    mouth opens and spreads, invariant to where the face is and how it is turned in the
    image plane - the part of the lip motion that speech drives, with the least of a
    person's lip outline."""
    i, j = (jnp.asarray(x) for x in zip(*LIP_DISTANCES))
    return jnp.linalg.norm(lips[:, :, i] - lips[:, :, j], axis=-1)


def standardise_per_clip(x: Array, mask: Array, eps: float = 1e-3) -> Array:
    """Subtract each clip's masked mean over time and divide by its masked std (per
    feature); padded frames come out 0."""
    m = mask[..., None]
    n = jnp.maximum(m.sum(axis=1, keepdims=True), 1.0)
    mean = (x * m).sum(axis=1, keepdims=True) / n
    var = (((x - mean) * m) ** 2).sum(axis=1, keepdims=True) / n
    return (x - mean) / jnp.sqrt(var + eps ** 2) * m


class LipEncoder(nn.Module):
    """Lip points -> [B, T, out_dim] (see the module docstring)."""

    hidden: int = 64
    out_dim: int = 32
    layers: int = 3
    kernel: int = 5
    dropout: float = 0.1
    features: str = "points"    # 'points': lip_frame_features; 'distances': lip_distances

    @nn.compact
    def __call__(self, lips: Array, train: bool = False, mask: Array | None = None) -> Array:
        lips = lips.astype(jnp.float32)
        b, t = lips.shape[:2]
        mask = jnp.ones((b, t), jnp.float32) if mask is None else mask.astype(jnp.float32)
        if self.features == "points":
            f = lip_frame_features(lips)
        elif self.features == "distances":
            f = lip_distances(lips)
        else:
            raise ValueError(f"lips encoder features={self.features!r}: expected points or "
                             "distances")
        vel = jnp.concatenate([jnp.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], axis=1)
        # a velocity that crosses into padding is not a velocity
        vel = vel * mask[..., None] * jnp.concatenate(
            [jnp.zeros_like(mask[:, :1]), mask[:, :-1]], axis=1)[..., None]
        x = standardise_per_clip(jnp.concatenate([f, vel], axis=-1), mask)
        m = mask[..., None]
        x = nn.gelu(nn.Dense(self.hidden, name="embed")(x)) * m
        for i in range(self.layers):
            y = nn.Conv(self.hidden, (self.kernel,), padding="SAME", name=f"tconv{i}")(x * m)
            y = nn.LayerNorm(name=f"norm{i}")(y)
            y = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(y))
            x = (x + y) * m
        return nn.Dense(self.out_dim, name="out")(x) * m
