"""Teacher throughput at dataset-build time (CPU), printed as a table.

    python -m avdetect.teachers.bench [--clips DIR] [--repeats 3]

* ``asr_align`` on the real fixture clips (../shared/fixtures/realav): Whisper tiny.en
  transcription and pocketsphinx alignment timed separately, seconds per clip and
  real-time factor;
* ``deep_avsr`` AudioNet and VideoNet at the published 6+6-layer size (random weights:
  speed does not depend on their values) on 3 s and 10 s clips, first call (compile)
  and steady state;
* ``oracle`` on a generated-format ground-truth file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import jax
import numpy as np
from tqdm import tqdm

from avdetect import contract

DEFAULT_CLIPS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "realav"


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, best of the following ``repeats``)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return first, best


def bench_asr_align(clips: list[pathlib.Path]) -> list[tuple[str, str]]:
    from avdetect.media import decode
    from avdetect.media.probe import probe
    from avdetect.teachers.asr_align import AsrAlignTeacher

    teacher = AsrAlignTeacher()
    teacher.transcriber(np.zeros(contract.AUDIO_SR, np.float32))      # load + compile once
    whisper_s = align_s = audio_s = 0.0
    for clip in tqdm(clips, desc="asr_align", unit="clip"):
        n = probe(clip).num_frames
        audio = decode.load_audio(clip, num_frames=n)
        t0 = time.perf_counter()
        text = teacher.transcriber(audio)
        t1 = time.perf_counter()
        teacher(audio=audio, mouth=None, num_frames=n, meta={"transcript": text})
        t2 = time.perf_counter()
        whisper_s, align_s = whisper_s + t1 - t0, align_s + t2 - t1
        audio_s += len(audio) / contract.AUDIO_SR
    k = len(clips)
    return [("asr_align: Whisper tiny.en transcript", f"{whisper_s / k:.2f} s/clip "
             f"({whisper_s / audio_s:.2f} x real time)"),
            ("asr_align: pocketsphinx alignment + posteriors", f"{align_s / k:.2f} s/clip "
             f"({align_s / audio_s:.2f} x real time)"),
            ("asr_align: clips / mean length", f"{k} / {audio_s / k:.1f} s")]


def bench_deep_avsr(repeats: int) -> list[tuple[str, str]]:
    from avdetect.teachers import deep_avsr

    rows = []
    for cls, width, per in ((deep_avsr.AudioNet, deep_avsr.STFT_BINS, deep_avsr.STFT_PER_FRAME),
                            (deep_avsr.VideoNet, deep_avsr.LIP_FEATURE_DIM, 1)):
        module = cls()
        params = module.init(jax.random.key(0), np.zeros((1, per, width), np.float32))["params"]
        net = deep_avsr.LoadedNet(module, params)
        for seconds in (3, 10):
            frames = seconds * contract.VIDEO_FPS
            x = np.random.default_rng(0).standard_normal((frames * per, width)).astype(np.float32)
            first, best = _timed(lambda: net.posteriors(x), repeats)
            rows.append((f"deep_avsr {cls.__name__} 6+6, {seconds} s clip",
                         f"first {first:.2f} s, then {best * 1000:.0f} ms"))
    return rows


def bench_oracle(repeats: int) -> list[tuple[str, str]]:
    from avdetect.teachers.oracle import OracleTeacher

    with tempfile.TemporaryDirectory() as d:
        root = pathlib.Path(d)
        (root / "alphabet.json").write_text(json.dumps(
            {"phones": ["SIL", "P", "AA", "IY", "S"], "phone_scheme": "arpabet"}))
        t = 10 * contract.VIDEO_FPS
        track = np.random.default_rng(0).integers(0, 5, t).astype(np.int16)
        np.savez_compressed(root / "c.npz", phone=track, video_phone=track)
        teacher = OracleTeacher()
        _, best = _timed(lambda: teacher(num_frames=t, meta={"ground_truth": root / "c.npz"}),
                         repeats)
    return [("oracle, 10 s clip", f"{best * 1000:.1f} ms")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m avdetect.teachers.bench")
    parser.add_argument("--clips", type=pathlib.Path, default=DEFAULT_CLIPS,
                        help="folder of real .mp4 clips for asr_align")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = bench_oracle(args.repeats)
    clips = sorted(args.clips.glob("real_*.mp4")) if args.clips.is_dir() else []
    if clips:
        rows += bench_asr_align(clips)
    else:
        rows.append(("asr_align", f"skipped: no real_*.mp4 in {args.clips}"))
    rows += bench_deep_avsr(args.repeats)
    width = max(len(k) for k, _ in rows)
    print(f"teacher throughput on {jax.devices()[0].platform} "
          f"({jax.device_count()} device(s))")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
