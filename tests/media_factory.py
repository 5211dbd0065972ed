"""Synthesise test media with known content, and the bad kinds of file, for decoder tests
(and for a bad-input corpus later).

Video frames carry their own index: ``FRAME_BITS`` vertical stripes, white for a 1 bit,
black for a 0 bit, most significant bit on the left, over the top three quarters of the
frame (the bottom quarter is a colour that changes with the index, for people looking at
it). ``read_frame_index`` recovers the index from a decoded frame, so a test can tell
exactly which source frame a decoder picked for each output time. Audio is a sine tone of
known frequency and amplitude, optionally starting after a stretch of silence, identical
on every channel.

Everything is written in-process with PyAV (fast, no subprocess), except
``make_long_video`` (the ffmpeg CLI's lavfi ``testsrc2``) and ``add_rotation`` (ffmpeg CLI
stream copy with rotation metadata).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np

from avdetect import contract

FRAME_BITS = 10                      # indices 0..1023
_STRIPES_FRACTION = 0.75             # top part of the frame that holds the stripes

# (video codec, pixel format, audio codec) per container extension.
_CODECS = {
    "mp4": ("libx264", "yuv420p", "aac"),
    "mov": ("libx264", "yuv420p", "aac"),
    "mkv": ("libx264", "yuv420p", "aac"),
    "avi": ("mjpeg", "yuvj420p", "pcm_s16le"),
    "webm": ("libvpx", "yuv420p", "libopus"),
    "m4a": (None, None, "aac"),
    "wav": (None, None, "pcm_s16le"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_VFR_TIME_BASE = Fraction(1, 1000)


@dataclasses.dataclass(frozen=True)
class MadeMedia:
    """What was written: enough to predict what a correct decoder returns."""

    path: pathlib.Path
    container: str
    frame_times: tuple[float, ...]    # presentation time (s) of each source frame, in order
    fps: float | None                 # nominal rate (CFR rate, or the VFR stream's rate hint)
    size: tuple[int, int] | None      # (width, height)
    audio_sr: int | None
    channels: int | None
    tone_hz: float | None
    amplitude: float | None
    tone_start_s: float
    audio_seconds: float
    channel_gains: tuple[float, ...] | None = None


# ----------------------------------------------------------------------------- content

def frame_pattern(index: int, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 [H, W, 3] image encoding ``index`` as FRAME_BITS black/white stripes."""
    w, h = size
    if not 0 <= index < 2**FRAME_BITS:
        raise ValueError(f"frame index {index} does not fit in {FRAME_BITS} bits")
    img = np.zeros((h, w, 3), np.uint8)
    top = int(h * _STRIPES_FRACTION)
    edges = np.linspace(0, w, FRAME_BITS + 1).round().astype(int)
    for b in range(FRAME_BITS):
        if (index >> (FRAME_BITS - 1 - b)) & 1:
            img[:top, edges[b]:edges[b + 1]] = 255
    hue = (index * 37) % 256
    img[top:] = (hue, 255 - hue, (hue * 3) % 256)
    return img


def read_frame_index(frame: np.ndarray) -> int:
    """Recover the index drawn by ``frame_pattern`` from a decoded (possibly scaled, gray)
    frame: the mean brightness of the middle third of each stripe, thresholded at 128."""
    gray = frame.mean(axis=2) if frame.ndim == 3 else frame.astype(np.float64)
    h, w = gray.shape
    top = int(h * _STRIPES_FRACTION)
    band = gray[top // 6: top - top // 6]
    edges = np.linspace(0, w, FRAME_BITS + 1)
    index = 0
    for b in range(FRAME_BITS):
        third = (edges[b + 1] - edges[b]) / 3
        lo, hi = int(round(edges[b] + third)), int(round(edges[b + 1] - third))
        bit = band[:, lo:max(hi, lo + 1)].mean() > 128
        index = (index << 1) | int(bit)
    return index


def tone(seconds: float, sr: int, hz: float, amplitude: float, start_s: float = 0.0):
    """float32 [round(seconds * sr)] sine of ``hz`` that starts at ``start_s`` (silence before)."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = amplitude * np.sin(2 * np.pi * hz * t)
    x[t < start_s] = 0.0
    return x.astype(np.float32)


def vfr_times(seconds: float, seed: int = 0) -> list[float]:
    """Irregular frame times (ms grid) with gaps between 1/60 s and 1/12 s, < ``seconds``."""
    rng = np.random.default_rng(seed)
    gaps_ms = np.array([17, 20, 33, 40, 50, 67, 83])
    times, t = [], 0
    while t / 1000 < seconds:
        times.append(t / 1000)
        t += int(rng.choice(gaps_ms))
    return times


# ----------------------------------------------------------------------------- writing

def make_video(
    path: str | os.PathLike,
    *,
    seconds: float = 1.0,
    fps: float = 25,
    size: tuple[int, int] = (80, 48),
    vfr: bool = False,
    audio_sr: int = 16000,
    channels: int = 1,
    audio: bool = True,
    video: bool = True,
    container: str | None = None,
    tone_hz: float = 440.0,
    amplitude: float = 0.5,
    tone_start_s: float = 0.0,
    audio_seconds: float | None = None,
    channel_gains: tuple[float, ...] | None = None,
    audio_delay_s: float = 0.0,
    num_frames: int | None = None,
    x264_preset: str = "ultrafast",
    seed: int = 0,
) -> MadeMedia:
    """Write a clip whose frames show their index and whose audio is a known tone.

    ``container`` defaults to the extension of ``path`` (mp4, mov, mkv, avi, webm, m4a,
    wav); the codecs are H.264/AAC (mp4, mov, mkv), MJPEG/PCM (avi), VP8/Opus (webm).
    CFR frames sit at k / fps (``fps`` may be fractional, e.g. 30000/1001); with ``vfr``
    they sit at the irregular times of ``vfr_times``. ``num_frames`` overrides the frame
    count (1 gives a single-frame file). Audio lasts ``audio_seconds`` (default
    ``seconds``) and is the same tone on every one of ``channels`` channels, scaled per
    channel by ``channel_gains`` when given (e.g. (1, 0): left only). ``audio_delay_s``
    shifts the audio stream's timestamps (its first sample plays that late).
    """
    path = pathlib.Path(path)
    container = (container or path.suffix.lstrip(".")).lower()
    if container not in _CODECS:
        raise ValueError(f"unsupported container {container!r}; use one of {sorted(_CODECS)}")
    vcodec, pix_fmt, acodec = _CODECS[container]
    if video and vcodec is None:
        raise ValueError(f"container {container!r} is audio-only here")
    if audio and acodec == "libopus" and audio_sr not in _OPUS_RATES:
        raise ValueError(f"Opus (webm) supports {_OPUS_RATES} Hz, not {audio_sr}")
    rate = Fraction(fps).limit_denominator(1001)
    if vfr:
        times = vfr_times(seconds, seed)
    else:
        n = num_frames if num_frames is not None else max(1, int(round(seconds * float(rate))))
        times = [float(k / rate) for k in range(n)]
    if num_frames is not None:
        times = times[:num_frames]
    audio_seconds = seconds if audio_seconds is None else audio_seconds

    fmt = {"mkv": "matroska", "m4a": "ipod"}.get(container, container)
    out = av.open(str(path), mode="w", format=fmt)
    try:
        vs = as_ = None
        if video:
            vs = out.add_stream(vcodec, rate=rate if not vfr else 25)
            vs.width, vs.height = size
            vs.pix_fmt = pix_fmt
            if vcodec == "libx264":
                vs.options = {"preset": x264_preset, "crf": "12"}
            elif vcodec == "mjpeg":
                vs.options = {"qmin": "1", "qmax": "3"}
            elif vcodec == "libvpx":
                vs.options = {"crf": "8", "b": "2M", "deadline": "realtime", "cpu-used": "8"}
            if vfr:
                vs.codec_context.time_base = _VFR_TIME_BASE
                vs.time_base = _VFR_TIME_BASE
        if audio:
            as_ = out.add_stream(acodec, rate=audio_sr, layout="mono" if channels == 1 else
                                 {2: "stereo", 6: "5.1"}.get(channels, f"{channels}c"))
        if vs is not None:
            for i, t in enumerate(times):
                frame = av.VideoFrame.from_ndarray(frame_pattern(i, size), format="rgb24")
                if vfr:
                    frame.pts = int(round(t / _VFR_TIME_BASE))
                    frame.time_base = _VFR_TIME_BASE
                for pkt in vs.encode(frame):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
        if as_ is not None:
            gains = channel_gains if channel_gains is not None else (1.0,) * channels
            if len(gains) != channels:
                raise ValueError(f"channel_gains has {len(gains)} values for {channels} channels")
            _write_audio(out, as_, tone(audio_seconds, audio_sr, tone_hz, amplitude, tone_start_s),
                         gains, int(round(audio_delay_s * audio_sr)))
    finally:
        out.close()
    return MadeMedia(
        path=path, container=container, frame_times=tuple(times) if video else (),
        fps=float(rate) if video and not vfr else (25.0 if video else None),
        size=tuple(size) if video else None,
        audio_sr=audio_sr if audio else None, channels=channels if audio else None,
        tone_hz=tone_hz if audio else None, amplitude=amplitude if audio else None,
        tone_start_s=tone_start_s, audio_seconds=audio_seconds if audio else 0.0,
        channel_gains=tuple(channel_gains) if channel_gains is not None else None,
    )


def _write_audio(out, stream, mono: np.ndarray, gains: tuple[float, ...],
                 first_pts: int = 0) -> None:
    """Encode float32 mono samples, copied to each channel times its gain, in encoder-sized
    frames."""
    cc = stream.codec_context
    fmt = cc.format.name                      # e.g. fltp (aac), s16 (opus, pcm)
    step = cc.frame_size or 1024
    sr = cc.sample_rate
    g = np.asarray(gains, np.float32)[:, None]
    for s in range(0, len(mono), step):
        block = g * mono[None, s:s + step]    # [channels, n]
        if fmt.startswith("s16"):
            block = np.round(block * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            block = np.round(block * 2147483647).astype(np.int32)
        else:
            block = block.astype(np.float32)
        if not fmt.endswith("p"):             # packed: [1, n * channels] interleaved
            block = block.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt,
                                           layout=stream.layout.name)
        frame.sample_rate = sr
        frame.pts = first_pts + s
        frame.time_base = Fraction(1, sr)
        for pkt in stream.encode(frame):
            out.mux(pkt)
    for pkt in stream.encode(None):
        out.mux(pkt)


def make_long_video(path: str | os.PathLike, *, seconds: float = 60, size=(1920, 1080),
                    fps: int = 25, audio: bool = False) -> pathlib.Path:
    """A long, large H.264 video from lavfi ``testsrc2`` via the ffmpeg CLI (ultrafast)."""
    path = pathlib.Path(path)
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "fastdecode",
            "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path


def add_rotation(src: str | os.PathLike, dst: str | os.PathLike, degrees: int) -> pathlib.Path:
    """Copy ``src`` to ``dst`` (mp4) with a display-rotation tag, as phones write."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={degrees}", str(dst)], check=True)
    return pathlib.Path(dst)


# ----------------------------------------------------------------------------- bad kinds

def make_text_file(path: str | os.PathLike) -> pathlib.Path:
    """A plain text file (give it a media extension to fake a video)."""
    path = pathlib.Path(path)
    path.write_text("this is not a video, just some text\n" * 40)
    return path


def make_empty_file(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    path.write_bytes(b"")
    return path


def truncate_copy(src: str | os.PathLike, dst: str | os.PathLike,
                  fraction: float = 0.5) -> pathlib.Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (an interrupted download)."""
    data = pathlib.Path(src).read_bytes()
    pathlib.Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return pathlib.Path(dst)


def faststart_copy(src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
    """Remux an mp4 with its index (moov) first, so a truncated copy still opens."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy",
                    "-movflags", "+faststart", str(dst)], check=True)
    return pathlib.Path(dst)


def copy_as(src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
    """Copy under another name (e.g. an mp4 named .avi)."""
    shutil.copyfile(src, dst)
    return pathlib.Path(dst)


def corrupt_packet(src: str | os.PathLike, dst: str | os.PathLike, index: int, *,
                   kind: str = "video", fill: bytes = b"\x00") -> float:
    """Copy ``src`` to ``dst`` with the bytes of packet ``index`` (presentation order) of the
    first ``kind`` ("video" or "audio") stream overwritten by ``fill``; returns that packet's
    presentation time in seconds."""
    shutil.copyfile(src, dst)
    with av.open(str(src)) as c:
        stream = (c.streams.video if kind == "video" else c.streams.audio)[0]
        pkts = [(p.pts, p.pos, p.size) for p in c.demux(stream) if p.size and p.pts is not None]
        tb = stream.time_base
    pkts.sort()
    pts, pos, size = pkts[index]
    if pos is None or pos < 0:
        raise ValueError(f"{src}: the container does not record packet positions")
    with open(dst, "r+b") as f:
        f.seek(pos)
        f.write((fill * size)[:size])
    return float(pts * tb)


def corrupt_frame(src: str | os.PathLike, dst: str | os.PathLike, index: int,
                  *, fill: bytes = b"\x00") -> float:
    """Damage video frame ``index`` (see ``corrupt_packet``). With an intra-only codec
    (MJPEG in AVI) exactly that one frame becomes undecodable."""
    return corrupt_packet(src, dst, index, kind="video", fill=fill)


# ----------------------------------------------------------------------------- derived clips
# Variants of a real clip made with the ffmpeg CLI (libx264 ultrafast / AAC), for the
# bad-input corpus: same faces and speech, one property changed.

def ffmpeg(*args: str) -> None:
    """Run the ffmpeg CLI quietly; raise CalledProcessError (with its message) on failure."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def transcode(src: str | os.PathLike, dst: str | os.PathLike, *, seconds: float | None = None,
              video_filter: str | None = None, audio_filter: str | None = None,
              video: bool = True, audio: bool = True, sample_rate: int | None = None,
              channels: int | None = None, frames: int | None = None, vfr: bool = False
              ) -> pathlib.Path:
    """Re-encode ``src`` (H.264 ultrafast + AAC, container from ``dst``'s extension)
    changing one thing: length (``seconds`` or ``frames``), an ffmpeg video / audio
    filter, the audio rate or channel count, or a stream dropped (``video`` / ``audio``
    False). ``vfr`` keeps the filtered frames' own timestamps (variable frame rate)
    instead of a constant output rate."""
    args = ["-i", str(src)]
    if seconds is not None:
        args += ["-t", f"{seconds}"]
    if video:
        if video_filter:
            args += ["-vf", video_filter]
        if frames is not None:
            args += ["-frames:v", str(frames)]
        if vfr:
            args += ["-fps_mode", "vfr"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    else:
        args += ["-vn"]
    if audio:
        if audio_filter:
            args += ["-af", audio_filter]
        if sample_rate:
            args += ["-ar", str(sample_rate)]
        if channels:
            args += ["-ac", str(channels)]
        args += ["-c:a", "aac"]
    else:
        args += ["-an"]
    ffmpeg(*args, str(dst))
    return pathlib.Path(dst)


def side_by_side(left: str | os.PathLike, right: str | os.PathLike, dst: str | os.PathLike,
                 seconds: float) -> pathlib.Path:
    """Two clips of equal height next to each other (two faces in every frame); the
    audio of ``left``."""
    ffmpeg("-i", str(left), "-i", str(right), "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]",
           "-map", "[v]", "-map", "0:a", "-t", f"{seconds}", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst))
    return pathlib.Path(dst)


def looped(src: str | os.PathLike, dst: str | os.PathLike, seconds: float) -> pathlib.Path:
    """``src`` repeated (stream copy, no re-encoding) up to ``seconds``: a long file in
    well under a second when ``src`` is small. Keyframes every few frames in ``src``
    keep the cut at ``seconds`` clean."""
    ffmpeg("-stream_loop", "-1", "-i", str(src), "-t", f"{seconds}", "-c", "copy", str(dst))
    return pathlib.Path(dst)


def write_frames(path: str | os.PathLike, frames: list[np.ndarray], crf: int = 10) -> pathlib.Path:
    """Encode RGB uint8 frames [H, W, 3] (even H, W) as a 25 fps H.264 mp4, no audio."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=contract.VIDEO_FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": str(crf)}
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return pathlib.Path(path)
