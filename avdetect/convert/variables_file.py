"""Model-variables files: what ``python -m avdetect.convert`` writes and
``config.init_from`` reads (the trainer starts from them instead of random weights).

Format (``.msgpack``, no pickle): the container of :mod:`avdetect.msgpack_file`, the
same as the export file's (:mod:`avdetect.export`), without config, threshold or traced
program::

    {"header":    JSON text: {"format": "avdetect-variables", "version": 1,
                              "source": where the weights came from, "report": {...}},
     "variables": {"params": {...}, "batch_stats": {...}}   nested dicts of arrays}
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import numpy as np
from flax.traverse_util import flatten_dict

from avdetect import msgpack_file
from avdetect.errors import CheckpointError

FORMAT = "avdetect-variables"
VERSION = 1


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any],
                   source: str = "", report: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write ``variables`` (nested dicts of arrays) with a small JSON header."""
    header = {"format": FORMAT, "version": VERSION, "source": source,
              "report": dict(report or {})}
    return pathlib.Path(msgpack_file.write(path, header, dict(variables)))


def load_variables(path: str | os.PathLike) -> tuple[dict, dict]:
    """(variables, header) of a file written by :func:`save_variables`.

    Raises:
      CheckpointError: missing, empty, not such a file, or a newer format version.
    """
    header, payload = msgpack_file.read(path, f"an {FORMAT} file")
    if header.get("format") != FORMAT or int(header.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: format {header.get('format')!r} version "
                              f"{header.get('version')!r}; expected {FORMAT} <= {VERSION}")
    return dict(payload["variables"]), header


def check_against(variables: Mapping[str, Any], template: Mapping[str, Any], path: str
                  ) -> None:
    """Raise CheckpointError listing every missing / unexpected / wrongly shaped leaf of
    ``variables`` compared with ``template`` (a model's own variables or their shapes)."""
    got = {("/".join(k)): np.shape(v) for k, v in flatten_dict(dict(variables)).items()}
    want = {("/".join(k)): tuple(v.shape) for k, v in flatten_dict(dict(template)).items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = sorted(f"{k}: file {got[k]} vs model {want[k]}" for k in set(got) & set(want)
                    if tuple(got[k]) != tuple(want[k]))
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {label}: " + "; ".join(items[:8])
                             + (" ..." if len(items) > 8 else ""))
        raise CheckpointError(f"{path}: does not fit the configured model (is "
                              f"config.model the one the file was converted for?) - "
                              + " | ".join(parts))
