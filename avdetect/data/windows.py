"""Cutting fixed-size windows out of a decoded video-level example (shard format 4): the
per-window arrays of every stream (mouth, face, log-mel, waveform, lips, teacher
posteriors), zero-padded to T frames with a frame mask, augmented for training, with the
on-the-fly pseudo-fakes (:mod:`avdetect.data.otf_fakes`) and the evaluation views with
and without leading/trailing digital silence. The Grain pipelines
(:mod:`avdetect.data.pipeline`) map :class:`WindowMaker` over the records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import cv2
import numpy as np

from avdetect import contract
from avdetect.data import augment as aug_lib
from avdetect.data import codec
from avdetect.data import otf_fakes
from avdetect.data import stream_augment

LOGMEL_SILENCE = float(np.log(contract.LOG_FLOOR))   # log-mel value of a silent frame


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclasses.dataclass(frozen=True)
class WindowMaker:
    """Cuts fixed-size windows out of a decoded video-level example."""

    window: int
    method_ids: Mapping[str, int]
    face_size: int | None = None
    streams: frozenset[str] = frozenset(contract.DEFAULT_STREAMS)    # heavy streams to decode and emit
    aug_ops: tuple[str, ...] = aug_lib.AUG_OPS
    aug_crop_min: float = 0.7
    aug_max_rotate_deg: float = 15.0
    otf: otf_fakes.OtfSpec | None = None            # on-the-fly pseudo-fakes (training)
    identity_ids: Mapping[str, int] | None = None   # identity -> int (swap donors)
    stream_aug: stream_augment.StreamAugSpec | None = None   # lips / waveform (training)

    def _frames(self, blobs, start: int, stop: int, *, color: bool) -> np.ndarray:
        frames = codec.decode_frames(list(blobs[start:stop]), color=color)
        if color and self.face_size and frames.shape[1] != self.face_size:
            interp = cv2.INTER_AREA if frames.shape[1] > self.face_size else cv2.INTER_LINEAR
            frames = np.stack([cv2.resize(f, (self.face_size, self.face_size),
                                          interpolation=interp) for f in frames])
        return frames

    def cut(self, ex: Mapping[str, Any], start: int,
            params: aug_lib.AugParams | None = None,
            audio_start: int | None = None, stop: int | None = None) -> dict[str, np.ndarray]:
        """Window [start, start+T) of ``ex``, zero-padded to T frames, as fixed-shape arrays.
        ``audio_start`` takes the audio streams (log-mel, waveform, ASR posteriors) from
        [audio_start, audio_start + n) instead (a sync negative; n frames must exist).
        ``stop`` ends the video there (frames from ``stop`` on are padding: a trimmed span)."""
        T = self.window
        nf = int(ex["num_frames"])
        end = nf if stop is None else min(nf, int(stop))
        n = max(0, min(T, end - start))
        if n == 0:
            raise ValueError(f"window start {start} is past the end of a {nf}-frame video "
                             f"{_text(ex['video_id'])}")
        a = start if audio_start is None else int(audio_start)
        if not 0 <= a <= nf - n:
            raise ValueError(f"audio window start {a} (+{n} frames) is outside the {nf}-frame "
                             f"video {_text(ex['video_id'])}")
        m = contract.MEL_PER_FRAME

        def pad(x, length, dtype, fill=0):
            out = np.full((length,) + x.shape[1:], fill, dtype)
            out[:len(x)] = x
            return out

        out: dict[str, np.ndarray] = {}
        for name in ("mouth", "face"):
            if name in self.streams:
                # mouth [n, 88, 88]; face [n, S, S, 3]
                frames = self._frames(ex[name], start, start + n, color=name == "face")
                if params is not None:
                    frames = aug_lib.apply_aug(frames, params)
                out[name] = pad(frames, T, np.uint8)
        if "logmel" in self.streams:
            logmel = np.asarray(ex["logmel"][m * a:m * (a + n)], np.float32)  # [<=4n, 80]
            # Padded frames hold the log-mel of silence, ln(LOG_FLOOR), not 0 (which is a
            # loud frame); the models also mask them out.
            out["logmel"] = pad(logmel, m * T, np.float32, LOGMEL_SILENCE)
        if "audio" in self.streams:
            if "audio" not in ex:
                raise ValueError(f"{_text(ex['video_id'])}: no raw 'audio' stream in the "
                                 "shards (built before shard format 2): rebuild the dataset")
            spf = contract.SAMPLES_PER_FRAME
            wave = contract.from_int16(ex["audio"][spf * a:spf * (a + n)])
            out["audio"] = pad(wave, spf * T, np.float32)  # [640 T]
        if "lips" in self.streams:
            # Lip landmarks in the aligned face (x, y in [0, 1]); not augmented: they
            # describe mouth shape, which flips / crops of the images do not change.
            if "lips" not in ex or not bool(ex.get("has_lips", False)):
                raise ValueError(f"{_text(ex['video_id'])}: no 'lips' landmark stream in the "
                                 "shards (built before shard format 4 or by a preprocessing "
                                 "without landmarks): rebuild the dataset")
            lips = np.asarray(ex["lips"][start:start + n], np.float32)
            out["lips"] = pad(lips.reshape(n, contract.NUM_LIPS, 2), T, np.float32)
        for name, s0 in (("teacher_audio", a), ("teacher_video", start)):
            if name in self.streams:
                k = ex[name].shape[-1]
                out[name] = pad(np.asarray(ex[name][s0:s0 + n]).reshape(n, k), T, np.float32)
        frame_mask = np.zeros(T, np.float32)
        frame_mask[:n] = 1.0
        out.update({
            "frame_mask": frame_mask,
            "face_found": pad(np.asarray(ex["face_found"][start:start + n], np.float32), T,
                              np.float32),
            "label": np.int32(ex["label"]),
            "video_fake": np.int32(ex["video_fake"]),
            "audio_fake": np.int32(ex["audio_fake"]),
            "category": np.int32(ex["category"]),
            "method": np.int32(self.method_ids[_text(ex["method"])]),
            "has_audio": np.int32(ex["has_audio"]),
            "has_teacher": np.int32(ex["has_teacher"]),
            # per-side flags (shard format 3); a writer that sets only has_teacher: both
            "has_teacher_audio": np.int32(ex.get("has_teacher_audio", ex["has_teacher"])),
            "has_teacher_video": np.int32(ex.get("has_teacher_video", ex["has_teacher"])),
            "video_id": np.int32(ex["_record"]),
            "window_start": np.int32(start),
            "valid": np.int32(1),
        })
        return out

    def random_window(self, ex: Mapping[str, Any], rng: np.random.Generator,
                      augment: bool) -> dict[str, np.ndarray]:
        """One uniformly placed window, with one augmentation draw for the whole window;
        for a real video with audio, with the probabilities of ``otf``, an on-the-fly
        pseudo-fake (:mod:`avdetect.data.otf_fakes`; a swap is only flagged here and done
        per batch, where the donors are)."""
        nf = int(ex["num_frames"])
        start = int(rng.integers(0, max(nf - self.window, 0) + 1))
        params = None
        if augment:
            params = aug_lib.sample_aug_params(rng, ops=self.aug_ops, crop_min=self.aug_crop_min,
                                               max_angle_deg=self.aug_max_rotate_deg)
        kind = None
        if self.otf is not None and self.otf.active and int(ex["label"]) == 0:
            kind = self.otf.draw(rng)
            if not int(ex["has_audio"]):
                kind = None                     # nothing to mismatch: stays real
        n = min(self.window, nf - start)
        out = None
        if kind == "shift":
            audio_start = otf_fakes.shifted_start(start, n, nf, self.otf, rng)
            if audio_start is not None:
                out = self.cut(ex, start, params, audio_start=audio_start)
                otf_fakes.mark_fake(out, self.method_ids[otf_fakes.method_name("shift")])
        elif kind == "reverse":
            out = self.cut(ex, start, params)
            otf_fakes.reverse_audio(out, ex, start, n)
            otf_fakes.mark_fake(out, self.method_ids[otf_fakes.method_name("reverse")])
        if out is None:
            out = self.cut(ex, start, params)
        if self.stream_aug is not None and self.stream_aug.active:
            # After the pseudo-fake is made, so real and turned windows alike get it (a
            # swap donor's audio, taken per batch, carries the donor's own draw); drawn
            # last, so turning it on leaves every other draw of the stream as it was.
            stream_augment.apply(out, self.stream_aug, rng)
        if self.otf is not None and self.otf.prob("swap") > 0:
            out[otf_fakes.SWAP_FLAG] = np.int32(kind == "swap")
            out[otf_fakes.IDENTITY] = np.int32(self.identity_ids[_text(ex["identity"])])
        return out

    def all_windows(self, ex: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
        """Every window of the video, stride T (the last one padded)."""
        return [self.cut(ex, s) for s in window_starts(int(ex["num_frames"]), self.window)]

    def eval_windows(self, ex: Mapping[str, Any], trim_silence: bool
                     ) -> list[dict[str, np.ndarray]]:
        """The evaluation windows of a video: :meth:`all_windows`, and with ``trim_silence``
        also those of its span without leading/trailing digital silence
        (:func:`avdetect.contract.digital_silence` of the shard's ``audio`` stream), cut
        again from [lead, T - trail), stride T. Each window then carries ``view`` (bit mask
        of ``contract.VIEW_AS_IS`` / ``VIEW_TRIMMED``), ``trim_lead``, ``trim_trail``
        (frames) and ``all_silent`` (1: the clip is silent throughout and keeps its full
        span in the trimmed view). A clip with nothing to trim scores one set of windows
        for both views, so the trimmed view costs only the clips that have silence."""
        windows = self.all_windows(ex)
        if not trim_silence:
            return windows
        if "audio" not in ex:
            raise ValueError(f"{_text(ex['video_id'])}: no raw 'audio' stream to find digital "
                             "silence in (built before shard format 2: rebuild the dataset, "
                             "or set config.eval.trim_silence=False)")
        nf = int(ex["num_frames"])
        lead, trail = contract.digital_silence(np.asarray(ex["audio"])[
            :nf * contract.SAMPLES_PER_FRAME])
        all_silent = lead + trail >= nf
        if all_silent or lead + trail == 0:
            view = contract.VIEW_AS_IS | contract.VIEW_TRIMMED
            trimmed = []
        else:
            view = contract.VIEW_AS_IS
            stop = nf - trail
            trimmed = [self.cut(ex, s, stop=stop) for s in range(lead, stop, self.window)]
        for views, ws in ((view, windows), (contract.VIEW_TRIMMED, trimmed)):
            for w in ws:
                w.update(view=np.int32(views), trim_lead=np.int32(lead),
                         trim_trail=np.int32(trail), all_silent=np.int32(all_silent))
        return windows + trimmed


def window_starts(num_frames: int, window: int) -> list[int]:
    """Start frames of the evaluation windows of a video (at least one window)."""
    return list(range(0, max(num_frames, 1), window))
