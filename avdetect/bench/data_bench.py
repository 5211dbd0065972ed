"""Data benchmark: dataset build throughput, shard size per clip, and Grain loader
throughput with 0, 1 and 2 worker processes.

    python -m avdetect.bench.data_bench                       # the real fixture clips
    python -m avdetect.bench.data_bench --dataset synthetic_av/tiny
    python -m avdetect.bench.data_bench --workers 2 --window 50 --batch 8 --batches 20
    python -m avdetect.bench.data_bench --dataset realtalk/face112 --data_dir D \
        --inputs lips,audio,label --window 25 --loader_workers 0 --cache_mb 0,1024 --batches 300

The build runs with an empty preprocessing cache (a fresh temporary directory unless
``--data_dir`` is given), so clips/s is the real preprocessing speed (decode, face
tracking, crops, log-mel, encoding). The loader figure is training examples/s (one random
window of T frames per example, augmentation on) after the first batch; the time to the
first batch (worker start-up) is printed separately. ``--cache_mb`` times the loader with
each in-memory record cache budget (``config.data.cache_mb``): run enough batches to pass
the first epoch, which reads every record from the shards either way.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time



def _shard_bytes(dataset_dir: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(dataset_dir, "*.array_record*")))


def _field_bytes(source, n: int) -> dict[str, float]:
    """Mean stored bytes per clip of the big fields over the first n examples."""
    totals = {"mouth": 0, "face": 0, "logmel": 0, "teacher": 0}
    frames = 0
    for i in range(n):
        ex = source[i]
        totals["mouth"] += sum(len(b) for b in ex["mouth"])
        totals["face"] += sum(len(b) for b in ex["face"])
        totals["logmel"] += ex["logmel"].nbytes
        totals["teacher"] += ex["teacher_audio"].nbytes + ex["teacher_video"].nbytes
        frames += int(ex["num_frames"])
    out = {k: v / n for k, v in totals.items()}
    out["frames"] = frames / n
    return out


def bench_build(name: str, data_dir: str, workers: int, manual_dir: str | None):
    from avdetect.data import build

    t0 = time.perf_counter()
    builder, report = build.build(name, data_dir=data_dir, manual_dir=manual_dir,
                                  workers=workers,
                                  cache_dir=os.path.join(data_dir, "bench_cache"))
    total = time.perf_counter() - t0
    return builder, report, total


def bench_loader(cfg: dict, workers: int, batches: int, seed: int = 0,
                 cache_mb: float | None = None) -> tuple[float, float]:
    """(seconds to the first batch, examples/s over the next ``batches`` batches);
    ``cache_mb``: config.data.cache_mb (None: the pipeline's default)."""
    from avdetect.data import pipeline

    c = dict(cfg, num_workers=workers)
    if cache_mb is not None:
        c["cache_mb"] = cache_mb
    t0 = time.perf_counter()
    it = pipeline.make_train_iterator(c, seed=seed)
    first = next(it)
    t_first = time.perf_counter() - t0
    bs = first["label"].shape[0]
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * bs / (time.perf_counter() - t1)
    del it
    return t_first, rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m avdetect.bench.data_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="realav/face112",
                   help="NAME/CONFIG to build (default: the 16 real fixture clips)")
    p.add_argument("--manual_dir", default=None)
    p.add_argument("--data_dir", default=None, help="default: a temporary directory")
    p.add_argument("--workers", type=int, default=2, help="build worker processes")
    p.add_argument("--window", type=int, default=50, help="frames per training window")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader run")
    p.add_argument("--loader_workers", default="0,1,2")
    p.add_argument("--cache_mb", default="",
                   help="comma-separated config.data.cache_mb values, each timed side by side "
                        "(0 = every window reads its record from the shards); default: the "
                        "pipeline's default only")
    p.add_argument("--inputs", default="",
                   help="comma-separated batch streams to decode (config.data.inputs); "
                        "default: every stream")
    args = p.parse_args(argv)

    from absl import flags
    flags.FLAGS.mark_as_parsed()       # Grain worker processes read absl flags

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="avdetect_data_bench_")
        data_dir = tmp.name
    try:
        builder, report, total = bench_build(args.dataset, data_dir, args.workers,
                                             args.manual_dir)
        done = report.get("preprocessed", 0)
        split = next(iter(report["written"]))
        n = sum(report["written"].values())
        print(f"dataset {args.dataset}: {report['clips']} clips listed, {n} examples written "
              f"({report.get('skipped_clips', 0)} skipped), splits {report['written']}")
        print(f"build: {done} clips preprocessed with {args.workers} worker(s) in "
              f"{report['seconds']:.1f} s -> {done / max(report['seconds'], 1e-9):.2f} clips/s "
              f"(preprocessing); whole build (listing, any on-the-fly generation, shard "
              f"writing) {total:.1f} s -> {n / total:.2f} clips/s")
        dataset_dir = os.fspath(builder.data_dir)
        shard = _shard_bytes(dataset_dir)
        import tensorflow_datasets as tfds
        src = tfds.data_source(args.dataset, split=split, data_dir=data_dir)
        fb = _field_bytes(src, min(len(src), 16))
        print(f"shards: {shard / 2**20:.1f} MiB for {n} clips -> {shard / n / 1024:.0f} KiB per "
              f"clip ({fb['frames']:.0f} frames on average: mouth {fb['mouth'] / 1024:.0f} KiB, "
              f"face {fb['face'] / 1024:.0f} KiB, logmel {fb['logmel'] / 1024:.0f} KiB, "
              f"teacher {fb['teacher'] / 1024:.0f} KiB)")
        inputs = tuple(x for x in args.inputs.split(",") if x)
        cfg = dict(name=args.dataset, data_dir=data_dir, window=args.window,
                   batch_size=args.batch, train_split=split, inputs=inputs)
        print(f"loader: training batches of {args.batch} x {args.window} frames, "
              f"augmentation on, {args.batches} timed batches, streams: "
              f"{', '.join(inputs) if inputs else 'all'}")
        caches = [float(x) for x in args.cache_mb.split(",") if x] or [None]
        for w in (int(x) for x in args.loader_workers.split(",")):
            for mb in caches:
                t_first, rate = bench_loader(cfg, w, args.batches, cache_mb=mb)
                print(f"  num_workers={w}"
                      + ("" if mb is None else f", cache_mb={mb:g}")
                      + f": {rate:8.1f} examples/s ({rate * args.window:8.0f} frames/s); "
                        f"first batch after {t_first:.1f} s")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
