"""End-to-end ``avdetect detect`` on one clip of real faces (default 10 seconds).

    python -m avdetect.bench.detect_bench [--seconds 10] [--models corrdistill:,corrdistill:tiny]
                                          [--repeats 3] [--tiny]

The clip is made once from the real fixture clips (../shared/fixtures/realav, 360x360,
25 fps, AAC 16 kHz mono) by concatenating them and re-encoding with libx264 / AAC. Models
are the real networks of the named configs (``method:get_config-arg``; ``corrdistill:``
is the paper-size default config) with random weights (speed does not depend on them),
written as ``avdetect export`` files.

Figures per model:

* ``detect CLI, cold`` - wall time of ``python -m avdetect detect CLIP --model FILE`` with
  an empty JAX compilation cache: interpreter start, imports, model load, XLA compile,
  preprocessing, scoring; its peak RSS.
* ``detect CLI, warm`` - the same command again, the compilation cache now filled: what
  a user pays for a second run of the same model.
* ``score_video, compiled`` - in one process with the model loaded and compiled (the
  per-file cost when scoring many files), best of ``--repeats``, with its stage
  breakdown (decode, face tracking, crops, audio, log-mel, windows, model).
* a ``--long_minutes`` (10) video (the clip looped) through the CLI with the last model:
  wall, CPU, peak RSS.

Goal (the issue): a 10-second clip in <= 2 s on 2 cores with the default inference
config (the model alone against the reference: ``python -m avdetect.bench --only peer``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from avdetect.bench import common
from avdetect.bench.common import Figure, emit

SECTION = "detect"
GOAL_S = 2.0
# Fixture clips concatenated (in this order, repeated as needed) to make the clip: real
# recordings first, all 360x360.
SOURCES = ("real_video-retalking_1.mp4", "real_video-retalking_4.mp4",
           "real_video-retalking_2.mp4", "real_video-retalking_3.mp4")


def make_clip(out: pathlib.Path, seconds: float, fixtures: pathlib.Path = common.FIXTURES
              ) -> pathlib.Path:
    """A ``seconds``-long H.264/AAC mp4 of real talking faces (fixture clips back to
    back, 360x360, 25 fps, 16 kHz mono)."""
    srcs = [fixtures / s for s in SOURCES]
    missing = [str(s) for s in srcs if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"fixture clips missing: {missing}")
    args: list[str] = []
    for s in srcs:
        args += ["-i", str(s)]
    n = len(srcs)
    chain = "".join(f"[{i}:v]scale=360:360,setsar=1,fps=25[v{i}];" for i in range(n))
    chain += "".join(f"[v{i}][{i}:a]" for i in range(n)) + f"concat=n={n}:v=1:a=1[v][a]"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-filter_complex", chain,
                    "-map", "[v]", "-map", "[a]", "-t", f"{seconds}", "-c:v", "libx264",
                    "-preset", "fast", "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-ar", "16000", "-ac", "1", str(out)], check=True)
    return out


def export_random(config_ref: str, out: pathlib.Path) -> pathlib.Path:
    """An ``avdetect export`` file of the config's network with random weights."""
    from avdetect.export import export_model
    return pathlib.Path(export_model(common.random_model(config_ref), str(out)))


def cli_run(clip: pathlib.Path, model_file: pathlib.Path, cache_dir: pathlib.Path
            ) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS bytes from ``os.wait4``, summary JSON with the process's
    CPU seconds added as ``_cpu_s``) of one ``avdetect detect`` process using the
    compilation cache ``cache_dir``."""
    env = dict(os.environ, AVDETECT_COMPILE_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "avdetect", "detect", str(clip),
                                 "--model", str(model_file), "--format", "json", "--timings",
                                 "--no-progress"], stdout=out, stderr=err, cwd=common.REPO,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"avdetect detect failed ({proc.returncode}): {err.read()[-2000:]}")
        summary = json.loads(out.read())
        summary["_cpu_s"] = usage.ru_utime + usage.ru_stime
        return wall, int(usage.ru_maxrss) * 1024, summary


STAGES = ("probe", "decode_video", "face_track", "crop", "decode_audio", "logmel",
          "preprocess_other", "windows", "model_compile", "model", "aggregate")


def _stages(t: dict) -> str:
    return ", ".join(f"{k} {t[k]:.3f}" for k in STAGES if k in t)


def bench_model(config_ref: str, clip: pathlib.Path, work: pathlib.Path, repeats: int,
                cli_runs: int) -> None:
    """Every figure of one model on ``clip`` (see the module docstring)."""
    from avdetect import detect
    from avdetect.media.probe import probe

    default = config_ref.endswith(":")
    label = config_ref.rstrip(":") + (" (default config)" if default else "")
    goal = f"<= {GOAL_S:g} s" if default else ""
    model_file = export_random(config_ref, work / (config_ref.replace(":", "_") + ".msgpack"))
    seconds = float(probe(clip).duration_s)
    cache = work / ("jaxcache_" + config_ref.replace(":", "_"))
    for i in range(cli_runs):
        wall, rss, summary = cli_run(clip, model_file, cache)
        t = summary["files"][0]["timings_s"]
        kind = "cold" if i == 0 else "warm"
        emit(Figure(SECTION, f"detect CLI {kind}, {label}", wall, "s", goal,
                    common.goal_at_most(wall, GOAL_S) if goal else None,
                    f"{seconds:.1f} s clip; the whole process, "
                    + ("empty compile cache" if i == 0 else "compile cache filled")
                    + f"; CPU {summary['_cpu_s']:.2f} s; model load {summary['model_load_s']:.2f} "
                    f"s, scoring {t['total']:.2f} s; peak RSS {common.fmt_bytes(rss)}; "
                    f"{common.load_text()}"))
        emit(Figure(SECTION, f"  stages inside that run (s), {label}", t["total"], "s", "",
                    None, _stages(t)))
    if repeats <= 0:
        return
    from avdetect.inference import load_model
    t0 = time.perf_counter()
    model = load_model(model_file)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    detect.score_video(clip, model)                 # compiles the batch shape once
    first = time.perf_counter() - t0
    timed = common.best_of(lambda: detect.score_video(clip, model, timings=True), repeats)
    res = timed.result
    emit(Figure(SECTION, f"score_video per file, model compiled, {label}", timed.wall, "s",
                goal, common.goal_at_most(timed.wall, GOAL_S) if goal else None,
                f"{seconds:.1f} s clip, {res.num_frames} frames, {len(res.windows)} windows of "
                f"{res.window}; best of {repeats} (median {timed.median_wall:.2f} s, CPU "
                f"{timed.cpu:.2f} s); load {load_s:.2f} s, first call with compile "
                f"{first:.2f} s; {common.load_text()}"))
    emit(Figure(SECTION, f"  stages of that call (s), {label}", res.timings["total"], "s", "",
                None, _stages(res.timings)))


def bench_long(clip: pathlib.Path, minutes: float, config_ref: str, work: pathlib.Path) -> None:
    """``avdetect detect`` on a ``minutes``-long file (``clip`` looped by stream copy):
    wall, CPU and peak RSS, i.e. whether memory stays bounded on a long video."""
    long_clip = work / f"long_{minutes:g}min.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip), "-t",
                    f"{60 * minutes}", "-c", "copy", str(long_clip)], check=True)
    model_file = work / (config_ref.replace(":", "_") + ".msgpack")
    if not model_file.exists():
        export_random(config_ref, model_file)
    cache = work / ("jaxcache_" + config_ref.replace(":", "_"))
    wall, rss, summary = cli_run(long_clip, model_file, cache)
    t = summary["files"][0]["timings_s"]
    label = config_ref.rstrip(":") or config_ref
    emit(Figure(SECTION, f"detect CLI, {minutes:g}-minute 360p video, {label}", wall, "s", "",
                None, f"{summary['files'][0]['duration_s']:.0f} s of video; CPU "
                f"{summary['_cpu_s']:.1f} s; preprocess {t['preprocess']:.1f} s, windows "
                f"{t['windows']:.1f} s, model {t['model']:.1f} s; {common.load_text()}"))
    emit(Figure(SECTION, f"  peak RSS of that run, {label}", rss / 2**20, "MiB", "", None,
                "grows with length: every frame's crops are held until scoring (mouth "
                "88x88 = 7.6 KiB per frame; face crops too, 37 KiB at 112 px, when the "
                "model reads faces)"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.bench.detect_bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--models", default="corrdistill:,corrdistill:tiny",
                    help="comma-separated METHOD:CONFIG_ARG (METHOD: = the default config)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli_runs", type=int, default=2, help="1 = cold only, 2 = cold + warm")
    ap.add_argument("--long_minutes", type=float, default=10.0,
                    help="also score a video this long with the last model (0: skip)")
    ap.add_argument("--tiny", action="store_true",
                    help="CI size: 2-second clip, the tiny model, one (cold) CLI run")
    args = ap.parse_args(argv)
    if args.tiny:
        args.seconds, args.models, args.repeats, args.cli_runs = 2.0, "corrdistill:tiny", 0, 1
        args.long_minutes = 0
    with tempfile.TemporaryDirectory(prefix="avdetect_detect_bench_") as tmp:
        work = pathlib.Path(tmp)
        clip = make_clip(work / f"clip_{args.seconds:g}s.mp4", args.seconds)
        print(f"detect bench: {clip.name}; {common.load_text()}", file=sys.stderr, flush=True)
        refs = args.models.split(",")
        for ref in refs:
            bench_model(ref, clip, work, args.repeats, args.cli_runs)
        if args.long_minutes > 0:
            bench_long(clip, args.long_minutes, refs[-1], work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
