"""XLA:CPU compiler options for each kind of program: the train step, inference (the
predict function, the trainer's eval step, the teachers' networks) and quick smoke-run
compiles. One home, so the trainer, evaluation, ``avdetect detect``, the dataset build's
teachers and the benchmarks compile the same way.

Each option was measured side by side (`python -m avdetect.bench.peer_bench`; BENCHMARKS.md,
"Peer" and its speed attempts):

* ``xla_cpu_experimental_ynn_fusion_type``: JAX 0.10's XLA:CPU hands convolutions to
  YNNPACK by default, and a YNNPACK convolution runs on one thread (a 3x3 conv's CPU time
  equals its wall time). Keeping convolutions on XLA's own multi-threaded kernels and
  YNNPACK for dots and reductions made the reference-shape train step 2.96 -> 2.06 s
  wall on 2 cores and a 10 s clip's inference 0.85 -> 0.58-0.62 s. Training keeps the
  YNNPACK reductions: without them BatchNorm's batch statistics materialise the squared
  input of the largest map (the compiled step's temporary memory 0.86 -> 1.02 GiB).
  Inference has no batch statistics, and its remaining reductions run faster on XLA's.
* ``xla_cpu_scheduler_type``: XLA:CPU's default scheduler orders a program for
  concurrency, e.g. it computes the weight gradients' transposed copies of activations
  during the forward pass and keeps them; the memory-optimised one keeps the train step's
  temporary memory lower (1.48 -> 1.15 GiB at the reference's shapes, before the other
  memory changes) at about the same CPU time.
* Fast compile: LLVM without its optimisations, ~8x faster compiles of init (28 -> 3 s
  for a tiny student) and about 2x slower steps: for init, smoke runs and tests.

Off CPU every function here returns None (the accelerator's defaults).
"""

from __future__ import annotations

import jax

_YNN = "LIBRARY_FUSION_TYPE_"

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TRAIN_STEP = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
              "xla_cpu_experimental_ynn_fusion_type": f"{_YNN}INDIVIDUAL_DOT,{_YNN}REDUCE"}
INFERENCE = {"xla_cpu_experimental_ynn_fusion_type": f"{_YNN}INDIVIDUAL_DOT"}


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def train_step(fast: bool = False) -> dict | None:
    """Options of a train step (``fast``: quick compile for smoke runs, slower steps)."""
    if not _on_cpu():
        return None
    return {**TRAIN_STEP, **(FAST_COMPILE if fast else {})}


def inference(fast: bool = False) -> dict | None:
    """Options of a program that runs the model in eval mode (predict, eval step)."""
    if not _on_cpu():
        return None
    return {**INFERENCE, **(FAST_COMPILE if fast else {})}


def run_once() -> dict | None:
    """Options of a program run once (init): compile time is all that matters."""
    return dict(FAST_COMPILE) if _on_cpu() else None
