"""Reader for CTranslate2 model directories (``model.bin``), written from the format, with
numpy and struct only (no ``ctranslate2`` import: it is a test-only reference here).

A CTranslate2 model directory holds ``model.bin`` (all weights), ``config.json`` (decoding
options only: no layer sizes) and vocabulary files. ``model.bin`` is little-endian:

====================  =========================================================
field                 encoding
====================  =========================================================
binary version        uint32 (this reader accepts 4, 5 and 6; 6 is current)
spec name             string, e.g. ``"WhisperSpec"``
spec revision         uint32 (WhisperSpec is at revision 3)
variable count        uint32
per variable:
  name                string, ``/``-separated path, e.g.
                      ``encoder/layer_0/self_attention/linear_0/weight``
  rank                uint8
  shape               rank x uint32
  dtype id            uint8: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
                      5 bfloat16
  byte count          uint32
  data                byte count bytes, C order
alias count           uint32
per alias:            string alias, string target (another variable's name)
====================  =========================================================

A *string* is a uint16 length that counts a trailing NUL, then that many bytes (UTF-8
text followed by the NUL). Scalars (e.g. ``encoder/num_heads``, int16) are rank 0.

Quantised models store a matrix as int8 (or int16) ``.../weight`` next to a float
``.../weight_scale`` (one scale per output row for int8, one scalar for int16) with
``weight = quantized / weight_scale``; :func:`dequantize` undoes that. AWQ models (with
``weight_zero``) are not supported.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import pathlib
import struct

import numpy as np

from avdetect.pretrained.errors import WeightFileError

# dtype ids of model.bin, in CTranslate2's DataType order. bfloat16 has no numpy dtype:
# it is read as uint16 and widened (its bits are the top half of a float32).
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}
_SUPPORTED_VERSIONS = (4, 5, 6)


@dataclasses.dataclass(frozen=True)
class Ct2Model:
    """The parsed content of a ``model.bin``.

    ``variables`` keeps each array in its stored dtype (bfloat16 already widened to
    float32); ``dtypes`` records the stored dtype name of each variable.
    """

    path: pathlib.Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """The variable called ``name`` (following an alias), or a WeightFileError."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise WeightFileError(self.path, f"variable {name!r} not found in the model "
                                  f"(a {self.spec_name} model)", kind="missing_variable")
        return self.variables[name]


class _Cursor:
    """Sequential little-endian reads over a byte buffer, with bounds checks that name
    the file (a truncated file must not surface as a bare struct.error)."""

    def __init__(self, buf, path: pathlib.Path):
        self.buf, self.pos, self.path = buf, 0, path

    def _need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise WeightFileError(self.path, f"file ends inside {what} at byte {self.pos} "
                                  f"(size {len(self.buf)}): truncated model.bin?",
                                  kind="truncated")

    def unpack_many(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self._need(size, what)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def unpack(self, fmt: str, what: str) -> int:
        return self.unpack_many(fmt, what)[0]

    def string(self, what: str) -> str:
        length = self.unpack("<H", what)
        self._need(length, what)
        raw = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        if length == 0 or raw[-1] != 0:
            raise WeightFileError(self.path, f"{what} is not a NUL-terminated string at byte "
                                  f"{self.pos - length}", kind="bad_format")
        return raw[:-1].decode("utf-8", errors="replace")

    def skip(self, n: int, what: str) -> int:
        self._need(n, what)
        start = self.pos
        self.pos += n
        return start


def _model_bin_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.exists():
        raise WeightFileError(path, "no such file (expected a CTranslate2 model directory "
                              "holding model.bin)", kind="missing_file")
    if path.stat().st_size == 0:
        raise WeightFileError(path, "file is empty", kind="empty_file")
    return path


def read_ct2_model(path: str | os.PathLike, prefix: str | None = None) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (or the directory holding it).

    Args:
      path: ``model.bin`` or its directory.
      prefix: when given, only variables whose name starts with it are loaded (e.g.
        ``"encoder/"`` skips the decoder's bytes), plus the targets of their aliases; the
        alias table is kept whole.
    Returns:
      A :class:`Ct2Model`; arrays are copies, so the file is closed on return.
    Raises:
      WeightFileError: missing/empty/truncated file, unknown version or dtype id.
    """
    path = _model_bin_path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf, path)
        version = cur.unpack("<I", "the binary version")
        if version not in _SUPPORTED_VERSIONS:
            raise WeightFileError(path, f"unsupported CTranslate2 binary version {version} "
                                  f"(this reader handles {_SUPPORTED_VERSIONS}); not a "
                                  "CTranslate2 model.bin?", kind="bad_format")
        spec_name = cur.string("the spec name")
        revision = cur.unpack("<I", "the spec revision")
        count = cur.unpack("<I", "the variable count")
        # Pass 1: headers only (data skipped), then the alias table at the end.
        entries = []                       # (name, shape, dtype name, numpy dtype, offset)
        for index in range(count):
            what = f"variable #{index}"
            name = cur.string(what + " name")
            rank = cur.unpack("<B", what + " rank")
            shape = cur.unpack_many(f"<{rank}I", what + " shape")
            type_id = cur.unpack("<B", what + " dtype")
            nbytes = cur.unpack("<I", what + " byte count")
            if type_id not in _DTYPES:
                raise WeightFileError(path, f"variable {name!r} has unknown dtype id {type_id}",
                                      kind="bad_format")
            dtype_name, dtype = _DTYPES[type_id]
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes != expected:
                raise WeightFileError(path, f"variable {name!r}: {nbytes} bytes stored for "
                                      f"shape {shape} {dtype_name} ({expected} expected)",
                                      kind="bad_format")
            start = cur.skip(nbytes, f"the data of {name!r}")
            entries.append((name, shape, dtype_name, dtype, start))
        aliases: dict[str, str] = {}
        if cur.pos < len(buf):   # older writers may omit the alias block entirely
            for _ in range(cur.unpack("<I", "the alias count")):
                alias = cur.string("an alias name")
                aliases[alias] = cur.string("an alias target")
        # Pass 2: copy out the wanted arrays. The converter aliases duplicated tensors to
        # the alphabetically first copy, so an encoder bias may point into the decoder:
        # alias targets of wanted names are wanted too.
        wanted = None
        if prefix is not None:
            wanted = {t for a, t in aliases.items() if a.startswith(prefix)}
        variables: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for name, shape, dtype_name, dtype, start in entries:
            if wanted is not None and not name.startswith(prefix) and name not in wanted:
                continue
            count_items = int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(buf, dtype=dtype, count=count_items,
                                  offset=start).reshape(shape).copy()
            if dtype_name == "bfloat16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            variables[name] = array
            dtypes[name] = dtype_name
    return Ct2Model(path, version, spec_name, revision, variables, dtypes, aliases)


def dequantize(model: Ct2Model, name: str) -> np.ndarray:
    """Variable ``name`` as float32, undoing int8/int16 quantisation when the model holds
    a ``<name>_scale`` beside it (``float = quantized / scale``, scale per output row)."""
    array = model.get(name)
    scale_name = name + "_scale"
    if model.dtypes.get(model.aliases.get(name, name)) in ("int8", "int16"):
        if (name.rsplit("/", 1)[0] + "/weight_zero") in model.variables:
            raise WeightFileError(model.path, f"{name!r} is AWQ-quantised (has weight_zero): "
                                  "not supported; convert the model without AWQ",
                                  kind="unsupported")
        if scale_name not in model.variables and scale_name not in model.aliases:
            raise WeightFileError(model.path, f"{name!r} is {model.dtypes[name]} without a "
                                  f"{scale_name!r}", kind="bad_format")
        scale = model.get(scale_name).astype(np.float32)
        if scale.ndim == 1 and array.ndim >= 2:
            scale = scale.reshape((-1,) + (1,) * (array.ndim - 1))   # one per output row
        return array.astype(np.float32) / scale
    return array.astype(np.float32)
