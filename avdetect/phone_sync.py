"""Phone-to-lip synchrony: does the mouth open where the heard phones say it should?

A clip statistic beside the learned scores (``config.eval.phone_sync``; METHODS.md 8,
"Heard phones against the lips"). The learned shared space of the sync recipe transfers
poorly from a few dozen training people to unseen ones; this cue has almost nothing to
learn, so it has almost nothing to overfit:

1. Heard visemes: pocketsphinx phone recognition (its bundled en-us acoustic model and
   phone language model, allphone search - no transcript, no Whisper) on the clip's
   16 kHz audio, phones -> viseme classes (``teachers.alphabet``) at 10 ms, four per
   video frame (``asr_align.segments_to_visemes``).
2. Seen opening: the inner lip opening (mean of the three inner upper / lower lip point
   distances) over the mouth width, per frame of the ``lips`` stream, standardised over
   the clip - how open the mouth is relative to its own range, not a person's lip shape.
3. Expected opening: a table of one number per viseme class, the mean standardised
   opening of that class's frames over real training clips (:func:`fit_opening_table`;
   14 numbers, fitted with the run's other clip-score weights on the reals it trained
   on), averaged over a frame's four 10 ms visemes.
4. The statistic (:func:`phone_sync_stat`, higher = less in sync): the Pearson
   correlation of seen and expected opening at every offset -15..+15 frames; its best
   value within +-2 frames of 0, standardised by the profile's mean and standard
   deviation over all offsets, negated. Real speech peaks near 0; shifted audio moves
   the peak, swapped, reversed or re-voiced audio flattens the profile.

The tolerance of +-2 frames (80 ms) absorbs the aligner's timing error and the
few-frame offsets real recordings have at their source (METHODS.md 8: real clips' learned
profiles peak at +-1-3 frames for half of them).

Recognition costs ~0.45 s of one core per 7-s clip (2-core Intel Xeon, METHODS.md 8); :class:`VisemeCache` keeps each
audio's visemes on disk (keyed by a hash of the int16 samples), so a split is
recognised once for all the runs and evaluations that read it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from avdetect import contract
from avdetect.teachers import alphabet

MAX_OFFSET = 15          # frames each way of the correlation profile (as SyncFusion's)
TOLERANCE = 2            # frames around offset 0 that count as "in sync"
# Inner-lip point pairs (upper, lower) of the 20-point lips stream (dlib 61/67, 62/66,
# 63/65), whose mean distance is the mouth opening.
INNER_PAIRS = ((13, 19), (14, 18), (15, 17))
NUM_CLASSES = alphabet.NUM_VISEMES
_EPS = 1e-6


def lip_opening(lips: np.ndarray) -> np.ndarray:
    """float64 [T]: inner-lip opening over mouth width of each frame of ``lips``
    [T, 20, 2], standardised over the clip (zero mean, unit variance; all zeros when the
    opening never changes)."""
    lips = np.asarray(lips, np.float64)
    if lips.ndim != 3 or lips.shape[1:] != (contract.NUM_LIPS, 2):
        raise ValueError(f"lips must be [T, {contract.NUM_LIPS}, 2], got {lips.shape}")
    a, b = contract.LIP_CORNERS
    width = np.linalg.norm(lips[:, a] - lips[:, b], axis=-1) + _EPS
    inner = np.mean([np.linalg.norm(lips[:, u] - lips[:, d], axis=-1) for u, d in INNER_PAIRS],
                    axis=0)
    o = inner / width
    sd = o.std()
    return (o - o.mean()) / sd if sd > _EPS else np.zeros_like(o)


def heard_visemes(audio: np.ndarray, num_frames: int, aligner=None) -> np.ndarray:
    """int32 [T, 4]: the viseme class of each 10 ms of ``audio`` (float in [-1, 1] or
    int16, 16 kHz), four per video frame, from pocketsphinx phone recognition
    (``aligner``: an ``asr_align.SphinxAligner``, made when None)."""
    from avdetect.teachers import asr_align

    audio = np.asarray(audio)
    audio = (contract.from_int16(audio) if audio.dtype == np.int16
             else np.asarray(audio, np.float32)).reshape(-1)
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if not np.any(audio):
        segments = []
    else:
        # (the aligner resets its decoder per clip: no dependence on earlier clips)
        segments = (aligner or asr_align.SphinxAligner()).recognize(audio)
    visemes = asr_align.segments_to_visemes(segments, num_frames)
    return visemes.reshape(num_frames, asr_align.SPHINX_PER_VIDEO_FRAME)


def viseme_histogram(visemes: np.ndarray) -> np.ndarray:
    """float64 [T, classes]: the share of each viseme class among a frame's sub-frames."""
    v = np.asarray(visemes, np.int64)
    t, k = v.shape
    hist = np.zeros((t, NUM_CLASSES))
    np.add.at(hist, (np.repeat(np.arange(t), k), v.reshape(-1)), 1.0 / k)
    return hist


def fit_opening_table(clips: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """float64 [classes]: the mean standardised opening of each viseme class's sub-frames
    over ``clips`` ((visemes [T, 4], opening [T]) of real clips); a class no clip has
    gets 0 (the mean opening). Raises ValueError when no clip is given."""
    total, count, n = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES), 0
    for visemes, opening in clips:
        v = np.asarray(visemes, np.int64)
        o = np.asarray(opening, np.float64)
        if len(v) != len(o):
            raise ValueError(f"visemes cover {len(v)} frames but the opening {len(o)}")
        np.add.at(total, v.reshape(-1), np.repeat(o, v.shape[1]))
        np.add.at(count, v.reshape(-1), 1.0)
        n += 1
    if n == 0:
        raise ValueError("no real clip to fit the viseme opening table on")
    return np.where(count > 0, total / np.maximum(count, 1.0), 0.0)


def correlation_profile(seen: np.ndarray, expected: np.ndarray,
                        max_offset: int = MAX_OFFSET) -> np.ndarray:
    """float64 [2K+1]: Pearson correlation of ``seen[t]`` with ``expected[t + k]`` for
    k = -K..K over the frames both cover (0 where fewer than 10 frames overlap or either
    side is constant there)."""
    x = np.asarray(seen, np.float64)
    y = np.asarray(expected, np.float64)
    t = len(x)
    out = np.zeros(2 * max_offset + 1)
    for i, k in enumerate(range(-max_offset, max_offset + 1)):
        a = x[max(0, -k):t - max(0, k)]
        b = y[max(0, k):max(0, k) + len(a)]
        if len(a) < 10 or a.std() < _EPS or b.std() < _EPS:
            continue
        out[i] = np.corrcoef(a, b)[0, 1]
    return out


def phone_sync_stat(visemes: np.ndarray, opening: np.ndarray, table: np.ndarray,
                    max_offset: int = MAX_OFFSET, tolerance: int = TOLERANCE) -> float:
    """Minus the standardised peak of the seen / expected opening correlation within
    ``tolerance`` frames of offset 0 (module docstring, step 4): higher = less in sync.
    0 when the profile is flat (a still mouth, or audio with no phone)."""
    table = np.asarray(table, np.float64)
    if table.shape != (NUM_CLASSES,):
        raise ValueError(f"the viseme opening table must hold {NUM_CLASSES} numbers, got "
                         f"{table.shape}")
    expected = viseme_histogram(visemes) @ table
    prof = correlation_profile(opening, expected, max_offset)
    sd = prof.std()
    if not sd > _EPS:
        return 0.0
    c = max_offset
    peak = prof[c - tolerance:c + tolerance + 1].max()
    return float(-(peak - prof.mean()) / sd)


class VisemeCache:
    """:func:`heard_visemes` of each audio, kept as .npy files under ``directory`` named
    by a SHA-1 of the int16 samples and the frame count (None: no disk cache)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = pathlib.Path(directory) if directory else None
        self._aligner = None

    def __getstate__(self):
        return {**self.__dict__, "_aligner": None}

    def _path(self, pcm: np.ndarray, num_frames: int) -> pathlib.Path | None:
        if self.directory is None:
            return None
        key = hashlib.sha1(np.ascontiguousarray(pcm).tobytes()).hexdigest()
        return self.directory / f"{key}_{int(num_frames)}.npy"

    def _store(self, path: pathlib.Path | None, visemes: np.ndarray) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, visemes, allow_pickle=False)
            os.replace(tmp, path)

    def visemes(self, audio: np.ndarray, num_frames: int) -> np.ndarray:
        """int8 [T, 4] heard visemes of ``audio`` (float or int16), from disk when kept."""
        return self.visemes_many([(audio, num_frames)])[0]

    def visemes_many(self, items: Sequence[tuple[np.ndarray, int]], workers: int = 1
                     ) -> list[np.ndarray]:
        """:meth:`visemes` of each (audio, num_frames); the ones not on disk are recognised
        by ``workers`` processes (spawned: safe beside a running JAX) when there are more
        than a few."""
        pcms = [_pcm16(a) for a, _ in items]
        paths = [self._path(p, t) for p, (_, t) in zip(pcms, items)]
        out: list[np.ndarray | None] = [np.load(p, allow_pickle=False) if p is not None and
                                        p.exists() else None for p in paths]
        todo = [i for i, v in enumerate(out) if v is None]
        if workers > 1 and len(todo) > 4 * workers:
            import concurrent.futures
            import multiprocessing
            with concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                done = pool.map(_recognise, [pcms[i] for i in todo],
                                [int(items[i][1]) for i in todo], chunksize=4)
                for i, v in zip(todo, done):
                    out[i] = v
                    self._store(paths[i], v)
        else:
            if todo and self._aligner is None:
                from avdetect.teachers import asr_align
                self._aligner = asr_align.SphinxAligner()
            for i in todo:
                out[i] = heard_visemes(pcms[i], int(items[i][1]), self._aligner).astype(np.int8)
                self._store(paths[i], out[i])
        return out


def _pcm16(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    return audio if audio.dtype == np.int16 else contract.to_int16(audio)


_WORKER_ALIGNER = None


def _recognise(pcm: np.ndarray, num_frames: int) -> np.ndarray:
    """:func:`heard_visemes` in a worker process (one decoder per process)."""
    global _WORKER_ALIGNER
    if _WORKER_ALIGNER is None:
        from avdetect.teachers import asr_align
        _WORKER_ALIGNER = asr_align.SphinxAligner()
    return heard_visemes(pcm, num_frames, _WORKER_ALIGNER).astype(np.int8)


def warm_cache(data: str, data_dir: str | None, work: Sequence[tuple[str, Sequence[int]]],
               directory: str) -> None:
    """Fill ``directory`` (a :class:`VisemeCache`) with the heard visemes of the records
    ``work`` lists ((split, record indices) of built dataset ``data``), at low CPU priority
    - the body of the evaluator's background prefetch (``evaluators.PhonePrefetch``)."""
    from avdetect.data import metadata

    try:
        os.nice(10)
    except OSError:         # not allowed here: run at the normal priority
        pass
    cache = VisemeCache(directory)
    for split, records in work:
        source, _, _ = metadata.open_split(data, data_dir, split)
        for r in records:
            ex = source[int(r)]
            cache.visemes(np.asarray(ex["audio"]), int(ex["num_frames"]))
