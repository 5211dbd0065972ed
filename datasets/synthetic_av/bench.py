"""Benchmark of the generator: clips per second for 3-second clips.

    python -m datasets.synthetic_av.bench [--clips 24] [--workers 2] [--seconds 3]

Generates ``--clips`` clips into a temporary folder (deleted afterwards) and prints the
wall-clock rate, end to end (planning, speech synthesis, rendering, H.264/AAC encoding,
ground-truth files), excluding only the one-off loading of the face stills. The project
goal is >= 2 three-second clips/s with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from datasets.synthetic_av import faces
from datasets.synthetic_av.generate import generate, read_meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic_av.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faces.load_stills()                       # one-off: decode + detect the stills
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="synthetic_av_bench_") as tmp:
        start = time.perf_counter()
        meta = generate(tmp, num_clips=args.clips, seed=args.seed, seconds=args.seconds,
                        size=args.size, workers=args.workers, progress=False)
        elapsed = time.perf_counter() - start
        n = len(read_meta(meta))
    print(f"synthetic_av: {n} clips of {args.seconds:g} s at {args.size}x{args.size}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs: {elapsed:.1f} s, "
          f"{n / elapsed:.2f} clips/s ({n * args.seconds / elapsed:.1f} s of video per s); "
          f"load average before the run {load:.1f} (other processes share the CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
