"""Reader for ``.safetensors`` files (Hugging Face's weight format), parsed directly:
no pickle, no torch, no ``safetensors`` package needed at run time.

Layout of a file::

    uint64 little-endian   N, the byte length of the header
    N bytes                JSON header (UTF-8, may be padded with spaces):
                             {"__metadata__": {str: str},            (optional)
                              "<tensor name>": {"dtype": "F32", "shape": [..],
                                                "data_offsets": [begin, end]}, ...}
    rest                   the data buffer; offsets are relative to its start, C order,
                           little-endian

A checkpoint folder holds ``model.safetensors``, or shards listed by
``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file}}``).
"""

from __future__ import annotations

import json
import mmap
import os
import pathlib
import struct

import numpy as np

from avdetect.pretrained.errors import WeightFileError

# safetensors dtype tags -> numpy. BF16 has no numpy dtype: read as uint16 and widened to
# float32 (a bfloat16 is the top half of a float32's bits).
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024   # the format's own limit on the header size


def _read_header(path: pathlib.Path, buf) -> tuple[dict, int]:
    """(header dict, byte offset of the data buffer)."""
    if len(buf) < 8:
        raise WeightFileError(path, f"only {len(buf)} bytes: too short for a safetensors "
                              "file", kind="truncated")
    (length,) = struct.unpack_from("<Q", buf, 0)
    if length > _MAX_HEADER or 8 + length > len(buf):
        raise WeightFileError(path, f"header length {length} does not fit the file "
                              f"({len(buf)} bytes): not a safetensors file, or truncated",
                              kind="bad_format")
    try:
        header = json.loads(bytes(buf[8:8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightFileError(path, f"header is not valid JSON ({exc}): not a safetensors "
                              "file?", kind="bad_format") from None
    if not isinstance(header, dict):
        raise WeightFileError(path, "header is not a JSON object", kind="bad_format")
    return header, 8 + length


def _checked_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightFileError(path, "no such file", kind="missing_file")
    if path.stat().st_size == 0:
        raise WeightFileError(path, "file is empty", kind="empty_file")
    return path


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` dictionary of a safetensors file (empty when absent)."""
    path = _checked_path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        header, _ = _read_header(path, buf)
    return dict(header.get("__metadata__") or {})


def read_safetensors(path: str | os.PathLike, prefix: str | None = None
                     ) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a numpy array (BF16 widened to float32).

    Args:
      path: the ``.safetensors`` file.
      prefix: when given, only tensors whose name starts with it are read.
    Raises:
      WeightFileError: missing, empty, truncated or malformed file, unknown dtype.
    """
    path = _checked_path(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        header, data_start = _read_header(path, buf)
        for name, info in header.items():
            if name == "__metadata__" or (prefix is not None and not name.startswith(prefix)):
                continue
            try:
                tag, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise WeightFileError(path, f"tensor {name!r} has a malformed header entry "
                                      f"{info!r}", kind="bad_format") from None
            if tag not in _DTYPES:
                raise WeightFileError(path, f"tensor {name!r} has unsupported dtype {tag}",
                                      kind="unsupported")
            dtype = _DTYPES[tag]
            count = int(np.prod(shape, dtype=np.int64))
            if end - begin != count * dtype.itemsize or data_start + end > len(buf):
                raise WeightFileError(path, f"tensor {name!r}: offsets [{begin}, {end}) do not "
                                      f"hold shape {shape} {tag} inside the file (truncated?)",
                                      kind="bad_format")
            array = np.frombuffer(buf, dtype=dtype, count=count,
                                  offset=data_start + begin).reshape(shape).copy()
            if tag == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            out[name] = array
    return out


def read_checkpoint_tensors(path: str | os.PathLike, prefix: str | None = None
                            ) -> dict[str, np.ndarray]:
    """All tensors of a Hugging Face checkpoint: a ``.safetensors`` file, or a folder with
    ``model.safetensors`` or a sharded ``model.safetensors.index.json``.

    Raises:
      WeightFileError: nothing loadable there (a pickle-based ``pytorch_model.bin`` is
        refused on purpose: unpickling runs code from the file).
    """
    path = pathlib.Path(path)
    if path.is_file():
        return read_safetensors(path, prefix)
    if not path.is_dir():
        raise WeightFileError(path, "no such file or folder", kind="missing_file")
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single, prefix)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WeightFileError(index, f"not a safetensors index ({exc!r})",
                                  kind="bad_format") from None
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(read_safetensors(path / shard, prefix))
        return out
    hint = (" (only a pickle-based pytorch_model.bin is there: re-save it with "
            "safe_serialization=True)") if (path / "pytorch_model.bin").exists() else ""
    raise WeightFileError(path, "no model.safetensors or model.safetensors.index.json in "
                          "this folder" + hint, kind="missing_file")
