"""Model benchmark: parameters, FLOPs per 1-second clip and train-step speed per method.

    python -m avdetect.bench.model_bench [--methods corrdistill,cad,baseline]
                                         [--configs tiny,full] [--steps 5] [--warmup 2]
    python -m avdetect.bench.model_bench --peer

Table columns: parameters (total / trainable), inference GFLOPs for one 1-second clip
(25 frames, batch 1) and training GFLOPs per example, both from XLA's cost analysis of the
compiled program, compile seconds, and the train step's median time over ``--steps``
steps after ``--warmup`` (ms per step, ms per example, examples/s).
Shapes: tiny uses its config's batch x window; full uses B=4 (the peer baseline's batch)
x the config's window unless --batch / --window say otherwise. Each timing is reported as
wall time and as process CPU time: on a machine shared with other work the CPU time / cores
is a lower bound of the wall time on an idle machine.

``--peer``: our student alone at the reference PyTorch student's shapes (full size,
112x112 grayscale, 13-d MFCC, B=4 x T=50 train steps with the teachers' posteriors given,
one 10-second clip T=250), with FLOPs and compile time. The comparison with the reference
itself runs both sides in the same run: ``python -m avdetect.bench --only peer``
(``avdetect.bench.peer_bench``); seconds from another machine mean nothing.

Times are wall-clock on whatever else the machine is doing: on a shared machine they are
provisional.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from avdetect import cpu_compile, host_memory
from avdetect.methods import build_method
from avdetect.data.random_batches import example_batch

METHODS = ("corrdistill", "cad", "baseline")


def get_config(method: str, variant: str):
    return importlib.import_module(f"configs.{method}").get_config(variant)


def count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def flops_of(compiled) -> float:
    """Total FLOPs of a compiled program from XLA's cost analysis (nan if unavailable)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def make_train_step(method, mask, lr: float = 1e-4):
    """A jitted train step as the trainer builds it: value_and_grad of ``method.loss``,
    Adam on trainable leaves and ``set_to_zero`` on frozen ones, state donated."""
    tx = optax.multi_transform({True: optax.adam(lr), False: optax.set_to_zero()},
                               jax.tree.map(bool, mask))

    def step(params, state, opt_state, batch, rng):
        def loss_fn(p):
            return method.loss({"params": p, **state}, batch, rng, train=True)

        (loss, (metrics, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    return tx, jax.jit(step, donate_argnums=(0, 1, 2), compiler_options=cpu_compile.train_step())


def time_calls(fn, n: int, warmup: int, desc: str) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of ``n`` calls of ``fn()`` (which must block)
    after ``warmup`` calls. On a machine shared with other work, CPU seconds / cores is a
    lower bound of the wall time the same call would take with the machine to itself."""
    walls, cpus = [], []
    for i in tqdm(range(warmup + n), desc=desc, leave=False, file=sys.stderr):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if i >= warmup:
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return walls, cpus


def bench_one(method_name: str, variant: str, config, batch_size: int, window: int,
              steps: int, warmup: int, audio_dim: int = 80, infer_window: int = 25,
              infer_batch: int = 1) -> dict:
    """All figures for one method / config at the given shapes."""
    method = build_method(config)
    rng = jax.random.key(0)
    batch = {k: jnp.asarray(v) for k, v in
             example_batch(config, batch_size, window, audio_dim=audio_dim).items()}
    variables = jax.jit(method.init)(rng, batch)
    host_memory.release_freed_heap()
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    mask = method.trainable_mask(params)
    trainable = sum(int(np.prod(p.shape)) for p, m in
                    zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)

    # Inference FLOPs for one clip of infer_window frames (25 = 1 second).
    one = {k: jnp.asarray(v) for k, v in
           example_batch(config, infer_batch, infer_window, audio_dim=audio_dim).items()}
    predict = jax.jit(method.predict, compiler_options=cpu_compile.inference())
    t0 = time.perf_counter()
    pred_compiled = predict.lower(variables, one).compile()
    pred_compile_s = time.perf_counter() - t0
    host_memory.release_freed_heap()
    infer_flops = flops_of(pred_compiled)

    tx, step = make_train_step(method, mask)
    opt_state = tx.init(params)
    t0 = time.perf_counter()
    step_compiled = step.lower(params, state, opt_state, batch, rng).compile()
    compile_s = time.perf_counter() - t0
    jax.clear_caches()                         # as the trainer does after compiling
    host_memory.release_freed_heap()
    train_flops = flops_of(step_compiled)

    carry = [params, state, opt_state]

    def one_step():
        p, s, o, loss = step_compiled(*carry, batch, rng)
        jax.block_until_ready(loss)
        carry[:] = [p, s, o]

    times, cpu = time_calls(one_step, steps, warmup, f"{method_name}:{variant} train")
    trained = {"params": carry[0], **carry[1]}      # the step donated the initial arrays
    infer_times, infer_cpu = time_calls(
        lambda: jax.block_until_ready(pred_compiled(trained, one)), steps, 1,
        f"{method_name}:{variant} infer")
    med = statistics.median(times)
    return dict(method=method_name, config=variant, params=count(params), trainable=trainable,
                infer_gflops=infer_flops / 1e9, train_gflops_per_ex=train_flops / 1e9 / batch_size,
                compile_s=compile_s + pred_compile_s, batch=batch_size, window=window,
                step_ms=med * 1e3, ms_per_ex=med * 1e3 / batch_size, ex_per_s=batch_size / med,
                frames_per_s=batch_size * window / med,
                infer_ms=statistics.median(infer_times) * 1e3, infer_window=infer_window,
                step_cpu_s=statistics.median(cpu), infer_cpu_s=statistics.median(infer_cpu),
                train_times=times, infer_times=infer_times, train_cpu=cpu,
                infer_cpu=infer_cpu)


def print_table(rows: list[dict]) -> None:
    head = ("method", "config", "params", "trainable", "GFLOP/1s clip", "train GFLOP/ex",
            "compile s", "B x T", "step ms", "step CPU s", "ms/ex", "ex/s", "infer ms (T)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['method']} | {r['config']} | {r['params']:,} | {r['trainable']:,} | "
              f"{r['infer_gflops']:.2f} | {r['train_gflops_per_ex']:.2f} | "
              f"{r['compile_s']:.1f} | {r['batch']} x {r['window']} | {r['step_ms']:.0f} | "
              f"{r['step_cpu_s']:.2f} | "
              f"{r['ms_per_ex']:.1f} | {r['ex_per_s']:.2f} | "
              f"{r['infer_ms']:.0f} ({r['infer_window']}) |")


def peer(steps: int, warmup: int) -> dict:
    """The peer baseline's shapes: full student, 112x112 gray, 13-d MFCC, B=4 x T=50
    train steps, and a 10-second (T=250) clip's inference."""
    config = get_config("corrdistill", "full,mouth=112,features=mfcc")
    row = bench_one("corrdistill", "peer", config, 4, 50, steps, warmup, audio_dim=13,
                    infer_window=250)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"peer shapes (corrdistill full, 112x112 gray, MFCC 13, posteriors given), "
          f"{jax.device_count()} {jax.default_backend()} device(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}:")
    print(f"  parameters                 {row['params']:,}")
    print(f"  train step B=4 x T=50      {row['step_ms'] / 1e3:.2f} s wall, "
          f"{row['step_cpu_s']:.2f} CPU s ({row['frames_per_s']:.1f} frames/s)")
    print(f"  inference 10 s (T=250)     {row['infer_ms'] / 1e3:.2f} s wall, "
          f"{row['infer_cpu_s']:.2f} CPU s")
    print(f"  train GFLOP per step       {row['train_gflops_per_ex'] * 4:.0f} "
          f"({row['train_gflops_per_ex'] * 4 / (row['step_ms'] / 1e3):.0f} GFLOP/s)")
    print(f"  compile                    {row['compile_s']:.1f} s; peak RSS {rss:.2f} GiB")
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--configs", default="tiny,full")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="override B for full configs")
    ap.add_argument("--window", type=int, default=0, help="override T for full configs")
    ap.add_argument("--peer", action="store_true", help="only the peer-baseline comparison")
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times are provisional on "
          "a shared machine; CPU seconds are steadier", flush=True)
    if args.peer:
        peer(args.steps, args.warmup)
        return
    rows = []
    for variant in args.configs.split(","):
        for name in args.methods.split(","):
            config = get_config(name, variant)
            if variant == "tiny":
                b, t = config.data.batch_size, config.data.window
            else:   # the peer baseline's batch; the config's window
                b, t = args.batch or 4, args.window or config.data.window
            rows.append(bench_one(name, variant, config, b, t, args.steps, args.warmup))
            print(f"done {name}:{variant}", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
