"""Preprocessing throughput against its floor, pure decoding of the same files.

    python -m avdetect.bench.preprocess_bench [--repeats 3] [--sizes 360,720,1080] [--tiny]

Preprocessing = ``avdetect.preprocess.pipeline.preprocess_video`` (decode, face tracking,
mouth and face crops, audio decoding and log-mel) with its default parameters, as the
dataset build and ``avdetect detect`` run it. The floor = decoding the same files and
nothing else: every 25 fps frame to RGB (``decode.iter_frames``) and the audio to 16 kHz
mono (``decode.load_audio``). Ratio = floor seconds / preprocessing seconds (1.0 would
mean face tracking, crops and log-mel cost nothing; goal >= 0.5).

Files: the 16 real fixture clips (360x360 or 338x338), and at ``--sizes`` above 360 the
first two real clips scaled to that height inside a 16:9 frame (720p, 1080p: phone and
camera sizes), made with ffmpeg into a temporary folder. Times are the best of
``--repeats`` runs (wall clock, and CPU time of this process with every thread, the
steadier figure on a shared machine). A stage breakdown per frame (one extra run with
``preprocess_video(timer=avdetect.timing.StageTimer())``) shows where the time goes.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

from avdetect.bench import common
from avdetect.bench.common import Figure, emit

SECTION = "preprocess"
GOAL = 0.5
STAGES = ("probe", "decode_video", "face_track", "crop", "decode_audio", "logmel")


def scaled_copy(src: pathlib.Path, out: pathlib.Path, height: int) -> pathlib.Path:
    """``src`` scaled to ``height`` and centred in a 16:9 frame, H.264 (fast) / AAC."""
    width = (height * 16 // 9) // 2 * 2
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf",
                    f"scale=-2:{height},pad={width}:{height}:(ow-iw)/2:0", "-c:v", "libx264",
                    "-preset", "fast", "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "copy",
                    str(out)], check=True)
    return out


def decode_only(path) -> int:
    """The floor: decode every frame to RGB and the audio to 16 kHz mono; frame count."""
    from avdetect.media import decode
    from avdetect.media.probe import probe

    info = probe(path)
    n = sum(1 for _ in decode.iter_frames(path, info=info))
    if info.has_audio:
        decode.load_audio(path, num_frames=n, info=info)
    return n


def bench_group(label: str, paths: list[pathlib.Path], repeats: int) -> None:
    """Figures for one group of files: floor, preprocessing, ratio, stage breakdown."""
    from avdetect.preprocess import pipeline
    from avdetect.timing import StageTimer

    frames = dec_wall = dec_cpu = pre_wall = pre_cpu = 0.0
    for p in paths:
        d = common.best_of(lambda: decode_only(p), repeats)
        r = common.best_of(lambda: pipeline.preprocess_video(p), repeats)
        frames += d.result
        dec_wall, dec_cpu = dec_wall + d.wall, dec_cpu + d.cpu
        pre_wall, pre_cpu = pre_wall + r.wall, pre_cpu + r.cpu
    timer = StageTimer()
    for p in paths:
        pipeline.preprocess_video(p, timer=timer)
    stages = timer.seconds
    ratio, ratio_cpu = dec_wall / pre_wall, dec_cpu / pre_cpu
    what = f"{len(paths)} file(s), {int(frames)} frames, best of {repeats}"
    emit(Figure(SECTION, f"preprocessing / decode, {label}", ratio, "ratio", f">= {GOAL}",
                common.goal_at_least(ratio, GOAL),
                f"wall: decode {frames / dec_wall:.0f} frames/s, preprocessing "
                f"{frames / pre_wall:.0f} frames/s; CPU-time ratio {ratio_cpu:.2f} "
                f"(decode {frames / dec_cpu:.0f}, preprocessing {frames / pre_cpu:.0f} frames/s "
                f"of CPU); {what}; {common.load_text()}"))
    per_frame = {k: 1e3 * v / frames for k, v in stages.items()}
    emit(Figure(SECTION, f"  preprocessing per frame, {label}", 1e3 * pre_wall / frames,
                "ms", "", None, "stages (one run, ms/frame): "
                + ", ".join(f"{k} {per_frame[k]:.3f}" for k in STAGES if k in per_frame)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.bench.preprocess_bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="360,720,1080",
                    help="360 = the fixture clips as they are; larger = scaled copies")
    ap.add_argument("--tiny", action="store_true", help="CI size: 2 fixture clips, 1 run")
    args = ap.parse_args(argv)
    clips = sorted(common.FIXTURES.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no fixture clips in {common.FIXTURES}")
    if args.tiny:
        clips, args.repeats, args.sizes = clips[-2:], 1, "360"
    from avdetect.preprocess import pipeline
    pipeline.preprocess_video(clips[0])     # one-off costs: imports, cascade, filter bank
    print(f"preprocess bench: {common.load_text()}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="avdetect_preprocess_bench_") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            if size <= 360:
                bench_group("fixture clips (360p)", clips, args.repeats)
                continue
            reals = [c for c in clips if c.name.startswith("real_")][:2]
            big = [scaled_copy(c, pathlib.Path(tmp) / f"{c.stem}_{size}p.mp4", size)
                   for c in reals]
            bench_group(f"{size}p copies", big, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
