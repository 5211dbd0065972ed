"""The pre-LayerNorm transformer block that Whisper's encoder and CLIP's vision tower
share (one home for both): x + attn(ln(x)), then x + mlp(ln(x)).

Parameter names (what the weight loaders fill in)::

    attn_ln/{scale,bias}
    attn/{q_proj,k_proj,v_proj,out_proj}/{kernel,bias}   (k_proj without bias if asked)
    mlp_ln/{scale,bias}
    fc1/{kernel,bias}, fc2/{kernel,bias}

Kernels are [in, out] (PyTorch's Linear weight transposed).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


# Activation names as Hugging Face configs spell them. "gelu" is the exact (erf) GELU:
# flax's nn.gelu defaults to the tanh approximation, which would break parity.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "quick_gelu": quick_gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """LayerNorm matching PyTorch's: two-pass variance (the fast E[x^2]-E[x]^2 form loses
    digits on large activations) and the checkpoint's epsilon (PyTorch's default 1e-5,
    not flax's 1e-6)."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask (both encoders attend to every token)."""

    d_model: int
    n_heads: int
    k_bias: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # x: [B, L, D] -> [B, L, D]
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by {self.n_heads} heads")
        head_dim = self.d_model // self.n_heads
        dense = lambda name, bias=True: nn.Dense(self.d_model, use_bias=bias, dtype=self.dtype,
                                                 precision=self.precision, name=name)
        split = lambda t: t.reshape(t.shape[:-1] + (self.n_heads, head_dim))   # [B,L,H,Dh]
        q = split(dense("q_proj")(x))
        k = split(dense("k_proj", self.k_bias)(x))
        v = split(dense("v_proj")(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision)
        scores = scores / jnp.sqrt(jnp.asarray(head_dim, scores.dtype))
        # softmax in float32 even when computing in bfloat16: the row sums need the range.
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)
        out = out.reshape(out.shape[:2] + (self.d_model,))                   # [B, L, D]
        return dense("out_proj")(out)


class PreLNBlock(nn.Module):
    """x + attn(ln(x)); x + fc2(act(fc1(ln(x))))."""

    d_model: int
    n_heads: int
    ffn_dim: int
    activation: str = "gelu"
    ln_eps: float = 1e-5
    k_bias: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # x: [B, L, D] -> [B, L, D]
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r}; "
                             f"known: {sorted(ACTIVATIONS)}")
        h = layer_norm(self.ln_eps, self.dtype, "attn_ln")(x)
        x = x + SelfAttention(self.d_model, self.n_heads, self.k_bias, self.dtype,
                              self.precision, name="attn")(h)
        h = layer_norm(self.ln_eps, self.dtype, "mlp_ln")(x)
        h = nn.Dense(self.ffn_dim, dtype=self.dtype, precision=self.precision, name="fc1")(h)
        h = ACTIVATIONS[self.activation](h)
        h = nn.Dense(self.d_model, dtype=self.dtype, precision=self.precision, name="fc2")(h)
        return x + h
