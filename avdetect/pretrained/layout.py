"""PyTorch-layout weights -> flax param dicts (one home for the transposes every
converter needs), reading a checkpoint's optional JSON side files, and rebuilding a
module's config from the sizes an exported model recorded."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from avdetect.pretrained.errors import WeightFileError


def dense(weight: np.ndarray, bias: np.ndarray | None = None) -> dict:
    """torch Linear weight [out, in] (+ bias [out]) -> flax Dense {kernel: [in, out], bias}."""
    out = {"kernel": np.ascontiguousarray(np.asarray(weight, np.float32).T)}
    if bias is not None:
        out["bias"] = np.asarray(bias, np.float32)
    return out


def conv(weight: np.ndarray, bias: np.ndarray | None = None) -> dict:
    """torch ConvNd weight [out, in, *k] -> flax Conv {kernel: [*k, in, out]} (+ bias)."""
    weight = np.asarray(weight, np.float32)
    order = tuple(range(2, weight.ndim)) + (1, 0)
    out = {"kernel": np.ascontiguousarray(np.transpose(weight, order))}
    if bias is not None:
        out["bias"] = np.asarray(bias, np.float32)
    return out


def layer_norm(scale: np.ndarray, bias: np.ndarray) -> dict:
    """torch LayerNorm weight/bias (CTranslate2 gamma/beta) -> flax {scale, bias}."""
    return {"scale": np.asarray(scale, np.float32), "bias": np.asarray(bias, np.float32)}


def read_json_if_present(path: pathlib.Path) -> dict | None:
    """A checkpoint's config.json (or similar) when the file exists, else None."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightFileError(path, f"not valid JSON ({exc})", kind="bad_format") from None


def count_layers(names, prefix: str, sep: str, path: pathlib.Path | str) -> int:
    """Number of layers named ``<prefix><i><sep>...`` (e.g. ``encoder/layer_3/...``),
    checking that the indices run 0..n-1 with none missing."""
    ids = set()
    for name in names:
        if name.startswith(prefix):
            head = name[len(prefix):].split(sep, 1)[0]
            if head.isdigit():
                ids.add(int(head))
    if ids != set(range(len(ids))):
        raise WeightFileError(path, f"layer indices under {prefix!r} are not 0..n-1: "
                              f"{sorted(ids)}", kind="bad_format")
    return len(ids)


def config_from_arch(cls: type, arch: Any):
    """``cls(**arch)`` for the module sizes an exported model's config records as
    ``config.model.<encoder>.arch`` (lists back to tuples: configs store JSON lists), or
    None when no sizes are recorded - the caller then reads them from the weight file."""
    if not arch:
        return None
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(arch).items()})
