"""Scoring with a trained model: files (the library behind ``avdetect detect``) and
dataset splits (``score_split``, the notebook's and the protocols' evaluation).

``score_video(path, model)`` runs, for one file:

  decode + face track + crops + log-mel   (``avdetect.preprocess.pipeline``, with the
                                           training dataset's recorded parameters)
  -> a shard-format example               (crops through the dataset's frame codecs,
                                           log-mel through float16, exactly as stored)
  -> windows of T = config.data.window    (``avdetect.data.windows.WindowMaker.cut``:
                                           the evaluation pipeline's own cutter)
  -> batches -> ``method.predict``        (``avdetect.inference.LoadedModel.predict``)
  -> video score, verdict, flags          (``avdetect.result.DetectResult``: the JSON
                                           document, its schema and the flags' meaning)

Windows. Default stride = T: the windows tile the video exactly as the evaluation
pipeline does (``window_starts``), the last partial window padded and masked, so a
file scores as it would inside an evaluated dataset and the threshold chosen on the
validation split applies unchanged. ``stride < T`` gives overlapping windows (a finer
timeline); the last window is the first one that reaches the end of the video. A clip
shorter than one window (down to ``result.MIN_FRAMES`` = 3 frames) is one padded window,
flagged ``too_short``.

Aggregation. Window score = the method's clip score over the window's valid frames;
video score = the mean of the window scores weighted by their valid frames, or, with
``config.eval.clip_score`` 'sync' / 'combined', the synchrony statistic of the offset
profile pooled over every window (``evaluation.aggregate_videos`` with
``evaluation.ClipScore``: the evaluator's own rule). Per-frame scores (the
timeline) = the method's per-frame scores averaged over the windows covering the frame.
Verdict: 'fake' when score >= threshold (the threshold of the model's validation report,
or an explicit override; a default threshold is always named as such).

Files that cannot be scored (missing, empty, not media, no video stream, truncated,
fewer than ``result.MIN_FRAMES`` frames, no face in any frame) raise the typed
``avdetect.errors.MediaError`` of their problem.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import glob
import math
import os
import re
import time
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from avdetect import contract, evaluation, phone_sync
from avdetect.data import codec
from avdetect.data.cache_entry import clip_waveform
from avdetect.data.windows import WindowMaker, window_starts
from avdetect.errors import AVDetectError, FileMissingError, MediaError
from avdetect.inference import LoadedModel
from avdetect.media import decode
from avdetect.media.probe import MediaInfo
from avdetect.preprocess import landmarks, pipeline
from avdetect.result import MIN_FRAMES, DetectResult, WindowScore
from avdetect.timing import StageTimer

# Exit codes of `avdetect detect` (documented in its --help).
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL, EXIT_NONE = 0, 2, 3, 4
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                    ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv")
# A frame's audio is "digital silence" when every mel band of its 4 log-mel frames is
# within 10x of the log floor ln(LOG_FLOOR) = -13.8: ~90 dB below a full-scale tone, far
# under any room noise (the real fixture clips never go below log-mel -8). Log-mel 0 is
# a loud frame (mel energy 1), never silence.
SILENCE_LOGMEL = math.log(10 * contract.LOG_FLOOR)
_UNREAD_FACE_SIZE = 8        # preprocess_video's smallest face crop side
_CORRUPT_VIDEO = re.compile(r"(\d+) corrupt video frame")
_CORRUPT_AUDIO = re.compile(r"(\d+) corrupt audio packet")


# ----------------------------------------------------------------------------------
# Preprocessing and inputs
# ----------------------------------------------------------------------------------

def preprocess_kwargs(model: LoadedModel) -> dict[str, Any]:
    """``preprocess_video`` arguments reproducing the training dataset's preprocessing
    (its recorded landmark parameters and decode size; defaults when not recorded)."""
    rec = model.preprocess.get("params") or {}
    face_size = int(model.preprocess["face_size"])
    if "face" not in model.inputs:
        # The model never reads face crops: ask for the smallest the pipeline makes
        # rather than holding [T, S, S, 3] of them (a 10-minute video: 560 MiB at S=112).
        face_size = _UNREAD_FACE_SIZE
    kw: dict[str, Any] = {"face_size": face_size, "min_frames": MIN_FRAMES}
    if "decode_max_side" in rec:
        kw["decode_max_side"] = rec["decode_max_side"]
    if isinstance(rec.get("landmarks"), Mapping):
        names = {f.name for f in dataclasses.fields(landmarks.LandmarkParams)}
        lp = {k: tuple(v) if isinstance(v, list) else v
              for k, v in rec["landmarks"].items() if k in names}
        if "stabilize" not in lp:
            # Built before the head-motion stabiliser: the mouth centre was the lip centre
            # averaged over the alignment points' window.
            lp.update(stabilize=False, centre_window=lp.get("smooth_window",
                                                            landmarks.SMOOTH_WINDOW))
        kw["landmark_params"] = landmarks.LandmarkParams(**lp)
    # Models trained on the older Haar-box crops (params with 'tracker' and no
    # 'landmarks') get the landmark-aligned crops: the only preprocessing there is now.
    return kw


def preprocess_file(path: str, model: LoadedModel, timer: StageTimer | None = None
                    ) -> tuple[pipeline.ClipFeatures, int, int]:
    """(features, corrupt video frames, corrupt audio packets) of one file; ``timer``
    receives the preprocessing stages' seconds. Raises the typed MediaError of an
    unusable file (``TooShortError`` under ``MIN_FRAMES`` frames)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileMissingError(path, "does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", decode.CorruptFrameWarning)
        # Once a file with video has passed the probe, compile the one-window shape
        # (every clip shorter than two batches uses it) in a background thread while it
        # decodes.
        def on_probe(info: MediaInfo) -> None:
            if info.has_video:
                model.warm_up(1)

        feats = pipeline.preprocess_video(path, **preprocess_kwargs(model), on_probe=on_probe,
                                          timer=timer)
    bad_video = bad_audio = 0
    for w in caught:
        if issubclass(w.category, decode.CorruptFrameWarning):
            text = str(w.message)
            if m := _CORRUPT_VIDEO.search(text):
                bad_video += int(m.group(1))
            if m := _CORRUPT_AUDIO.search(text):
                bad_audio += int(m.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return feats, bad_video, bad_audio


def audio_presence(feats: pipeline.ClipFeatures) -> np.ndarray:
    """bool [T]: the frame's audio is neither missing nor digital silence."""
    t = feats.num_frames
    if not feats.has_audio:
        return np.zeros(t, bool)
    per_frame = np.asarray(feats.logmel, np.float32).reshape(t, contract.MEL_PER_FRAME, -1)
    return per_frame.max(axis=(1, 2)) > SILENCE_LOGMEL


def clip_example(feats: pipeline.ClipFeatures, model: LoadedModel) -> dict[str, Any]:
    """The shard-format example of a preprocessed clip (the streams the model reads),
    so windows are cut by the evaluation pipeline's own code: crops go through the
    training dataset's frame codecs (lossy JPEG faces included) and the log-mel through
    float16, exactly as a dataset stores them. Labels are placeholders."""
    enc = model.preprocess["encoding"]
    streams = set(model.inputs)
    ex: dict[str, Any] = {"num_frames": feats.num_frames, "face_found": feats.face_found,
                          "label": 0, "video_fake": False, "audio_fake": False, "category": 0,
                          "method": "unknown", "has_audio": feats.has_audio,
                          "has_teacher": False, "video_id": os.path.basename(feats.info.path),
                          "_record": 0}
    if "mouth" in streams:
        # PNG is lossless at any compression level: level 0 is the fastest way to the
        # same pixels the dataset's codec would give.
        ex["mouth"] = (codec.encode_frames(feats.mouth, "png", png_compression=0)
                       if enc.get("mouth_codec", "png") == "png" else
                       codec.encode_frames(feats.mouth, "jpeg", jpeg_quality=int(enc["jpeg_quality"])))
    if "face" in streams:
        ex["face"] = codec.encode_frames(feats.face, enc.get("face_codec", "jpeg"),
                                         jpeg_quality=int(enc.get("jpeg_quality", 90)),
                                         png_compression=int(enc.get("png_compression", 3)))
    if "logmel" in streams:
        ex["logmel"] = np.asarray(feats.logmel).astype(np.float16)
    if "audio" in streams:
        # Raw waveform (e.g. CAD's Whisper front end), int16 as a shard stores it: the
        # samples the preprocessing decoded (decoded again only when it kept none).
        wave = getattr(feats, "audio", None)
        ex["audio"] = (contract.to_int16(wave) if wave is not None
                       else clip_waveform(feats.info.path, feats.num_frames))
    if "lips" in streams:
        # float32 [T, 20, 2] as a shard stores it (shard format 4)
        if feats.lips is None:
            raise ValueError(f"{feats.info.path}: the model reads 'lips' but the "
                             "preprocessing gave no lip landmarks")
        ex["lips"], ex["has_lips"] = np.asarray(feats.lips, np.float32), True
    return ex


def cut_windows(feats: pipeline.ClipFeatures, model: LoadedModel, starts: Sequence[int]
                ) -> list[dict[str, np.ndarray]]:
    """The model's input windows starting at ``starts``, cut by the evaluation
    pipeline's own ``WindowMaker`` from the shard-format example (:func:`clip_example`):
    the streams of ``model.inputs`` + 'frame_mask'. A window reaching past the end is
    padded (silence for the log-mel, zeros elsewhere) and its padded frames have
    ``frame_mask`` 0, which the methods honour."""
    ex = clip_example(feats, model)
    maker = WindowMaker(window=model.window, method_ids={"unknown": 0},
                        face_size=model.face_size, streams=frozenset(model.inputs))
    keys = (*model.inputs, "frame_mask")
    return [{k: v for k, v in maker.cut(ex, s).items() if k in keys} for s in starts]


def window_plan(num_frames: int, window: int, stride: int) -> list[int]:
    """Window start frames: the evaluation tiling for ``stride == window``; otherwise
    every ``stride`` frames up to the first window that reaches the end."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window}, {stride}")
    if stride == window:
        return window_starts(num_frames, window)
    starts = [0]
    while starts[-1] + window < num_frames:
        starts.append(starts[-1] + stride)
    return starts


def batch_plan(n: int, batch_size: int) -> list[int]:
    """Windows per model call for ``n`` windows: full batches of ``batch_size``, then the
    rest one window per call. No padding window is ever computed (a network spends as
    long on a padding window as on a real one: a 10 s clip of the default config is 5
    windows, which a padded batch of 8 made 1.8x the work), and only two batch shapes,
    ``batch_size`` and 1, are ever traced and compiled (tracing the full student costs
    ~0.8 s per shape even with the compilation cache warm). On CPU a window costs the
    same alone as in a batch: 5 windows of the default config took 1.45 CPU-s as 5 x 1,
    1.54 as 4 + 1 and 2.68 as a padded 8."""
    return [batch_size] * (n // batch_size) + [1] * (n % batch_size)


def _batches(windows: list[dict[str, np.ndarray]], batch_size: int
             ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(batch, number of windows in it) in the sizes of :func:`batch_plan`."""
    i = 0
    for size in batch_plan(len(windows), batch_size):
        part = windows[i:i + size]
        i += size
        yield {k: np.stack([w[k] for w in part]) for k in part[0]}, size


# ----------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------

def score_video(path: str | os.PathLike, model: LoadedModel, *, batch_size: int = 8,
                stride: int | None = None, threshold: float | None = None,
                progress: bool = False, timings: bool = False) -> DetectResult:
    """Scores one video file with ``model`` (see the module docstring).

    ``stride`` defaults to the window (the evaluation tiling); ``threshold`` overrides
    the model's. ``timings`` adds a per-stage breakdown (seconds) to the result; total
    and model times are always recorded. Raises ``MediaError`` subclasses for files
    that cannot be scored."""
    path = os.fspath(path)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    t_start = time.perf_counter()
    stages = StageTimer()             # the preprocessing's own stages (--timings)
    feats, bad_video, bad_audio = preprocess_file(path, model, stages)
    timer = StageTimer()              # detect's stages, always recorded
    timer.add("preprocess", time.perf_counter() - t_start)
    if timings:
        timer.seconds.update(stages.seconds)
        timer.add("preprocess_other", max(timer.seconds["preprocess"] - sum(stages.seconds.values()), 0.0))

    T, W = feats.num_frames, model.window
    stride = int(stride or W)
    starts = window_plan(T, W, stride)
    with timer("windows"):
        windows = cut_windows(feats, model, starts)

    t0 = time.perf_counter()
    compile0 = model.compile_seconds
    scores, frame_parts = [], []
    pooled: dict[str, list] = {k: [] for k in evaluation.POOLED_FIELDS}
    # disable=None: tqdm shows the bar only on a terminal
    bar = tqdm(total=len(windows), desc=os.path.basename(path), unit="window", leave=False,
               disable=None if progress else True)
    for batch, n in _batches(windows, batch_size):
        out = model.predict(batch)
        scores.extend(out["score"][:n].tolist())
        frame_parts.extend(out["frame_score"][:n])
        for k in pooled:
            if k in out:
                pooled[k].extend(out[k][:n])
        bar.update(n)
    bar.close()
    timer.add("model_compile", model.compile_seconds - compile0)
    timer.add("model", time.perf_counter() - t0 - timer.seconds["model_compile"])

    t0 = time.perf_counter()
    n_valid = np.array([int(w["frame_mask"].sum()) for w in windows])
    clip = evaluation.ClipScore.from_config(model.config)
    pooled = {k: np.asarray(v) for k, v in pooled.items() if v}
    if clip.phones:
        with timer("phone_sync"):
            pooled["phone_stat"] = np.full(len(scores), phone_stat(feats, clip))
    score, frame_scores = aggregate(T, starts, n_valid, scores, frame_parts, clip, pooled)
    audio = audio_presence(feats)
    face = np.asarray(feats.face_found, bool)
    window_scores = [WindowScore(int(s), int(n), float(sc), float(face[s:s + n].mean()),
                                 float(audio[s:s + n].mean()))
                     for s, n, sc in zip(starts, n_valid, scores)]
    if threshold is None:
        thr, thr_source, thr_origin = model.threshold, model.threshold_source, model.threshold_origin
    else:
        thr, thr_source, thr_origin = float(threshold), "given on the command line", "override"
    timer.add("aggregate", time.perf_counter() - t0)
    timer.add("total", time.perf_counter() - t_start)
    return DetectResult(
        path=path, score=score, verdict="fake" if score >= thr else "real", threshold=thr,
        threshold_source=thr_source, threshold_origin=thr_origin, score_scale=model.score_scale,
        window=W, stride=stride, windows=window_scores, frame_scores=frame_scores,
        face_found=face, audio_present=audio, has_audio=bool(feats.has_audio),
        corrupt_frames=bad_video, corrupt_audio_packets=bad_audio,
        media=media_record(feats.info), model=model.describe(), timings=timer.seconds)


def phone_stat(feats: pipeline.ClipFeatures, clip: evaluation.ClipScore) -> float:
    """The clip's heard-phones-against-lips statistic (``avdetect.phone_sync``) with the
    model's fitted viseme opening table; a clip without audio has no phones (0)."""
    wave = getattr(feats, "audio", None)
    if feats.lips is None:
        raise ValueError(f"{feats.info.path}: the model's phone-sync score needs lip "
                         "landmarks, and none were found")
    t = feats.num_frames
    if wave is None or not feats.has_audio:
        wave = np.zeros(t * contract.SAMPLES_PER_FRAME, np.float32)
    visemes = phone_sync.heard_visemes(np.asarray(wave, np.float32), t)
    return phone_sync.phone_sync_stat(visemes, phone_sync.lip_opening(np.asarray(feats.lips)[:t]),
                                      clip.phone_table)


def aggregate(num_frames: int, starts: Sequence[int], n_valid: np.ndarray,
              scores: Sequence[float], frame_parts: Sequence[np.ndarray],
              clip_score: evaluation.ClipScore | None = None,
              pooled: Mapping[str, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
    """(video score, float32 [T] per-frame scores) of scored windows: the evaluator's
    video score (``evaluation.aggregate_videos`` with the model's ``clip_score`` rule: the
    frame-weighted mean of the window scores, or the clip-pooled synchrony score from the
    windows' ``pooled`` sums) and, per frame, the mean of the per-frame scores of the
    windows covering it."""
    video = evaluation.aggregate_videos({"score": np.asarray(scores, np.float64),
                                         "n_frames": np.asarray(n_valid, np.float64),
                                         "video_id": np.zeros(len(scores), np.int64),
                                         "label": np.zeros(len(scores), np.int64),
                                         **(pooled or {})}, clip_score)
    frame_sum, frame_cnt = np.zeros(num_frames, np.float64), np.zeros(num_frames, np.float64)
    for s, fs, n in zip(starts, frame_parts, n_valid):
        frame_sum[s:s + n] += fs[:n]
        frame_cnt[s:s + n] += 1
    return float(video["score"][0]), (frame_sum / np.maximum(frame_cnt, 1)).astype(np.float32)


def media_record(info: MediaInfo) -> dict[str, Any]:
    """The source file's container facts, as the result's ``media`` object."""
    return {"container": info.container, "duration_s": round(float(info.duration_s), 3),
            "src_fps": info.src_fps, "width": info.width, "height": info.height,
            "video_codec": info.video_codec, "audio_codec": info.audio_codec,
            "src_sample_rate": info.src_sample_rate, "vfr": bool(info.vfr),
            "rotation": int(info.rotation)}


# ----------------------------------------------------------------------------------
# Many files
# ----------------------------------------------------------------------------------

def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_paths(args: Sequence[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """(files to score, problems) from command-line PATHs: a file (kept even when it does
    not exist: scoring it reports the problem), a folder (its video files, by extension;
    sub-folders with ``recursive``) or a glob pattern. Problems: folders without videos,
    patterns matching nothing."""
    files, problems = [], []
    for arg in args:
        if os.path.isdir(arg):
            pattern = os.path.join(glob.escape(arg), "**", "*") if recursive else \
                os.path.join(glob.escape(arg), "*")
            found = sorted(p for p in glob.glob(pattern, recursive=recursive)
                           if os.path.isfile(p) and p.lower().endswith(VIDEO_EXTENSIONS))
            if not found:
                problems.append(f"{arg}: folder holds no video files "
                                f"({', '.join(VIDEO_EXTENSIONS[:6])}, ...)"
                                + ("" if recursive else "; use --recursive for sub-folders"))
            files.extend(found)
        elif _has_glob(arg) and not os.path.exists(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not found:
                problems.append(f"{arg}: pattern matches no file")
            files.extend(found)
        else:
            files.append(arg)
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def output_names(paths: Sequence[str]) -> list[str]:
    """A distinct output base name per input file, deterministic for the list: the
    file's stem; where two inputs share a stem, their file names (``a.mp4``,
    ``a.webm``); where even those clash (``x/a.mp4``, ``y/a.mp4``), ``-2``, ``-3``...
    appended, skipping every name another input already takes (``a-2.mp4`` is its own
    name). Names are compared case-insensitively: the outputs may land on a
    case-insensitive file system."""
    bases = [os.path.basename(os.path.normpath(p)) or "video" for p in paths]
    stems = [os.path.splitext(b)[0] or b for b in bases]
    stem_count = collections.Counter(s.casefold() for s in stems)
    wanted = [s if stem_count[s.casefold()] == 1 else b for s, b in zip(stems, bases)]
    reserved = {w.casefold() for w in wanted}       # nobody's suffix may take these
    taken: set[str] = set()
    names = []
    for w in wanted:
        name, k = w, 1
        while name.casefold() in taken or (k > 1 and name.casefold() in reserved):
            k += 1
            name = f"{w}-{k}"
        taken.add(name.casefold())
        names.append(name)
    return names


def error_record(path: str, err: BaseException) -> dict[str, Any]:
    """The summary entry of a file that could not be scored."""
    if isinstance(err, MediaError):
        kind, reason = err.kind, err.reason
    elif isinstance(err, AVDetectError):
        kind, reason = type(err).__name__, str(err)
    else:   # not expected: say what it was rather than hide it
        kind, reason = "internal_error", f"{type(err).__name__}: {err}"
    return {"file": path, "status": "error", "error": {"kind": kind, "reason": reason}}


def exit_code(n_scored: int, n_failed: int) -> int:
    """0 all scored, 3 some could not be scored, 4 none could be scored."""
    if n_failed == 0:
        return EXIT_OK
    return EXIT_PARTIAL if n_scored else EXIT_NONE


# ----------------------------------------------------------------------------------
# Dataset splits (the notebook's evaluation)
# ----------------------------------------------------------------------------------

def score_split(model: LoadedModel, split: str, *, data_dir: str | None = None,
                batch_size: int | None = None, max_batches: int | None = None,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Valid window records (``score``, ``label``, ``video_id``, ``n_frames``,
    ``category``, ``method``; ``phone_stat`` when the model's clip score has the phone
    term) of every window of a dataset split, scored by ``model`` on this process: the
    input of ``evaluation.evaluate_records`` / ``aggregate_videos``.
    The data come from ``model.config.data`` ('random' needs no dataset; ``data_dir``
    overrides the config's)."""
    from avdetect.data import pipeline as data_pipeline
    from avdetect.data.random_batches import random_eval_batches

    config = model.config
    b = int(batch_size or config.data.get("eval_batch_size", None) or config.data.batch_size)
    if config.data.name == "random":
        it = random_eval_batches(config, split, process_index=0, process_count=1,
                                 local_batch_size=b)
    else:
        data_cfg = config.data.to_dict()
        if data_dir:
            data_cfg["data_dir"] = data_dir
        it = data_pipeline.make_eval_batches(data_cfg, split, local_batch_size=b)
    collector = evaluation.Collector()
    keys = (*model.inputs, "frame_mask")
    bar = tqdm(desc=f"score {split}", unit="batch", disable=None if progress else True)
    for i, batch in enumerate(it):
        if max_batches is not None and i >= max_batches:
            break
        out = model.predict({k: batch[k] for k in keys if k in batch})
        rec = {"score": out["score"], "label": batch["label"], "video_id": batch["video_id"],
               "n_frames": batch["frame_mask"].sum(-1),
               "valid": batch.get("valid", np.ones(len(batch["label"]), np.int32)),
               **{k: out[k] for k in evaluation.POOLED_FIELDS if k in out}}
        for k in ("category", "method"):
            if k in batch:
                rec[k] = batch[k]
        collector.add(rec)
        bar.update(1)
    bar.close()
    records = collector.records()
    clip = evaluation.ClipScore.from_config(config)
    if clip.phones and len(records["score"]):
        from avdetect.evaluators import add_phone_stats
        cfg = copy.deepcopy(config)
        if data_dir:
            cfg.data.data_dir = data_dir
        records = add_phone_stats(records, cfg, split, clip)
    return records
