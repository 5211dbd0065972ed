"""The inference runtime: a trained model loaded for scoring, and its predict function.

``load_model(path)`` gives a :class:`LoadedModel` (method + variables + config + decision
threshold + preprocessing record) from either

* a training **workdir** (``config.json`` + ``checkpoints/``; also its ``checkpoints``
  folder or one ``checkpoints/<step>`` folder): the latest (or ``step``) checkpoint, the
  saved config, and the threshold of the workdir's evaluation report on the validation
  split (``eval_<val_split>.json``, chosen there by ``evaluators.evaluate_state``); or
* an **exported file** (``avdetect export``; written by :mod:`avdetect.export`, whose
  docstring describes the format; the container is :mod:`avdetect.msgpack_file`).

``avdetect detect`` (:mod:`avdetect.detect`), the notebook and the protocols score with
it; :mod:`avdetect.export` writes what it reads.

Predict path: ``jax.jit`` of ``method.predict``, compiled once per batch shape; an
exported file may carry ``traced_predict``, the ``jax.export`` serialization of that
function for any number of windows, which spares each process the Python tracing of the
network (0.6-1.3 s for the default student on 2 cores); a file without it (or a JAX that
cannot read it) is traced as before.

Threshold rule: the value the validation report chose. Without a report the threshold is
the midpoint of the score's scale (0 for log-odds / logits, 0.5 for probabilities) and
``threshold_origin == 'default'``; every output that shows a verdict says so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Mapping

import jax
from jax import export as jax_export
import ml_collections
import numpy as np

from avdetect import contract, cpu_compile, evaluation, msgpack_file
# orbax (behind avdetect.checkpointing) is imported only where a workdir is read: scoring
# an exported file should not pay for it at start-up.
from avdetect.errors import CheckpointError

# The exported-file format this module reads (avdetect.export writes it).
FORMAT = "avdetect-params"
FORMAT_VERSION = 1
SUFFIX = ".msgpack"

# The midpoint of each score scale: the threshold used when no report chose one.
DEFAULT_THRESHOLDS = {"log_odds": 0.0, "logit": 0.0, "probability": 0.5, "unknown": 0.0}
SCALE_TEXT = {
    "log_odds": "log-odds z_fake - z_real averaged over valid frames (0 = equal odds)",
    "logit": "raw fake-class logit averaged over frames (paper_quirks; no natural midpoint)",
    "probability": "fake probability in [0, 1]",
    "unknown": "method-defined score (scale unknown: the method declares none)",
}


# ----------------------------------------------------------------------------------
# Config <-> JSON
# ----------------------------------------------------------------------------------

def _tuples(node: Any) -> Any:
    """JSON lists back to the tuples the Python configs used (hashable module fields)."""
    if isinstance(node, dict):
        return {k: _tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return tuple(_tuples(v) for v in node)
    return node


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """A ConfigDict from ``config.to_json_best_effort()`` text (lists become tuples)."""
    return ml_collections.ConfigDict(_tuples(json.loads(text)))


# ----------------------------------------------------------------------------------
# The loaded model
# ----------------------------------------------------------------------------------

class LoadedModel:
    """A method with its variables, ready to score batches of windows.

    Attributes: ``config`` (ConfigDict), ``method``, ``variables`` (host NumPy tree:
    ``{'params': ..., 'batch_stats': ...}``), ``threshold`` (float), ``threshold_source``
    (a sentence), ``threshold_origin`` ('report' | 'default'), ``score_scale``
    ('log_odds' | 'logit' | 'probability' | 'unknown'), ``category_names``,
    ``method_names`` (or None), ``preprocess`` (dict: 'face_size', 'encoding',
    'params' = the dataset's preprocessing record or {}, 'source'), ``source`` (dict:
    'kind' 'workdir' | 'export', 'path', 'step'), ``notes`` (list of sentences).
    ``compile_seconds`` accumulates the compile time :meth:`predict` waited for (XLA
    compile, and tracing unless the file carries ``traced_predict``, the ``jax.export``
    serialization of the predict function); ``compile_paths`` says which was used per
    batch shape.
    """

    def __init__(self, *, config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                 threshold: float, threshold_source: str, threshold_origin: str,
                 score_scale: str, category_names: tuple[str, ...],
                 method_names: tuple[str, ...] | None, preprocess: dict[str, Any],
                 source: dict[str, Any], notes: list[str] | None = None, method: Any = None,
                 traced_predict: bytes | None = None):
        from avdetect.methods import build_method   # registry names and 'module:factory'

        self.config = config
        self.method = method if method is not None else build_method(config)
        self.variables = dict(variables)
        self.threshold = float(threshold)
        self.threshold_source = threshold_source
        self.threshold_origin = threshold_origin
        self.score_scale = score_scale
        self.category_names = tuple(category_names)
        self.method_names = tuple(method_names) if method_names is not None else None
        self.preprocess = preprocess
        self.source = source
        self.notes = list(notes or [])
        self.compile_seconds = 0.0
        self.warmup_seconds = 0.0      # compile time spent in warm_up's background thread
        self.compile_paths: dict[tuple, str] = {}     # batch key -> 'exported' | 'traced'
        self._traced_predict = traced_predict
        self._exported = None          # jax.export.Exported, deserialized on first use
        self._device_vars = None
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()  # one compile per shape, also across warm_up's thread
        self._warmup: threading.Thread | None = None

        def predict(variables, batch):
            out = self.method.predict(variables, batch)
            # + the per-window fields a clip pools (evaluation.POOLED_FIELDS), if any
            return {"frame_score": out["frame_score"].astype(np.float32),   # [B, T]
                    "score": out["score"].astype(np.float32),               # [B]
                    **{k: out[k].astype(np.float32) for k in evaluation.POOLED_FIELDS
                       if k in out}}
        self._jit_predict = jax.jit(predict, compiler_options=cpu_compile.inference())

    # ---- shapes the method reads ----
    @property
    def window(self) -> int:
        """T, video frames per window (``config.data.window``)."""
        return int(self.config.data.window)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The batch streams the method reads at inference (from ``config.data.inputs``;
        all of mouth, face, logmel when the config lists none)."""
        return contract.streams_for(self.config.data.get("inputs", ()), contract.INFERENCE_STREAMS)

    @property
    def face_size(self) -> int:
        """Face crop side the method sees (``config.data.face_size``)."""
        return int(self.config.data.get("face_size", None) or self.preprocess["face_size"])

    @property
    def step(self) -> int | None:
        return self.source.get("step")

    @property
    def jitted_predict(self) -> Any:
        """``jax.jit`` of ``(variables, batch) -> {'frame_score', 'score'}``: what
        :meth:`predict` compiles, and what ``avdetect.export.trace_predict`` serializes."""
        return self._jit_predict

    def window_signature(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """``{stream: (per-window shape, dtype)}`` of the batches ``avdetect detect`` feeds
        (what ``WindowMaker.cut`` gives for :attr:`inputs`, plus 'frame_mask')."""
        W, m = self.window, contract.MEL_PER_FRAME
        known = {"mouth": ((W, contract.MOUTH_SIZE, contract.MOUTH_SIZE), "uint8"),
                 "face": ((W, self.face_size, self.face_size, 3), "uint8"),
                 "logmel": ((m * W, contract.N_MELS), "float32"),
                 "audio": ((contract.SAMPLES_PER_FRAME * W,), "float32"),
                 "lips": ((W, contract.NUM_LIPS, 2), "float32")}
        return {**{k: known[k] for k in self.inputs}, "frame_mask": ((W,), "float32")}

    # ---- inference ----
    @staticmethod
    def _key(batch: Mapping[str, Any]) -> tuple:
        return tuple((k, tuple(v.shape), np.dtype(v.dtype).str) for k, v in sorted(batch.items()))

    def _compile(self, batch: Mapping[str, Any]) -> Any:
        """The compiled predict function for ``batch``'s shapes (arrays or
        ShapeDtypeStructs): from the pre-traced export when the file has one and the
        shapes are its own, else traced here. Caller holds ``self._lock``."""
        if self._device_vars is None:
            self._device_vars = jax.device_put(self.variables)
        sig = {k: (tuple(v.shape[1:]), np.dtype(v.dtype).name) for k, v in batch.items()}
        if self._traced_predict is not None and sig == self.window_signature():
            try:
                if self._exported is None:     # once per model, whatever the batch sizes
                    self._exported = jax_export.deserialize(bytearray(self._traced_predict))
                fn = jax.jit(self._exported.call, compiler_options=cpu_compile.inference())
                fn = fn.lower(self._device_vars, dict(batch)).compile()
                self.compile_paths[self._key(batch)] = "exported"
                return fn
            except Exception as e:   # e.g. a JAX too old or too new for the serialization
                logging.warning("%s: the pre-traced model cannot be used (%s: %s); tracing it",
                                self.source.get("path"), type(e).__name__, str(e)[:200])
                self._traced_predict = None
        self.compile_paths[self._key(batch)] = "traced"
        return self._jit_predict.lower(self._device_vars, dict(batch)).compile()

    def _compiled_for(self, batch: Mapping[str, Any]) -> tuple[Any, float]:
        """(compiled function, seconds spent waiting for it: compile or a warm-up)."""
        key = self._key(batch)
        t0 = time.perf_counter()
        with self._lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compiled[key] = self._compile(batch)
        return fn, time.perf_counter() - t0

    def warm_up(self, batch_size: int = 1) -> None:
        """Compiles the predict function for ``batch_size`` windows in a background thread
        (detect starts it before decoding a video, so compiling overlaps preprocessing);
        :meth:`predict` waits for it if it needs that shape before it is done."""
        if self._warmup is not None and self._warmup.is_alive():
            return
        spec = {k: jax.ShapeDtypeStruct((batch_size, *shape), np.dtype(dt))
                for k, (shape, dt) in self.window_signature().items()}
        if self._key(spec) in self._compiled:
            return

        def run():
            try:
                self.warmup_seconds += self._compiled_for(spec)[1]
            except Exception as e:   # predict will meet (and report) the same problem
                logging.debug("warm-up compile failed: %s", e)
        # Not a daemon: a process that ends meanwhile waits for the compile rather than
        # tearing XLA down under it.
        self._warmup = threading.Thread(target=run, name="avdetect-warm-up")
        self._warmup.start()

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{'frame_score': [B, T], 'score': [B]}`` for a batch of windows (keys of
        :attr:`inputs` + 'frame_mask'). Each new batch shape is compiled once (timed in
        ``compile_seconds``)."""
        batch = {k: np.asarray(v) for k, v in batch.items()}
        fn, waited = self._compiled_for(batch)
        self.compile_seconds += waited
        out = fn(self._device_vars, batch)
        return {k: np.asarray(v) for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (what detect writes into its outputs)."""
        return {"source": self.source, "method": str(self.config.method),
                "window": self.window, "inputs": list(self.inputs),
                "score_scale": self.score_scale, "score_scale_text": SCALE_TEXT[self.score_scale],
                "threshold": {"value": self.threshold, "source": self.threshold_source,
                              "origin": self.threshold_origin},
                "notes": list(self.notes)}


def score_scale(config: ml_collections.ConfigDict, method: Any) -> str:
    """The scale of ``method.predict(...)['score']``: a method may declare
    ``score_scale``; the built-in methods give log-odds (raw logits with paper_quirks)."""
    declared = getattr(method, "score_scale", None)
    if declared in DEFAULT_THRESHOLDS:
        return declared
    from avdetect.methods import METHODS
    if str(config.method) in METHODS:
        from avdetect.methods.base import paper_quirks
        return "logit" if paper_quirks(config) else "log_odds"
    return "unknown"


# ----------------------------------------------------------------------------------
# Reading a workdir or an exported file
# ----------------------------------------------------------------------------------

def _find_workdir(path: str) -> tuple[str, str | None]:
    """(workdir, checkpoint argument) for a workdir, its checkpoints dir or a step dir."""
    from avdetect.checkpointing import STATE

    p = os.path.abspath(path)
    if os.path.isfile(os.path.join(p, "config.json")):
        return p, None
    parent = os.path.dirname(p)
    if os.path.basename(p) == "checkpoints" and os.path.isfile(os.path.join(parent, "config.json")):
        return parent, p
    grand = os.path.dirname(parent)
    if (os.path.basename(p).isdigit() and os.path.isdir(os.path.join(p, STATE))
            and os.path.isfile(os.path.join(grand, "config.json"))):
        return grand, p
    raise CheckpointError(f"{p}: not a training workdir (no config.json), nor its "
                          "checkpoints folder, nor an exported model file")


def _threshold_from_reports(workdir: str, config: ml_collections.ConfigDict, step: int
                            ) -> tuple[float | None, str, list[str], dict | None]:
    """(value or None, source sentence, notes, the report read or None) from the
    workdir's evaluation reports: the validation split's report first, else the eval
    split's (whose threshold was chosen on validation too, or fixed by the config, as
    its source says)."""
    notes = []
    splits = [config.data.get("val_split", None), config.data.get("eval_split", None)]
    for split in [s for s in splits if s]:
        path = os.path.join(workdir, f"eval_{split}.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            value, source = float(report["threshold"]["value"]), str(report["threshold"]["source"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            notes.append(f"{path}: unreadable evaluation report ({e}); ignored")
            continue
        # Reports of --mode=eval name their checkpoint; the final report of training is
        # for the last step (config.train.steps).
        rep_step = (report.get("checkpoint") or {}).get("step", config.get("train", {}).get("steps"))
        if rep_step is not None and int(rep_step) != int(step):
            notes.append(f"the threshold comes from {os.path.basename(path)}, written for "
                         f"step {rep_step}; the loaded checkpoint is step {step}")
        return value, f"{source} ({os.path.basename(path)})", notes, report
    return None, "", notes, None


def _fitted_clip_score(config: ml_collections.ConfigDict, report: dict | None, workdir: str
                       ) -> str | None:
    """With ``config.eval.fit_clip_weights``: the weights the evaluation fitted (the
    report's ``clip_score``) written into ``config.eval.clip_weights``, so that scoring
    and an exported file's config use them; returns a note, or None when the config
    fits nothing."""
    clip = evaluation.ClipScore.from_config(config)
    if not clip.fit:
        return None
    try:
        clip = clip.with_report(report, where=f"{workdir}: the evaluation report")
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    config.eval.clip_weights = clip.weights
    if clip.phones:
        config.eval.phone_weight = clip.phone_weight
        config.eval.phone_table = clip.phone_table
    config.eval.fit_clip_weights = False
    return f"clip-score weights {clip.weights_source}"


def _dataset_preprocess(config: ml_collections.ConfigDict) -> tuple[dict | None, str]:
    """The training dataset's metadata 'encoding' + 'preprocessing' records (None when
    the dataset cannot be read here) and a note saying where they came from."""
    name = config.data.get("name", None)
    if not name or name == "random":
        return None, f"dataset {name!r} has no preprocessing record"
    from avdetect.data import metadata
    from avdetect.errors import ConfigError
    try:
        meta = metadata.dataset_metadata(name, config.data.get("data_dir", None))
    except ConfigError as e:   # unbuilt / absent dataset
        return None, f"dataset {name!r} metadata unavailable ({str(e)[:200]})"
    if "encoding" not in meta:
        return None, f"dataset {name!r} metadata holds no 'encoding' record"
    return {"encoding": dict(meta["encoding"]), "params": dict(meta.get("preprocessing", {}))}, \
        f"dataset {name!r} metadata"


def preprocess_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """How detect must preprocess a video so that the model sees what it was trained on:
    the stored face crop size, the shard frame codecs and the preprocessing parameters
    of the training dataset, or documented defaults when its metadata is not here."""
    from avdetect.data.codec import EncodingParams
    rec, source = _dataset_preprocess(config)
    if rec is None:
        face = max(contract.FACE_SIZE_DEFAULT, int(config.data.get("face_size", 0) or 0))
        enc = {"face_size": face, **EncodingParams().as_dict()}
        return {"face_size": face, "encoding": enc, "params": {},
                "source": f"defaults ({source})"}
    enc = rec["encoding"]
    return {"face_size": int(enc["face_size"]), "encoding": enc, "params": rec["params"],
            "source": source}


def _vocabularies(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    from avdetect.input_pipeline import label_vocabularies
    try:
        return label_vocabularies(config)
    except Exception:   # the dataset is not on this machine: categories are fixed anyway
        return tuple(contract.CATEGORIES), None


def load_workdir(path: str, step: int | None = None) -> LoadedModel:
    """A LoadedModel from a training workdir (or its checkpoints / step folder)."""
    from avdetect.checkpointing import load_state_numpy, resolve_checkpoint

    workdir, ckpt_arg = _find_workdir(path)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = config_from_json(f.read())
    default_dir = os.path.join(workdir, "checkpoints")
    if ckpt_arg is not None:      # a checkpoints folder, or one step folder inside it
        default_dir = os.path.dirname(ckpt_arg) if os.path.basename(ckpt_arg).isdigit() else ckpt_arg
    ckpt_dir, ckpt_step = resolve_checkpoint(step if step is not None else ckpt_arg, default_dir)
    # orbax warns (absl) about a metadata file that optional readers do not need: noise here.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        state = load_state_numpy(ckpt_dir, ckpt_step)
    finally:
        absl_logger.setLevel(level)
    variables = {"params": state["params"], **dict(state.get("model_state") or {})}
    from avdetect.methods import build_method
    method = build_method(config)
    scale = score_scale(config, method)
    value, source, notes, report = _threshold_from_reports(workdir, config, ckpt_step)
    clip_note = _fitted_clip_score(config, report, workdir)
    if clip_note:
        notes.append(clip_note)
    origin = "report"
    if value is None:
        value, origin = DEFAULT_THRESHOLDS[scale], "default"
        source = (f"default {value:g}: no evaluation report in {workdir}; the midpoint of the "
                  f"score scale ({SCALE_TEXT[scale]}), not a threshold chosen on validation data")
    cats, methods = _vocabularies(config)
    return LoadedModel(config=config, method=method, variables=variables, threshold=value,
                       threshold_source=source, threshold_origin=origin, score_scale=scale,
                       category_names=cats, method_names=methods,
                       preprocess=preprocess_record(config),
                       source={"kind": "workdir", "path": workdir, "checkpoint_dir": ckpt_dir,
                               "step": int(ckpt_step)},
                       notes=notes)


def load_exported(path: str | os.PathLike) -> LoadedModel:
    """A LoadedModel from a file written by :func:`avdetect.export.export_model`."""
    path = os.path.abspath(os.fspath(path))
    header, payload = msgpack_file.read(path, "an exported avdetect model")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an exported avdetect model (format "
                              f"{header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: export format version {header.get('format_version')}; "
                              f"this code reads version {FORMAT_VERSION}")
    traced = payload.get("traced_predict")
    config = config_from_json(json.dumps(header["config"]))
    thr = header["threshold"]
    vocab = header["vocabularies"]
    source = dict(header["source"])
    source.update(kind="export", path=path, exported_from=header["source"].get("path"))
    return LoadedModel(config=config, variables=payload["variables"], threshold=thr["value"],
                       threshold_source=thr["source"], threshold_origin=thr["origin"],
                       score_scale=header["score_scale"],
                       category_names=tuple(vocab["category"]),
                       method_names=tuple(vocab["method"]) if vocab["method"] is not None else None,
                       preprocess=header["preprocess"], source=source,
                       notes=list(header.get("notes", [])),
                       traced_predict=bytes(traced) if traced is not None else None)


def load_model(path_or_workdir: str | os.PathLike, step: int | None = None) -> LoadedModel:
    """A LoadedModel from an exported file or a training workdir (its checkpoints folder
    or one step folder also work); ``step`` picks a checkpoint of a workdir."""
    path = os.fspath(path_or_workdir)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such model file or workdir")
    if os.path.isdir(path):
        return load_workdir(path, step)
    if step is not None:
        raise CheckpointError(f"{path}: an exported file holds one checkpoint; --step applies "
                              "to workdirs only")
    return load_exported(path)
