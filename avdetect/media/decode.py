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
import warnings
from collections.abc import Iterator

import av
import numpy as np

from avdetect import contract
from avdetect.errors import CorruptMediaError, NoAudioStreamError, NoVideoStreamError
# Opening and probing live in avdetect.media.probe (callers import them from there).
from avdetect.media.probe import (MediaInfo, audio_stream, count_frames, open_container, probe,
                                  reason_of, rotation_of, video_stream)

# Frame times are compared with this slack, which only absorbs float rounding: the stored
# timestamps are the truth (Matroska's 1 ms grid stores a 29.97 fps frame due at 200.2 ms as
# 200 ms, so that frame is shown at t = 0.2 s).
_TIME_TOL_S = 1e-6
# Decoded video may end this much before the declared end before we call the file truncated
# (the last frame's duration is often unknown; metadata is rounded).
_TRUNCATION_SLACK_S = 0.25
_TRUNCATION_SLACK_FRAMES = 3
# A jump in audio timestamps longer than this (a lost packet: 21-64 ms for AAC, Opus, MP3)
# is filled with silence; shorter ones are time-base rounding.
_AUDIO_GAP_S = 0.01


class CorruptFrameWarning(UserWarning):
    """Some frames or audio packets of a file could not be decoded and were skipped."""


def _warn_corrupt(message: str) -> None:
    """One CorruptFrameWarning per file, attributed to the caller of the decoding function."""
    warnings.warn(CorruptFrameWarning(message), stacklevel=3)


def _probed(path: str | os.PathLike, info: MediaInfo | None, stream: str
            ) -> tuple[str, MediaInfo]:
    """``path`` as str and its MediaInfo (probed unless the caller has it); the typed
    error when the file lacks the ``stream`` ('video' or 'audio') to decode."""
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    if stream == "video" and not info.has_video:
        raise NoVideoStreamError(path, "has no video stream (audio only)")
    if stream == "audio" and not info.has_audio:
        raise NoAudioStreamError(path, "has no audio stream")
    return path, info


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
    k = rotation_of(frame) // 90               # read before reformat drops the side data
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
    path, info = _probed(path, info, "video")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    stats = stats if stats is not None else DecodeStats()
    duration = info.duration_s
    total = info.num_frames if fps == contract.VIDEO_FPS else count_frames(duration, fps)
    start = info.video_start_s
    return _iter_frames(path, info, fps, max_side, gray, stats, total, start)


def _iter_frames(path, info, fps, max_side, gray, stats, total, start):
    c = open_container(path)
    try:
        stream = video_stream(c)
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
        raise CorruptMediaError(path, f"video decoding failed ({reason_of(e)})") from e
    finally:
        c.close()
        if stats.corrupt_frames:
            _warn_corrupt(f"{path}: {stats.corrupt_frames} corrupt video frame(s) dropped; "
                          "the previous frame was repeated in their place")


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
    path, info = _probed(path, info, "audio")
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    want = None
    if num_frames is not None:
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        want = int(round(num_frames * sr / contract.VIDEO_FPS))

    c = open_container(path)
    try:
        chunks, first_t, corrupt = _decode_audio(c, audio_stream(c), sr, want, info)
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptMediaError(path, f"audio decoding failed ({reason_of(e)})") from e
    finally:
        c.close()
    if corrupt:
        _warn_corrupt(f"{path}: {corrupt} corrupt audio packet(s) skipped; silence was put "
                      "in their place")

    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if info.has_video and first_t is not None:
        # Put sample 0 at the video's start time: later audio gets leading silence.
        offset = int(round((first_t - info.video_start_s) * sr))
        if offset > 0:
            audio = np.concatenate([np.zeros(offset, np.float32), audio])
        elif offset < 0:
            audio = audio[-offset:]
    if want is not None:
        audio = contract.fit_length(audio, want)     # zeros: missing audio is silence
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
    path, info = _probed(path, None, "video")
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
