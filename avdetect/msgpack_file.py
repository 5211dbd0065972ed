"""The MessagePack container of avdetect's model files (no pickle anywhere).

Two formats share it: the exported model (:mod:`avdetect.export` writes it,
:func:`avdetect.inference.load_exported` reads it) and the converted-variables file
(:mod:`avdetect.convert.variables_file`). Both are one map written by
``flax.serialization.msgpack_serialize``::

    {"header":    JSON text, at least {"format": <name>, ...},
     "variables": nested dicts of arrays (raw bytes + dtype + shape, flax's msgpack
                  extension; read back with ``np.frombuffer``),
     ...          optional extra entries of the format (e.g. "traced_predict" bytes)}

This module is the one place that reads and writes that map; each format checks its own
header fields (name and version) after :func:`read`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from flax import serialization

from avdetect.errors import CheckpointError


def host_tree(tree: Any) -> Any:
    """Nested dicts of NumPy arrays (msgpack stores dicts and arrays only)."""
    if isinstance(tree, Mapping):
        return {str(k): host_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def write(path: str | os.PathLike, header: Mapping[str, Any], variables: Mapping[str, Any],
          **extra: Any) -> str:
    """Writes ``{"header": json(header), "variables": ..., **extra}`` to ``path``
    atomically (a temporary file renamed over it: never a half-written model file under
    the final name); returns the path."""
    payload = {"header": json.dumps(dict(header), sort_keys=True),
               "variables": host_tree(variables), **extra}
    data = serialization.msgpack_serialize(payload)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def read(path: str | os.PathLike, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, payload)`` of a container file; ``payload`` holds "variables" and any
    extra entries. ``what`` names the expected file in errors ("an exported avdetect
    model"). Raises CheckpointError naming the file when it is missing, unreadable, empty
    or not such a container (the caller checks the format name and version)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file (expected {what})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e.strerror})") from e
    if not data:
        raise CheckpointError(f"{path}: empty file, not {what}")
    try:
        payload = serialization.msgpack_restore(data)
        header = json.loads(payload.pop("header"))
        if not isinstance(header, dict) or not isinstance(payload.get("variables"), dict):
            raise ValueError("no header map or no variables map")
    except Exception as e:   # msgpack / JSON / layout errors: all mean "not our file"
        raise CheckpointError(f"{path}: not {what} ({type(e).__name__}: {str(e)[:120]})") from None
    return header, payload
