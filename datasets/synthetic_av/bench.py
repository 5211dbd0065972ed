"""Benchmark of the generator: clips per second for 3-second clips.

    python -m datasets.synthetic_av.bench [--clips 24] [--workers 2] [--seconds 3]

Prints two figures:

* wall-clock clips/s of ``generate`` with ``--workers`` processes, end to end (planning,
  speech synthesis, rendering, H.264/AAC encoding, ground-truth files), excluding only
  the one-off loading of the face stills; on a shared machine this depends on the load,
  which is printed with it;
* CPU seconds per clip, measured in this process on one clip of each method and
  averaged over the plan's mix of methods (the espeak-ng server's ~10 ms per utterance
  not included), and the rate that gives on as many idle cores as workers.

The project goal is >= 2 three-second clips/s with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from avdetect import contract

from datasets.synthetic_av import faces
from datasets.synthetic_av.generate import generate, plan, read_meta, write_clip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic_av.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stills = {s.name: s for s in faces.load_stills()}   # one-off: decode + detect stills
    num_frames = int(round(args.seconds * contract.VIDEO_FPS))

    with tempfile.TemporaryDirectory(prefix="synthetic_av_bench_") as tmp:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        meta = generate(os.path.join(tmp, "run"), num_clips=args.clips, seed=args.seed,
                        seconds=args.seconds, size=args.size, workers=args.workers,
                        progress=False)
        elapsed = time.perf_counter() - start
        n = len(read_meta(meta))
        print(f"synthetic_av: {n} clips of {args.seconds:g} s at {args.size}x{args.size}, "
              f"{args.workers} workers, {os.cpu_count()} CPUs: {elapsed:.1f} s wall, "
              f"{n / elapsed:.2f} clips/s (load average before the run {load:.1f}; other "
              "processes share the CPUs)")

        # CPU cost per method (one clip each, after a warm-up clip), averaged with the
        # plan's mix of methods (half of the clips are real).
        _, specs = plan(num_clips=max(args.clips, 20), seed=args.seed, seconds=args.seconds)
        first = {}
        for spec in specs:
            first.setdefault(spec.method, spec)
        write_clip(specs[0], os.path.join(tmp, "cpu"), stills, args.size, num_frames)
        cost = {}
        for method, spec in first.items():
            cpu0 = time.process_time()
            write_clip(spec, os.path.join(tmp, "cpu"), stills, args.size, num_frames)
            cost[method] = time.process_time() - cpu0
        mix = [cost[s.method] for s in specs]
        per_clip = sum(mix) / len(mix)
        print("synthetic_av: CPU s per clip by method: "
              + ", ".join(f"{m} {c:.2f}" for m, c in sorted(cost.items())))
        print(f"synthetic_av: {per_clip:.3f} CPU s per clip (plan mix, espeak server "
              f"excluded) -> {args.workers / per_clip:.2f} clips/s on {args.workers} idle "
              "cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
