"""Training and evaluation loop (big_vision style: one readable file, banner sections).

    python -m avdetect.main --config=configs/corrdistill.py:tiny --workdir=/tmp/cd

The same command runs on one CPU, one GPU host or every host of a TPU pod (see
``avdetect/main.py`` for multi-host start-up). What happens, in order:

  mesh -> input -> model/optimizer -> sharding -> checkpoint resume -> evaluators -> loop

* Mesh and sharding come from ``config.mesh`` and ``config.sharding_strategy``
  (``avdetect.sharding``); the train step is jit-compiled with explicit in/out
  shardings and the state buffers donated.
* Each process reads its own part of every global batch (``process_index`` of
  ``process_count``) and the parts are assembled into global arrays.
* The train state is ``{'params', 'opt_state', 'model_state', 'step', 'rng'}``; the
  step's RNG is ``fold_in(rng, step)``, so a resumed run draws the same numbers.
* Checkpoints (``<workdir>/checkpoints``) hold the state and the input iterator state;
  a restarted job resumes from the latest one by itself. A preemption notice (SIGTERM;
  on a multi-process job JAX's preemption service agrees on the step across hosts)
  saves the current step and stops: the same command continues from there.
* Logs: ``<workdir>/metrics.jsonl`` and TensorBoard event files (``metric_writers``),
  steps/s and examples/s per log interval, a tqdm bar when stdout is a terminal.
* Evaluation: on ``config.data.val_split`` (where the decision threshold is chosen)
  and ``config.data.eval_split``; reports ``eval_<split>.json`` / ``.md``.

``config.data.name == 'random'`` trains on synthetic random batches of the data
contract's shapes (no dataset needed) whose label is learnable (fake clips are brighter
and louder, and their teacher posteriors disagree), for benchmarks and tests.

``config.method`` names a method of ``avdetect.methods`` or, for plug-ins and tests,
``'module.path:factory'`` where ``factory(config)`` returns a Method.

Config fields read here (defaults in brackets):
  train.steps, train.log_every [50], train.ckpt_every [1000], train.keep_ckpts [3],
  train.eval_every [0 = only at the end], train.eval_batches [all] (per periodic eval),
  train.async_checkpoints [True], train.tensorboard [True] (event files besides JSONL),
  train.fast_compile [False] (CPU: unoptimised XLA code, for smoke runs and tests);
  eval.threshold ['eer' | 'max_bacc'], eval.fixed_threshold [0.5] (no validation split);
  eval.trim_silence [False] (also report every figure with digital silence trimmed);
  data.eval_batch_size [data.batch_size], data.random_eval_videos [16];
  mesh [[('data', -1)]], sharding_strategy [[('.*', 'replicate')]], optim.* (avdetect.optim).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import zlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metrics as clu_metrics
from jax.experimental import multihost_utils

from avdetect import checkpointing, contract, evaluation, metric_writers, optim, sharding
from avdetect.errors import ConfigError
from avdetect.methods import build_method

State = dict[str, Any]
Batch = dict[str, Any]
PREEMPTED_EXIT_CODE = 143   # 128 + SIGTERM: "stopped by a signal", so a scheduler restarts it


class Preemption:
    """Has a preemption notice arrived, at a step where every process can save?

    Multi-process jobs (``jax.distributed`` initialised) ask JAX's preemption service,
    which catches SIGTERM on any host and names one step, the same on all, at which
    ``reached`` turns true (every process must call it at every step). A single process
    catches SIGTERM itself; the handler only sets a flag, read between steps.
    """

    def __init__(self):
        from jax._src import distributed   # the client exists only after initialize()
        self._service = distributed.global_state.client is not None
        self._notice = False
        self._previous = None
        if not self._service and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self._notice = True

    def reached(self, step: int) -> bool:
        if self._service:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._notice

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *exc) -> None:
        self.close()     # also when training raises: SIGTERM gets its old handler back


# ==================================================================================
# Synthetic random data ('random' dataset)
# ==================================================================================

RANDOM_METHODS = ("real", "random_a", "random_b")   # method vocabulary of the random data

STREAMS = contract.ALL_STREAMS   # the index of a stream seeds its generator: order fixed


def _random_example(seed: int, key: tuple[int, ...], label: int, *, window: int, face_size: int,
                    teacher_classes: int, mouth_size: int = contract.MOUTH_SIZE,
                    streams: tuple[str, ...] = STREAMS) -> dict[str, np.ndarray]:
    """One window of the contract's shapes from ``(seed, *key)``. Fake (label 1) clips
    are brighter (+60 grey levels) and louder (+0.5 log-mel), and their audio and video
    teacher posteriors disagree (real: the same class track). Each stream has its own
    random generator, so leaving a stream out does not change the others."""
    t, k = window, teacher_classes

    def rng(stream: str) -> np.random.Generator:
        return np.random.default_rng([seed, *key, STREAMS.index(stream)])

    def posterior(cls):   # [T, K]: 0.8 on the class, the rest spread evenly
        p = np.full((t, k), 0.2 / k, np.float32)
        p[np.arange(t), cls] += 0.8
        return p

    out = {"label": np.int32(label), "frame_mask": np.ones((t,), np.float32)}
    if "mouth" in streams:
        out["mouth"] = rng("mouth").integers(0, 196, (t, mouth_size, mouth_size),
                                             dtype=np.uint8) + np.uint8(60 * label)
    if "face" in streams:
        out["face"] = rng("face").integers(0, 196, (t, face_size, face_size, 3), dtype=np.uint8) + np.uint8(60 * label)
    if "logmel" in streams:
        out["logmel"] = (rng("logmel").standard_normal((contract.MEL_PER_FRAME * t, contract.N_MELS), dtype=np.float32)
                         + np.float32(0.5 * label))
    if "audio" in streams:   # [640 T] waveform in [-1, 1]; fakes twice as loud
        out["audio"] = (rng("audio").uniform(-0.1, 0.1, contract.SAMPLES_PER_FRAME * t)
                        * (1.0 + label)).astype(np.float32)
    if "lips" in streams:   # [T, 20, 2] lip points in the aligned face; fakes' mouths open wider
        out["lips"] = (0.5 + 0.05 * rng("lips").standard_normal((t, contract.NUM_LIPS, 2))
                       * (1.0 + label)).astype(np.float32)
    if "teacher_audio" in streams or "teacher_video" in streams:
        a_cls = rng("teacher_audio").integers(0, k, t)
        v_cls = rng("teacher_video").integers(0, k, t) if label else a_cls
        out["teacher_audio"], out["teacher_video"] = posterior(a_cls), posterior(v_cls)
    return out


def _stack(examples: list[dict[str, np.ndarray]]) -> Batch:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _random_shape_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
    # config.data.inputs (the streams a method reads) limits what is generated.
    inputs = tuple(config.data.get("inputs", ()) or ())
    return {"window": int(config.data.window),
            "face_size": int(config.data.get("face_size", contract.FACE_SIZE_DEFAULT) or contract.FACE_SIZE_DEFAULT),
            "teacher_classes": int(config.get("model", {}).get("teacher_classes", 40)),
            "mouth_size": int(config.get("model", {}).get("mouth_size", contract.MOUTH_SIZE)),
            "streams": contract.streams_for(inputs)}


class RandomBatches:
    """Endless deterministic random train batches; this process gets rows
    ``[p*B_local, (p+1)*B_local)`` of each global batch, so any process count sees the
    same global batches. ``get_state``/``set_state`` like a Grain iterator."""

    def __init__(self, config: ml_collections.ConfigDict, *, seed: int, process_index: int,
                 local_batch_size: int):
        self._seed, self._p, self._b = seed, process_index, local_batch_size
        self._global_b = int(config.data.batch_size)
        self._shape = _random_shape_args(config)
        self._step = 0

    def __iter__(self) -> "RandomBatches":
        return self

    def __next__(self) -> Batch:
        rows = range(self._p * self._b, (self._p + 1) * self._b)
        examples = []
        for r in rows:
            label = int(np.random.default_rng([self._seed, self._step, r, 1000]).integers(2))
            ex = _random_example(self._seed, (self._step, r), label, **self._shape)
            ex["category"] = np.int32(0 if label == 0 else 1 + r % 3)
            ex["method"] = np.int32(0 if label == 0 else 1 + r % 2)
            examples.append(ex)
        self._step += 1
        return _stack(examples)

    def get_state(self) -> dict[str, int]:
        return {"step": self._step}

    def set_state(self, state: dict[str, int]) -> None:
        self._step = int(state["step"])


def random_eval_batches(config: ml_collections.ConfigDict, split: str, *, process_index: int,
                        process_count: int, local_batch_size: int) -> Iterator[Batch]:
    """Every window of ``config.data.random_eval_videos`` (default 16) random videos of
    two windows each (label alternating, fakes cycling over categories and methods; the
    second window of odd videos half padded), in order, padded with ``valid = 0``."""
    n_videos = int(config.data.get("random_eval_videos", 16))
    shape = _random_shape_args(config)
    seed = int(config.seed) + zlib.crc32(split.encode())
    windows = [(v, w) for v in range(n_videos) for w in range(2)]
    global_b = local_batch_size * process_count
    for start in range(0, len(windows), global_b):
        examples = []
        for i in range(start + process_index * local_batch_size, start + (process_index + 1) * local_batch_size):
            v, w = windows[min(i, len(windows) - 1)]
            label = v % 2
            ex = _random_example(seed, (v, w), label, **shape)
            if w == 1 and v % 2 == 1:
                ex["frame_mask"][shape["window"] // 2:] = 0.0
            ex.update(video_id=np.int32(v), window_start=np.int32(w * shape["window"]),
                      category=np.int32(0 if label == 0 else 1 + (v // 2) % 3),
                      method=np.int32(0 if label == 0 else 1 + (v // 2) % 2),
                      valid=np.int32(i < len(windows)))
            examples.append(ex)
        yield _stack(examples)


# ==================================================================================
# Input
# ==================================================================================

def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh, what: str) -> int:
    """This process's share of a global batch; checks it splits over processes and
    over the data axis."""
    n_proc, n_data = jax.process_count(), mesh.shape[sharding.DATA_AXIS]
    if global_batch % n_proc or global_batch % n_data:
        raise ConfigError(f"{what}={global_batch} must be divisible by the process count "
                          f"({n_proc}) and the mesh data axis ({n_data})")
    return global_batch // n_proc


def make_train_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """This process's train batch iterator (with get_state/set_state)."""
    b = local_batch_size(int(config.data.batch_size), mesh, "config.data.batch_size")
    if config.data.name == "random":
        return RandomBatches(config, seed=int(config.seed), process_index=jax.process_index(),
                             local_batch_size=b)
    from avdetect.data import pipeline
    return pipeline.make_train_iterator(config.data, seed=int(config.seed), process_index=jax.process_index(),
                                        process_count=jax.process_count(), local_batch_size=b)


def make_eval_iterator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, split: str) -> Iterator[Batch]:
    """This process's eval batches of ``split`` (every window, ``valid`` marks padding)."""
    gb = int(config.data.get("eval_batch_size", None) or config.data.batch_size)
    b = local_batch_size(gb, mesh, "config.data.eval_batch_size")
    if config.data.name == "random":
        return random_eval_batches(config, split, process_index=jax.process_index(),
                                   process_count=jax.process_count(), local_batch_size=b)
    from avdetect.data import pipeline
    trim = bool(config.get("eval", {}).get("trim_silence", False))
    return iter(pipeline.make_eval_batches(config.data, split, process_index=jax.process_index(),
                                           process_count=jax.process_count(), local_batch_size=b,
                                           trim_silence=trim))


def label_vocabularies(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Names of the category and method ids in eval batches."""
    if config.data.name == "random":
        return contract.CATEGORIES, RANDOM_METHODS
    from avdetect.data import pipeline
    if hasattr(pipeline, "label_vocabularies"):
        cats, methods = pipeline.label_vocabularies(config.data)
        return tuple(cats), (tuple(methods) if methods is not None else None)
    return contract.CATEGORIES, None


# ==================================================================================
# Model, optimizer, state, steps
# ==================================================================================

def _metric_collection(names: list[str]) -> type:
    """A clu Collection averaging each named scalar over the steps between two logs.

    clu fields must be identifiers: 'loss/detect' becomes field 'loss_detect'; the
    class's ``display_names`` maps fields back to the names the loss gave."""
    display: dict[str, str] = {}
    for n in names:
        ident = re.sub(r"\W", "_", n)
        if ident in display:
            raise ConfigError(f"metric names {n!r} and {display[ident]!r} collide as {ident!r}")
        display[ident] = n
    collection = clu_metrics.Collection.create(
        **{ident: clu_metrics.Average.from_output(ident) for ident in display})
    collection.display_names = display
    return collection


CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class Steps:
    """The jit-compiled pure functions of one run: init, train step, eval step."""

    def __init__(self, config: ml_collections.ConfigDict, method, mesh: jax.sharding.Mesh, example: Batch,
                 *, train: bool = True):
        """``example``: a global batch (shapes only). ``train=False`` skips tracing the
        loss (eval-only runs need no teacher posteriors)."""
        self.config, self.method, self.mesh = config, method, mesh
        total = int(config.train.steps)
        rng = jax.random.PRNGKey(int(config.seed))
        abstract_vars = jax.eval_shape(method.init, rng, example)
        mask = method.trainable_mask(abstract_vars["params"]) if hasattr(method, "trainable_mask") else None
        if mask is not None:
            mask = jax.tree.map(bool, mask)
        self.tx, self.schedule = optim.make_optimizer(config.optim, total, mask)

        # State layout and placement: shapes from the abstract init, shardings by rules.
        abstract_vars = dict(abstract_vars)
        abstract_params = abstract_vars.pop("params")
        self.abstract_state = {"params": abstract_params,
                               "opt_state": jax.eval_shape(self.tx.init, abstract_params),
                               "model_state": abstract_vars,
                               "step": jax.ShapeDtypeStruct((), jnp.int32),
                               "rng": jax.eval_shape(lambda r: jax.random.split(r)[1], rng)}
        strategy = config.get("sharding_strategy", None) or [(".*", "replicate")]
        self.state_sharding = sharding.infer_shardings(self.abstract_state, strategy, mesh)
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state, self.state_sharding)
        batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)

        # Init runs once: on CPU, compiling it without LLVM's optimisations cuts its
        # compile time ~8x (28 s -> 3 s for a tiny student) for no loss that matters.
        # config.train.fast_compile does the same for the train/eval steps (about 2x
        # faster compiles, 2x slower steps): for CPU smoke runs and tests only.
        quick = CPU_FAST_COMPILE if jax.default_backend() == "cpu" else None
        step_options = quick if config.train.get("fast_compile", False) else None
        self.init = jax.jit(self._init, in_shardings=(repl, batch_sh), out_shardings=self.state_sharding,
                            compiler_options=quick)
        if train:
            # The metric names a loss returns are known after tracing it once (abstractly).
            _, metric_shapes = jax.eval_shape(self._train_step_raw, self.abstract_state, example)
            self.metric_names = sorted(metric_shapes)
            self.Metrics = _metric_collection(self.metric_names)
            self.train_step = jax.jit(self._train_step, in_shardings=(self.state_sharding, batch_sh),
                                      out_shardings=(self.state_sharding, repl), donate_argnums=(0,),
                                      compiler_options=step_options)
        self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_sharding, batch_sh),
                                 out_shardings=repl, compiler_options=step_options)

    def _init(self, rng: jax.Array, batch: Batch) -> State:
        init_rng, state_rng = jax.random.split(rng)
        variables = dict(self.method.init(init_rng, batch))
        params = variables.pop("params")
        return {"params": params, "opt_state": self.tx.init(params), "model_state": variables,
                "step": jnp.zeros((), jnp.int32), "rng": state_rng}

    def load_pretrained(self, state: State) -> State:
        """Host-side: the method's pretrained weights (``method.load_pretrained(variables)
        -> variables``, if it has one) put into a freshly initialised ``state``, placed
        like it. Kept out of the jitted init so no weights become compiled constants."""
        hook = getattr(self.method, "load_pretrained", None)
        if hook is None:
            return state
        variables = dict(hook({"params": state["params"], **state["model_state"]}))
        params = variables.pop("params")
        new = {**state, "params": params, "model_state": variables}
        return jax.device_put(new, self.state_sharding)

    def load_init_from(self, state: State, path: str) -> State:
        """Host-side: every parameter and model-state leaf of a variables file
        (``config.init_from``, written by ``python -m avdetect.convert``) put into a freshly
        initialised ``state``; the optimizer state stays fresh. The file's tree must equal
        the model's exactly (names and shapes), else CheckpointError lists the mismatches."""
        from avdetect.convert.variables_file import check_against, load_variables

        variables, _ = load_variables(path)
        template = {"params": state["params"], **state["model_state"]}
        check_against(variables, template, path)
        params = jax.tree.map(lambda new, old: np.asarray(new, old.dtype),
                              variables.pop("params"), state["params"])
        model_state = {k: jax.tree.map(lambda new, old: np.asarray(new, old.dtype),
                                       variables[k], v)
                       for k, v in state["model_state"].items()}
        new = {**state, "params": params, "model_state": model_state}
        return jax.device_put(new, self.state_sharding)

    def _train_step_raw(self, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        step = state["step"]
        rng = jax.random.fold_in(state["rng"], step)   # deterministic per step -> exact resume

        def loss_fn(params):
            variables = {"params": params, **state["model_state"]}
            return self.method.loss(variables, batch, rng, train=True)

        (loss, (aux, new_collections)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        model_state = {k: new_collections.get(k, v) for k, v in state["model_state"].items()}
        values = {**{k: jnp.mean(v) for k, v in aux.items()}, "loss": loss,
                  "grad_norm": optax.global_norm(grads), "lr": self.schedule(step)}
        new_state = {"params": params, "opt_state": opt_state, "model_state": model_state,
                     "step": step + 1, "rng": state["rng"]}
        return new_state, values

    def _train_step(self, state: State, batch: Batch):
        new_state, values = self._train_step_raw(state, batch)
        return new_state, self.Metrics.single_from_model_output(
            **{re.sub(r"\W", "_", k): v for k, v in values.items()})

    def _eval_step(self, state: State, batch: Batch) -> dict[str, jax.Array]:
        out = self.method.predict({"params": state["params"], **state["model_state"]}, batch)
        score = out["score"].astype(jnp.float32)
        if "frame_mask" in batch:
            n_frames = batch["frame_mask"].astype(jnp.float32).sum(-1)
        else:
            n_frames = jnp.ones_like(score)
        res = {"score": score, "n_frames": n_frames}
        for k in ("label", "valid", "video_id", "window_start", "category", "method",
                  *EVAL_VIEW_FIELDS):
            if k in batch:
                res[k] = batch[k]
        return res


# The silence-trimmed view's window fields (config.eval.trim_silence; see
# WindowMaker.eval_windows), passed through the eval step to the report.
EVAL_VIEW_FIELDS = ("view", "trim_lead", "trim_trail", "all_silent")


def metrics_to_floats(collection, display_names: dict[str, str]) -> dict[str, float]:
    return {display_names[k]: float(v) for k, v in collection.compute().items()}


# ==================================================================================
# Evaluators
# ==================================================================================

def predict_split(steps: Steps, state: State, config: ml_collections.ConfigDict, split: str,
                  max_batches: int | None = None, desc: str | None = None) -> dict[str, np.ndarray]:
    """Window records (valid windows only) of ``split`` gathered from every process.

    All processes run the same number of eval steps (a collective program): a process
    whose own batches run out feeds a padding batch (``valid = 0``) until all are done.
    """
    it = make_eval_iterator(config, steps.mesh, split)
    collector = evaluation.Collector()
    multi = jax.process_count() > 1
    template, n = None, 0
    bar = _progress(desc or f"eval {split}", None)
    while max_batches is None or n < max_batches:
        local = next(it, None)
        if multi:
            alive = multihost_utils.process_allgather(np.asarray(local is not None, np.int32))
            if not np.any(alive):
                break
            if local is None:
                if template is None:
                    raise ConfigError(f"split {split!r}: process {jax.process_index()} has no eval data at all")
                local = {**template, "valid": np.zeros_like(template["valid"])}
        elif local is None:
            break
        if "label" not in local:
            raise ConfigError(f"split {split!r}: eval batches carry no 'label'")
        local = dict(local)
        local.setdefault("valid", np.ones(len(local["label"]), np.int32))
        template = template or local
        host_fields = {k: local[k] for k in ("video_id", "category", "method")
                       if k in local and not sharding.is_device_field(local[k])}
        if host_fields and multi:
            raise ConfigError(f"split {split!r}: eval fields {sorted(host_fields)} are strings; "
                              "multi-process evaluation needs integer ids")
        out = jax.device_get(steps.eval_step(state, sharding.host_to_global(local, steps.mesh)))
        if "video_id" not in out and "video_id" not in host_fields:
            raise ConfigError(f"split {split!r}: eval batches carry no 'video_id'")
        collector.add({**{k: np.asarray(v) for k, v in out.items()}, **host_fields})
        n += 1
        bar.update(1)
    bar.close()
    return collector.records()


def evaluate_state(steps: Steps, state: State, config: ml_collections.ConfigDict, *,
                   max_batches: int | None = None) -> dict[str, dict]:
    """Reports for the validation split (where the threshold is chosen) and the eval
    split (scored at that threshold): ``{split_name: report}``."""
    eval_cfg = config.get("eval", ml_collections.ConfigDict())
    rule = eval_cfg.get("threshold", "eer")
    fixed = float(eval_cfg.get("fixed_threshold", 0.5))
    cats, methods = label_vocabularies(config)
    test_split, val_split = config.data.eval_split, config.data.get("val_split", None)
    reports = {}
    threshold, source = fixed, "fixed (config.eval.fixed_threshold; no validation split)"
    if val_split and val_split != test_split:
        val = predict_split(steps, state, config, val_split, max_batches)
        try:
            threshold = evaluation.video_threshold(val, rule)
            source = f"chosen on split '{val_split}' video scores by rule '{rule}'"
        except ValueError as e:   # one class only in the validation split
            logging.warning("threshold: %s; using the fixed threshold %s", e, fixed)
            source = f"fixed (validation split '{val_split}' unusable: {e})"
        reports[val_split] = evaluation.evaluate_records(val, threshold=threshold, threshold_source=source,
                                                         split=val_split, category_names=cats,
                                                         method_names=methods)
    test = predict_split(steps, state, config, test_split, max_batches)
    reports[test_split] = evaluation.evaluate_records(test, threshold=threshold, threshold_source=source,
                                                      split=test_split, category_names=cats,
                                                      method_names=methods)
    return reports


# ==================================================================================
# Shared helpers
# ==================================================================================

class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...


def _progress(desc: str, total: int | None, initial: int = 0):
    """A tqdm bar on interactive runs (process 0, stdout a terminal), else a no-op."""
    if jax.process_index() == 0 and sys.stdout.isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
    return _NullBar()


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
        raise checkpointing.CheckpointError(f"{ckpt.directory}/{resume_step}: holds step {start}")

    # ---------------------------------------------------------------- evaluators --
    writer = metric_writers.create_default_writer(workdir, process_index=jax.process_index(),
                                                  tensorboard=bool(tcfg.get("tensorboard", True)))
    if resume_step is None:
        writer.write_hparams(_flat_hparams(config))

    def run_eval(step: int, max_batches) -> dict[str, dict]:
        t0 = time.time()
        reports = evaluate_state(steps, state, config, max_batches=max_batches)
        scalars = {}
        for split, rep in reports.items():
            scalars.update(evaluation.flat_scalars(rep, f"eval/{split}"))
        scalars["perf/eval_seconds"] = time.time() - t0
        writer.write_scalars(step, scalars)
        logging.info("eval at step %d: %s", step, _fmt_scalars(scalars))
        return reports

    # ---------------------------------------------------------------------- loop --
    bar = _progress("train", total, initial=start)
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
            state, step_metrics = steps.train_step(state, batch)
            acc = step_metrics if acc is None else acc.merge(step_metrics)
            done = step + 1
            bar.update(1)
            if not timed_first:   # the first step includes compilation: keep it out of throughput
                jax.block_until_ready(step_metrics)
                logging.info("first step (compile + run): %.1f s", time.time() - t_mark)
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
