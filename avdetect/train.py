"""The training loop and eval-only mode (big_vision style: one readable loop in banner
sections).

    python -m avdetect.main --config=configs/corrdistill.py:tiny --workdir=/tmp/cd

The same command runs on one CPU, one GPU host or every host of a TPU pod (see
``avdetect/main.py`` for multi-host start-up). What happens, in order:

  mesh -> input -> model/optimizer -> sharding -> checkpoint resume -> evaluators -> loop

* Mesh and sharding come from ``config.mesh`` and ``config.sharding_strategy``
  (``avdetect.sharding``); the train step is jit-compiled with explicit in/out
  shardings and the state buffers donated.
* Each process reads its own part of every global batch (``process_index`` of
  ``process_count``; ``avdetect.input_pipeline``) and the parts are assembled into
  global arrays.
* The train state is ``{'params', 'opt_state', 'model_state', 'step', 'rng'}``; the
  step's RNG is ``fold_in(rng, step)``, so a resumed run draws the same numbers
  (``avdetect.steps``).
* Checkpoints (``<workdir>/checkpoints``) hold the state and the input iterator state;
  a restarted job resumes from the latest one by itself. A preemption notice (SIGTERM;
  on a multi-process job JAX's preemption service agrees on the step across hosts)
  saves the current step and stops: the same command continues from there
  (``avdetect.preemption``).
* Logs: ``<workdir>/metrics.jsonl`` and TensorBoard event files (``metric_writers``),
  steps/s and examples/s per log interval, a tqdm bar when stdout is a terminal.
* Evaluation: on ``config.data.val_split`` (where the decision threshold is chosen)
  and ``config.data.eval_split``; reports ``eval_<split>.json`` / ``.md``
  (``avdetect.evaluators``).

Where each part lives: data ``avdetect.input_pipeline`` (the 'random' dataset:
``avdetect.data.random_batches``; built datasets: ``avdetect.data.pipeline``) -> model
and losses ``avdetect.methods`` -> optimizer ``avdetect.optim`` -> state and steps
``avdetect.steps`` -> eval ``avdetect.evaluators`` (metrics: ``avdetect.evaluation``);
this file is the loop that ties them together, plus eval-only mode.

``config.method`` names a method of ``avdetect.methods`` or, for plug-ins and tests,
``'module.path:factory'`` where ``factory(config)`` returns a Method.

Config fields read here (defaults in brackets):
  train.steps, train.log_every [50], train.ckpt_every [1000], train.keep_ckpts [3],
  train.eval_every [0 = only at the end], train.eval_batches [all] (per periodic eval),
  train.async_checkpoints [True], train.tensorboard [True] (event files besides JSONL),
  train.fast_compile [False] (CPU: unoptimised XLA code, for smoke runs and tests);
  eval.threshold ['eer' | 'max_bacc'], eval.fixed_threshold [0.5] (no validation split);
  eval.trim_silence [False] (also report every figure with digital silence trimmed);
  eval.clip_score ['windows' | 'sync' | 'combined'], eval.clip_sync_stat, eval.clip_weights,
  eval.fit_clip_weights [False] (the combined weights fitted on the trained real clips);
  eval.phone_sync [False] (add the heard-phones statistic to the combined score;
  avdetect.phone_sync), eval.phone_weight, eval.phone_table, eval.phone_cache_dir;
  data.eval_batch_size [data.batch_size], data.random_eval_videos [16];
  mesh [[('data', -1)]], sharding_strategy [[('.*', 'replicate')]], optim.* (avdetect.optim).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from avdetect import checkpointing, evaluation, host_memory, metric_writers, sharding
from avdetect.errors import CheckpointError
from avdetect.evaluators import PhonePrefetch, evaluate_state, progress
from avdetect.input_pipeline import make_eval_iterator, make_train_iterator
from avdetect.methods import build_method
from avdetect.preemption import Preemption
from avdetect.steps import Steps, metrics_to_floats


# ==================================================================================
# Shared helpers
# ==================================================================================

def _fmt_scalars(scalars: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    flat = {}

    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, (ml_collections.ConfigDict, dict)):
                walk(f"{prefix}{k}.", v)
            else:
                flat[f"{prefix}{k}"] = v
    walk("", config)
    return flat


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """``<workdir>/config.json`` (process 0); a changed config on resume keeps the old
    one as ``config.previous.json`` and says so."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if old != text:
            logging.warning("%s differs from this run's config; the old one is kept as "
                            "config.previous.json", path)
            os.replace(path, os.path.join(workdir, "config.previous.json"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_reports(reports: dict[str, dict], out_dir: str) -> None:
    if jax.process_index() != 0:
        return
    for rep in reports.values():
        paths = evaluation.write_report(rep, out_dir)
        logging.info("wrote %s", ", ".join(paths))


# ==================================================================================
# Training
# ==================================================================================

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), evaluates
    every ``config.train.eval_every`` steps (at most ``eval_batches`` batches per split)
    and fully at the end (``eval_<split>.json``/``.md``). Returns ``{'step', 'train':
    the last logged train scalars, 'eval': the final reports}``; after a preemption
    notice (see :class:`Preemption`) the step reached is saved and the result is
    ``{'step', 'train', 'eval': {}, 'preempted': True}``."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    _save_config(config, workdir)
    tcfg = config.train
    total = int(tcfg.steps)
    log_every = int(tcfg.get("log_every", 50) or 50)
    ckpt_every = int(tcfg.get("ckpt_every", 1000) or 0)
    eval_every = int(tcfg.get("eval_every", 0) or 0)
    eval_batches = tcfg.get("eval_batches", None) or None
    global_batch = int(config.data.batch_size)

    # ---------------------------------------------------------------------- mesh --
    mesh = sharding.make_mesh(config.get("mesh", None) or [("data", -1)])
    logging.info("devices: %d (%d local) in %d process(es); mesh %s", jax.device_count(),
                 jax.local_device_count(), jax.process_count(), dict(mesh.shape))

    # --------------------------------------------------------------------- input --
    # On resume the stream position is restored *before* the first batch is drawn:
    # that batch gives the shapes for init/restore and is then trained on.
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                      max_to_keep=int(tcfg.get("keep_ckpts", 3) or 3),
                                      asynchronous=bool(tcfg.get("async_checkpoints", True)))
    resume_step = ckpt.latest_step()
    train_iter = make_train_iterator(config, mesh)
    if resume_step is not None:
        train_iter.set_state(ckpt.restore_data(resume_step))
    first_local = next(train_iter)
    first_data_state = train_iter.get_state()
    first_batch = sharding.host_to_global(first_local, mesh)

    # ------------------------------------------- model, optimizer and sharding --
    method = build_method(config)
    steps = Steps(config, method, mesh, first_batch)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(steps.abstract_state["params"]))
    logging.info("method %s: %d parameters", getattr(method, "name", config.method), n_params)

    # --------------------------------------------------------- checkpoint resume --
    if resume_step is not None:
        state = ckpt.restore_state(resume_step, steps.abstract_state)
        logging.info("resumed from checkpoint step %d in %s", resume_step, ckpt.directory)
    else:
        state = steps.load_pretrained(steps.init(jax.random.PRNGKey(int(config.seed)), first_batch))
        if config.get("init_from"):
            state = steps.load_init_from(state, config.init_from)
            logging.info("initialised from %s", config.init_from)
    start = int(jax.device_get(state["step"]))
    if resume_step is not None and start != resume_step:
        raise CheckpointError(f"{ckpt.directory}/{resume_step}: holds step {start}")

    # ---------------------------------------------------------------- evaluators --
    writer = metric_writers.create_default_writer(workdir, process_index=jax.process_index(),
                                                  tensorboard=bool(tcfg.get("tensorboard", True)))
    if resume_step is None:
        writer.write_hparams(_flat_hparams(config))

    def run_eval(step: int, max_batches) -> dict[str, dict]:
        t0 = time.time()
        reports = evaluate_state(steps, state, config, max_batches=max_batches)
        host_memory.release_freed_heap()    # the eval step's compile, as for the train step's below
        scalars = {}
        for split, rep in reports.items():
            scalars.update(evaluation.flat_scalars(rep, f"eval/{split}"))
        scalars["perf/eval_seconds"] = time.time() - t0
        writer.write_scalars(step, scalars)
        logging.info("eval at step %d: %s", step, _fmt_scalars(scalars))
        return reports

    # ------------------------------------------------------------------- compile --
    # Ahead of the first step rather than by it, so that the compiler's freed working
    # memory (~1 GB on CPU at the reference's shapes) is handed back to the system before
    # the step allocates its own buffers (avdetect/host_memory.py; BENCHMARKS.md "peer").
    t_compile = time.time()
    train_step = steps.train_step.lower(state, first_batch).compile()
    jax.clear_caches()        # init's program and the tracing caches: init ran once
    host_memory.release_freed_heap()
    logging.info("train step compiled in %.1f s", time.time() - t_compile)

    # ---------------------------------------------------------------------- loop --
    # (the final evaluation's heard phones are recognised meanwhile on idle CPU)
    prefetch = PhonePrefetch(config) if start < total else None
    bar = progress("train", total, initial=start)
    acc, last_train, data_state = None, {}, first_data_state
    t_mark, steps_mark, timed_first = time.time(), start, False
    preempted = False
    with Preemption() as preemption:
        for step in range(start, total):
            if step == start:
                batch = first_batch
            else:
                batch = sharding.host_to_global(next(train_iter), mesh)
                data_state = train_iter.get_state()      # stream position after this batch
            state, step_metrics = train_step(state, batch)
            acc = step_metrics if acc is None else acc.merge(step_metrics)
            done = step + 1
            bar.update(1)
            if not timed_first:   # the first step warms caches: keep it out of throughput
                jax.block_until_ready(step_metrics)
                logging.info("first step: %.1f s", time.time() - t_mark)
                t_mark, steps_mark, timed_first = time.time(), done, True
            if done % log_every == 0 or done == total:
                last_train = {f"train/{k}": v for k, v in
                              metrics_to_floats(acc, steps.Metrics.display_names).items()}
                acc = None
                dt, n = time.time() - t_mark, done - steps_mark
                if n > 0 and dt > 0:
                    last_train["perf/steps_per_sec"] = n / dt
                    last_train["perf/examples_per_sec"] = n * global_batch / dt
                t_mark, steps_mark = time.time(), done
                writer.write_scalars(done, last_train)
                logging.info("step %d/%d: %s", done, total, _fmt_scalars(last_train))
                bar.set_postfix_str(f"loss={last_train['train/loss']:.4f}")
            # Every process asks at every step (the multi-process protocol needs it).
            preempted = preemption.reached(done) and done != total
            if (ckpt_every and done % ckpt_every == 0) or done == total or preempted:
                ckpt.save(done, state, data_state, force=True)
                logging.info("checkpoint: step %d saving in the background", done)
            if preempted:
                break
            if eval_every and done % eval_every == 0 and done != total:
                run_eval(done, eval_batches)
                t_mark, steps_mark = time.time(), done   # evaluation is not training time
    bar.close()
    ckpt.wait()
    if prefetch is not None:
        prefetch.stop()
    if preempted:
        logging.warning("preempted: step %d saved in %s; run the same command to continue",
                        done, ckpt.directory)
        ckpt.close()
        writer.close()
        return {"step": done, "train": last_train, "eval": {}, "preempted": True}

    # ---------------------------------------------------------------- final eval --
    reports = run_eval(total, None)
    _write_reports(reports, workdir)
    ckpt.close()
    writer.close()
    return {"step": total, "train": last_train, "eval": reports}


# ==================================================================================
# Evaluation only
# ==================================================================================

def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        checkpoint: str | int | None = None) -> dict[str, dict]:
    """Evaluates a checkpoint (``None``: the latest in ``<workdir>/checkpoints``; a step
    number; or a path to a checkpoints directory or one step directory) on the
    validation and eval splits; writes ``eval_<split>.json``/``.md`` to ``workdir``."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    directory, step = checkpointing.resolve_checkpoint(checkpoint, os.path.join(workdir, "checkpoints"))
    mesh = sharding.make_mesh(config.get("mesh", None) or [("data", -1)])
    example = next(make_eval_iterator(config, mesh, config.data.eval_split))
    steps = Steps(config, build_method(config), mesh, sharding.host_to_global(example, mesh), train=False)
    with checkpointing.Checkpointer(directory, read_only=True, asynchronous=False) as ckpt:
        state = ckpt.restore_state(step, steps.abstract_state)
    logging.info("evaluating %s/%d", directory, step)
    reports = evaluate_state(steps, state, config)
    for rep in reports.values():
        rep["checkpoint"] = {"directory": directory, "step": step}
    _write_reports(reports, workdir)
    return reports
