"""The jit-compiled pure functions of one run: state init, train step and eval step.

The train state is ``{'params', 'opt_state', 'model_state', 'step', 'rng'}``; its layout
comes from the method's abstract init and its placement from ``config.sharding_strategy``
(``avdetect.sharding``). The train step is compiled with explicit in/out shardings and
donates the state buffers; its RNG is ``fold_in(rng, step)``, so a resumed run draws the
same numbers. Train metrics are averaged between two logs by a clu ``Collection``.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics

from avdetect import cpu_compile, evaluation, optim, sharding
from avdetect.errors import ConfigError

State = dict[str, Any]
Batch = dict[str, Any]


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
        mask = jax.tree.map(bool, method.trainable_mask(abstract_vars["params"]))
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

        # XLA:CPU options per program (avdetect/cpu_compile.py): init compiles without
        # LLVM's optimisations (runs once); config.train.fast_compile does the same for the
        # train/eval steps (about 2x faster compiles, 2x slower steps): CPU smoke runs and
        # tests only.
        fast = bool(config.train.get("fast_compile", False))
        quick, train_options = cpu_compile.run_once(), cpu_compile.train_step(fast)
        eval_options = cpu_compile.inference(fast)
        self.init = jax.jit(self._init, in_shardings=(repl, batch_sh), out_shardings=self.state_sharding,
                            compiler_options=quick)
        if train:
            # The metric names a loss returns are known after tracing it once (abstractly).
            _, metric_shapes = jax.eval_shape(self._train_step_raw, self.abstract_state, example)
            self.metric_names = sorted(metric_shapes)
            self.Metrics = _metric_collection(self.metric_names)
            self.train_step = jax.jit(self._train_step, in_shardings=(self.state_sharding, batch_sh),
                                      out_shardings=(self.state_sharding, repl), donate_argnums=(0,),
                                      compiler_options=train_options)
        self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_sharding, batch_sh),
                                 out_shardings=repl, compiler_options=eval_options)

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
        res = {"score": score, "n_frames": n_frames,
               # per-window sums a clip pools (config.eval.clip_score), when the method has them
               **{k: out[k] for k in evaluation.POOLED_FIELDS if k in out}}
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

