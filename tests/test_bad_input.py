"""Bad input: every kind gives a typed MediaError naming the file and the problem (never a
PyAV traceback), or, where the file is usable, the documented behaviour."""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest

import media_factory as mf
from avdetect import errors
from avdetect.media import decode as D
from avdetect.media.probe import probe

ENTRY_POINTS = {
    "probe": probe,
    "iter_frames": lambda p: list(D.iter_frames(p)),
    "load_audio": D.load_audio,
    "decode": D.decode,
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A clean 1.2 s mp4 (moov at the end, as ffmpeg writes by default) and its copies."""
    root = tmp_path_factory.mktemp("bad")
    m = mf.make_video(root / "good.mp4", seconds=1.2, size=(64, 48))
    return root, m


def _bad_files(root, good_path):
    """name -> (path, expected error class) for files no entry point can use."""
    return {
        "missing": (root / "does_not_exist.mp4", errors.FileMissingError),
        "zero_byte": (mf.make_empty_file(root / "empty.mp4"), errors.EmptyFileError),
        "text_as_mp4": (mf.make_text_file(root / "notes.mp4"), errors.NotMediaError),
        "random_bytes_as_avi": (_random_file(root / "noise.avi"), errors.NotMediaError),
        "directory": (root, errors.NotMediaError),
        "truncated_mp4": (mf.truncate_copy(good_path, root / "half.mp4", 0.5),
                          errors.CorruptMediaError),
        "truncated_header": (mf.truncate_copy(good_path, root / "head.mp4", 0.002),
                             errors.CorruptMediaError),
    }


def _random_file(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    return path


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_unusable_files_raise_typed_errors_naming_the_file(good, entry):
    root, m = good
    for name, (path, expected) in _bad_files(root, m.path).items():
        with pytest.raises(errors.MediaError) as info:
            ENTRY_POINTS[entry](path)
        err = info.value
        assert type(err) is expected, (name, type(err), err)
        assert not isinstance(err, av.error.FFmpegError)
        assert err.path == str(path) and str(path) in str(err)
        assert err.reason and err.kind == expected.kind


def test_truncated_faststart_mp4_fails_at_decode(good, tmp_path):
    # With the index first, half a file still opens; the missing data is found while decoding.
    _, m = good
    fast = mf.faststart_copy(m.path, tmp_path / "fast.mp4")
    half = mf.truncate_copy(fast, tmp_path / "fast_half.mp4", 0.5)
    info = probe(half)                                     # header is intact
    assert info.num_frames == 30
    with pytest.raises(errors.CorruptMediaError, match="truncated"):
        D.decode(half)


def test_truncated_mkv_fails_at_decode(tmp_path):
    m = mf.make_video(tmp_path / "clip.mkv", seconds=2.0)
    half = mf.truncate_copy(m.path, tmp_path / "half.mkv", 0.5)
    with pytest.raises(errors.CorruptMediaError, match="truncated") as info:
        D.decode(half)
    assert str(half) in str(info.value)


def test_audio_only_file(tmp_path):
    m = mf.make_video(tmp_path / "speech.m4a", seconds=1.0, video=False, audio_sr=22050)
    info = probe(m.path)
    assert not info.has_video and info.has_audio and info.num_frames == 0
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    for call in (D.decode, lambda p: D.iter_frames(p)):
        with pytest.raises(errors.NoVideoStreamError) as err:
            call(m.path)
        assert str(m.path) in str(err.value)
    audio = D.load_audio(m.path)                             # the audio is still usable
    assert len(audio) == pytest.approx(16000, abs=1100)      # + AAC's final partial frame


def test_video_without_audio_is_a_flag_not_an_error(tmp_path):
    m = mf.make_video(tmp_path / "silent.mp4", seconds=1.0, audio=False)
    clip = D.decode(m.path)
    assert clip.audio is None and not clip.info.has_audio
    assert clip.frames.shape[0] == 25
    with pytest.raises(errors.NoAudioStreamError) as err:
        D.load_audio(m.path)
    assert str(m.path) in str(err.value)


@pytest.mark.parametrize("ext", ["mp4", "avi", "webm"])
def test_single_frame_decodes_to_one_frame(tmp_path, ext):
    m = mf.make_video(tmp_path / f"one.{ext}", num_frames=1, audio_sr=16000)
    clip = D.decode(m.path)
    assert clip.info.num_frames == 1
    assert clip.frames.shape == (1, 48, 80, 3)
    assert mf.read_frame_index(clip.frames[0]) == 0
    assert clip.audio.shape == (640,)


@pytest.mark.parametrize("src_ext,wrong_ext", [("mp4", "avi"), ("mkv", "mp4"), ("avi", "mov")])
def test_wrong_extension_is_sniffed(tmp_path, src_ext, wrong_ext):
    m = mf.make_video(tmp_path / f"clip.{src_ext}", seconds=0.8)
    renamed = mf.copy_as(m.path, tmp_path / f"renamed.{wrong_ext}")
    a, b = D.decode(m.path), D.decode(renamed)
    assert b.info.container == a.info.container
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)


def test_corrupt_frame_in_the_middle_repeats_the_previous_frame(tmp_path):
    # MJPEG: every frame is its own JPEG, so exactly one frame becomes undecodable.
    m = mf.make_video(tmp_path / "clean.avi", seconds=1.2)
    bad_time = mf.corrupt_frame(m.path, tmp_path / "bad.avi", 12)
    assert bad_time == pytest.approx(12 / 25)
    clean = D.decode(m.path)
    with pytest.warns(D.CorruptFrameWarning, match="bad.avi.*1 corrupt"):
        damaged = D.decode(tmp_path / "bad.avi")
    assert damaged.corrupt_frames == 1
    assert damaged.frames.shape == clean.frames.shape        # T is unchanged
    got = [mf.read_frame_index(f) for f in damaged.frames]
    assert got == list(range(12)) + [11] + list(range(13, 30))
    np.testing.assert_array_equal(damaged.audio, clean.audio)
    # Streaming reports the same count through DecodeStats.
    stats = D.DecodeStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.CorruptFrameWarning)
        assert sum(1 for _ in D.iter_frames(tmp_path / "bad.avi", stats=stats)) == 30
    assert (stats.corrupt_frames, stats.source_frames, stats.emitted_frames) == (1, 29, 30)


def test_lost_audio_packet_becomes_silence_in_place(tmp_path):
    # An AAC packet that fails to decode must not pull the rest of the audio earlier.
    m = mf.make_video(tmp_path / "clean.mp4", seconds=1.0, audio_sr=44100, tone_start_s=0.6,
                      tone_hz=800)
    lost_at = mf.corrupt_packet(m.path, tmp_path / "bad.mp4", 10, kind="audio", fill=b"\xff")
    assert 0.2 < lost_at < 0.3                                # inside the leading silence
    with pytest.warns(D.CorruptFrameWarning, match="bad.mp4.*1 corrupt audio"):
        audio = D.load_audio(tmp_path / "bad.mp4", num_frames=25)
    assert audio.shape == (16000,)
    onset = np.argmax(np.abs(audio) > 0.25) / 16000
    assert onset == pytest.approx(0.6, abs=0.003)


def test_clean_file_gives_no_warning(good):
    _, m = good
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.CorruptFrameWarning)
        assert D.decode(m.path).corrupt_frames == 0
