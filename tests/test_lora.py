"""LoRA: merged == unmerged forward, adapters start as a no-op, target selection by regex,
and training with a LoRA mask moves only the adapters."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from avdetect.errors import ConfigError
from avdetect.models import lora
from avdetect.models.audio import WhisperLikeAudio
from avdetect.models.layers import PreLNBlock

CFG = lora.LoRAConfig(rank=3, alpha=6.0, targets=r"attn/(query|value)/kernel$")
X = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
# Compile without LLVM's expensive passes: a fraction of the compile time for these tiny
# programs (the same options the trainer uses for its one-off init); numerics unchanged.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _paths(tree):
    return sorted("/".join(k) for k in traverse_util.flatten_dict(tree))


@pytest.fixture(scope="module")
def unmerged():
    """A pre-LN block whose Dense layers are LoRADense, with non-zero B (trained-like)."""
    block = PreLNBlock(16, 4, dense=functools.partial(lora.LoRADense, lora=CFG))
    params = block.init(jax.random.key(0), X)["params"]
    flat = traverse_util.flatten_dict(params)
    rng = np.random.default_rng(1)
    for k in flat:
        if k[-1] == "lora_b":
            flat[k] = jnp.asarray(rng.normal(size=flat[k].shape).astype(np.float32))
    return block, traverse_util.unflatten_dict(flat)


def test_lora_dense_adapts_only_the_targets(unmerged):
    _, params = unmerged
    adapted = [p for p in _paths(params) if p.endswith("lora_a")]
    assert adapted == ["attn/query/lora_a", "attn/value/lora_a"]


def test_merged_equals_unmerged(unmerged):
    block, params = unmerged
    y_unmerged = block.apply({"params": params}, X)
    base, adapters = lora.split_unmerged(params)
    # the regex picks the same kernels in the plain model's params
    assert [k for k in lora.target_paths(base, CFG)] == [
        ("attn", "query", "kernel"), ("attn", "value", "kernel")]
    assert _paths(adapters) == ["attn/query/kernel/a", "attn/query/kernel/b",
                                "attn/value/kernel/a", "attn/value/kernel/b"]
    plain = PreLNBlock(16, 4)                                     # ordinary nn.Dense layers
    y_merged = plain.apply({"params": lora.merge(base, adapters, CFG)}, X)
    np.testing.assert_allclose(y_merged, y_unmerged, rtol=1e-5, atol=1e-5)
    # and the adapters matter (the comparison is not vacuous)
    y_base = plain.apply({"params": base}, X)
    assert float(jnp.max(jnp.abs(y_base - y_unmerged))) > 1e-3


def test_merge_formula():
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = np.ones((3, 2), np.float32)
    b = np.full((2, 4), 0.5, np.float32)
    cfg = lora.LoRAConfig(rank=2, alpha=1.0, targets="k")
    merged = lora.merge({"k": w}, {"k": {"a": a, "b": b}}, cfg)
    np.testing.assert_allclose(merged["k"], w + 0.5 * (a @ b))


def test_fresh_adapters_are_a_no_op():
    enc = WhisperLikeAudio(dim=16, depth=1, heads=2)
    feats = np.random.default_rng(2).normal(size=(1, 8, 80)).astype(np.float32)
    params = jax.jit(lambda f: enc.init(jax.random.key(0), f), compiler_options=FAST)(
        feats)["params"]
    adapters = lora.init_adapters(jax.random.key(1), params, CFG)
    for leaf in jax.tree.leaves(adapters):
        assert leaf.shape[0] == 3 or leaf.shape[1] == 3        # rank 3
    b_leaves = [v for k, v in traverse_util.flatten_dict(adapters).items() if k[-1] == "b"]
    assert b_leaves and all(np.all(np.asarray(b) == 0) for b in b_leaves)
    run = jax.jit(lambda p, f: enc.apply({"params": p}, f), compiler_options=FAST)
    np.testing.assert_array_equal(run(lora.merge(params, adapters, CFG), feats),
                                  run(params, feats))


def test_bad_targets_raise_config_error():
    params = {"conv": {"kernel": jnp.ones((3, 4, 5))}, "dense": {"kernel": jnp.ones((4, 5))}}
    with pytest.raises(ConfigError, match="matches no parameter"):
        lora.target_paths(params, lora.LoRAConfig(targets="nothing_here"))
    with pytest.raises(ConfigError, match="only 2-D"):
        lora.target_paths(params, lora.LoRAConfig(targets="conv"))


def test_training_moves_only_the_adapters():
    """Frozen base + trainable adapters (optax mask as the trainer builds it): after a few
    Adam steps the base kernels are bitwise unchanged, adapters moved, loss fell."""
    enc = WhisperLikeAudio(dim=16, depth=1, heads=2)
    feats = np.random.default_rng(3).normal(size=(2, 8, 80)).astype(np.float32)
    target = np.random.default_rng(4).normal(size=(2, 2, 16)).astype(np.float32)
    base = jax.jit(lambda f: enc.init(jax.random.key(0), f), compiler_options=FAST)(
        feats)["params"]
    params = {"base": base, "lora": lora.init_adapters(jax.random.key(1), base, CFG)}
    mask = {"base": jax.tree.map(lambda _: False, base),
            "lora": jax.tree.map(lambda _: True, params["lora"])}
    opt = optax.multi_transform({True: optax.adam(1e-2), False: optax.set_to_zero()},
                                jax.tree.map(lambda m: m, mask))

    def loss_fn(p):
        frozen = jax.lax.stop_gradient(p["base"])
        y = enc.apply({"params": lora.merge(frozen, p["lora"], CFG)}, feats)
        return jnp.mean((y - target) ** 2)

    @functools.partial(jax.jit, compiler_options=FAST)
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss, g

    state = opt.init(params)
    p, losses = params, []
    for _ in range(6):
        p, state, loss, grads = step(p, state)
        losses.append(float(loss))
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["base"]))
    for old, new in zip(jax.tree.leaves(base), jax.tree.leaves(p["base"])):
        np.testing.assert_array_equal(old, new)
    moved = [not np.array_equal(o, n) for o, n in
             zip(jax.tree.leaves(params["lora"]), jax.tree.leaves(p["lora"]))]
    assert all(moved)
    assert losses[-1] < losses[0]


def test_lora_dense_without_match_is_plain_dense():
    layer = lora.LoRADense(4, lora=lora.LoRAConfig(targets="never"))
    params = layer.init(jax.random.key(0), X[0])["params"]
    assert sorted(params) == ["bias", "kernel"]
    dense = nn.Dense(4)
    np.testing.assert_allclose(layer.apply({"params": params}, X[0]),
                               dense.apply({"params": params}, X[0]), rtol=1e-6)
