"""Our student against the reference PyTorch student, side by side in one run.

    python -m avdetect.bench --only peer            (the section, as part of the command)
    python -m avdetect.bench.peer_bench [--steps 5] [--warmup 2] [--threads 2] [--tiny]

Each side runs in its own child process (so each peak RSS is its own), back to back,
pinned to the same ``--threads`` CPUs (``sched_setaffinity``; torch also gets
``set_num_threads``), same shapes: a train step on B=4 x T=50 mouth crops 112x112 gray +
MFCC 13 (4T frames) with per-frame labels and the teacher signal given, and the
inference of one 10-second clip (T=250), float32. Reported: median of ``--steps`` timed
calls after ``--warmup`` untimed ones, min and max beside it, and each child's peak RSS
(its training peak: inference comes after and needs less).

* torch side: :mod:`avdetect.bench.torch_ref` (the reference layout, written for this
  project), eager mode, Adam, loss = per-frame CE + correlation BCE;
* our side: the correlation-distillation student as configured by
  ``configs/corrdistill.py:full,mouth=112,features=mfcc`` (its own loss with the
  teachers' posteriors given, Adam), the trainer's jitted step.

The figures are ratios (torch time / our time: above 1 = ours faster; our RSS / torch
RSS: below 1 = ours smaller). Absolute seconds depend on the machine, so only ratios from
the same run are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from avdetect.bench import common
from avdetect.bench.common import Figure, emit

RESULT = "@@side "
PEER_CONFIG = "mouth=112,features=mfcc"        # after "full," or "tiny,"
GOALS = {"train": 1.0, "infer": 2.0, "rss": 1.0}   # the bars (ratios)


def _pin(threads: int) -> list[int]:
    """Pin this process to the first ``threads`` CPUs it may use; the CPUs chosen."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    return cpus


def _timed(fn, steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of ``steps`` calls after ``warmup`` calls. On a
    loaded machine CPU seconds are the steadier of the two (others' load adds wall time)."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def _inputs(b: int, t: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    mouth = rng.integers(0, 256, (b, t, 112, 112)).astype(np.uint8)
    mfcc = rng.normal(size=(b, 4 * t, 13)).astype(np.float32)
    return mouth, mfcc


def run_torch(b: int, t: int, infer_t: int, steps: int, warmup: int, tiny: bool) -> dict:
    import torch

    from avdetect.bench import torch_ref

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = torch_ref.build(dims=torch_ref.TINY if tiny else None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    mouth, mfcc = _inputs(b, t)
    frames = torch.from_numpy(mouth).float()
    feats = torch.from_numpy(mfcc)
    labels = (torch.arange(b)[:, None] % 2).expand(b, t).contiguous()
    target = torch.rand(b, t, generator=torch.Generator().manual_seed(0))

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = torch_ref.train_loss(model(frames, feats), labels, target)
        loss.backward()
        opt.step()
        return loss.item()

    train_s, train_cpu = _timed(step, steps, warmup)
    one_mouth, one_mfcc = _inputs(1, infer_t, seed=1)
    one = torch.from_numpy(one_mouth).float(), torch.from_numpy(one_mfcc)
    model.eval()

    def infer():
        with torch.no_grad():
            return model(*one)["logits"].sum().item()

    infer_s, infer_cpu = _timed(infer, steps, 1)
    return {"train_s": train_s, "infer_s": infer_s, "train_cpu": train_cpu,
            "infer_cpu": infer_cpu, "params": torch_ref.count_parameters(model),
            "version": f"torch {torch.__version__}"}


def run_ours(b: int, t: int, infer_t: int, steps: int, warmup: int, tiny: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from avdetect.bench import model_bench

    config = model_bench.get_config("corrdistill", ("tiny," if tiny else "full,") + PEER_CONFIG)
    if tiny:
        from avdetect.bench import torch_ref
        for key, value in torch_ref.flax_overrides(torch_ref.TINY).items():
            node = config.model
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    row = model_bench.bench_one("corrdistill", "peer", config, b, t, steps, warmup,
                                audio_dim=13, infer_window=infer_t)
    return {"train_s": row["train_times"], "infer_s": row["infer_times"],
            "matmul_gflops": matmul_peak(512 if tiny else 3072),
            "train_cpu": row["train_cpu"], "infer_cpu": row["infer_cpu"],
            "params": row["params"], "version": f"jax {jax.__version__}",
            "compile_s": row["compile_s"], "stem": config.model.visual.stem,
            "gflop_step": row["train_gflops_per_ex"] * b}


def matmul_peak(n: int, calls: int = 5) -> float:
    """GFLOP/s of a jitted float32 n x n matmul on this process's CPUs (best of
    ``calls``): the hardware reference the train step's own GFLOP/s is read against."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def side_main(side: str, args) -> None:
    cpus = _pin(args.threads)
    b, t, it = (1, 8, 25) if args.tiny else (4, 50, 250)
    fn = run_torch if side == "torch" else run_ours
    res = fn(b, t, it, args.steps, args.warmup, args.tiny)
    res.update(side=side, cpus=cpus, batch=b, window=t, infer_window=it,
               peak_rss=common.self_peak_rss())
    print(RESULT + json.dumps(res), flush=True)


def _spawn(side: str, args) -> dict:
    argv = [sys.executable, "-m", "avdetect.bench.peer_bench", "--side", side,
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(argv, cwd=common.REPO, env=env, stdout=subprocess.PIPE, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"peer bench: the {side} side failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT):])


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def _peak_note(ref: dict, ours: dict) -> str:
    """Both sides' train-step rate against the float32 matmul rate measured on the same
    CPUs (XLA's FLOP count of our step; the reference computes the same convolutions)."""
    if not ours.get("matmul_gflops") or not ours.get("gflop_step"):
        return ""
    peak, flop = ours["matmul_gflops"], ours["gflop_step"]
    rate = lambda side: flop / statistics.median(side["train_s"])  # noqa: E731
    return (f"; step {flop:.0f} GFLOP: ours {rate(ours):.0f} GFLOP/s = "
            f"{rate(ours) / peak:.2f}, torch {rate(ref):.0f} = {rate(ref) / peak:.2f} of the "
            f"float32 matmul rate on these CPUs ({peak:.0f} GFLOP/s)")


def compare(ref: dict, ours: dict) -> list[Figure]:
    """The ratio figures of one torch / ours pair of results."""
    med = statistics.median
    shapes = (f"B={ours['batch']} x T={ours['window']}, 112x112 gray, MFCC 13, "
              f"{len(ours['cpus'])} threads")
    tr = med(ref["train_s"]) / med(ours["train_s"])
    inf = med(ref["infer_s"]) / med(ours["infer_s"])
    tr_cpu = med(ref["train_cpu"]) / med(ours["train_cpu"])
    inf_cpu = med(ref["infer_cpu"]) / med(ours["infer_cpu"])
    rss = ours["peak_rss"] / ref["peak_rss"]
    return [
        Figure("peer", f"train step speed vs torch reference ({shapes})", tr, "x",
               f">= {GOALS['train']:g}x", common.goal_at_least(tr, GOALS["train"]),
               f"wall: torch {_spread(ref['train_s'])}; ours {_spread(ours['train_s'])}; "
               f"CPU-time ratio {tr_cpu:.2f}x; our stem {ours.get('stem')}"
               + _peak_note(ref, ours)),
        Figure("peer", f"inference speed, one clip of T={ours['infer_window']} vs torch "
               "reference", inf, "x", f">= {GOALS['infer']:g}x",
               common.goal_at_least(inf, GOALS["infer"]),
               f"wall: torch {_spread(ref['infer_s'])}; ours {_spread(ours['infer_s'])}; "
               f"CPU-time ratio {inf_cpu:.2f}x"),
        Figure("peer", "training peak RSS, ours / torch reference", rss, "x",
               f"<= {GOALS['rss']:g}x", common.goal_at_most(rss, GOALS["rss"]),
               f"torch {common.fmt_bytes(ref['peak_rss'])}; ours "
               f"{common.fmt_bytes(ours['peak_rss'])}"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("torch", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="CI size (seconds): tiny widths, "
                    "B=1 x T=8, 1 s inference")
    args = ap.parse_args(argv)
    if args.side:
        side_main(args.side, args)
        return 0
    print(f"peer bench: {common.load_text()}", file=sys.stderr, flush=True)
    ref = _spawn("torch", args)
    print(f"  torch: train {_spread(ref['train_s'])}, peak RSS "
          f"{common.fmt_bytes(ref['peak_rss'])}", file=sys.stderr, flush=True)
    ours = _spawn("ours", args)
    print(f"  ours:  train {_spread(ours['train_s'])}, peak RSS "
          f"{common.fmt_bytes(ours['peak_rss'])}; {common.load_text()}",
          file=sys.stderr, flush=True)
    for fig in compare(ref, ours):
        emit(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
