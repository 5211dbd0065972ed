"""Mesh construction, sharding rules and global batch assembly.

Rule logic is checked on abstract meshes in-process; real placement on 8 simulated CPU
devices in one subprocess (tests/sharding_helper.py)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from avdetect import sharding
from avdetect.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
MESH_4x2 = AbstractMesh((4, 2), ("data", "model"))


def test_mesh_shape_fills_and_validates():
    assert sharding.mesh_shape([("data", -1), ("model", 1)], 8) == (("data", "model"), (8, 1))
    assert sharding.mesh_shape([("data", -1), ("model", 2)], 8) == (("data", "model"), (4, 2))
    assert sharding.mesh_shape([("model", 2), ("data", 4)], 8) == (("model", "data"), (2, 4))
    for spec, match in [([("data", -1), ("model", 3)], "does not divide"),
                        ([("data", 2), ("model", 2)], "needs 4 devices"),
                        ([("data", -1), ("model", -1)], "at most one"),
                        ([("model", -1)], "needs a 'data' axis"),
                        ([("data", -1), ("data", 1)], "repeated"),
                        ([("data", 0)], "positive")]:
        with pytest.raises(ConfigError, match=match):
            sharding.mesh_shape(spec, 8)


def test_make_mesh_on_this_host():
    mesh = sharding.make_mesh([("data", -1), ("model", 1)])
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}


def test_parse_rule():
    assert sharding.parse_rule("replicate") == sharding.Rule("replicate")
    assert sharding.parse_rule('shard_dim(-1, "model")') == sharding.Rule("shard_dim", -1, "model")
    assert sharding.parse_rule("shard_dim(0)") == sharding.Rule("shard_dim", 0, "model")
    assert sharding.parse_rule("fsdp") == sharding.Rule("fsdp", None, "data")
    assert sharding.parse_rule("fsdp('model')") == sharding.Rule("fsdp", None, "model")
    for bad in ("shard_dim(x)", "tile(2)", "replicate(1)", "shard_dim(1,"):
        with pytest.raises(ConfigError, match="config.sharding_strategy"):
            sharding.parse_rule(bad)


def test_spec_for_each_rule():
    rule = sharding.parse_rule('shard_dim(-1, "model")')
    assert sharding.spec_for("k", (6, 8), rule, MESH_4x2) == P(None, "model")
    assert sharding.spec_for("k", (), rule, MESH_4x2) == P()           # scalars stay whole
    with pytest.raises(ConfigError, match="size 7 is not divisible by mesh axis model=2"):
        sharding.spec_for("k", (6, 7), rule, MESH_4x2)
    with pytest.raises(ConfigError, match="no dimension 2"):
        sharding.spec_for("k", (6, 8), sharding.parse_rule("shard_dim(2)"), MESH_4x2)
    with pytest.raises(ConfigError, match="names mesh axis 'expert'"):
        sharding.spec_for("k", (6, 8), sharding.parse_rule("shard_dim(0, 'expert')"), MESH_4x2)
    fsdp = sharding.parse_rule("fsdp")
    assert sharding.spec_for("k", (12, 8), fsdp, MESH_4x2) == P("data", None)   # largest divisible
    assert sharding.spec_for("k", (6, 8), fsdp, MESH_4x2) == P(None, "data")    # 6 % 4 != 0
    assert sharding.spec_for("k", (3, 5), fsdp, MESH_4x2) == P()                # none divides


def test_infer_shardings_first_match_wins_and_reaches_optimizer_moments():
    tree = {"params": {"enc": {"kernel": np.zeros((4, 6)), "bias": np.zeros(6)},
                       "head": {"kernel": np.zeros((6, 2))}},
            "opt_state": ({"mu": {"enc": {"kernel": np.zeros((4, 6)), "bias": np.zeros(6)},
                                  "head": {"kernel": np.zeros((6, 2))}}},),
            "step": np.zeros((), np.int32)}
    rules = [(r"enc/kernel$", 'shard_dim(-1, "model")'), (r"head/", "fsdp('model')"),
             (r".*", "replicate")]
    out = sharding.infer_shardings(tree, rules, MESH_4x2)
    specs = {sharding.path_str(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(out)}
    assert specs["params/enc/kernel"] == P(None, "model")
    assert specs["opt_state/0/mu/enc/kernel"] == P(None, "model")
    assert specs["params/enc/bias"] == P()
    assert specs["params/head/kernel"] == P("model", None)               # 6 is the largest dim
    assert specs["step"] == P()
    with pytest.raises(ConfigError, match="bad regex"):
        sharding.infer_shardings(tree, [("(", "replicate")], MESH_4x2)


def test_host_fields_stay_on_host():
    assert sharding.is_device_field(np.zeros(3, np.uint8))
    assert not sharding.is_device_field(np.array([b"a", b"b"]))
    mesh = sharding.make_mesh([("data", -1)])
    out = sharding.host_to_global({"x": np.arange(4.0), "name": np.array(["a", "b", "c", "d"])}, mesh)
    assert set(out) == {"x"}
    np.testing.assert_array_equal(np.asarray(out["x"]), np.arange(4.0))


def test_placement_on_8_simulated_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "sharding_helper.py"), str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["devices"] == 8 and r["mesh"] == {"data": 4, "model": 2}
    # A [16, 3] batch over data=4: every device holds 4 rows, replicated over 'model'.
    assert r["batch_shard_shapes"] == [[4, 3]] * 8
    assert r["batch_roundtrip"] and r["batch_sum_ok"]
    # The kernel split over 'model' ([8, 6] -> [8, 3] per device); the bias whole.
    assert r["kernel_shard_shapes"] == [[8, 3]] * 8 and r["bias_shard_shapes"] == [[6]] * 8
    # fsdp over 'data' puts a quarter of the embedding on each device.
    assert r["embed_shard_shapes"] == [[5, 16]] * 8
