"""Train-step throughput through the real trainer, and the loader.

    python -m avdetect.bench.train_bench [--methods corrdistill,cad,baseline]
                                         [--configs tiny,full] [--steps 5] [--warmup 2]
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python -m avdetect.bench.train_bench --methods corrdistill --configs tiny --devices 4
    python -m avdetect.bench.train_bench --loader [--tiny]

Train step: ``avdetect.steps.Steps`` (the trainer's own jitted step: sharded over the
config's mesh, state donated, metrics collected) on the trainer's ``'random'`` data
(``config.data.name = 'random'``: batches of the data contract's shapes), median of
``--steps`` steps after ``--warmup`` (the first includes compilation, reported apart).
Tiny configs run at their own batch x window; full configs at ``--batch`` (default 4,
the peer baseline's batch, since the configs' accelerator batches of 32-40 clips take
minutes per step on 2 CPU cores) x their own window (50; CAD 25) or ``--window``. ``--devices N`` checks that N
devices are visible (simulated CPU devices come from ``XLA_FLAGS``, which must be set
before JAX starts: the benchmark command starts one process per device count).

The comparison with the reference PyTorch student runs both in the same run:
``avdetect.bench.peer_bench`` (``python -m avdetect.bench --only peer``).

``--loader``: builds ``realav/face112`` from the fixture clips (``data_bench.bench_build``)
and times the Grain training loader (``data_bench.bench_loader``) on the correlation-
distillation streams at T = 25 and 50; the benchmark command divides these by the train
step's examples/s at the same T (goal: loader >= 5x the step's consumption).
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import statistics
import sys
import tempfile
import time

from avdetect.bench import common
from avdetect.bench.common import Figure, emit

METHODS = ("corrdistill", "cad", "baseline")
LOADER_GOAL = 5.0


# ----------------------------------------------------------------------------- train step

def trainer_config(method: str, variant: str, batch: int, window: int, fast_compile: bool):
    """``configs/<method>.py:<variant>`` on the trainer's random data at B x T."""
    import importlib

    config = importlib.import_module(f"configs.{method}").get_config(variant)
    config.data.name = "random"
    if batch:
        config.data.batch_size = batch
    if window:
        config.data.window = window
    config.train.fast_compile = fast_compile
    return config


def bench_train_step(config, steps: int, warmup: int) -> dict:
    """Compile and time the trainer's step for ``config``: dict of seconds and shapes."""
    import jax
    import numpy as np

    from avdetect import sharding
    from avdetect.input_pipeline import make_train_iterator
    from avdetect.methods import build_method
    from avdetect.steps import Steps

    mesh = sharding.make_mesh(config.get("mesh", None) or [("data", -1)])
    it = make_train_iterator(config, mesh)
    batches = [sharding.host_to_global(next(it), mesh) for _ in range(2)]
    method = build_method(config)
    t0 = time.perf_counter()
    s = Steps(config, method, mesh, batches[0])
    # The state the trainer's init would make, from random weights drawn in NumPy: the
    # init program's compilation (seconds to a minute) is not what is measured here.
    variables = common.random_variables(config)
    params = variables.pop("params")
    state = {"params": params, "opt_state": s.tx.init(params), "model_state": variables,
             "step": np.zeros((), np.int32), "rng": jax.random.PRNGKey(1)}
    state = jax.device_put(state, s.state_sharding)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = s.train_step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    times, cpus = [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    n_params = sum(int(a.size) for a in jax.tree.leaves(state["params"]))
    med = statistics.median(times)
    b, t = int(config.data.batch_size), int(config.data.window)
    return {"step_s": med, "best_s": min(times), "cpu_s": statistics.median(cpus),
            "init_s": init_s, "compile_s": compile_s,
            "batch": b, "window": t, "params": n_params, "devices": jax.device_count(),
            "ex_per_s": b / med, "frames_per_s": b * t / med}


def train_section(methods, variants, batch: int, window: int, steps: int, warmup: int,
                  devices: int, fast_compile: bool) -> None:
    import jax

    if devices and jax.device_count() != devices:
        raise SystemExit(f"--devices {devices}: JAX sees {jax.device_count()} device(s); set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
    for variant in variants:
        for m in methods:
            full = variant != "tiny"
            config = trainer_config(m, variant, batch if full else 0, window if full else 0,
                                    fast_compile)
            r = bench_train_step(config, steps, warmup)
            where = f"{r['devices']} device{'s' if r['devices'] > 1 else ''}"
            name = (f"train step {m}:{variant} on {where}" if devices else
                    f"train step {m}:{variant}")
            emit(Figure("train", name, r["ex_per_s"], "ex/s", "", None,
                        f"B={r['batch']} x T={r['window']}: {r['step_s'] * 1e3:.0f} ms/step "
                        f"median of {steps} (best {r['best_s'] * 1e3:.0f}; CPU "
                        f"{r['cpu_s'] * 1e3:.0f} ms), "
                        f"{r['frames_per_s']:.0f} frames/s; {r['params']:,} params; compile "
                        f"{r['compile_s']:.1f} s"
                        + ("; fast_compile (unoptimised XLA)" if fast_compile else "")))
            print(f"done {m}:{variant} ({common.load_text()})", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- loader

def _fixture_subset(root: pathlib.Path, names: list[str]) -> pathlib.Path:
    """A manual folder holding ``names`` of the fixture clips (symlinks + manifest)."""
    with open(common.FIXTURES / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["file"] in names]
        fields = reader.fieldnames
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        os.symlink(common.FIXTURES / r["file"], root / r["file"])
    return root


def loader_section(tiny: bool, batches: int, workers: list[int]) -> None:
    from absl import flags

    from avdetect.bench import data_bench

    flags.FLAGS.mark_as_parsed()             # Grain worker processes read absl flags
    inputs = ("mouth", "logmel", "teacher_audio", "teacher_video", "label")   # corrdistill
    with tempfile.TemporaryDirectory(prefix="avdetect_loader_bench_") as tmp:
        manual = None
        if tiny:
            manual = str(_fixture_subset(pathlib.Path(tmp) / "src", [
                "real_video-retalking_6.mp4", "fake_video-retalking_full_1.mp4"]))
        data_dir = os.path.join(tmp, "data")
        _, report, total = data_bench.bench_build("realav/face112", data_dir, 2, manual)
        n = sum(report["written"].values())
        emit(Figure("loader", "dataset build realav/face112 (2 workers)",
                    report["preprocessed"] / max(report["seconds"], 1e-9), "clips/s", "", None,
                    f"{n} clips written; preprocessing {report['seconds']:.1f} s, whole build "
                    f"{total:.1f} s"))
        split = next(iter(report["written"]))
        for window in ((25,) if tiny else (25, 50)):
            for w in workers:
                cfg = dict(name="realav/face112", data_dir=data_dir, window=window,
                           batch_size=8, train_split=split, inputs=inputs)
                first, rate = data_bench.bench_loader(cfg, w, batches)
                emit(Figure("loader", f"loader T={window}, {w} worker process(es)", rate,
                            "ex/s", "", None,
                            f"batches of 8 x {window} frames, corrdistill streams, "
                            f"augmentation on, {batches} batches; first batch after "
                            f"{first:.1f} s"))


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.bench.train_bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--configs", default="tiny,full")
    ap.add_argument("--batch", type=int, default=4, help="B for full configs")
    ap.add_argument("--window", type=int, default=0,
                    help="T for full configs (default: the config's own, 50 or 25 for CAD)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--devices", type=int, default=0,
                    help="expected device count (simulated via XLA_FLAGS); named in the figures")
    ap.add_argument("--fast_compile", action="store_true",
                    help="config.train.fast_compile (unoptimised XLA: CI smoke runs only)")
    ap.add_argument("--loader", action="store_true", help="the loader figures only")
    ap.add_argument("--loader_workers", default="0,2")
    ap.add_argument("--loader_batches", type=int, default=20)
    ap.add_argument("--tiny", action="store_true", help="loader: 2 clips, T=25, 5 batches")
    args = ap.parse_args(argv)
    print(f"train bench: {common.load_text()}", file=sys.stderr, flush=True)
    if args.loader:
        workers = [int(x) for x in args.loader_workers.split(",")]
        loader_section(args.tiny, 5 if args.tiny else args.loader_batches,
                       [0] if args.tiny else workers)
    else:
        train_section(args.methods.split(","), args.configs.split(","), args.batch,
                      args.window, args.steps, args.warmup, args.devices, args.fast_compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
