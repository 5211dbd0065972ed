"""A tiny Method for trainer tests (fast to compile); selected with
``config.method = 'toy_method:build'`` (``tests/`` on PYTHONPATH).

It has what the trainer must handle: parameters, a BatchNorm ``batch_stats``
collection, dropout driven by the step RNG, a frozen sub-module (``trainable_mask``)
and per-frame scores over mouth + log-mel inputs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from avdetect import contract


class ToyNet(nn.Module):
    width: int = 16

    @nn.compact
    def __call__(self, batch, train: bool):
        b, t = batch["mouth"].shape[:2]
        mouth = batch["mouth"].astype(jnp.float32) / 255.0                       # [B,T,88,88]
        mouth = mouth.reshape(b, t, 8, 11, 8, 11).mean(axis=(3, 5)).reshape(b, t, 64)
        mel = batch["logmel"].reshape(b, t, contract.MEL_PER_FRAME * contract.N_MELS)  # [B,T,320]
        frozen = nn.Dense(8, name="frozen_proj")(mel)                              # never trained
        # No biases before BatchNorm: BN cancels them, their gradients are rounding noise
        # that Adam would blow up into lr-sized, device-count-dependent steps.
        h = jnp.concatenate([nn.Dense(self.width, use_bias=False, name="visual")(mouth),
                             nn.Dense(self.width, use_bias=False, name="audio")(mel),
                             jax.lax.stop_gradient(frozen)], axis=-1)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        h = nn.Dropout(0.2, deterministic=not train)(nn.relu(h))
        return nn.Dense(2, name="head")(h)                                         # [B,T,2]


class ToyMethod:
    name = "toy"

    def __init__(self, config: ml_collections.ConfigDict):
        self.net = ToyNet(width=int(config.model.get("width", 16)))

    def init(self, rng, batch):
        return dict(self.net.init({"params": rng, "dropout": rng}, batch, train=False))

    def loss(self, variables, batch, rng, train=True):
        logits, new = self.net.apply(variables, batch, train=train, rngs={"dropout": rng},
                                     mutable=["batch_stats"])
        mask = batch.get("frame_mask", jnp.ones(logits.shape[:2]))
        labels = jnp.broadcast_to(batch["label"][:, None], logits.shape[:2])
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
        ce = (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        acc = ((logits.argmax(-1) == labels) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        return ce, ({"ce": ce, "frame_acc": acc}, dict(new))

    def predict(self, variables, batch):
        logits = self.net.apply(variables, batch, train=False)
        frame = jax.nn.softmax(logits)[..., 1]                                     # [B,T]
        mask = batch.get("frame_mask", jnp.ones(frame.shape))
        return {"frame_score": frame, "score": (frame * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)}

    def trainable_mask(self, params):
        return {k: jax.tree.map(lambda _: k != "frozen_proj", v) for k, v in params.items()}


def build(config: ml_collections.ConfigDict) -> ToyMethod:
    return ToyMethod(config)


def toy_config(**overrides) -> ml_collections.ConfigDict:
    """A complete trainer config for the toy method on random data."""
    c = ml_collections.ConfigDict()
    c.method = "toy_method:build"
    c.seed = 0
    c.model = ml_collections.ConfigDict({"width": 16, "teacher_classes": 8})
    c.loss = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({
        "name": "random", "data_dir": None, "window": 4, "batch_size": 8, "eval_batch_size": 8,
        "face_size": 16, "num_workers": 0, "train_split": "train", "eval_split": "test",
        "val_split": "validation", "random_eval_videos": 8})
    c.optim = ml_collections.ConfigDict({
        "name": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup_steps": 2, "weight_decay": 1e-4,
        "grad_clip": 1.0, "decay_rate": 0.5, "decay_steps": 10})
    c.train = ml_collections.ConfigDict({
        "steps": 24, "log_every": 1, "eval_every": 12, "ckpt_every": 4, "keep_ckpts": 2,
        "eval_batches": 1, "fast_compile": True})
    c.mesh = [("data", -1), ("model", 1)]
    c.sharding_strategy = [(".*", "replicate")]
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """For ``python -m avdetect.main --config=tests/toy_method.py`` (PYTHONPATH=tests)."""
    del arg
    return toy_config()
