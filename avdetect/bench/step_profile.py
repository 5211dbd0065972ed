"""Where the train step's time goes, in CPU seconds (steady on a shared machine).

    python -m avdetect.bench.step_profile [--part ours,torch,ops] [--repeats 2]

* ``ours``: the correlation-distillation student at the reference's shapes (full,
  112x112 gray, MFCC 13, B=4 x T=50): the loss forward pass and forward + backward
  (``jax.jit``, no optimizer), then the visual front end (stem + ResNet-18 trunk on the
  B*T frames) alone, forward and forward + backward; plus the compiled train step's temp
  memory (``memory_analysis``).
* ``torch``: the torch reference student (:mod:`avdetect.bench.torch_ref`), one thread,
  forward / backward of a train step.
* ``ops``: single jitted ops on the trunk's shapes: 3x3 convolutions per stage (forward,
  input gradient, weight gradient: XLA's and :func:`avdetect.models.layers.
  conv_chunked_wgrad`'s over chunks of frames), the 7x7 stem conv, max-pool (XLA's and
  :func:`avdetect.models.layers.max_pool_indexed`), BN + ReLU (autodiff and
  :func:`avdetect.models.layers.bn_relu_train`).

Each figure is the minimum process CPU time of ``--repeats`` calls after one warm-up.
"""

from __future__ import annotations

import argparse
import time


def _jit(fn):
    """``jax.jit`` with the train step's XLA:CPU options (avdetect/cpu_compile.py), so each
    part is compiled as the trainer compiles it."""
    import jax

    from avdetect import cpu_compile
    return jax.jit(fn, compiler_options=cpu_compile.train_step())


def cpu_min(fn, *args, repeats: int = 2) -> float:
    """Minimum process CPU seconds of ``fn(*args)`` (blocked) after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        jax.block_until_ready(fn(*args))
        best = min(best, time.process_time() - c0)
    return best


def profile_ours(repeats: int) -> None:
    import jax
    import jax.numpy as jnp

    from avdetect.bench import model_bench
    from avdetect.methods import build_method
    from avdetect.data.random_batches import example_batch
    from avdetect.models.layers import to_float_image
    from avdetect.models.visual import MOUTH_MEAN, MOUTH_STD, MouthFrontend

    cfg = model_bench.get_config("corrdistill", "full,mouth=112,features=mfcc")
    method = build_method(cfg)
    batch = {k: jnp.asarray(v) for k, v in example_batch(cfg, 4, 50, audio_dim=13).items()}
    variables = jax.jit(method.init)(jax.random.key(0), batch)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    tx, step = model_bench.make_train_step(method, method.trainable_mask(params))
    compiled = step.lower(params, state, tx.init(params), batch, jax.random.key(1)).compile()
    mem = compiled.memory_analysis()
    print(f"ours: train step {model_bench.flops_of(compiled) / 1e9:.0f} GFLOP, compiled temp "
          f"memory {mem.temp_size_in_bytes / 2**30:.2f} GiB", flush=True)
    loss = lambda p: method.loss({"params": p, **state}, batch, jax.random.key(1),  # noqa: E731
                                 train=True)[0]
    print(f"ours: step forward {cpu_min(_jit(loss), params, repeats=repeats):.2f} CPU s, "
          f"forward + backward {cpu_min(_jit(jax.grad(loss)), params, repeats=repeats):.2f}",
          flush=True)
    front = MouthFrontend(stem=cfg.model.visual.stem)
    x = to_float_image(batch["mouth"], MOUTH_MEAN, MOUTH_STD)
    stats = state["batch_stats"]["visual_encoder"]["frontend"]
    fe = lambda p: front.apply({"params": p, "batch_stats": stats}, x, True,  # noqa: E731
                               mutable=["batch_stats"])[0].sum()
    p = params["visual_encoder"]["frontend"]
    print(f"ours: visual front end forward {cpu_min(_jit(fe), p, repeats=repeats):.2f} CPU s, "
          f"forward + backward {cpu_min(_jit(jax.grad(fe)), p, repeats=repeats):.2f}",
          flush=True)


def profile_torch(repeats: int) -> None:
    import torch

    from avdetect.bench import torch_ref

    torch.set_num_threads(1)
    model = torch_ref.build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    frames, mfcc = torch.rand(4, 50, 112, 112) * 255, torch.randn(4, 200, 13)
    labels = (torch.arange(4)[:, None] % 2).expand(4, 50).contiguous()
    target = torch.rand(4, 50)
    fwd, bwd = [], []
    for _ in range(repeats + 1):
        opt.zero_grad(set_to_none=True)
        c0 = time.process_time()
        loss = torch_ref.train_loss(model(frames, mfcc), labels, target)
        c1 = time.process_time()
        loss.backward()
        c2 = time.process_time()
        opt.step()
        fwd.append(c1 - c0)
        bwd.append(c2 - c1)
    print(f"torch (1 thread): step forward {min(fwd[1:]):.2f} CPU s, backward "
          f"{min(bwd[1:]):.2f}", flush=True)


def profile_ops(repeats: int) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from avdetect.models.layers import bn_relu_train, conv_chunked_wgrad, max_pool_indexed
    from avdetect.models.visual import WGRAD_CHUNK

    key = jax.random.key(0)
    for n, h, c, co, s, k in [(200, 28, 64, 64, 1, 3), (200, 14, 128, 128, 1, 3),
                              (200, 7, 256, 256, 1, 3), (200, 4, 512, 512, 1, 3),
                              (200, 112, 1, 64, 2, 7)]:
        x = jax.random.normal(key, (n, h, h, c))
        w = 0.05 * jax.random.normal(key, (k, k, c, co))

        def conv(x, w, s=s, k=k):
            return jax.lax.conv_general_dilated(x, w, (s, s), ((k // 2,) * 2,) * 2,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        def chunked(x, w, s=s, k=k):
            return conv_chunked_wgrad(x, w, (s, s), ((k // 2,) * 2,) * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      chunk=WGRAD_CHUNK)

        g = jnp.ones_like(conv(x, w))
        dx = _jit(lambda x, w, g, conv=conv: jax.vjp(lambda a: conv(a, w), x)[1](g)[0])
        dw = _jit(lambda x, w, g, conv=conv: jax.vjp(lambda b: conv(x, b), w)[1](g)[0])
        dwc = _jit(lambda x, w, g, f=chunked: jax.vjp(lambda b: f(x, b), w)[1](g)[0])
        print(f"ops: conv {k}x{k} {c}->{co} on {n}x{h}x{h}: forward "
              f"{cpu_min(_jit(conv), x, w, repeats=repeats):.3f} CPU s, input grad "
              f"{cpu_min(dx, x, w, g, repeats=repeats):.3f}, weight grad "
              f"{cpu_min(dw, x, w, g, repeats=repeats):.3f}, weight grad over chunks of "
              f"{WGRAD_CHUNK} frames {cpu_min(dwc, x, w, g, repeats=repeats):.3f}", flush=True)
    z = jax.random.normal(key, (200, 56, 56, 64))
    pools = {"nn.max_pool": lambda z: nn.max_pool(z, (3, 3), (2, 2), padding=((1, 1), (1, 1))),
             "max_pool_indexed": lambda z: max_pool_indexed(z, 3, 2, 1)}
    for name, pool in pools.items():
        back = _jit(jax.grad(lambda z, pool=pool: pool(z).sum()))
        print(f"ops: {name} 3x3/2 on 200x56x56x64: forward "
              f"{cpu_min(_jit(pool), z, repeats=repeats):.3f} CPU s, forward + backward "
              f"{cpu_min(back, z, repeats=repeats):.3f}", flush=True)
    ones, zeros = jnp.ones((64,)), jnp.zeros((64,))
    bns = {"BN + ReLU (autodiff)": lambda z: jax.nn.relu(
               (z - z.mean((0, 1, 2))) / jnp.sqrt(z.var((0, 1, 2)) + 1e-3)),
           "layers.bn_relu_train": lambda z: bn_relu_train(z, ones, zeros, 1e-3)[0]}
    for name, bn in bns.items():
        print(f"ops: {name} on 200x56x56x64: forward "
              f"{cpu_min(_jit(bn), z, repeats=repeats):.3f} CPU s, forward + backward "
              f"{cpu_min(_jit(jax.grad(lambda z, bn=bn: (bn(z) * z).sum())), z, repeats=repeats):.3f}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="ours,torch,ops")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    parts = {"ours": profile_ours, "torch": profile_torch, "ops": profile_ops}
    for name in args.part.split(","):
        if name not in parts:
            raise SystemExit(f"unknown part {name!r}; known: {', '.join(parts)}")
        parts[name](args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
