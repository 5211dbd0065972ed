"""Frame codecs of the shard format and the format constants (no TensorFlow Datasets
import: preprocessing worker processes and Grain workers use this module alone).

Crops are stored one encoded image per frame (PNG or JPEG), so a loader decodes only the
frames of the window it cuts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np

from avdetect import contract

# Bump when the example layout changes; recorded in the metadata, checked by the loader.
SHARD_FORMAT_VERSION = 4   # 2: raw int16 audio stream; 3: float32 posteriors, per-side flags;
                           # 4: 'lips' landmark stream + has_lips
# Formats the loader reads: 3 differs from 4 only by lacking the opt-in 'lips' stream
# (data/windows.py names the rebuild when a config asks a format-3 build for it), so the
# Haar-crop builds of that format stay comparable with today's.
READABLE_SHARD_FORMATS = (3, 4)
TEACHER_DIM_DEFAULT = 40            # the deep_avsr character alphabet size
FRAME_CODECS = ("png", "jpeg")
# The per-record summary written into the metadata for every split, so the loader can
# count windows, filter by method and name videos without reading the (large) records.
INDEX_FIELDS = ("video_id", "num_frames", "label", "category", "method", "identity")


@dataclasses.dataclass(frozen=True)
class EncodingParams:
    """How crops are written into the shards (part of the cache key and the metadata)."""

    mouth_codec: str = "png"        # lossless: the student reads fine lip motion
    face_codec: str = "jpeg"        # face crops are large; JPEG keeps shards small
    jpeg_quality: int = 90
    png_compression: int = 3        # zlib level 0-9; 3 is ~as small as 9 and much faster

    def __post_init__(self):
        for name in ("mouth_codec", "face_codec"):
            if getattr(self, name) not in FRAME_CODECS:
                raise ValueError(f"{name} must be one of {FRAME_CODECS}, "
                                 f"got {getattr(self, name)!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"png_compression must be in 0..9, got {self.png_compression}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def encode_frames(frames: np.ndarray, codec: str, *, jpeg_quality: int = 90,
                  png_compression: int = 3) -> list[bytes]:
    """Encode uint8 frames, one image per frame.

    frames: [N, H, W] grayscale or [N, H, W, 3] RGB. Returns N encoded images.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [N,H,W] or [N,H,W,3], got {frames.dtype} {frames.shape}")
    if codec == "png":
        ext, opts = ".png", [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    elif codec == "jpeg":
        ext, opts = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    else:
        raise ValueError(f"unknown frame codec {codec!r}; expected one of {FRAME_CODECS}")
    out = []
    for frame in frames:
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)   # OpenCV writes BGR
        ok, buf = cv2.imencode(ext, frame, opts)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {frame.shape} frame as {codec}")
        out.append(buf.tobytes())
    return out


def decode_frames(blobs: Sequence[bytes], *, color: bool) -> np.ndarray:
    """Decode encoded frames (PNG or JPEG, detected from the bytes).

    Returns uint8 [N, H, W, 3] RGB when ``color`` else [N, H, W] grayscale.
    """
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    frames = []
    for i, blob in enumerate(blobs):
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), flag)
        if img is None:
            raise ValueError(f"frame {i}: {len(blob)} bytes are not a decodable PNG/JPEG image")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if color else img)
    if not frames:
        raise ValueError("no frames to decode")
    return np.stack(frames)


def contract_constants() -> dict[str, Any]:
    """The data-contract constants a shard was built under (recorded in the metadata)."""
    names = ("VIDEO_FPS", "AUDIO_SR", "SAMPLES_PER_FRAME", "N_MELS", "MEL_WIN", "MEL_HOP",
             "MEL_NFFT", "MEL_FMIN", "MEL_FMAX", "MEL_PER_FRAME", "LOG_FLOOR", "MOUTH_ROI",
             "MOUTH_SIZE")
    return {n.lower(): getattr(contract, n) for n in names}
