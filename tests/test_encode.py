"""avdetect.media.encode.write_mp4: real H.264 + AAC files, aligned, deterministic."""

from __future__ import annotations

import hashlib

import av
import cv2
import numpy as np
import pytest

from avdetect import contract
from avdetect.errors import MediaError
from avdetect.media.encode import rgb_to_yuv420p, write_mp4

T = 50


def _frames(t: int = T, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Smooth moving waves (codec-friendly, chroma varying slowly), different per frame."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for k in range(t):
        out[k, ..., 0] = 128 + 70 * np.sin((xx + 3 * k) / 20)
        out[k, ..., 1] = 128 + 70 * np.sin((yy + 2 * k) / 25)
        out[k, ..., 2] = 128 + 60 * np.sin((xx + yy + 4 * k) / 30)
    return out


def _tone_bursts(t: int = T) -> tuple[np.ndarray, list[int]]:
    """Silence with 10 ms 1 kHz bursts starting at known frames."""
    audio = np.zeros(t * contract.SAMPLES_PER_FRAME, np.float32)
    onsets = [7, 23, 41]
    n = np.arange(160)
    for f in onsets:
        s = f * contract.SAMPLES_PER_FRAME
        audio[s:s + 160] = 0.6 * np.sin(2 * np.pi * 1000 * n / contract.AUDIO_SR)
    return audio, onsets


def _decode(path):
    with av.open(str(path)) as c:
        vs, as_ = c.streams.video[0], c.streams.audio[0]
        info = (vs.codec_context.name, as_.codec_context.name, float(vs.average_rate),
                as_.sample_rate, as_.layout.nb_channels if hasattr(as_.layout, "nb_channels")
                else len(as_.layout.channels))
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray()[0] for f in c.decode(audio=0)]
    return info, frames, np.concatenate(chunks)


def _packets(path, kind: str) -> list[bytes]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [bytes(p) for p in c.demux(stream) if p.size]


def test_roundtrip_codecs_frames_and_audio_alignment(tmp_path):
    frames = _frames()
    audio, onsets = _tone_bursts()
    path = write_mp4(tmp_path / "a.mp4", frames, audio, crf=18)
    info, decoded, pcm = _decode(path)
    assert info == ("h264", "aac", 25.0, 16000, 1)
    assert decoded.shape == frames.shape
    mse = np.mean((decoded.astype(float) - frames.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30          # PSNR of a near-lossless encode
    # FFmpeg's decoder drops the AAC priming samples (mp4 edit list): the bursts come back
    # where they were written, to the sample, and nothing else is audible.
    assert len(pcm) >= len(audio)
    loud = np.flatnonzero(np.abs(pcm) > 0.3)
    starts = loud[np.insert(np.diff(loud) > 100, 0, True)]
    assert [int(round(s / contract.SAMPLES_PER_FRAME)) for s in starts] == onsets
    assert np.all(np.abs(starts - np.array(onsets) * contract.SAMPLES_PER_FRAME) <= 2)
    assert np.corrcoef(pcm[:len(audio)], audio)[0, 1] > 0.98


def test_same_input_same_bytes_and_audio_packets_independent_of_video(tmp_path):
    frames = _frames()
    audio, _ = _tone_bursts()
    a = write_mp4(tmp_path / "a.mp4", frames, audio)
    b = write_mp4(tmp_path / "b.mp4", frames, audio)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    other = write_mp4(tmp_path / "c.mp4", 255 - frames, audio, crf=30)
    assert _packets(a, "video") != _packets(other, "video")
    assert _packets(a, "audio") == _packets(other, "audio")


def test_silent_file_has_no_audio_stream(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", _frames(10), None)
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 0
        assert c.streams.video[0].frames == 10


@pytest.mark.parametrize("frames, audio, match", [
    (np.zeros((5, 32, 32, 3), np.float32), None, "uint8"),
    (np.zeros((5, 32, 32), np.uint8), None, r"\[T, H, W, 3\]"),
    (np.zeros((5, 33, 32, 3), np.uint8), None, "even"),
    (np.zeros((0, 32, 32, 3), np.uint8), None, "no frames"),
    (np.zeros((5, 32, 32, 3), np.uint8), np.zeros((2, 100), np.float32), "mono"),
    (np.zeros((5, 32, 32, 3), np.uint8), np.full(100, np.nan, np.float32), "NaN"),
])
def test_bad_arrays_raise_value_error_naming_the_file(tmp_path, frames, audio, match):
    with pytest.raises(ValueError, match=match) as e:
        write_mp4(tmp_path / "bad.mp4", frames, audio)
    assert "bad.mp4" in str(e.value)


def test_unwritable_destination_is_a_media_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MediaError) as e:
        write_mp4(blocker / "x.mp4", _frames(3), None)
    assert "x.mp4" in str(e.value)


def test_rgb_to_yuv420p_matches_ffmpeg_conversion():
    rng = np.random.default_rng(0)
    frames = np.concatenate([_frames(3), rng.integers(0, 256, (2, 96, 128, 3), np.uint8)])
    mine = rgb_to_yuv420p(frames)
    for k, frame in enumerate(frames):
        ref = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        diff = np.abs(ref.to_ndarray().astype(int) - mine[k])
        # luma: the same BT.601 formula, rounding only. Chroma: swscale's subsampling
        # filter is not a plain 2x2 mean, so compare it only on smooth images.
        assert diff[:96].max() <= 1
        if k < 3:
            assert diff[96:].mean() < 0.5 and diff[96:].max() <= 4


def test_repeated_encodes_are_identical(tmp_path, realav_dir):
    """A real face still moving with sensor noise: content on which x264's mb-tree rate
    control gave a different file in about 1 of 3 encodes. 25 encodes must agree."""
    with av.open(str(realav_dir / "real_video-retalking_5.mp4")) as c:
        still = next(c.decode(video=0)).to_ndarray(format="rgb24")
    still = cv2.resize(still, (160, 160), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(60):
        m = cv2.getRotationMatrix2D((80, 80), 3 * np.sin(k / 7), 1 + 0.02 * np.sin(k / 5))
        m[:, 2] += (4 * np.sin(k / 9), 3 * np.cos(k / 6))
        moved = cv2.warpAffine(still, m, (160, 160), borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(moved + rng.integers(-2, 3, moved.shape), 0, 255).astype(np.uint8))
    frames = np.stack(frames)
    audio = rng.uniform(-0.3, 0.3, 60 * contract.SAMPLES_PER_FRAME).astype(np.float32)
    path = tmp_path / "x.mp4"
    digests = {hashlib.sha256(write_mp4(path, frames, audio, crf=25).read_bytes()).hexdigest()
               for _ in range(25)}
    assert len(digests) == 1
