"""Decoding: timestamp resampling to 25 fps, containers, audio resampling and downmix,
alignment, rotation, real fixture clips against the ffmpeg CLI, bounded memory."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import media_factory as mf
from avdetect import contract
from avdetect.media import decode as D
from avdetect.media.probe import probe

CONTAINERS = ("mp4", "mov", "mkv", "avi", "webm")
RATES = (25, 30000 / 1001, 30, 50, 60, "vfr")
SECONDS = 1.2


# Matroska (mkv, webm) stores timestamps on a 1 ms grid; the others keep them exact here.
TIME_GRID = {"mkv": 1e-3, "webm": 1e-3}


def expected_indices(frame_times, n_out, fps=contract.VIDEO_FPS, grid=None):
    """Reference rule, written independently: the last source frame whose (stored) time is
    at or before k / fps."""
    times = np.asarray(frame_times)
    if grid:
        times = np.round(times / grid) * grid
    out = []
    for k in range(n_out):
        t = k / fps
        before = np.nonzero(times <= t + 1e-9)[0]
        out.append(int(before[-1]) if len(before) else 0)
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One clip per (container, rate); webm gets 48 kHz audio (Opus), others 44.1 kHz."""
    root = tmp_path_factory.mktemp("decode")
    clips = {}
    for ext in CONTAINERS:
        for rate in RATES:
            name = f"r{rate if rate != 'vfr' else 'vfr'}".replace(".", "_")
            clips[ext, rate] = mf.make_video(
                root / f"{name}.{ext}", seconds=SECONDS, fps=25 if rate == "vfr" else rate,
                vfr=rate == "vfr", audio_sr=48000 if ext == "webm" else 44100, channels=2,
            )
    return clips


@pytest.mark.parametrize("ext", CONTAINERS)
@pytest.mark.parametrize("rate", RATES, ids=lambda r: str(r)[:5])
def test_picks_latest_frame_at_each_output_time(made, ext, rate):
    m = made[ext, rate]
    clip = D.decode(m.path)
    info = clip.info
    n_src = len(m.frame_times)
    if rate == "vfr":
        assert info.vfr
        # The declared end depends on how the muxer times the last frame: within one gap.
        assert m.frame_times[-1] < info.duration_s <= m.frame_times[-1] + 0.1
    else:
        assert not info.vfr
        assert info.src_fps == pytest.approx(rate, rel=1e-3)
        assert info.duration_s == pytest.approx(n_src / rate, abs=2e-3)
    # T: output times k/25 inside [0, duration).
    t_expected = sum(1 for k in range(10_000) if k / 25 < info.duration_s - 1e-6)
    assert info.num_frames == t_expected
    assert clip.frames.shape == (t_expected, m.size[1], m.size[0], 3)
    got = [mf.read_frame_index(f) for f in clip.frames]
    assert got == expected_indices(m.frame_times, t_expected, grid=TIME_GRID.get(ext))
    assert clip.audio.shape == (t_expected * contract.SAMPLES_PER_FRAME,)
    assert clip.audio.dtype == np.float32
    assert clip.info.src_sample_rate == m.audio_sr and clip.info.src_channels == 2
    assert clip.corrupt_frames == 0


@pytest.mark.parametrize("ext,demuxer", [("mp4", "mp4"), ("mov", "mov"), ("mkv", "matroska"),
                                         ("avi", "avi"), ("webm", "webm")])
def test_container_is_sniffed_and_reported(made, ext, demuxer):
    info = probe(made[ext, 25].path)
    assert demuxer in info.container.split(",")
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == made[ext, 25].size


def test_other_output_rates_and_iter_matches_decode(made):
    m = made["mp4", 30]
    clip = D.decode(m.path)
    streamed = list(D.iter_frames(m.path))
    assert len(streamed) == len(clip.frames)
    assert all(np.array_equal(a, b) for a, b in zip(streamed, clip.frames))
    assert not streamed[0].flags.writeable         # repeats share one read-only array
    ten = [mf.read_frame_index(f) for f in D.iter_frames(m.path, fps=10)]
    n10 = math.ceil(len(m.frame_times) / 30 * 10 - 1e-6)
    assert ten == expected_indices(m.frame_times, n10, fps=10)


def test_b_frames_at_29_97(tmp_path):
    # x264 "medium" reorders frames (B-frames): presentation order must still be followed.
    m = mf.make_video(tmp_path / "b.mp4", seconds=2.0, fps=30000 / 1001, x264_preset="medium",
                      audio=False)
    clip = D.decode(m.path)
    assert clip.audio is None
    assert [mf.read_frame_index(f) for f in clip.frames] == expected_indices(
        m.frame_times, clip.info.num_frames)
    assert clip.info.num_frames == math.ceil(60 * 1001 / 30000 * 25)   # 60 frames = 2.002 s


def test_max_side_and_gray(made):
    m = made["mkv", 50]
    rgb = D.decode(m.path).frames
    small = D.decode(m.path, max_side=40).frames
    assert small.shape[1:] == (24, 40, 3)                   # 80x48 -> 40x24
    assert [mf.read_frame_index(f) for f in small] == [mf.read_frame_index(f) for f in rgb]
    gray = np.stack(list(D.iter_frames(m.path, gray=True)))
    assert gray.shape == rgb.shape[:3] and gray.dtype == np.uint8
    # Gray is luma: compare with BT.601 weights applied to the RGB decode.
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray - luma).mean() < 3.0


def test_max_side_never_upscales(made):
    m = made["avi", 25]
    assert D.decode(m.path, max_side=500).frames.shape[1:3] == (48, 80)
    assert D.decode(m.path, max_frames=7).frames.shape[0] == 7
    assert D.decode(m.path, max_frames=7).audio.shape == (7 * 640,)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels,gains", [(1, None), (2, None), (2, (1.0, 0.0))],
                         ids=["mono", "stereo", "left-only"])
def test_audio_resampled_and_downmixed(tmp_path, sr, channels, gains):
    hz, amp = 1000.0, 0.5
    m = mf.make_video(tmp_path / "a.mp4", seconds=1.0, audio_sr=sr, channels=channels,
                      channel_gains=gains, tone_hz=hz, amplitude=amp)
    info = probe(m.path)
    assert (info.src_sample_rate, info.src_channels) == (sr, channels)
    audio = D.load_audio(m.path, num_frames=25)
    assert audio.shape == (16000,) and audio.dtype == np.float32
    seg = audio[2000:14000]                                  # skip codec edges
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    peak_hz = np.argmax(spectrum) * contract.AUDIO_SR / len(seg)
    assert abs(peak_hz - hz) <= contract.AUDIO_SR / len(seg)
    # Mean of the channels: the RMS of the tone times the mean gain.
    mean_gain = np.mean(gains) if gains else 1.0
    rms = np.sqrt(np.mean(seg.astype(np.float64) ** 2))
    assert rms == pytest.approx(amp / np.sqrt(2) * mean_gain, rel=0.03)


def test_six_channel_pcm_is_averaged(tmp_path):
    gains = (1.0, 0.5, 0.0, 0.0, 0.25, 0.25)
    m = mf.make_video(tmp_path / "six.avi", seconds=1.0, audio_sr=48000, channels=6,
                      channel_gains=gains, tone_hz=500, amplitude=0.6)
    audio = D.load_audio(m.path)
    ref = mf.tone(1.0, 16000, 500, 0.6) * np.mean(gains)
    assert np.sqrt(np.mean(audio[1000:15000] ** 2)) == pytest.approx(
        np.sqrt(np.mean(ref[1000:15000] ** 2)), rel=0.02)


@pytest.mark.parametrize("ext,sr", [("mp4", 44100), ("avi", 22050), ("webm", 48000),
                                    ("mkv", 8000)])
def test_audio_onset_stays_in_place(tmp_path, ext, sr):
    # Silence then a tone from 0.5 s: codec priming and resampling must not shift it.
    m = mf.make_video(tmp_path / f"on.{ext}", seconds=1.0, audio_sr=sr, tone_start_s=0.5,
                      tone_hz=800, amplitude=0.5)
    audio = D.load_audio(m.path, num_frames=25)
    onset = np.argmax(np.abs(audio) > 0.25) / contract.AUDIO_SR
    assert onset == pytest.approx(0.5, abs=0.003)
    assert np.abs(audio[: int(0.45 * 16000)]).max() < 0.02


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm"])
def test_late_audio_is_placed_on_the_video_time_axis(tmp_path, ext):
    m = mf.make_video(tmp_path / f"late.{ext}", seconds=1.0, audio_sr=48000,
                      audio_delay_s=0.3, audio_seconds=0.7)
    clip = D.decode(m.path)
    onset = np.argmax(np.abs(clip.audio) > 0.25) / contract.AUDIO_SR
    assert onset == pytest.approx(0.3, abs=0.003)
    assert clip.audio.shape == (25 * 640,)


def test_rotation_matches_ffmpeg_autorotate(tmp_path):
    m = mf.make_video(tmp_path / "src.mp4", seconds=0.4, size=(64, 32), audio=False)
    rot = mf.add_rotation(m.path, tmp_path / "rot.mp4", 90)
    clip = D.decode(rot)
    assert clip.info.rotation in (90, 270) and (clip.info.width, clip.info.height) == (32, 64)
    assert clip.frames.shape[1:] == (64, 32, 3)
    ref = _ffmpeg_rgb(rot, 32, 64)                           # ffmpeg autorotates by default
    assert np.abs(clip.frames[: len(ref)].astype(int) - ref).mean() < 2.0
    small = D.decode(rot, max_side=32).frames                # rotation survives downscaling
    assert small.shape[1:] == (32, 16, 3)
    assert np.abs(small[0].astype(int) - ref[0, ::2, ::2]).mean() < 20


def _ffmpeg_rgb(path, w, h):
    """Independent reference: the ffmpeg CLI's rgb24 frames, [N, h, w, 3]."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).astype(int)


def test_fixture_clips(realav_clips):
    for path in realav_clips:
        info = probe(path)
        assert info.src_fps == pytest.approx(25) and info.src_sample_rate == 16000
        assert info.num_frames == math.ceil(info.duration_s * 25 - 1e-3)
        assert 2.0 <= info.duration_s <= 8.5
        assert max(info.width, info.height) <= 360
    # Full decode of a few clips, checked against the ffmpeg CLI (25 fps source: 1:1 frames).
    for path in realav_clips[::5]:
        clip = D.decode(path)
        info = clip.info
        assert clip.frames.shape == (info.num_frames, info.height, info.width, 3)
        assert clip.audio.shape == (info.num_frames * 640,)
        ref = _ffmpeg_rgb(path, info.width, info.height)
        assert len(ref) == info.num_frames
        diff = np.abs(clip.frames.astype(int) - ref)
        assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 4
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le",
                              "-ac", "1", "-ar", "16000", "-"], check=True,
                             capture_output=True).stdout
        ref_audio = np.frombuffer(raw, np.float32)
        n = min(len(ref_audio), len(clip.audio))
        assert n >= len(clip.audio) - 640
        np.testing.assert_allclose(clip.audio[:n], ref_audio[:n], atol=1e-4)


_MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    from avdetect.media.decode import iter_frames
    def rss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = 0
    for n, frame in enumerate(iter_frames(sys.argv[1]), 1):
        if n == 10:
            base = rss_mb()
    print(json.dumps({"frames": n, "shape": frame.shape, "base_mb": base, "peak_mb": rss_mb()}))
""")


def test_long_video_streams_in_bounded_memory(tmp_path):
    # 60 s of 1080p (5 fps keeps generation quick; the 25 fps output still has 1500 frames,
    # 9.3 GB if held). Peak RSS of a fresh process must barely move after the first frames.
    path = mf.make_long_video(tmp_path / "long.mp4", seconds=60, size=(1920, 1080), fps=5)
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path)], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["frames"] == 60 * contract.VIDEO_FPS
    assert r["shape"] == [1080, 1920, 3]
    assert r["peak_mb"] - r["base_mb"] < 100, r


@pytest.mark.parametrize("remux", [
    ["-f", "mpegts"],                   # timestamps start at 1.4 s, not 0
    ["-f", "matroska"],                 # written to a pipe: no durations stored at all
])
def test_nonzero_start_and_missing_durations(tmp_path, remux):
    m = mf.make_video(tmp_path / "src.mp4", seconds=1.2, fps=30, tone_start_s=0.5,
                      audio_sr=44100)
    out = tmp_path / "remuxed.bin"
    with open(out, "wb") as f:          # stdout is not seekable: the muxer cannot go back
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(m.path), "-c", "copy", *remux,
                        "-"], check=True, stdout=f)
    clip = D.decode(out)
    assert clip.info.num_frames == 30 and clip.info.duration_s == pytest.approx(1.2, abs=2e-3)
    assert [mf.read_frame_index(f) for f in clip.frames] == expected_indices(
        m.frame_times, 30, grid=1e-3 if "matroska" in remux else None)
    onset = np.argmax(np.abs(clip.audio) > 0.25) / contract.AUDIO_SR
    assert onset == pytest.approx(0.5, abs=0.003)          # audio stays on the video's clock
