"""LoRA (low-rank adaptation, Hu et al. 2021) for Dense kernels, chosen by a regex over
parameter paths.

A targeted kernel W [in, out] gets adapters A [in, r] and B [r, out]; the layer computes
``x W + (alpha / r) (x A) B``. B starts at zero, so an adapted model starts out identical
to the frozen one. Two equivalent forms:

* **merged** (what CAD uses): the encoder is any linen module with ordinary Dense layers;
  :func:`init_adapters` makes an adapter tree beside its params and :func:`merge` returns
  params with ``W + (alpha/r) A B`` in place of each targeted kernel. Gradients reach A and
  B through the merge. Works for any encoder (e.g. the pretrained Whisper) unchanged.
* **unmerged**: :class:`LoRADense`, a drop-in Dense that holds ``lora_a``/``lora_b`` itself
  and adds the low-rank path explicitly (use it as ``MultiHeadAttention(dense=...)``).

Paths are '/'-joined parameter keys, e.g. ``block0/attn/query/kernel``; a kernel is
targeted when ``re.search(targets, path)`` matches. Only 2-D kernels can be targeted.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from avdetect.errors import ConfigError

Array = jax.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank r (0 = no LoRA), alpha (scale = alpha / r) and the target regex."""

    rank: int = 8
    alpha: float = 16.0
    targets: str = r"attn/(query|value)/kernel$"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0


def _path(keys) -> str:
    return "/".join(str(k) for k in keys)


def target_paths(params: Params, cfg: LoRAConfig) -> list[tuple[str, ...]]:
    """Key tuples of the kernels that ``cfg.targets`` selects (sorted).

    Raises ConfigError when the regex selects a non-2-D leaf or nothing at all (a typo in
    the regex must not silently train no adapter)."""
    flat = traverse_util.flatten_dict(params)
    hits = []
    for keys, leaf in flat.items():
        if re.search(cfg.targets, _path(keys)):
            if keys[-1] != "kernel" or jnp.ndim(leaf) != 2:
                raise ConfigError(f"LoRA target regex {cfg.targets!r} selects "
                                  f"{_path(keys)} of shape {jnp.shape(leaf)}: only 2-D "
                                  "Dense kernels can be adapted")
            hits.append(keys)
    if not hits:
        raise ConfigError(f"LoRA target regex {cfg.targets!r} matches no parameter")
    return sorted(hits)


def init_adapters(rng: Array, params: Params, cfg: LoRAConfig) -> Params:
    """Adapter tree {...path..., 'kernel': {'a': [in, r], 'b': [r, out]}} for each target.

    A ~ N(0, 1/in) (so x A keeps the scale of x), B = 0 (the adapted model starts equal to
    the frozen one)."""
    keys = target_paths(params, cfg)
    flat = traverse_util.flatten_dict(params)
    out = {}
    for i, k in enumerate(keys):
        d_in, d_out = flat[k].shape
        a = jax.random.normal(jax.random.fold_in(rng, i), (d_in, cfg.rank)) / jnp.sqrt(d_in)
        out[k + ("a",)] = a.astype(flat[k].dtype)
        out[k + ("b",)] = jnp.zeros((cfg.rank, d_out), flat[k].dtype)
    return traverse_util.unflatten_dict(out)


def merge(params: Params, adapters: Params, cfg: LoRAConfig) -> Params:
    """Params with each adapted kernel replaced by ``W + (alpha / r) A B``."""
    flat = dict(traverse_util.flatten_dict(params))
    ad = traverse_util.flatten_dict(adapters)
    for k in {key[:-1] for key in ad}:
        if k not in flat:
            raise ConfigError(f"LoRA adapter for {_path(k)} has no base kernel")
        flat[k] = flat[k] + cfg.scale * (ad[k + ("a",)] @ ad[k + ("b",)])
    return traverse_util.unflatten_dict(flat)


def split_unmerged(params: Params) -> tuple[Params, Params]:
    """Split the params of a model built with :class:`LoRADense` into (base params,
    adapter tree in :func:`merge`'s layout)."""
    base, ad = {}, {}
    for keys, leaf in traverse_util.flatten_dict(params).items():
        if keys[-1] in ("lora_a", "lora_b"):
            ad[keys[:-1] + ("kernel", keys[-1][-1])] = leaf
        else:
            base[keys] = leaf
    return traverse_util.unflatten_dict(base), traverse_util.unflatten_dict(ad)


class LoRADense(nn.Module):
    """Dense layer with an explicit (unmerged) LoRA path when its kernel path matches.

    y = x W + b + (alpha / r) (x A) B. Whether this layer is adapted is decided by
    ``re.search(lora.targets, '<module path>/kernel')``, the same rule as
    :func:`target_paths`, so both forms adapt the same kernels.
    """

    features: int
    use_bias: bool = True
    lora: LoRAConfig = LoRAConfig()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (d_in, self.features))
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        path = _path(self.scope.path) + "/kernel"
        if self.lora.rank and re.search(self.lora.targets, path):
            a = self.param("lora_a", nn.initializers.normal(1.0 / d_in ** 0.5),
                           (d_in, self.lora.rank))
            b = self.param("lora_b", nn.initializers.zeros, (self.lora.rank, self.features))
            y = y + self.lora.scale * ((x @ a) @ b)
        return y
