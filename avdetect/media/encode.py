"""Write RGB frames and mono float audio into an H.264 + AAC mp4 with PyAV.

The output follows the data contract by default (25 fps, 16 kHz mono) and is byte-for-byte
deterministic for the same input: the colour conversion to yuv420p is done in NumPy
(``rgb_to_yuv420p``), frames are copied into encoder-owned buffers, x264 runs
single-threaded without macroblock-tree rate control (its one source of run-to-run
variation we observed), and no wall-clock metadata (creation time) is written. The same audio samples therefore always give the same AAC packets, whatever
video they are muxed with — the synthetic benchmark relies on this to prove that a face
swap leaves the audio stream untouched.

Timing: video frame k has pts k / fps; audio sample n has pts n / sr. The AAC encoder
delay (1024 priming samples) is recorded in the mp4 edit list, so decoders (FFmpeg, PyAV,
``avdetect.media.decode``) return the audio aligned with the video again.
"""

from __future__ import annotations

import os
import pathlib
from fractions import Fraction

import av
import numpy as np

from avdetect import contract
from avdetect.errors import MediaError

# AAC at 16 kHz mono: 48 kbit/s is transparent enough for speech and keeps files small.
AUDIO_BITRATE = 48_000
# The AAC encoder consumes frames of this many samples; feeding whole frames (the last one
# zero-padded by the encoder itself) keeps packet boundaries independent of the caller.
_AAC_FRAME = 1024


# BT.601 limited ("TV") range, the convention H.264 decoders assume for untagged streams.
_RGB_TO_Y = np.array([65.481, 128.553, 24.966]) / 255.0
_RGB_TO_CB = np.array([-37.797, -74.203, 112.0]) / 255.0
_RGB_TO_CR = np.array([112.0, -93.786, -18.214]) / 255.0


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [T, H, W, 3] (H, W even) -> planar yuv420p [T, 3H/2, W] (Y plane, then
    the U and V planes of H/2 x W/2 each, packed as FFmpeg lays them out).

    Done here in NumPy rather than by FFmpeg's swscale, whose result depends on the
    memory alignment of the input buffer (SIMD or C path, different rounding), which made
    identical frames encode to different bytes from run to run."""
    t, h, w, _ = frames.shape
    rgb = frames.astype(np.float32)
    y = 16.0 + rgb @ _RGB_TO_Y.astype(np.float32)                            # [T, H, W]
    # chroma of the 2x2 block average (MPEG-2 / H.264 "left/centre" siting is close enough)
    blocks = rgb.reshape(t, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4))      # [T, H/2, W/2, 3]
    u = 128.0 + blocks @ _RGB_TO_CB.astype(np.float32)
    v = 128.0 + blocks @ _RGB_TO_CR.astype(np.float32)
    out = np.empty((t, h * 3 // 2, w), np.uint8)
    out[:, :h] = np.clip(np.rint(y), 0, 255)
    chroma = np.stack([u, v], axis=1).reshape(t, 2, -1)                       # [T, 2, H*W/4]
    out[:, h:] = np.clip(np.rint(chroma), 0, 255).reshape(t, h // 2, w)
    return out


def _yuv_frame(yuv: np.ndarray, w: int, h: int) -> av.VideoFrame:
    """A yuv420p VideoFrame holding a copy of one packed [3H/2, W] frame.

    The planes are filled with ``plane.update`` (a copy into the frame's own buffers,
    rows padded to its line size): ``VideoFrame.from_ndarray(..., "yuv420p")`` made the
    encoder produce different bytes for the same input now and then."""
    frame = av.VideoFrame(w, h, "yuv420p")
    chroma = yuv[h:].reshape(2, h // 2, w // 2)          # U then V, packed row-major
    planes = (yuv[:h], chroma[0], chroma[1])
    for plane, data in zip(frame.planes, planes):
        rows, cols = data.shape
        if plane.line_size != cols:
            padded = np.zeros((rows, plane.line_size), np.uint8)
            padded[:, :cols] = data
            data = padded
        plane.update(np.ascontiguousarray(data).tobytes())
    return frame


def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray | None,
              fps: int = contract.VIDEO_FPS, sr: int = contract.AUDIO_SR, crf: int = 23,
              preset: str = "veryfast", audio_bitrate: int = AUDIO_BITRATE) -> pathlib.Path:
    """Encode ``frames`` (uint8 [T, H, W, 3] RGB, H and W even) and ``audio`` (float32 [N]
    mono in [-1, 1], or None for a silent file without an audio stream) into an mp4 at
    ``path`` with H.264 (libx264, yuv420p, constant quality ``crf``) and AAC-LC.

    Returns the path. Raises ``ValueError`` for arrays of the wrong shape or type and
    ``avdetect.errors.MediaError`` (naming the file) when the file cannot be written.
    """
    path = pathlib.Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError(f"{path}: no frames to write")
    if h % 2 or w % 2:
        # yuv420p halves the chroma planes: odd sizes would be silently cropped by x264.
        raise ValueError(f"{path}: frame size {w}x{h} must be even for H.264 yuv420p")
    if audio is not None:
        audio = np.asarray(audio)
        if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"{path}: audio must be float mono [N], got {audio.dtype} "
                             f"{audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise ValueError(f"{path}: audio holds NaN or infinite samples")
        # AAC has no headroom above full scale; clip instead of wrapping around.
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), mode="w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.time_base = Fraction(1, fps)
            vs.codec_context.thread_count = 1
            vs.codec_context.thread_type = "NONE"
            # mbtree off: with x264's macroblock-tree rate control on, the same frames now
            # and then encoded to different bytes (measured: 6 variants in 120 encodes of
            # one clip across two processes; none with it off).
            vs.options = {"crf": str(int(crf)), "preset": preset, "mbtree": "0"}
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=sr)
                astream.layout = "mono"
                astream.bit_rate = int(audio_bitrate)
                astream.time_base = Fraction(1, sr)
                astream.codec_context.thread_count = 1

            yuv = rgb_to_yuv420p(frames)                                  # [T, 3H/2, W]
            for k in range(t):
                frame = _yuv_frame(yuv[k], w, h)
                frame.pts = k
                frame.time_base = Fraction(1, fps)
                container.mux(vs.encode(frame))
            container.mux(vs.encode(None))

            if astream is not None:
                for start in range(0, len(audio), _AAC_FRAME):
                    chunk = audio[start:start + _AAC_FRAME][None, :]     # [1, <=1024] planar
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk),
                                                       format="fltp", layout="mono")
                    frame.sample_rate = sr
                    frame.pts = start
                    frame.time_base = Fraction(1, sr)
                    container.mux(astream.encode(frame))
                container.mux(astream.encode(None))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(path, f"cannot write mp4: {e}") from e
    return path
