"""Audio-visual fusion modules on per-frame streams a, v: [B, T, D].

* :class:`TalkNetAttention` - TalkNet's post-LN attention layer, with its cross-attention
  quirk available (query from the *target*, residual on the *source*).
* :class:`StudentFusion` - the correlation-distillation student's fusion: cross-attention
  A<->V (one layer each way), self-attention over the concatenation, per-frame logits.
* :class:`ConcatFusion` - the plain baseline: concatenation + per-frame MLP.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avdetect.models.layers import MultiHeadAttention, masked_mean

Array = jax.Array


class TalkNetAttention(nn.Module):
    """TalkNet's ``attentionLayer(src, tar)`` on [B, T, D] streams (post-LN, FFN 4D, ReLU).

    ``query='target'`` (the reference): ``y = LN(src + MHA(Q=tar, K=src, V=src))`` - the
    frame-t output mixes the *source's own* frames, weighted by how they match the other
    modality's frame t; the residual stays on the source. ``query='source'`` is textbook
    cross-attention: ``y = LN(src + MHA(Q=src, K=tar, V=tar))`` (the source gathers the
    target's values). Then ``y = LN(y + FFN(y))``. For self-attention pass src = tar.
    """

    dim: int
    heads: int = 8
    dropout: float = 0.1
    ffn_mult: int = 4
    query: str = "target"

    @nn.compact
    def __call__(self, src: Array, tar: Array, mask: Array | None = None,
                 train: bool = False) -> Array:
        drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)  # noqa: E731
        mha = MultiHeadAttention(self.dim, self.heads, self.dropout, name="attn")
        if self.query == "target":
            h = mha(tar, src, mask, train)
        elif self.query == "source":
            h = mha(src, tar, mask, train)
        else:
            raise ValueError(f"unknown cross-attention query {self.query!r} (target | source)")
        x = nn.LayerNorm(epsilon=1e-5, name="norm1")(src + drop(h))
        h = nn.Dense(self.dim * self.ffn_mult, name="linear1")(x)
        h = nn.Dense(self.dim, name="linear2")(drop(nn.relu(h)))
        return nn.LayerNorm(epsilon=1e-5, name="norm2")(x + drop(h))


class StudentFusion(nn.Module):
    """Cross-attention A<->V, self-attention over [a'; v'], per-frame logits.

    a, v: [B, T, D] -> dict(audio=a' [B,T,D], visual=v' [B,T,D], fused [B,T,2D],
    logits [B,T,2]). a', v' are the post-cross-attention embeddings the correlation
    branch compares (papers.md B.1.8).
    """

    dim: int = 128
    heads: int = 8
    dropout: float = 0.1
    ffn_mult: int = 4
    query: str = "target"
    num_classes: int = 2

    @nn.compact
    def __call__(self, a: Array, v: Array, mask: Array | None = None,
                 train: bool = False) -> dict[str, Array]:
        xa = TalkNetAttention(self.dim, self.heads, self.dropout, self.ffn_mult, self.query,
                              name="cross_a2v")(a, v, mask, train)
        xv = TalkNetAttention(self.dim, self.heads, self.dropout, self.ffn_mult, self.query,
                              name="cross_v2a")(v, a, mask, train)
        av = jnp.concatenate([xa, xv], axis=-1)                           # [B,T,2D]
        av = TalkNetAttention(2 * self.dim, self.heads, self.dropout, self.ffn_mult,
                              name="self_av")(av, av, mask, train)
        logits = nn.Dense(self.num_classes, name="classifier")(av)       # [B,T,2]
        return dict(audio=xa, visual=xv, fused=av, logits=logits)


class ConcatFusion(nn.Module):
    """Baseline fusion: [a; v] -> Dense(hidden) -> ReLU -> dropout -> Dense(2) per frame."""

    hidden: int = 256
    dropout: float = 0.1
    num_classes: int = 2

    @nn.compact
    def __call__(self, a: Array, v: Array, mask: Array | None = None,
                 train: bool = False) -> dict[str, Array]:
        av = jnp.concatenate([a, v], axis=-1)                             # [B,T,Da+Dv]
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(av))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return dict(audio=a, visual=v, fused=h,
                    logits=nn.Dense(self.num_classes, name="classifier")(h))


def offset_similarity(za: Array, zv: Array, mask: Array, max_offset: int
                      ) -> tuple[Array, Array]:
    """``S[b, t, j] = <zv[b, t], za[b, t + j - K]>`` for j = 0..2K (K = ``max_offset``) and
    its validity (both frames real and inside the window). za, zv: [B, T, D] (unit rows),
    mask [B, T] -> ([B, T, 2K+1], [B, T, 2K+1]); invalid entries are 0."""
    k = max_offset
    t = za.shape[1]
    a_pad = jnp.pad(za, ((0, 0), (k, k), (0, 0)))
    m_pad = jnp.pad(mask, ((0, 0), (k, k)))
    sims = jnp.stack([jnp.sum(zv * a_pad[:, j:j + t], -1) for j in range(2 * k + 1)], -1)
    valid = jnp.stack([mask * m_pad[:, j:j + t] for j in range(2 * k + 1)], -1)
    return sims * valid, valid


def unit_rows(x: Array) -> Array:
    """x [..., D] scaled to unit-norm rows (rows near 0 stay near 0)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def offset_evidence(za: Array, zv: Array, mask: Array, max_offset: int
                    ) -> tuple[Array, Array, Array, Array]:
    """What a classifier reads of the offset similarities of unit rows za, zv [B, T, D]
    (:func:`offset_similarity`): (features [B, T, 3 (2K+1)], profile, sims, valid).
    features = [sims, profile, valid] per frame with sims behind a stop-gradient, so the
    shared space is trained by its own loss, never bent by the detection loss; profile =
    the window's mean of the stopped sims over its valid frames, broadcast to every
    frame (a steadier estimate than one frame's); sims / valid as offset_similarity
    returns them (with gradient, for the space's own loss). SyncFusion and CAD's
    alignment evidence both read it."""
    sims, valid = offset_similarity(za, zv, mask, max_offset)
    s_in = jax.lax.stop_gradient(sims)
    count = jnp.maximum(valid.sum(1, keepdims=True), 1.0)
    profile = jnp.broadcast_to(s_in.sum(1, keepdims=True) / count, sims.shape)
    return jnp.concatenate([s_in, profile, valid], -1), profile, sims, valid


class SyncFusion(nn.Module):
    """Fusion that reads audio-visual synchrony explicitly (the real-footage recipe).

    Both streams are projected to a shared unit-norm space; for every frame t the cosine
    similarity of the visual frame with the audio frames t-K..t+K is the *offset profile*
    (SyncNet's view of synchrony: in real speech it peaks at offset 0; shifted audio moves
    the peak, swapped or reversed audio flattens it). The classifier reads each frame's
    profile, the window's mean profile (a steadier estimate, broadcast to every frame),
    and both streams, through a masked temporal convolution. ``sync`` / ``sync_valid``
    are returned for the offset-contrastive loss (:func:`avdetect.losses.sync_infonce`),
    which trains the shared space on real windows.
    """

    dim: int = 32
    max_offset: int = 15
    hidden: int = 64
    kernel: int = 5
    dropout: float = 0.1
    stream_dropout: float = 0.0   # dropout on the raw streams the classifier also reads
    center: bool = False          # remove each projected stream's window mean first
    num_classes: int = 2

    @nn.compact
    def __call__(self, a: Array, v: Array, mask: Array | None = None,
                 train: bool = False) -> dict[str, Array]:
        b, t = a.shape[:2]
        mask = jnp.ones((b, t), a.dtype) if mask is None else mask.astype(a.dtype)

        za, zv = nn.Dense(self.dim, name="audio_sync")(a), nn.Dense(self.dim, name="visual_sync")(v)
        if self.center:
            # Each stream's mean over the window's frames is what stays constant in it - a
            # voice, a lip shape: without it the similarities follow how the two streams
            # *move* together, and other clips' audio cannot be told apart by identity.
            m3 = mask[..., None]
            za = (za - masked_mean(za, m3, axis=1, keepdims=True)) * m3
            zv = (zv - masked_mean(zv, m3, axis=1, keepdims=True)) * m3
        za, zv = unit_rows(za), unit_rows(zv)
        # The classifier reads the profile through a stop-gradient: the shared space is
        # trained by the offset-contrastive loss alone (which transfers to unseen faces),
        # not bent by the detection loss towards the training identities' shortcuts.
        evidence, profile, sims, valid = offset_evidence(za, zv, mask, self.max_offset)
        # The raw streams carry single-modality cues (a TTS voice, a frozen mouth) but also
        # whatever identifies the training people; stream_dropout makes the classifier
        # lean on the synchrony evidence as well.
        drop_streams = nn.Dropout(self.stream_dropout, deterministic=not train)
        feats = jnp.concatenate([evidence, drop_streams(a), drop_streams(v)], -1)
        m = mask[..., None]
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(feats)) * m
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.relu(nn.Conv(self.hidden, (self.kernel,), padding="SAME", name="tconv")(h * m)) * m
        # A direct, low-capacity path from the window's mean profile to the logits.
        logits = (nn.Dense(self.num_classes, name="classifier")(h)
                  + nn.Dense(self.num_classes, name="profile_classifier")(profile))
        # Other clips' audio at the same frame: the negatives that teach "not this person's
        # speech" (swapped audio), beside the in-clip offsets that teach timing.
        cross = jnp.einsum("btd,ctd->btc", zv, za)
        cross_valid = (mask[:, :, None] * mask.T[None, :, :]
                       * (1.0 - jnp.eye(b, dtype=mask.dtype))[:, None, :])
        return dict(audio=za, visual=zv, fused=h, sync=sims, sync_valid=valid, logits=logits,
                    sync_cross=cross * cross_valid, sync_cross_valid=cross_valid)
