"""Runs the toy trainer on 8 simulated CPU devices, for tests/test_train.py.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/multidevice_helper.py OUT_DIR

Trains the same config twice: a pure data-parallel mesh (data=8) and a mixed mesh
(data=4, model=2) whose rules split the toy model's 'visual' kernel over 'model'; writes
``OUT_DIR/info.json`` with the device count and where that kernel (and its Adam
moment) actually live.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import toy_method  # noqa: E402
from avdetect import sharding, train  # noqa: E402
from avdetect.input_pipeline import make_train_iterator  # noqa: E402
from avdetect.methods import build_method  # noqa: E402
from avdetect.steps import Steps  # noqa: E402

MODEL_RULES = [(r"visual/kernel", 'shard_dim(-1, "model")'), (".*", "replicate")]


def main(out_dir: str) -> None:
    info = {"device_count": jax.device_count()}
    runs = {"data8": ([("data", -1), ("model", 1)], [(".*", "replicate")]),
            "data4_model2": ([("data", 4), ("model", 2)], MODEL_RULES)}
    for name, (mesh, rules) in runs.items():
        config = toy_method.toy_config(mesh=mesh, sharding_strategy=rules)
        train.train_and_evaluate(config, os.path.join(out_dir, name))

    # Where the rules put the visual kernel and its optimizer moments.
    config = toy_method.toy_config(mesh=runs["data4_model2"][0], sharding_strategy=MODEL_RULES)
    mesh_obj = sharding.make_mesh(config.mesh)
    it = make_train_iterator(config, mesh_obj)
    steps = Steps(config, build_method(config), mesh_obj,
                  sharding.host_to_global(next(it), mesh_obj))
    specs = {}
    for path, sh in jax.tree_util.tree_leaves_with_path(steps.state_sharding):
        name = sharding.path_str(path)
        if name.endswith("visual/kernel") or name.endswith("audio/kernel"):
            specs[name] = [str(a) for a in sh.spec]
    info["specs"] = specs
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main(sys.argv[1])
