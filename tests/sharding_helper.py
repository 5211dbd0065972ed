"""Placement checks on 8 simulated CPU devices, for tests/test_sharding.py.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharding_helper.py OUT.json
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from avdetect import sharding


def main(out_path: str) -> None:
    mesh = sharding.make_mesh([("data", -1), ("model", 2)])
    batch = {"x": np.arange(48, dtype=np.float32).reshape(16, 3)}
    g = sharding.host_to_global(batch, mesh)["x"]
    params = {"dense": {"kernel": jnp.ones((8, 6)), "bias": jnp.ones((6,))}, "embed": jnp.ones((20, 16))}
    rules = [("dense/kernel", 'shard_dim(-1, "model")'), ("embed", "fsdp"), (".*", "replicate")]
    shardings = sharding.infer_shardings(params, rules, mesh)
    placed = jax.device_put(params, shardings)

    def shapes(a):
        return [list(s.data.shape) for s in a.addressable_shards]

    result = {
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "batch_shard_shapes": shapes(g),
        "batch_roundtrip": bool(np.array_equal(np.asarray(g), batch["x"])),
        "batch_sum_ok": bool(float(jax.jit(jnp.sum)(g)) == float(batch["x"].sum())),
        "kernel_shard_shapes": shapes(placed["dense"]["kernel"]),
        "bias_shard_shapes": shapes(placed["dense"]["bias"]),
        "embed_shard_shapes": shapes(placed["embed"]),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
