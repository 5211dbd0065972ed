"""The Method interface the trainer codes against, and the pieces every method shares.

A method is pure functions over explicit variables: ``init`` makes them, ``loss`` and
``predict`` read them, ``trainable_mask`` says which parameters the optimiser may move.

Batch keys (the data contract): 'mouth' uint8 [B,T,88,88]; 'logmel' float32 [B,4T,80];
'face' uint8 [B,T,S,S,3] (CAD only); 'teacher_audio', 'teacher_video' float32 [B,T,K]
per-frame posteriors (K = config.model.teacher_classes; correlation distillation only);
'label' int32 [B] (1 = fake); 'frame_mask' float32 [B,T] (1 = valid frame), optional,
missing = all ones. uint8 -> float normalisation happens inside the models.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Protocol

import flax.linen as nn
import numpy as np
import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from avdetect import contract
from avdetect.errors import AVDetectError, ConfigError
from avdetect.evaluation import ClipScore
from avdetect.models.detector import AVDetector
from avdetect.models.encoders import build_audio_encoder, build_visual_encoder
from avdetect.losses import clip_scores, frame_cross_entropy
from avdetect.models.layers import masked_mean

Batch = dict[str, jax.Array]


class Method(Protocol):
    """What the trainer needs from a method (see the module docstring for batch keys)."""

    name: str

    def init(self, rng: jax.Array, batch: Batch) -> dict:
        """Variables {'params': ..., 'batch_stats': ... (if any), other collections}."""

    def loss(self, variables: dict, batch: Batch, rng: jax.Array, train: bool = True
             ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
        """(scalar total loss, (metrics: scalar arrays incl. each loss term,
        updated non-'params' collections e.g. {'batch_stats': ...}))."""

    def predict(self, variables: dict, batch: Batch) -> dict[str, jax.Array]:
        """Eval mode: {'frame_score': [B,T], 'score': [B]} (+ extra keys)."""

    def trainable_mask(self, params) -> Any:
        """Pytree of bool like params: False = frozen (gets exactly zero updates)."""


class BatchError(AVDetectError, ValueError):
    """A batch that does not follow the data contract (missing key, wrong shape)."""


# --------------------------------------------------------------------------------------
# Batch helpers
# --------------------------------------------------------------------------------------

def paper_quirks(config: ml_collections.ConfigDict) -> bool:
    """The reference code's formulas on? ``config.paper_quirks`` (top level: it switches
    the score of every method, and corrdistill's losses); model files exported before it
    moved there carry it as ``config.loss.paper_quirks``, still read here."""
    if "paper_quirks" in config:
        return bool(config.paper_quirks)
    return bool(config.get("loss", {}).get("paper_quirks", False))


def require(batch: Batch, *keys: str, method: str) -> None:
    """Raise BatchError naming every missing key."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise BatchError(f"{method}: batch lacks {missing} (has {sorted(batch)})")


def num_frames(batch: Batch, key: str) -> int:
    """T, the video frame count, read from a [B, T, ...] key."""
    return int(batch[key].shape[1])


def frame_mask(batch: Batch, t: int) -> jax.Array:
    """'frame_mask' [B, T] as float32, or all ones when the batch has none."""
    if "frame_mask" in batch:
        m = batch["frame_mask"]
        if m.shape[1] != t:
            raise BatchError(f"frame_mask has {m.shape[1]} frames, the clip {t}")
        return m.astype(jnp.float32)
    return jnp.ones((batch["label"].shape[0] if "label" in batch else 1, t), jnp.float32)


def check_audio(batch: Batch, t: int, method: str) -> None:
    """The audio features must hold exactly MEL_PER_FRAME frames per video frame."""
    n = batch["logmel"].shape[1]
    if n != contract.MEL_PER_FRAME * t:
        raise BatchError(f"{method}: 'logmel' has {n} frames for {t} video frames; the data "
                         f"contract needs {contract.MEL_PER_FRAME} per video frame")


def check_image(batch: Batch, key: str, size: int | None, method: str) -> None:
    """A [B, T, size, size(, C)] image key, when the config fixes its size."""
    shape = batch[key].shape
    if size is not None and tuple(shape[2:4]) != (size, size):
        raise BatchError(f"{method}: {key!r} is {shape[2]}x{shape[3]}, the config expects "
                         f"{size}x{size} (config.model / config.data size settings)")


# --------------------------------------------------------------------------------------
# Parameter helpers
# --------------------------------------------------------------------------------------

def path_mask(params, frozen_patterns, trainable: bool = True):
    """Bool tree like ``params``: False where the '/'-joined path matches any regex of
    ``frozen_patterns``, else ``trainable``."""
    pats = [re.compile(p) for p in (frozen_patterns or ())]
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({
        k: (trainable and not any(p.search("/".join(map(str, k))) for p in pats))
        for k in flat})


def stop_frozen(params, mask):
    """``stop_gradient`` on every frozen leaf: frozen weights get an exact-zero gradient
    and XLA can drop their weight-gradient computations."""
    return jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


def split_collections(variables: dict) -> tuple[Any, dict]:
    """(params, every other collection)."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def detection_loss(logits: jax.Array, batch: Batch, mask: jax.Array) -> jax.Array:
    """L_DF of a batch: the frame cross-entropy against its labels, each window weighted by
    the batch's ``sample_weight`` when it has one (``config.data.real_share``)."""
    return frame_cross_entropy(logits, batch["label"], mask, batch.get(contract.SAMPLE_WEIGHT))


def check_clip_score(config: ml_collections.ConfigDict, measures_profile: bool,
                     how: str) -> None:
    """Refuse, before any training, a clip score that pools the offset profile
    (``eval.clip_score`` 'sync' / 'combined') for a model that measures none (``how``:
    the setting that would make it measure one)."""
    kind = ClipScore.from_config(config).kind   # the one reading of config.eval's score
    if kind != "windows" and not measures_profile:
        raise ConfigError(f"eval.clip_score={kind!r} pools the clip's audio-visual offset "
                          f"profile, which this model does not measure: set {how}, or "
                          "--config.eval.clip_score=windows")


def sync_sums(out: dict) -> dict[str, jax.Array]:
    """A window's offset profile as sums a clip's windows pool exactly
    (:func:`avdetect.evaluation.pool_sync`): ``sync_sum`` [B, 2K+1], the per-frame offset
    similarities ``out['sync']`` summed over the frames where each offset exists, and
    ``sync_count`` [B, 2K+1], how many frames each summed (``out['sync_valid']``, which
    already excludes padding). Empty for a model that measures no offset profile."""
    if "sync" not in out:
        return {}
    return dict(sync_sum=jnp.sum(out["sync"] * out["sync_valid"], axis=1),
                sync_count=jnp.sum(out["sync_valid"], axis=1))


def unsynced(batch: Batch) -> jax.Array:
    """int [B], 0 for the windows the synchrony losses learn from (lips driven by the
    window's own audio): the batch's ``av_synced`` flag when it has one
    (``config.data.synced_manipulations``), else its label (real windows only)."""
    if contract.AV_SYNCED in batch:
        return 1 - batch[contract.AV_SYNCED].astype(jnp.int32)
    return batch["label"]


def clip_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Clip accuracy of the reference's decision rule: argmax of the time-averaged logits
    (logits [B, T, 2], labels [B], mask [B, T])."""
    mean_logits = masked_mean(logits, mask[..., None], axis=1)           # [B,2]
    pred = jnp.argmax(mean_logits, axis=-1)
    return jnp.mean((pred == labels.astype(pred.dtype)).astype(jnp.float32))


# --------------------------------------------------------------------------------------
# Methods made of one two-stream module (correlation distillation, baseline)
# --------------------------------------------------------------------------------------

def as_variables(pretrained) -> dict:
    """A pretrained factory's result as a variables dict ({'params': ...} or a full dict);
    a zero-argument loader (how factories defer reading weight files) is called first."""
    if callable(pretrained):
        pretrained = pretrained()
    if isinstance(pretrained, dict) and "params" in pretrained:
        return dict(pretrained)
    return {"params": pretrained}


def put_pretrained(variables: dict, pretrained: dict, method: str) -> dict:
    """``variables`` with each pretrained submodule's random weights replaced by the real
    ones (``pretrained``: submodule name -> variables or a zero-argument loader; shapes
    and trees checked). The host-side hook every method's ``load_pretrained`` runs once
    after init, so no weights become compiled constants of a jitted init."""
    if not pretrained:
        return variables
    out = {c: dict(v) for c, v in variables.items()}
    for name, loader in pretrained.items():
        for col, tree in as_variables(loader).items():
            have = out.get(col, {}).get(name)
            if (have is None or jax.tree.structure(have) != jax.tree.structure(tree)
                    or any(np.shape(a) != np.shape(b) for a, b in
                           zip(jax.tree.leaves(have), jax.tree.leaves(tree)))):
                raise ConfigError(f"{method}: pretrained {name} {col} do not match the "
                                  "initialised encoder's tree / shapes")
            out[col][name] = jax.tree.map(
                lambda a, b: jnp.asarray(b, dtype=jnp.result_type(a)), have, tree)
    return out


def config_with_arch(config: ml_collections.ConfigDict, encoders: dict, pretrained: dict
                     ) -> ml_collections.ConfigDict:
    """The config an exported model file stores: each pretrained encoder's sizes recorded
    as ``config.model.<key>.arch`` (``encoders``: submodule name -> (module, key)), so the
    method rebuilds from the file alone - its weights are in the file's variables and no
    pretrained source (Whisper package, CLIP or face-mesh file) is read on load."""
    config = ml_collections.ConfigDict(config.to_dict())
    for name, (module, key) in encoders.items():
        module_cfg = getattr(module, "config", None)
        if name in pretrained and dataclasses.is_dataclass(module_cfg):
            with config.unlocked():
                config.model[key].arch = dataclasses.asdict(module_cfg)
    return config


def audio_input(batch: Batch, key: str, t: int, method: str) -> jax.Array:
    """The audio stream a method's audio encoder reads, checked against the contract:
    'logmel' [B, 4T, F] or the raw waveform 'audio' [B, 640 T] (int16 PCM -> [-1, 1))."""
    audio = batch[key]
    if key == "logmel":
        check_audio(batch, t, method)
    elif key == "audio":
        want = (audio.shape[0], t * contract.SAMPLES_PER_FRAME)
        if tuple(audio.shape) != want:
            raise BatchError(f"{method}: batch['audio'] has shape {tuple(audio.shape)}, "
                             f"expected {want} ({contract.SAMPLES_PER_FRAME} samples per "
                             "video frame)")
        if audio.dtype == jnp.int16:
            audio = audio.astype(jnp.float32) / contract.INT16_SCALE
    return audio.astype(jnp.float32) if key in ("logmel", "audio") else audio


def build_two_stream(config: ml_collections.ConfigDict, fusion: nn.Module,
                     fusion_dim: int | None) -> tuple[AVDetector, dict]:
    """The :class:`AVDetector` of ``config.model.visual`` / ``config.model.audio`` and
    ``fusion``, plus {submodule name: pretrained variables} for encoders that have them."""
    m = config.model
    venc, vpre = build_visual_encoder(m, m.visual)
    aenc, apre = build_audio_encoder(m, m.audio)
    # name -> pretrained variables or their loader: read only when load_pretrained runs
    pretrained = {k: v for k, v in (("visual_encoder", vpre), ("audio_encoder", apre))
                  if v is not None}
    return AVDetector(venc, aenc, fusion, fusion_dim), pretrained


class TwoStreamMethod:
    """Shared machinery for a method whose network is one :class:`AVDetector`-like module
    ``module(mouth, audio, mask, train) -> dict(logits [B,T,2], audio, visual, ...)``.

    Subclasses set ``name``, build ``self.module`` and implement
    ``loss_terms(out, batch, mask) -> (dict of named scalar terms, dict of extra metrics)``;
    the total loss is ``sum_k config.loss['w_' + k] * term_k``.
    """

    name = "two_stream"
    required_keys: tuple[str, ...] = ("mouth", "logmel", "label")

    def __init__(self, config: ml_collections.ConfigDict, module: nn.Module):
        self.config = config
        self.module = module
        self.quirks = paper_quirks(config)

    # ---- inputs ----
    @property
    def visual_key(self) -> str:
        """The batch key of the visual input ('mouth' for the student's encoder)."""
        return self.config.model.visual.get("input", "mouth")

    @property
    def audio_key(self) -> str:
        """The batch key of the audio input ('logmel'; 'audio' for a Whisper encoder)."""
        return self.config.model.audio.get("input", "logmel")

    def _inputs(self, batch: Batch, need_label: bool):
        vkey, akey = self.visual_key, self.audio_key
        keys = tuple({"mouth": vkey, "logmel": akey}.get(k, k) for k in self.required_keys)
        require(batch, *(keys if need_label else (vkey, akey)), method=self.name)
        t = num_frames(batch, vkey)
        if vkey == "mouth":
            check_image(batch, "mouth", self.config.model.get("mouth_size"), self.name)
        b = batch[vkey].shape[0]
        mask = jnp.broadcast_to(frame_mask(batch, t), (b, t))
        return batch[vkey], audio_input(batch, akey, t, self.name), mask

    # ---- Method API ----
    def init(self, rng: jax.Array, batch: Batch) -> dict:
        mouth, audio, mask = self._inputs(batch, need_label=False)
        p_rng, d_rng = jax.random.split(rng)
        variables = self.module.init({"params": p_rng, "dropout": d_rng}, mouth, audio,
                                     mask, train=False)
        return dict(variables)

    def trainable_mask(self, params):
        return path_mask(params, self.config.model.get("freeze", ()))

    def load_pretrained(self, variables: dict) -> dict:
        """Host-side hook the trainer runs once after init: pretrained encoder weights
        (``self.pretrained``) in place of the random ones."""
        return put_pretrained(variables, getattr(self, "pretrained", {}), self.name)

    def export_config(self) -> ml_collections.ConfigDict:
        """The config an exported file stores (pretrained encoders' sizes as ``arch``)."""
        encoders = {"audio_encoder": (self.module.audio_encoder, "audio"),
                    "visual_encoder": (self.module.visual_encoder, "visual")}
        return config_with_arch(self.config, encoders, getattr(self, "pretrained", {}))

    def loss(self, variables: dict, batch: Batch, rng: jax.Array, train: bool = True):
        mouth, audio, mask = self._inputs(batch, need_label=True)
        params, state = split_collections(variables)
        params = stop_frozen(params, self.trainable_mask(params))
        if train:
            out, new_state = self.module.apply(
                {"params": params, **state}, mouth, audio, mask, train=True,
                rngs={"dropout": rng}, mutable=list(state))
            new_state = dict(new_state)
        else:
            out = self.module.apply({"params": params, **state}, mouth, audio, mask,
                                    train=False)
            new_state = state
        terms, extra = self.loss_terms(out, batch, mask)
        total = jnp.zeros((), jnp.float32)
        metrics = {}
        for k, v in terms.items():
            total = total + float(self.config.loss["w_" + k]) * v
            metrics["loss_" + k] = v
        metrics["accuracy"] = clip_accuracy(out["logits"], batch["label"], mask)
        metrics.update(extra)
        metrics["loss"] = total
        return total, (metrics, new_state)

    def predict(self, variables: dict, batch: Batch) -> dict[str, jax.Array]:
        mouth, audio, mask = self._inputs(batch, need_label=False)
        out = self.module.apply(variables, mouth, audio, mask, train=False)
        frame, score = clip_scores(out["logits"], mask, self.quirks)
        prob = jax.nn.softmax(out["logits"], axis=-1)[..., 1]
        return dict(frame_score=frame, score=score, logits=out["logits"],
                    prob=jnp.sum(prob * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0),
                    **self.aux_outputs(out, mask))

    def aux_outputs(self, out: dict, mask: jax.Array) -> dict[str, jax.Array]:
        """Extra per-window outputs of ``predict`` that the evaluator and ``avdetect
        detect`` pool over a whole clip (the baseline's synchrony profile sums); none here."""
        return {}

    def loss_terms(self, out, batch, mask):  # pragma: no cover - abstract
        raise NotImplementedError
