"""Metric writers that need no TensorFlow.

* ``JsonlWriter``   one JSON object per line in ``<logdir>/metrics.jsonl``:
                    ``{"kind": "scalars", "step": 100, "time": ..., "train/loss": 0.61}``.
                    Flushed on every write, so a killed job loses nothing it logged. A
                    resumed job appends; a step logged twice (after the last checkpoint
                    and again after the restart) appears twice, the later line wins.
* ``EventFileWriter`` TensorBoard event files (``events.out.tfevents.*``) written by
                    hand: TFRecord framing (length, masked CRC32C) around ``Event``
                    protocol buffers holding ``Summary.Value.simple_value`` scalars. The
                    wire format is public and tiny, so no TensorFlow / tensorboard
                    package is needed to *write*; TensorBoard reads the files as usual
                    (checked with tensorboard 2.21's EventAccumulator).
* ``MultiWriter``   fan-out; ``create_default_writer`` builds JSONL + events on process
                    0 and a writer that drops everything on other processes.

(clu's own ``metric_writers`` imports TensorFlow unconditionally, hence these.)
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from typing import Any, Mapping, Protocol, Sequence

import numpy as np


class MetricWriter(Protocol):
    """What the trainer needs from a writer."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...
    def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _to_float(value: Any) -> float:
    return float(np.asarray(value).astype(np.float64).reshape(()))


def _json_number(x: float) -> float | str:
    # JSON has no NaN/inf: write them as strings so every line stays strict JSON.
    return x if math.isfinite(x) else str(x)


class JsonlWriter:
    """Appends scalars as JSON lines to ``<logdir>/metrics.jsonl``."""

    def __init__(self, logdir: str | os.PathLike, filename: str = "metrics.jsonl"):
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(os.fspath(logdir), filename)
        self._f = open(self.path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"kind": "scalars", "step": int(step), "time": time.time()}
        row.update({k: _json_number(_to_float(v)) for k, v in scalars.items()})
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        row = {"kind": "hparams", "time": time.time(),
               "hparams": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                           for k, v in hparams.items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All rows of a metrics.jsonl file (for tools and tests)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------
# TensorBoard event files, TF-free
# ----------------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli polynomial, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord framing uses."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant (mod 2**32)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes) -> bytes:
    """One TFRecord: u64 length, masked CRC of the length, payload, masked CRC of it."""
    header = struct.pack("<Q", len(payload))
    return (header + struct.pack("<I", masked_crc32c(header)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:   # wire type 2
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    """Serialized ``tensorflow.Event`` (event.proto: wall_time=1 double, step=2 int64,
    file_version=3 string, summary=5 Summary{value=1 repeated Value{tag=1 string,
    simple_value=2 float}})."""
    out = bytearray(_varint(1 << 3 | 1) + struct.pack("<d", wall_time))
    if step:
        out += _varint(2 << 3 | 0) + _varint(int(step))
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = bytearray()
        for tag, value in scalars.items():
            val = _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
            summary += _field_bytes(1, val)
        out += _field_bytes(5, bytes(summary))
    return bytes(out)


class EventFileWriter:
    """Scalars as TensorBoard event records in ``<logdir>/events.out.tfevents.<t>.<host>``."""

    def __init__(self, logdir: str | os.PathLike):
        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(os.fspath(logdir), name)
        self._f = open(self.path, "ab")
        self._f.write(tfrecord_frame(encode_event(now, 0, file_version="brain.Event:2")))
        self._f.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: _to_float(v) for k, v in scalars.items()}
        self._f.write(tfrecord_frame(encode_event(time.time(), step, scalars=values)))
        self._f.flush()

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        del hparams  # the hparams plugin format is not worth it: config.json holds them

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class MultiWriter:
    """Writes to every writer it holds."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def create_default_writer(logdir: str | os.PathLike, *, process_index: int = 0,
                          tensorboard: bool = True) -> MultiWriter:
    """JSON lines (+ TensorBoard events unless ``tensorboard=False``) on process 0; a
    writer that writes nothing on the other processes (they hold the same numbers)."""
    if process_index != 0:
        return MultiWriter([])
    writers: list[MetricWriter] = [JsonlWriter(logdir)]
    if tensorboard:
        writers.append(EventFileWriter(logdir))
    return MultiWriter(writers)
