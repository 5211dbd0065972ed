"""The shard format: the TFDS FeaturesDict of one video-level example, the per-frame image
codecs, and the dataset metadata that records how every example was made.

One example is one whole video (variable length T). Crops are stored as one encoded image
per frame so the Grain pipeline decodes only the frames of the window it cuts, never the
whole video. Everything here reads back through ``tfds.data_source`` without TensorFlow.

Example fields (T frames, K teacher classes, S face side):

    video_id        text    unique key of the clip inside the dataset
    source_path     text    path of the source file, relative to the dataset root
    num_frames      int32   T
    mouth           bytes [T]   encoded grayscale 88x88 mouth crops (PNG by default)
    face            bytes [T]   encoded RGB SxS face crops (JPEG by default)
    logmel          float16 [4T, 80]
    face_found      bool [T]    the face detector found a face in that frame
    boxes           float32 [T, 4]  face box (x0, y0, x1, y1) in source pixels
    has_audio       bool    False: no usable audio track, logmel is zeros
    audio_source    text    where the audio came from ('' = the clip itself)
    teacher_audio   float16 [T, K]  per-frame posteriors of the audio teacher (zeros if absent)
    teacher_video   float16 [T, K]  per-frame posteriors of the visual teacher
    has_teacher     bool
    label           ClassLabel(real, fake)
    video_fake      bool, audio_fake bool
    category        ClassLabel(RVRA, RVFA, FVRA, FVFA)
    method          text    generation method ('real' for real clips)
    identity        text    identity shown in the video
    src_fps, src_sample_rate, duration_s   what the source file had before resampling
    attributes      text    JSON object of dataset-specific row fields (race, gender, ...)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from avdetect import contract

# Bump when the example layout changes; recorded in the metadata, checked by the loader.
SHARD_FORMAT_VERSION = 1
TEACHER_DIM_DEFAULT = 40            # the deep_avsr character alphabet size
FRAME_CODECS = ("png", "jpeg")


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
                raise ValueError(f"{name} must be one of {FRAME_CODECS}, got {getattr(self, name)!r}")
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


def clip_features(teacher_dim: int = TEACHER_DIM_DEFAULT) -> tfds.features.FeaturesDict:
    """The FeaturesDict every avdetect dataset shares (see the module docstring)."""
    Tensor = tfds.features.Tensor
    return tfds.features.FeaturesDict({
        "video_id": tfds.features.Text(),
        "source_path": tfds.features.Text(),
        "num_frames": np.int32,
        "mouth": Tensor(shape=(None,), dtype=np.object_),
        "face": Tensor(shape=(None,), dtype=np.object_),
        "logmel": Tensor(shape=(None, contract.N_MELS), dtype=np.float16),
        "face_found": Tensor(shape=(None,), dtype=np.bool_),
        "boxes": Tensor(shape=(None, 4), dtype=np.float32),
        "has_audio": np.bool_,
        "audio_source": tfds.features.Text(),
        "teacher_audio": Tensor(shape=(None, teacher_dim), dtype=np.float16),
        "teacher_video": Tensor(shape=(None, teacher_dim), dtype=np.float16),
        "has_teacher": np.bool_,
        "label": tfds.features.ClassLabel(names=list(contract.LABEL_NAMES)),
        "video_fake": np.bool_,
        "audio_fake": np.bool_,
        "category": tfds.features.ClassLabel(names=list(contract.CATEGORIES)),
        "method": tfds.features.Text(),
        "identity": tfds.features.Text(),
        "src_fps": np.float32,
        "src_sample_rate": np.int32,
        "duration_s": np.float32,
        "attributes": tfds.features.Text(),
    })


def contract_constants() -> dict[str, Any]:
    """The data-contract constants a shard was built under (recorded in the metadata)."""
    names = ("VIDEO_FPS", "AUDIO_SR", "SAMPLES_PER_FRAME", "N_MELS", "MEL_WIN", "MEL_HOP",
             "MEL_NFFT", "MEL_FMIN", "MEL_FMAX", "MEL_PER_FRAME", "LOG_FLOOR", "MOUTH_ROI",
             "MOUTH_SIZE")
    return {n.lower(): getattr(contract, n) for n in names}


def attributes_json(attrs: Mapping[str, Any]) -> str:
    """Dataset-specific row fields as a stable JSON string (sorted keys)."""
    return json.dumps({str(k): attrs[k] for k in sorted(attrs)}, default=str)


# ---------------------------------------------------------------------------------------
# Split index: the per-record summary written into the metadata, so the loader can count
# windows, filter by method and name videos without reading the (large) records.
# ---------------------------------------------------------------------------------------

INDEX_FIELDS = ("video_id", "num_frames", "label", "category", "method", "identity")


def read_metadata(data_source) -> dict[str, Any]:
    """The avdetect metadata of an opened ``tfds.data_source`` ({} if it has none)."""
    info = getattr(data_source, "dataset_info", None)
    meta = getattr(info, "metadata", None)
    return dict(meta) if meta else {}
