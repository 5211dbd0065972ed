"""Opening and probing media files: typed errors for files that are missing, empty, not
media or damaged, and :func:`probe` (streams, source rates, duration, display size and
rotation, and T, the number of 25 fps frames, by the rules in :mod:`avdetect.media.decode`,
which decodes what this module describes).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from fractions import Fraction

import av
import numpy as np

from avdetect import contract
from avdetect.errors import (
    CorruptMediaError,
    EmptyFileError,
    FileMissingError,
    MediaError,
    NotMediaError,
)

# T = ceil(duration * fps - _COUNT_TOL): a duration of exactly 3 s must give 75, not 76.
_COUNT_TOL = 1e-3
# Packets read by probe() to judge whether the frame rate is variable.
_VFR_SCAN_PACKETS = 300

# Magic bytes of containers FFmpeg reads. A file that starts like one of these but cannot be
# opened is damaged (e.g. an mp4 cut before its index), not "not media".
_MAGIC_AT_0 = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
    b"RIFF",              # AVI, WAV
    b"OggS", b"FLV", b"ID3", b"fLaC",
    b"\x00\x00\x01\xba",  # MPEG program stream
    b"\x30\x26\xb2\x75",  # ASF / WMV
)
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` learns about a file without decoding it (beyond its first frame).

    ``duration_s`` is the video stream's duration when there is video (the span T is
    derived from), otherwise the audio stream's. ``num_frames`` is T, the number of 25 fps
    frames ``iter_frames`` yields (0 without video). ``width``/``height`` are the displayed
    size (after rotation, before any ``max_side`` downscale).
    """

    path: str
    container: str
    duration_s: float
    has_video: bool
    has_audio: bool
    src_fps: float | None
    vfr: bool
    width: int | None
    height: int | None
    src_sample_rate: int | None
    src_channels: int | None
    num_frames: int
    video_start_s: float = 0.0
    video_codec: str | None = None
    audio_codec: str | None = None
    rotation: int = 0


# ----------------------------------------------------------------------------- opening

def _check_file(path: str | os.PathLike) -> str:
    """Return ``path`` as str, or raise the typed error for missing / empty / non-files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileMissingError(path, "file does not exist")
    if os.path.isdir(path):
        raise NotMediaError(path, "is a directory, not a media file")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise NotMediaError(path, f"cannot be read ({e.strerror})") from e
    if size == 0:
        raise EmptyFileError(path, "file is empty (0 bytes)")
    return path


def _looks_like_container(path: str) -> bool:
    """True if the first bytes are the signature of a container FFmpeg knows."""
    try:
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return False
    if head.startswith(_MAGIC_AT_0):
        return True
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return True
    # MPEG-TS: a 0x47 sync byte every 188 bytes.
    return len(head) >= 377 and head[0] == head[188] == head[376] == 0x47


def open_container(path: str) -> av.container.InputContainer:
    """Open ``path`` for reading, translating PyAV errors into typed media errors."""
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FileNotFoundError as e:
        raise FileMissingError(path, "file does not exist") from e
    except av.error.PermissionError as e:
        raise NotMediaError(path, "permission denied") from e
    except av.error.FFmpegError as e:
        if _looks_like_container(path):
            raise CorruptMediaError(
                path, f"container header is damaged or the file is truncated ({reason_of(e)})"
            ) from e
        raise NotMediaError(path, f"not a video or audio file FFmpeg can read ({reason_of(e)})") from e


def reason_of(e: BaseException) -> str:
    """A short reason from an FFmpeg error, without the file name PyAV appends."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).split(":")[0].strip() or type(e).__name__


def video_stream(c: av.container.InputContainer):
    """The first real video stream (cover art in audio files does not count), or None."""
    for s in c.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


def audio_stream(c: av.container.InputContainer):
    """The first audio stream FFmpeg can decode, or None (audio is optional: a file whose
    only audio has no decoder reports has_audio False rather than failing)."""
    for s in c.streams.audio:
        if s.codec_context is not None:
            return s
    return None


# ----------------------------------------------------------------------------- probing

_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def _tag_end_s(stream) -> float | None:
    """Matroska's per-stream DURATION tag ("HH:MM:SS.nnnnnnnnn"): the stream's end time."""
    for key, value in stream.metadata.items():
        if key.upper() == "DURATION":
            m = _DURATION_TAG.match(value.strip())
            if m:
                h, mnt, sec = m.groups()
                return int(h) * 3600 + int(mnt) * 60 + float(sec)
    return None


def _scan_packets(c, stream, limit: int | None):
    """Demux up to ``limit`` non-empty packets of ``stream`` (all when None), decoding only
    until the first frame appears. Returns (sorted presentation times in s [n], end time of
    the latest packet in s or None, first decoded frame or None)."""
    tb = stream.time_base
    times, end, first = [], None, None
    for pkt in c.demux(stream):
        if first is None:
            try:
                frames = pkt.decode()
                first = frames[0] if frames else None
            except av.error.FFmpegError:
                pass                # a damaged first packet: the next one may decode
        if pkt.size == 0 or pkt.pts is None:
            continue
        t = float(pkt.pts * tb)
        times.append(t)
        dur = float(pkt.duration * tb) if pkt.duration else 0.0
        end = t + dur if end is None else max(end, t + dur)
        if limit is not None and len(times) >= limit and first is not None:
            break
    times.sort()
    return np.asarray(times, dtype=np.float64), end, first


def _is_vfr(times: np.ndarray, time_base: Fraction | None) -> bool:
    """Variable frame rate: frame-to-frame gaps differ by more than rounding explains."""
    if len(times) < 3:
        return False
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    if len(gaps) < 2:
        return False
    tick = float(time_base) if time_base else 0.0
    spread = float(gaps.max() - gaps.min())
    return spread > max(2.0 * tick, 0.1 * float(np.median(gaps)))


def rotation_of(frame) -> int:
    """Display rotation of a decoded frame, snapped to a multiple of 90 degrees."""
    try:
        rot = frame.rotation
    except Exception:  # noqa: BLE001 - older PyAV or missing side data: assume upright
        return 0
    return int(round((rot or 0) / 90.0)) * 90 % 360


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a media file: streams, source rates, duration, and T (25 fps frame count).

    Cheap: reads the header, up to a few hundred video packets (variable-rate check) and
    the first video frame; only files without any stored video duration are demuxed to the
    end. Raises a typed ``MediaError`` for missing, empty, non-media or damaged files.
    """
    path = _check_file(path)
    c = open_container(path)
    try:
        return _probe_open(path, c)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptMediaError(path, f"cannot read the file's streams ({reason_of(e)})") from e
    finally:
        c.close()


def _probe_open(path: str, c) -> MediaInfo:
    vs, aus = video_stream(c), audio_stream(c)
    if vs is None and aus is None:
        raise NotMediaError(path, "contains no video or audio stream FFmpeg can decode")
    if vs is not None and vs.codec_context is None:
        raise NotMediaError(path, "its video codec has no decoder in this FFmpeg build")
    container = c.format.name

    src_rate = channels = None
    audio_codec = None
    audio_dur = None
    if aus is not None:
        cc = aus.codec_context
        src_rate = (int(cc.sample_rate) or None) if cc is not None else None
        channels = (int(cc.channels) or None) if cc is not None else None
        audio_codec = cc.name if cc is not None else None
        if aus.duration and aus.time_base:
            audio_dur = float(aus.duration * aus.time_base)
        else:
            tag_end = _tag_end_s(aus)
            audio_dur = tag_end - float((aus.start_time or 0) * aus.time_base) if tag_end else None
        if audio_dur is None and c.duration:
            audio_dur = c.duration / av.time_base

    if vs is None:
        return MediaInfo(
            path=path, container=container, duration_s=float(audio_dur or 0.0),
            has_video=False, has_audio=True, src_fps=None, vfr=False, width=None,
            height=None, src_sample_rate=src_rate, src_channels=channels, num_frames=0,
            audio_codec=audio_codec,
        )

    start, end, fps, vfr, first = _video_timing(c, vs)
    duration = max(0.0, end - start)
    num_frames = count_frames(duration, contract.VIDEO_FPS)
    if first is not None and num_frames == 0:
        num_frames = 1  # a single frame with no stored duration still shows once

    rotation = rotation_of(first) if first is not None else 0
    w, h = int(vs.codec_context.width or 0) or None, int(vs.codec_context.height or 0) or None
    if rotation in (90, 270) and w and h:
        w, h = h, w

    return MediaInfo(
        path=path, container=container, duration_s=duration, has_video=True,
        has_audio=aus is not None, src_fps=fps, vfr=vfr, width=w, height=h,
        src_sample_rate=src_rate, src_channels=channels, num_frames=num_frames,
        video_start_s=start, video_codec=vs.codec_context.name, audio_codec=audio_codec,
        rotation=rotation,
    )


def _video_timing(c, vs):
    """(start s, end s, source fps, vfr, first decoded frame) of a video stream.

    The end comes from the stream's stored duration, else Matroska's DURATION tag, else
    (streamed/live files) the last packet found by demuxing the whole stream, else the
    container's duration. Only in the stored cases is the packet scan limited to the first
    few hundred packets (enough to judge the frame rate).
    """
    tb = vs.time_base
    start = float(vs.start_time * tb) if vs.start_time is not None and tb else None
    end = None
    if vs.duration and tb:
        end = (start or 0.0) + float(vs.duration * tb)
    elif _tag_end_s(vs) is not None:
        end = _tag_end_s(vs)
    times, scan_end, first = _scan_packets(c, vs, None if end is None else _VFR_SCAN_PACKETS)
    if start is None:
        start = float(times[0]) if len(times) else 0.0
    vfr = _is_vfr(times, tb)

    fps = float(vs.average_rate) if vs.average_rate else None
    if vfr or not fps or fps > 1000:
        # Measured from timestamps: the stored rate of a VFR stream is only a hint, and AVI
        # stores variable rate as a 1000 fps grid with empty packets.
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        if span > 0:
            fps = (len(times) - 1) / span
    if end is None:
        end = scan_end
        if end is not None and len(times) and end <= times[-1] and fps:
            end = float(times[-1]) + 1.0 / fps  # the last packet had no duration
    if end is None and c.duration:
        end = (c.start_time or 0) / av.time_base + c.duration / av.time_base
    return start, (end if end is not None else start), fps, vfr, first


def count_frames(duration_s: float, fps: float) -> int:
    """Number of times k / fps (k = 0, 1, ...) inside [0, duration_s)."""
    if duration_s <= 0:
        return 0
    return max(0, math.ceil(duration_s * fps - _COUNT_TOL))
