"""Small real checkpoints for the inference tests (detect, export, notebook).

* :func:`train_toy_workdir` trains the trainer tests' toy method (``tests/toy_method.py``:
  per-frame scores from mouth crops + log-mel, with a BatchNorm collection) for a few
  steps on the 'random' dataset with the real trainer, so the workdir has everything a
  user's has: ``config.json``, orbax checkpoints, ``eval_validation.json`` with the
  threshold chosen on the validation split. A few seconds.
* :func:`random_init_workdir` writes a checkpoint of a *real* method's tiny config
  (corrdistill, CAD, baseline) with random weights drawn in NumPy from the abstract
  init shapes: no init compilation (which takes half a minute for these networks on
  2 cores), yet the real network, inputs and checkpoint format. No evaluation report.
"""

from __future__ import annotations

import importlib
import pathlib

import ml_collections
import numpy as np

import toy_method
from avdetect import checkpointing, train
from avdetect.bench import common as bench_common

TOY_WINDOW = 50          # 2 s windows: fixture clips give several, a 1.2 s clip is too short


def toy_config(**overrides) -> ml_collections.ConfigDict:
    """The toy method's config as trained by :func:`train_toy_workdir`."""
    settings = {"data.window": TOY_WINDOW, "data.inputs": ("mouth", "logmel", "label"),
                "train.steps": 4, "train.eval_every": 0,
                "train.ckpt_every": 2, "train.keep_ckpts": 2, "train.log_every": 2,
                "data.random_eval_videos": 8}
    settings.update(overrides)
    config = toy_method.toy_config(**settings)
    config.train.async_checkpoints = False
    config.train.tensorboard = False
    return config


def train_toy_workdir(workdir: pathlib.Path, **overrides) -> pathlib.Path:
    """Trains the toy config into ``workdir`` (checkpoints at steps 2 and 4)."""
    train.train_and_evaluate(toy_config(**overrides), str(workdir))
    return workdir


def random_init_workdir(workdir: pathlib.Path, method: str, arg: str = "tiny,data=random",
                        seed: int = 0, **overrides) -> pathlib.Path:
    """A workdir holding ``configs/<method>.py:<arg>`` and a step-1 checkpoint of random
    weights (normal, std 0.05; BatchNorm variances 1)."""
    config = importlib.import_module(f"configs.{method}").get_config(arg)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    variables = bench_common.random_variables(config, seed)
    state = {"params": variables.pop("params"), "model_state": variables,
             "step": np.int32(1), "rng": np.zeros(2, np.uint32)}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    with checkpointing.Checkpointer(workdir / "checkpoints", asynchronous=False) as ckpt:
        ckpt.save(1, state, {"step": 1}, force=True)
    return workdir
