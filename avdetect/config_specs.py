"""Configs named on a command line: a ``'configs/<m>.py[:arg]'`` spec loaded the way
``python -m avdetect.main --config=...`` reads it, its short label (a table column or
folder name), and ``KEY=VALUE`` overrides of existing keys. Used by the protocol runners
(:mod:`avdetect.protocols`, :mod:`avdetect.loso`).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
from typing import Sequence

import ml_collections

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
