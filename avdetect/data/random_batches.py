"""Synthetic batches of the data contract's shapes: the one random-data generator.

Used by the 'random' dataset of the trainer (``config.data.name == 'random'``: no
dataset needed, for tests, benchmarks and smoke runs), by the benchmarks' inputs and by
shape-only initialisation (:func:`example_batch`).

The learnable rule (one rule for every caller). A fake window (label 1), against a real
one drawn from the same distributions:

  * mouth / face pixels: uniform in [60, 255] instead of [0, 195] (brighter by 60 grey
    levels);
  * log-mel (or MFCC) features: standard normal shifted by +0.5;
  * waveform: uniform in [-0.2, 0.2] instead of [-0.1, 0.1] (twice as loud);
  * lip points: 0.5 + normal noise of std 0.1 instead of 0.05 (the mouth moves more);
  * teacher posteriors: the audio and video tracks name independent random classes per
    frame; a real window's video track is its audio track (0.8 on the class, the rest
    spread evenly), so the teachers agree on reals and disagree on fakes.

Every example is a pure function of ``(seed, *key)`` and each stream has its own
generator (the stream's index in ``contract.ALL_STREAMS`` is part of its seed), so
leaving a stream out changes no other stream and any process count sees the same data.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator

import ml_collections
import numpy as np

from avdetect import contract
from avdetect.data.pipeline import stack_examples

Batch = dict[str, np.ndarray]

RANDOM_METHODS = ("real", "random_a", "random_b")   # method vocabulary of the random data
STREAMS = contract.ALL_STREAMS   # the index of a stream seeds its generator: order fixed


def random_example(seed: int, key: tuple[int, ...], label: int, *, window: int, face_size: int,
                   teacher_classes: int, mouth_size: int = contract.MOUTH_SIZE,
                   streams: tuple[str, ...] = STREAMS,
                   audio_dim: int = contract.N_MELS) -> dict[str, np.ndarray]:
    """One window of ``streams`` (plus 'label' and 'frame_mask') following the module's
    learnable rule, from ``(seed, *key)``. ``audio_dim`` is the feature count of the
    'logmel' stream (13 for configs that read precomputed MFCCs)."""
    t, k = window, teacher_classes

    def rng(stream: str) -> np.random.Generator:
        return np.random.default_rng([seed, *key, STREAMS.index(stream)])

    def posterior(cls):   # [T, K]: 0.8 on the class, the rest spread evenly
        p = np.full((t, k), 0.2 / k, np.float32)
        p[np.arange(t), cls] += 0.8
        return p

    out = {"label": np.int32(label), "frame_mask": np.ones((t,), np.float32)}
    if "mouth" in streams:
        out["mouth"] = rng("mouth").integers(0, 196, (t, mouth_size, mouth_size),
                                             dtype=np.uint8) + np.uint8(60 * label)
    if "face" in streams:
        out["face"] = (rng("face").integers(0, 196, (t, face_size, face_size, 3), dtype=np.uint8)
                       + np.uint8(60 * label))
    if "logmel" in streams:
        out["logmel"] = (rng("logmel").standard_normal((contract.MEL_PER_FRAME * t, audio_dim),
                                                       dtype=np.float32)
                         + np.float32(0.5 * label))
    if "audio" in streams:   # [640 T] waveform in [-1, 1]
        out["audio"] = (rng("audio").uniform(-0.1, 0.1, contract.SAMPLES_PER_FRAME * t)
                        * (1.0 + label)).astype(np.float32)
    if "lips" in streams:   # [T, 20, 2] lip points in the aligned face
        out["lips"] = (0.5 + 0.05 * rng("lips").standard_normal((t, contract.NUM_LIPS, 2))
                       * (1.0 + label)).astype(np.float32)
    if "teacher_audio" in streams or "teacher_video" in streams:
        a_cls = rng("teacher_audio").integers(0, k, t)
        v_cls = rng("teacher_video").integers(0, k, t) if label else a_cls
        out["teacher_audio"], out["teacher_video"] = posterior(a_cls), posterior(v_cls)
    return out


def shape_args(config: ml_collections.ConfigDict,
               streams: tuple[str, ...] | None = None) -> dict[str, Any]:
    """:func:`random_example`'s shape arguments read from ``config``; ``streams`` None:
    those ``config.data.inputs`` (the streams a method reads) asks for."""
    if streams is None:
        streams = contract.streams_for(tuple(config.data.get("inputs", ()) or ()))
    model = config.get("model", {})
    return {"window": int(config.data.window),
            "face_size": int(config.data.get("face_size", None) or contract.FACE_SIZE_DEFAULT),
            "teacher_classes": int(model.get("teacher_classes", 40)),
            "mouth_size": int(model.get("mouth_size", contract.MOUTH_SIZE)),
            "streams": tuple(streams)}


def example_batch(config: ml_collections.ConfigDict, batch_size: int | None = None,
                  window: int | None = None, seed: int = 0,
                  audio_dim: int = contract.N_MELS) -> Batch:
    """A batch with every stream of the data contract, shaped by ``config`` (``batch_size``
    and ``window`` default to ``config.data``'s), labels alternating real / fake from row 0.
    For benchmarks, tests and shape-only initialisation; ``audio_dim`` = 13 gives MFCC-sized
    'logmel' features (configs with ``model.audio_features == 'mfcc'``)."""
    shape = shape_args(config, STREAMS)
    if window:
        shape["window"] = int(window)
    b = int(batch_size or config.data.batch_size)
    return stack_examples([random_example(seed, (row,), row % 2, audio_dim=audio_dim, **shape)
                           for row in range(b)])


class RandomBatches:
    """The 'random' dataset's endless deterministic train batches. This process gets rows
    ``[p*B_local, (p+1)*B_local)`` of each global batch, so any process count sees the
    same global batches; labels are drawn per row, fakes cycle over categories and
    methods. ``get_state``/``set_state`` like a Grain iterator."""

    def __init__(self, config: ml_collections.ConfigDict, *, seed: int, process_index: int,
                 local_batch_size: int):
        self._seed, self._p, self._b = seed, process_index, local_batch_size
        self._shape = shape_args(config)
        self._step = 0

    def __iter__(self) -> "RandomBatches":
        return self

    def __next__(self) -> Batch:
        rows = range(self._p * self._b, (self._p + 1) * self._b)
        examples = []
        for r in rows:
            label = int(np.random.default_rng([self._seed, self._step, r, 1000]).integers(2))
            ex = random_example(self._seed, (self._step, r), label, **self._shape)
            ex["category"] = np.int32(0 if label == 0 else 1 + r % 3)
            ex["method"] = np.int32(0 if label == 0 else 1 + r % 2)
            examples.append(ex)
        self._step += 1
        return stack_examples(examples)

    def get_state(self) -> dict[str, int]:
        return {"step": self._step}

    def set_state(self, state: dict[str, int]) -> None:
        self._step = int(state["step"])


def random_eval_batches(config: ml_collections.ConfigDict, split: str, *, process_index: int,
                        process_count: int, local_batch_size: int) -> Iterator[Batch]:
    """Every window of ``config.data.random_eval_videos`` (default 16) random videos of
    two windows each (label alternating, fakes cycling over categories and methods; the
    second window of odd videos half padded), in order, padded with ``valid = 0``. The
    split's name seeds its data."""
    n_videos = int(config.data.get("random_eval_videos", 16))
    shape = shape_args(config)
    seed = int(config.seed) + zlib.crc32(split.encode())
    windows = [(v, w) for v in range(n_videos) for w in range(2)]
    global_b = local_batch_size * process_count
    for start in range(0, len(windows), global_b):
        examples = []
        for i in range(start + process_index * local_batch_size,
                       start + (process_index + 1) * local_batch_size):
            v, w = windows[min(i, len(windows) - 1)]
            label = v % 2
            ex = random_example(seed, (v, w), label, **shape)
            if w == 1 and v % 2 == 1:
                ex["frame_mask"][shape["window"] // 2:] = 0.0
            ex.update(video_id=np.int32(v), window_start=np.int32(w * shape["window"]),
                      category=np.int32(0 if label == 0 else 1 + (v // 2) % 3),
                      method=np.int32(0 if label == 0 else 1 + (v // 2) % 2),
                      valid=np.int32(i < len(windows)))
            examples.append(ex)
        yield stack_examples(examples)
