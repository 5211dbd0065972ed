"""Configs named on a command line: a ``'configs/<m>.py[:arg]'`` spec loaded the way
``python -m avdetect.main --config=...`` reads it, its short label (a table column or
folder name), ``KEY=VALUE`` overrides of existing keys, and the config bound to a built
dataset (:func:`bind_dataset`). Used by the protocol runners (:mod:`avdetect.protocols`,
:mod:`avdetect.loso`), the demo and the checkpoint converter.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
import pathlib
import sys
from typing import Sequence

import ml_collections

from avdetect import contract
from avdetect.errors import ConfigError


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``'configs/<m>.py[:arg]'`` -> ``get_config(arg)`` of that file (as ``--config`` of
    ``avdetect.main`` reads it)."""
    path, _, arg = spec.partition(":")
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config file {path!r} does not exist (from {spec!r})")
    name = f"_avdetect_config_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module          # dataclasses (flax modules) look their module up
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: has no get_config()")
    return module.get_config(arg or None)


def config_label(spec: str) -> str:
    """A short column / folder name for a config spec: 'corrdistill:tiny'."""
    path, _, arg = spec.partition(":")
    stem = pathlib.Path(path).stem
    return f"{stem}:{arg}" if arg else stem


def folder_name(label: str) -> str:
    """``label`` with every character a folder name should not hold replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> ml_collections.ConfigDict:
    """``['train.steps=50', 'optim.lr=3e-4']`` applied to existing keys only (values
    parsed as Python literals, else kept as strings), as ``--config.x=y`` would."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        *parents, leaf = key.strip().split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ConfigError(f"override {item!r}: config has no section {p!r}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"override {item!r}: config has no key {key!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def bind_dataset(config: ml_collections.ConfigDict, name: str, data_dir: str | None,
                 *, for_training: bool = True) -> ml_collections.ConfigDict:
    """A copy of ``config`` reading dataset ``name`` under ``data_dir``.

    For training, a method that reads teacher posteriors gets ``model.teacher_classes``
    = the dataset's stored teacher dimension, and a dataset without the teacher sides its
    losses need is refused (``avdetect.teachers.requirements``). For evaluation
    (``for_training=False``) the teacher streams are dropped from ``data.inputs``: scoring
    never reads them, and a test set need not have any."""
    config = copy.deepcopy(config)
    config.data.name = name
    config.data.data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
    inputs = tuple(config.data.get("inputs", ()) or ())
    if not for_training:
        if inputs:
            config.data.inputs = tuple(s for s in inputs if s not in contract.TEACHER_STREAMS)
        return config
    if any(s in inputs for s in contract.TEACHER_STREAMS):
        from avdetect.data import metadata
        from avdetect.teachers import requirements
        # K from the dataset; refuses one without the teacher sides the losses need
        requirements.bind_and_check(config, name,
                                    metadata.dataset_metadata(name, config.data.data_dir))
    return config
