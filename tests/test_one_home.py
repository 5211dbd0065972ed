"""The helpers that now have one home: int16 scaling, fit-length and the sinusoidal table
(checked against independent formulas), the metadata reader, and a build that decodes
each clip's audio once (the cache entry and the teacher get the same samples)."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from avdetect import contract
from avdetect.errors import ConfigError


# ----------------------------------------------------------------------- int16 scaling

def test_to_int16_is_round_of_x_times_32768_clipped():
    x = np.array([-1.5, -1.0, -0.5, -1 / 32768, 0.0, 0.4 / 32768, 0.6 / 32768, 0.5,
                  32767 / 32768, 1.0, 2.0])
    want = [-32768, -32768, -16384, -1, 0, 0, 1, 16384, 32767, 32767, 32767]
    got = contract.to_int16(x)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, want)


def test_int16_round_trip_is_exact_for_every_value():
    every = np.arange(-32768, 32768).astype(np.int16)
    f = contract.from_int16(every)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, every.astype(np.float64) / 32768.0)
    np.testing.assert_array_equal(contract.to_int16(f), every)
    assert contract.SILENCE_ABS_MAX == 2 / 32768


# ----------------------------------------------------------------------- fit length

@pytest.mark.parametrize("mode", ["constant", "edge", "wrap"])
def test_fit_length_cuts_and_pads_the_first_axis(mode):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    np.testing.assert_array_equal(contract.fit_length(x, 2, mode), x[:2])
    np.testing.assert_array_equal(contract.fit_length(x, 4, mode), x)
    got = contract.fit_length(x, 7, mode)
    extra = {"constant": np.zeros((3, 3), np.float32),
             "edge": np.repeat(x[-1:], 3, axis=0),
             "wrap": x[:3]}[mode]
    np.testing.assert_array_equal(got, np.concatenate([x, extra]))
    assert got.dtype == x.dtype


def test_fit_length_refuses_to_extend_nothing_except_with_zeros():
    np.testing.assert_array_equal(contract.fit_length(np.zeros(0, np.int16), 3), [0, 0, 0])
    with pytest.raises(ValueError, match="empty"):
        contract.fit_length(np.zeros((0, 2)), 3, "edge")
    with pytest.raises(ValueError, match="length"):
        contract.fit_length(np.zeros(3), -1)


def test_teacher_track_fit_is_edge_and_decoder_fit_is_zeros(tmp_path):
    from avdetect.teachers import posteriors
    np.testing.assert_array_equal(posteriors.fit_length(np.array([3, 1, 2]), 5),
                                  [3, 1, 2, 2, 2])
    from avdetect.preprocess import logmel
    audio, t = logmel._fit_audio(np.ones(1000, np.float64), 2)
    assert t == 2 and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, np.r_[np.ones(1000), np.zeros(280)])


# ----------------------------------------------------------------------- sinusoids

def _whisper_reference(length: int, channels: int) -> np.ndarray:
    """Whisper's table as its authors define it (openai/whisper model.sinusoids)."""
    log_timescale_increment = math.log(10000) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2))
    scaled_time = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1)


@pytest.mark.parametrize("length,dim", [(1500, 384), (1500, 512), (448, 1280), (7, 4)])
def test_one_sinusoidal_table_serves_whisper(length, dim):
    from avdetect.models.layers import sinusoidal_positions
    from avdetect.pretrained.whisper import _sinusoids

    table = sinusoidal_positions(length, dim)
    assert table.shape == (length, dim) and table.dtype == np.float32
    np.testing.assert_allclose(table, _whisper_reference(length, dim), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(_sinusoids(None, (length, dim))), table)


# ----------------------------------------------------------------------- metadata

def test_metadata_of_reads_builders_and_data_sources():
    from avdetect.data.metadata import metadata_of

    meta = {"method_names": ["real"], "shard_format_version": 4}
    builder = types.SimpleNamespace(info=types.SimpleNamespace(metadata=meta))
    source = types.SimpleNamespace(dataset_info=types.SimpleNamespace(metadata=meta))
    assert metadata_of(builder) == meta and metadata_of(source) == meta
    assert metadata_of(builder) is not meta          # a copy: callers may not alter it
    assert metadata_of(types.SimpleNamespace()) == {}


def test_dataset_metadata_names_the_build_command(tmp_path):
    from avdetect import protocols
    from avdetect.data import metadata

    with pytest.raises(ConfigError, match="avdetect.data.build no_such_dataset"):
        metadata.dataset_metadata("no_such_dataset", str(tmp_path))
    assert not hasattr(protocols, "dataset_metadata")    # one reader: data.metadata


def test_index_from_metadata_joins_split_unions():
    from avdetect.data.metadata import index_from_metadata

    def cols(ids, method):
        return {"video_id": ids, "num_frames": [30] * len(ids), "label": [0] * len(ids),
                "category": [0] * len(ids), "method": [method] * len(ids),
                "identity": ["p"] * len(ids)}

    meta = {"index": {"a": cols(["x", "y"], "real"), "b": cols(["z"], "pf_shift")},
            "method_names": ["pf_shift", "real"]}
    idx = index_from_metadata(meta, "a+b")
    assert idx.video_id == ("x", "y", "z")
    np.testing.assert_array_equal(idx.method_id, [1, 1, 0])
    assert index_from_metadata(meta, "a[:1]") is None     # slices: scanned instead
    assert index_from_metadata(meta, "c") is None


# ----------------------------------------------------------------------- decode once

class _ListeningTeacher:
    """A teacher that records the audio it is given (both sides uniform)."""

    name = "listening"
    num_classes = 3
    sides = frozenset({"audio", "video"})

    def __init__(self):
        self.heard = []

    def __call__(self, *, audio, mouth, num_frames, meta):
        self.heard.append(audio)
        row = np.full((num_frames, self.num_classes), 1 / self.num_classes, np.float32)
        return row, row.copy()


def test_a_clip_is_decoded_once_for_features_cache_and_teacher(realav_clips, tmp_path,
                                                                monkeypatch):
    from avdetect.data import clips, codec
    from avdetect.media import decode
    from avdetect.media.probe import probe
    from avdetect.teachers import BuildTeacher

    path = str(realav_clips[0])
    n = probe(path).num_frames
    reference = decode.load_audio(path, num_frames=n)          # before counting starts
    calls = []
    real_load = decode.load_audio

    def counting_load(*a, **k):
        calls.append(a[0] if a else k.get("path"))
        return real_load(*a, **k)

    monkeypatch.setattr(decode, "load_audio", counting_load)
    inner = _ListeningTeacher()
    task = clips.ClipTask(key="c0", path=path, rel_path="c0.mp4", label=0, video_fake=False,
                          audio_fake=False, method="real", identity="x")
    spec = clips.PreprocessSpec(face_size=16, encoding=codec.EncodingParams(), teacher_dim=3,
                                teacher=BuildTeacher(inner, spec="listening"))
    out = clips.process_clip(task, spec, str(tmp_path / "c0.npz"))
    assert out.status == "done", out
    assert len(calls) == 1, calls
    with np.load(out.cache_file) as z:
        np.testing.assert_array_equal(z["audio"], contract.to_int16(reference))
    assert len(inner.heard) == 1
    np.testing.assert_array_equal(inner.heard[0], reference)
