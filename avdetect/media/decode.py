"""Decode any common video file into the data contract: RGB frames at a constant 25 fps and
16 kHz mono float32 audio with exactly ``SAMPLES_PER_FRAME`` samples per video frame.

The rules, in one place:

* **Containers** are sniffed from content by FFmpeg (an mp4 named ``.avi`` still decodes);
  ``MediaInfo.container`` is the FFmpeg demuxer that matched, e.g.
  ``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"avi"``, ``"matroska,webm"``.
* **Number of frames T.** The video stream spans ``[start, end)`` where ``start`` is its
  first presentation time and ``end`` its declared end (stream duration, the Matroska
  per-stream ``DURATION`` tag, or, when neither exists, the end of its last packet found
  by demuxing). Output frame ``k`` sits at time ``start + k / fps``; T is the number of such
  times inside ``[start, end)``, i.e. ``ceil((end - start) * fps)`` (with a 1e-3 frame
  tolerance against rounding). A 3 s clip gives 75 frames whatever its source rate; a
  29.97 fps clip of 90 frames (3.003 s) gives 76; a one-frame file gives T = 1.
* **Which source frame is shown at output time t**: the latest decoded frame whose stored
  presentation time is at or before ``t``; before the first frame, the first frame. This
  is right for 29.97/30/50/60 fps and variable frame rate, because it follows timestamps
  rather than counting frames.
* **Corrupt frames** in the middle (the decoder raises on a packet, or flags a frame as
  corrupt) are dropped; by the rule above the previous good frame is then repeated at those
  times. They are counted in ``DecodeStats`` / ``DecodedClip.corrupt_frames`` and reported
  once per file with a ``CorruptFrameWarning``. A file whose decodable video ends well
  before its declared end (truncated) raises ``CorruptMediaError``.
* **Rotation**: a display-matrix rotation (phone videos) is applied, so frames come out
  upright, as players show them.
* **Audio** is resampled by FFmpeg's resampler (PyAV ``AudioResampler``) and downmixed as
  the mean of the channels (librosa's rule; cannot clip). It is placed on the video's time
  axis: audio that starts later than the video is preceded by silence, audio that starts
  earlier is cut, and a packet that fails to decode (or any other hole in the audio
  timestamps) becomes silence of the same length. Finally it is padded with zeros or
  trimmed to ``T * SAMPLES_PER_FRAME`` samples.

Every failure is a typed ``avdetect.errors.MediaError`` naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from avdetect import contract
from avdetect.errors import (
    CorruptMediaError,
    EmptyFileError,
    FileMissingError,
    MediaError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
)

# Frame times are compared with this slack, which only absorbs float rounding: the stored
# timestamps are the truth (Matroska's 1 ms grid stores a 29.97 fps frame due at 200.2 ms as
# 200 ms, so that frame is shown at t = 0.2 s).
_TIME_TOL_S = 1e-6
# T = ceil(duration * fps - _COUNT_TOL): a duration of exactly 3 s must give 75, not 76.
_COUNT_TOL = 1e-3
# Packets read by probe() to judge whether the frame rate is variable.
_VFR_SCAN_PACKETS = 300
# Decoded video may end this much before the declared end before we call the file truncated
# (the last frame's duration is often unknown; metadata is rounded).
_TRUNCATION_SLACK_S = 0.25
_TRUNCATION_SLACK_FRAMES = 3
# A jump in audio timestamps longer than this (a lost packet: 21-64 ms for AAC, Opus, MP3)
# is filled with silence; shorter ones are time-base rounding.
_AUDIO_GAP_S = 0.01

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


class CorruptFrameWarning(UserWarning):
    """Some frames or audio packets of a file could not be decoded and were skipped."""


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


@dataclasses.dataclass
class DecodeStats:
    """Counters filled in while decoding one file (pass one to ``iter_frames``)."""

    source_frames: int = 0      # frames the decoder produced and we used
    corrupt_frames: int = 0     # packets that failed to decode + frames flagged corrupt
    emitted_frames: int = 0     # output frames yielded at the target rate


@dataclasses.dataclass
class DecodedClip:
    """A whole decoded clip: frames uint8 [T, H, W, 3], audio float32 [T * 640] or None
    when the file has no audio stream, and what probe found."""

    frames: np.ndarray
    audio: np.ndarray | None
    info: MediaInfo
    corrupt_frames: int = 0


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


def _open(path: str) -> av.container.InputContainer:
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
                path, f"container header is damaged or the file is truncated ({_why(e)})"
            ) from e
        raise NotMediaError(path, f"not a video or audio file FFmpeg can read ({_why(e)})") from e


def _why(e: BaseException) -> str:
    """A short reason from an FFmpeg error, without the file name PyAV appends."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).split(":")[0].strip() or type(e).__name__


def _video_stream(c: av.container.InputContainer):
    """The first real video stream (cover art in audio files does not count), or None."""
    for s in c.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


def _audio_stream(c: av.container.InputContainer):
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


def _rotation_of(frame) -> int:
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
    c = _open(path)
    try:
        return _probe_open(path, c)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptMediaError(path, f"cannot read the file's streams ({_why(e)})") from e
    finally:
        c.close()


def _probe_open(path: str, c) -> MediaInfo:
    vs, aus = _video_stream(c), _audio_stream(c)
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
    num_frames = _count_frames(duration, contract.VIDEO_FPS)
    if first is not None and num_frames == 0:
        num_frames = 1  # a single frame with no stored duration still shows once

    rotation = _rotation_of(first) if first is not None else 0
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


def _count_frames(duration_s: float, fps: float) -> int:
    """Number of times k / fps (k = 0, 1, ...) inside [0, duration_s)."""
    if duration_s <= 0:
        return 0
    return max(0, math.ceil(duration_s * fps - _COUNT_TOL))


# ----------------------------------------------------------------------------- video

def _target_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """Output (width, height): unchanged, or scaled so the longer side is ``max_side``."""
    if max_side is None or max(w, h) <= max_side:
        return w, h
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _to_array(frame, max_side: int | None, gray: bool) -> np.ndarray:
    """Convert (and downscale, inside swscale) one decoded frame; apply display rotation."""
    k = _rotation_of(frame) // 90               # read before reformat drops the side data
    w, h = _target_size(frame.width, frame.height, max_side)
    fmt = "gray" if gray else "rgb24"
    if (w, h) != (frame.width, frame.height):
        # AREA averages the source pixels a target pixel covers: no aliasing when shrinking.
        frame = frame.reformat(width=w, height=h, format=fmt, interpolation="AREA")
    arr = frame.to_ndarray(format=fmt)          # [h, w, 3] uint8 (or [h, w] if gray)
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    arr.flags.writeable = False                 # the same array may be yielded twice
    return arr


def _decoded_video_frames(c, stream, stats: DecodeStats):
    """Yield decoded frames in presentation order, skipping (and counting) corrupt ones."""
    try:
        for pkt in c.demux(stream):
            try:
                frames = pkt.decode()
            except av.error.FFmpegError:
                stats.corrupt_frames += 1       # this packet's frame is lost
                continue
            for frame in frames:
                if frame.is_corrupt:            # decoded, but with concealed errors
                    stats.corrupt_frames += 1
                    continue
                yield frame
    except (av.error.FFmpegError, OSError):
        # The demuxer itself failed (bytes missing mid-file): stop here; the truncation
        # check in _iter_frames decides whether what we got is acceptable.
        stats.corrupt_frames += 1


def iter_frames(
    path: str | os.PathLike,
    *,
    fps: float = contract.VIDEO_FPS,
    max_side: int | None = None,
    gray: bool = False,
    stats: DecodeStats | None = None,
    info: MediaInfo | None = None,
) -> Iterator[np.ndarray]:
    """Stream a file's frames resampled to a constant ``fps`` by presentation timestamp.

    Yields read-only uint8 arrays, RGB ``[H, W, 3]`` (or ``[H, W]`` when ``gray``), exactly
    ``T`` of them (``probe(path).num_frames`` at 25 fps; see the module docstring for the
    timing rule). ``max_side`` downscales inside FFmpeg's scaler so that the longer side is
    at most ``max_side``. At most two decoded frames are held at any time, so memory does
    not grow with the length of the file. ``stats`` (optional) receives frame counters;
    ``info`` (optional) skips a second probe when the caller already has one.

    Raises ``NoVideoStreamError`` for audio-only files, ``CorruptMediaError`` when no frame
    decodes or the video ends well before its declared end.
    """
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    if not info.has_video:
        raise NoVideoStreamError(path, "has no video stream (audio only)")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    stats = stats if stats is not None else DecodeStats()
    duration = info.duration_s
    total = info.num_frames if fps == contract.VIDEO_FPS else _count_frames(duration, fps)
    start = info.video_start_s
    return _iter_frames(path, info, fps, max_side, gray, stats, total, start)


def _iter_frames(path, info, fps, max_side, gray, stats, total, start):
    c = _open(path)
    try:
        stream = _video_stream(c)
        # Let FFmpeg use frame/slice threads: decoding is the bottleneck on long files.
        stream.thread_type = "AUTO"
        k = 0                       # next output index; output time start + k / fps
        held = None                 # latest decoded frame at or before the current time
        held_arr = None             # its converted array (made once, reused for repeats)
        held_t = -math.inf
        period = 1.0 / info.src_fps if info.src_fps else 1.0 / fps
        for frame in _decoded_video_frames(c, stream, stats):
            t = frame.time if frame.time is not None else held_t + period
            t = max(t, held_t)      # guard against non-monotonic timestamps
            if held is None:
                held, held_arr, held_t = frame, None, t
                stats.source_frames += 1
                continue
            # Every output time before this frame's time shows the held frame.
            while k < total and start + k / fps < t - _TIME_TOL_S:
                if held_arr is None:
                    held_arr = _to_array(held, max_side, gray)
                yield held_arr
                k += 1
                stats.emitted_frames = k
            if k >= total:
                break
            held, held_arr, held_t = frame, None, t
            stats.source_frames += 1

        if held is None:
            raise CorruptMediaError(path, "no video frame could be decoded")
        end = start + info.duration_s
        slack = max(_TRUNCATION_SLACK_S, _TRUNCATION_SLACK_FRAMES * period)
        if k < total and held_t + period < end - slack:
            raise CorruptMediaError(
                path,
                f"video data ends at {held_t + period:.2f} s but the file declares "
                f"{end:.2f} s (truncated or damaged)",
            )
        while k < total:            # the held (last) frame lasts until the end
            if held_arr is None:
                held_arr = _to_array(held, max_side, gray)
            yield held_arr
            k += 1
            stats.emitted_frames = k
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptMediaError(path, f"video decoding failed ({_why(e)})") from e
    finally:
        c.close()
        if stats.corrupt_frames:
            warnings.warn(
                CorruptFrameWarning(
                    f"{path}: {stats.corrupt_frames} corrupt video frame(s) dropped; the "
                    "previous frame was repeated in their place"
                ),
                stacklevel=2,
            )


# ----------------------------------------------------------------------------- audio

def load_audio(
    path: str | os.PathLike,
    *,
    sr: int = contract.AUDIO_SR,
    num_frames: int | None = None,
    info: MediaInfo | None = None,
) -> np.ndarray:
    """Decode the first audio stream to float32 mono ``[N]`` at ``sr`` Hz.

    Any input rate is resampled by FFmpeg's resampler (PyAV ``AudioResampler``); channels
    are then averaged (stereo becomes (L + R) / 2, as librosa's ``to_mono``). When the file
    has video, the audio is placed on the video's time axis (see the module docstring).
    With ``num_frames``, the result is padded with zeros or trimmed to exactly
    ``num_frames * sr / VIDEO_FPS`` samples. Values are clipped to [-1, 1]. Raises ``NoAudioStreamError`` when there is no audio stream.
    """
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    if not info.has_audio:
        raise NoAudioStreamError(path, "has no audio stream")
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    want = None
    if num_frames is not None:
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        want = int(round(num_frames * sr / contract.VIDEO_FPS))

    c = _open(path)
    try:
        chunks, first_t, corrupt = _decode_audio(c, _audio_stream(c), sr, want, info)
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptMediaError(path, f"audio decoding failed ({_why(e)})") from e
    finally:
        c.close()
    if corrupt:
        warnings.warn(
            CorruptFrameWarning(f"{path}: {corrupt} corrupt audio packet(s) skipped; silence "
                                "was put in their place"),
            stacklevel=2,
        )

    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if info.has_video and first_t is not None:
        # Put sample 0 at the video's start time: later audio gets leading silence.
        offset = int(round((first_t - info.video_start_s) * sr))
        if offset > 0:
            audio = np.concatenate([np.zeros(offset, np.float32), audio])
        elif offset < 0:
            audio = audio[-offset:]
    if want is not None:
        audio = _fit(audio, want)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _decode_audio(c, stream, sr: int, want: int | None, info: MediaInfo):
    """Decode ``stream`` to mono pieces at ``sr``. Returns (float32 chunks, presentation
    time of the first decoded frame or None, number of packets that failed to decode).
    Stops early once ``want`` samples (plus margin) exist."""
    chunks: list[np.ndarray] = []     # resampled mono pieces, float32 [n_i]
    have = 0                          # samples in chunks
    corrupt = 0
    first_t = None
    next_t = None                     # where the next decoded frame should start (s)
    resampler = None

    def drain(frames) -> None:
        nonlocal have
        for out in frames:
            chunks.append(_downmix(out.to_ndarray()))       # [channels, n] -> [n]
            have += len(chunks[-1])

    for pkt in c.demux(stream):
        try:
            decoded = pkt.decode()
        except av.error.FFmpegError:
            corrupt += 1
            continue
        for frame in decoded:
            if first_t is None and frame.time is not None:
                first_t = frame.time
            known = frame.time is not None and next_t is not None
            gap = frame.time - next_t if known else 0.0
            if gap > _AUDIO_GAP_S and resampler is not None:
                # Lost packets or a hole in the timestamps: flush what the resampler holds,
                # then insert the missing span as silence so later audio keeps its time.
                drain(resampler.resample(None))
                chunks.append(np.zeros(int(round(gap * sr)), np.float32))
                have += len(chunks[-1])
                resampler = None
            if resampler is None:
                # Resample but keep the channels (planar float): the downmix is ours.
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sr)
            span = frame.samples / frame.sample_rate
            next_t = (frame.time if frame.time is not None else (next_t or 0.0)) + span
            drain(resampler.resample(frame))
        if want is not None and first_t is not None:
            # Enough for the requested span, plus the part cut when audio starts before the
            # video, plus 1 s: stop reading long files here.
            lead = max(0.0, info.video_start_s - first_t) if info.has_video else 0.0
            if have > want + int((lead + 1.0) * sr):
                break
    if resampler is not None:
        drain(resampler.resample(None))
    return chunks, first_t, corrupt


def _downmix(planes: np.ndarray) -> np.ndarray:
    """[channels, n] -> [n] float32: the mean of the channels (librosa's to_mono rule;
    FFmpeg's own stereo->mono matrix sums at -3 dB each and can exceed full scale)."""
    return planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0]


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros or trim ``x`` to exactly ``n`` samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), x.dtype)])


# ----------------------------------------------------------------------------- whole clip

def decode(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    max_frames: int | None = None,
) -> DecodedClip:
    """Decode a whole (short) clip: 25 fps RGB frames and aligned 16 kHz mono audio.

    ``frames`` is uint8 ``[T, H, W, 3]`` with T = ``probe(path).num_frames`` (capped at
    ``max_frames``); ``audio`` is float32 ``[T * SAMPLES_PER_FRAME]``, or None when the file
    has no audio stream (``info.has_audio`` is False: a flag, not an error). Raises
    ``NoVideoStreamError`` for audio-only files and the other typed ``MediaError``s for bad
    files. Use ``iter_frames`` for long videos.
    """
    path = os.fspath(path)
    info = probe(path)
    if not info.has_video:
        raise NoVideoStreamError(path, "has no video stream (audio only)")
    total = info.num_frames if max_frames is None else min(info.num_frames, max(0, max_frames))
    stats = DecodeStats()
    frames: np.ndarray | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptFrameWarning)
        stream = iter_frames(path, max_side=max_side, stats=stats, info=info)
        try:
            for i, arr in zip(range(total), stream):
                if frames is None:                  # allocate once: [T, H, W, 3]
                    frames = np.empty((total, *arr.shape), np.uint8)
                frames[i] = arr
        finally:
            stream.close()                          # closes the container now, not at GC
    for w in caught:                                # re-issue to the caller
        warnings.warn(w.message, w.category, stacklevel=2)
    if frames is None:
        h, w_ = _target_size(info.width or 0, info.height or 0, max_side)[::-1]
        frames = np.zeros((0, h, w_, 3), np.uint8)
    audio = load_audio(path, num_frames=total, info=info) if info.has_audio else None
    return DecodedClip(frames=frames, audio=audio, info=info, corrupt_frames=stats.corrupt_frames)
