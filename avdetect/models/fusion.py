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

from avdetect.models.layers import MultiHeadAttention

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
