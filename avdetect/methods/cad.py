"""CAD: cross-modal alignment and distillation (Du et al., 2025; papers.md A).

The paper's sizes and loss definitions are not public; each choice here is written down
with its reason in METHODS.md. Summary:

* Encoders behind one interface (``module(inputs, train, mask) -> [B, T, D]``, see
  :mod:`avdetect.models.encoders`). Audio: ``name='whisper'`` (the default config) the
  real Whisper encoder over the 16 kHz waveform 'audio' stream; ``whisper_like`` a small
  random Whisper-like transformer over the log-mel (``encoders=random`` stand-in).
  Visual: ``name='face_mesh'`` (the default) MediaPipe's face-mesh trunk ported to Flax
  (:mod:`avdetect.pretrained.face_mesh`); ``clip`` the real CLIP vision tower;
  ``face_vit`` a small ViT over face crops. Each frozen or not by
  ``config.model.freeze_audio`` / ``freeze_visual``; frozen encoders run in eval mode
  behind ``stop_gradient``.
* Pretrained weights are put in place on the host by :meth:`CAD.load_pretrained` after
  the (jitted) random init, never traced into it as constants; checkpoints and exports
  then carry them. The encoder factories (registered in :mod:`avdetect.models.encoders`,
  living next to each encoder in :mod:`avdetect.pretrained`) only *defer* reading the
  weight files (a loader called by load_pretrained), and :meth:`CAD.export_config`
  records each pretrained module's sizes (``arch``) in an exported file's config, so an
  exported model rebuilds without the Whisper package or the face-mesh / CLIP files.
* Alignment path: the frozen features a0, v0 -> :class:`~avdetect.models.cad.CADHead`
  cross-attention; loss :func:`avdetect.losses.alignment_kl`; with
  ``config.model.head.max_offset`` > 0 the classifier also reads the alignment space's
  per-frame offset similarities (stop-gradient). Visual ``name='lips'`` (the real-footage
  config): the face mesh's own lip landmarks (precomputed 'lips' stream) through the
  trained :class:`~avdetect.models.lips.LipEncoder`.
* Distillation path: LoRA adapters (:mod:`avdetect.models.lora`) on the encoders listed in
  ``config.model.lora.encoders`` (default the audio encoder) give the modality-specific
  features a1 (v1); SimSiam (:func:`avdetect.losses.simsiam_loss`) between each modality's
  specific and fused streams, stop-gradient on the target side.
* Classifier over both paths; L = w_detect L_DF + w_align L_align + w_simsiam L_simsiam.

Variables: params = {'audio_encoder', 'visual_encoder', 'lora': {'audio_encoder': ...},
'head'}; other collections (e.g. batch_stats of a BN encoder) are keyed the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from avdetect import losses
from avdetect.methods.base import (Batch, audio_input, check_clip_score, clip_accuracy,
                                   config_with_arch, detection_loss, frame_mask, num_frames,
                                   paper_quirks, path_mask, put_pretrained, require,
                                   stop_frozen, sync_sums, unsynced)
from avdetect.models import lora as lora_lib
from avdetect.models.cad import CADHead
from avdetect.models.encoders import build_audio_encoder, build_visual_encoder

ENCODERS = ("audio_encoder", "visual_encoder")


class CAD:
    """The CAD method (see the module docstring)."""

    name = "cad"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        m = config.model
        self.quirks = paper_quirks(config)   # only the score definition for CAD
        a_mod, a_pre = build_audio_encoder(m, m.audio)
        v_mod, v_pre = build_visual_encoder(m, m.visual)
        self.encoders = {"audio_encoder": a_mod, "visual_encoder": v_mod}
        # name -> zero-argument loader of the pretrained variables: weight files are read
        # only when load_pretrained runs (training), never to rebuild an exported model.
        self.pretrained = {k: v for k, v in
                           (("audio_encoder", a_pre), ("visual_encoder", v_pre)) if v is not None}
        self.input_keys = {"audio_encoder": m.audio.get("input", "logmel"),
                           "visual_encoder": m.visual.get("input", "face")}
        self.frozen = {"audio_encoder": bool(m.freeze_audio),
                       "visual_encoder": bool(m.freeze_visual)}
        self.lora = lora_lib.LoRAConfig(int(m.lora.rank), float(m.lora.alpha), m.lora.targets)
        self.lora_on = tuple(f"{e}_encoder" for e in m.lora.encoders) if self.lora.rank else ()
        for e in self.lora_on:
            if e not in ENCODERS:
                raise ValueError(f"config.model.lora.encoders: unknown encoder {e!r}")
        h = m.head
        self.head = CADHead(dim=h.dim, heads=h.heads, xattn_layers=h.xattn_layers,
                            cls_layers=h.cls_layers, dropout=h.dropout, proj_dim=h.proj_dim,
                            pred_hidden=h.pred_hidden,
                            # configs (and exported files) made before the key: no evidence
                            max_offset=int(h.get("max_offset", 0)))
        check_clip_score(config, self.head.max_offset > 0,
                         "--config.model.head.max_offset=K (K > 0)")

    # ---- inputs ----
    def _inputs(self, batch: Batch, need_label: bool):
        keys = tuple(self.input_keys.values()) + (("label",) if need_label else ())
        require(batch, *keys, method=self.name)
        vkey, akey = self.input_keys["visual_encoder"], self.input_keys["audio_encoder"]
        t = num_frames(batch, vkey)
        b = batch[vkey].shape[0]
        mask = jnp.broadcast_to(frame_mask(batch, t), (b, t))
        audio = audio_input(batch, akey, t, self.name)
        x = {"audio_encoder": audio, "visual_encoder": batch[vkey]}
        return x, mask

    # ---- encoders ----
    def _encode(self, params, state, x, mask, train, rng):
        """Run both encoders. Returns ({name: frozen-path features}, {name: LoRA-path
        features}, updated encoder collections)."""
        base, adapted, new_state = {}, {}, {}
        for i, name in enumerate(ENCODERS):
            mod, frozen = self.encoders[name], self.frozen[name]
            cols = {c: state[c][name] for c in state if name in state[c]}
            enc_train = train and not frozen
            p = jax.lax.stop_gradient(params[name]) if frozen else params[name]
            rngs = {"dropout": jax.random.fold_in(rng, i)}

            def run(p_, mutable):
                if mutable:
                    return mod.apply({"params": p_, **cols}, x[name], True, mask, rngs=rngs,
                                     mutable=list(cols))
                return mod.apply({"params": p_, **cols}, x[name], enc_train, mask, rngs=rngs), {}

            f0, upd = run(p, enc_train and bool(cols))
            for c, tree in upd.items():
                new_state.setdefault(c, {})[name] = tree
            base[name] = jax.lax.stop_gradient(f0) if frozen else f0
            if name in self.lora_on:
                merged = lora_lib.merge(p, params["lora"][name], self.lora)
                adapted[name], _ = run(merged, False)
            else:
                adapted[name] = base[name]
        return base, adapted, new_state

    def _forward(self, params, state, batch, rng, train, need_label):
        x, mask = self._inputs(batch, need_label)
        base, adapted, enc_state = self._encode(params, state, x, mask, train, rng)
        head_in = (base["audio_encoder"], base["visual_encoder"],
                   adapted["audio_encoder"], adapted["visual_encoder"])
        head_state = {c: state[c]["head"] for c in state if "head" in state[c]}
        if train:
            out, head_upd = self.head.apply({"params": params["head"], **head_state}, *head_in,
                                            mask, True, rngs={"dropout": rng},
                                            mutable=list(head_state))
        else:
            out, head_upd = self.head.apply({"params": params["head"], **head_state},
                                            *head_in, mask, False), {}
        new_state = {c: dict(v) for c, v in state.items()}
        for src in (enc_state, {c: {"head": v} for c, v in head_upd.items()}):
            for c, tree in src.items():
                new_state.setdefault(c, {}).update(tree)
        return out, mask, new_state

    # ---- Method API ----
    def init(self, rng: jax.Array, batch: Batch) -> dict:
        x, mask = self._inputs(batch, need_label=False)
        k_enc, k_lora, k_head = jax.random.split(rng, 3)
        variables: dict = {"params": {}}
        for i, name in enumerate(ENCODERS):
            # Random even for pretrained encoders (same shapes): the real weights come in
            # on the host through load_pretrained, so no jitted init holds them as constants.
            enc_vars = self.encoders[name].init(
                {"params": jax.random.fold_in(k_enc, i),
                 "dropout": jax.random.fold_in(k_enc, 10 + i)}, x[name], False, mask)
            for c, tree in enc_vars.items():
                variables.setdefault(c, {})[name] = tree
        if self.lora_on:
            variables["params"]["lora"] = {
                name: lora_lib.init_adapters(jax.random.fold_in(k_lora, i),
                                             variables["params"][name], self.lora)
                for i, name in enumerate(self.lora_on)}
        params, state = variables["params"], {c: v for c, v in variables.items() if c != "params"}
        base, adapted, _ = self._encode(params, state, x, mask, False, k_head)
        head_vars = self.head.init({"params": k_head, "dropout": k_head},
                                   base["audio_encoder"], base["visual_encoder"],
                                   adapted["audio_encoder"], adapted["visual_encoder"], mask, False)
        for c, tree in head_vars.items():
            variables.setdefault(c, {})["head"] = tree
        return variables

    def load_pretrained(self, variables: dict) -> dict:
        """Host-side hook run once after init: ``variables`` with each pretrained encoder's
        random weights replaced by the real ones (shapes checked). Identity when the
        config names no pretrained encoder. Not needed after a checkpoint restore."""
        return put_pretrained(variables, self.pretrained, self.name)

    def export_config(self) -> ml_collections.ConfigDict:
        """The config an exported model file stores: each pretrained encoder's sizes
        recorded as ``arch``, so the method rebuilds from the file alone (its weights are
        in the file's variables; the Whisper package / CLIP / face-mesh files are not
        needed, and load_pretrained never runs on load)."""
        encoders = {"audio_encoder": (self.encoders["audio_encoder"], "audio"),
                    "visual_encoder": (self.encoders["visual_encoder"], "visual")}
        return config_with_arch(self.config, encoders, self.pretrained)

    def trainable_mask(self, params):
        mask = path_mask(params, self.config.model.get("freeze", ()))
        for name in ENCODERS:
            if self.frozen[name] and name in mask:
                mask[name] = jax.tree.map(lambda _: False, mask[name])
        return mask

    def loss(self, variables: dict, batch: Batch, rng: jax.Array, train: bool = True):
        params = variables["params"]
        state = {c: v for c, v in variables.items() if c != "params"}
        params = stop_frozen(params, self.trainable_mask(params))
        out, mask, new_state = self._forward(params, state, batch, rng, train, True)
        cfg = self.config.loss
        labels = batch["label"]
        terms = {"detect": detection_loss(out["logits"], batch, mask)}
        if cfg.w_align:
            terms["align"] = losses.alignment_kl(
                out["align_a"], out["align_v"], unsynced(batch), mask, temperature=cfg.temperature,
                sigma=cfg.align_sigma, target=cfg.align_target, clips=cfg.align_clips,
                cross_negatives=bool(cfg.get("align_cross_negatives", False)))
        if cfg.w_simsiam:
            per_mod = [losses.simsiam_loss(out[f"p_spec_{m[0]}"], out[f"z_spec_{m[0]}"],
                                           out[f"p_fused_{m[0]}"], out[f"z_fused_{m[0]}"], mask)
                       for m in cfg.simsiam_modalities]     # 'audio' -> *_a, 'visual' -> *_v
            terms["simsiam"] = sum(per_mod) / len(per_mod)
        total = jnp.zeros((), jnp.float32)
        metrics = {}
        for k, v in terms.items():
            total = total + float(cfg["w_" + k]) * v
            metrics["loss_" + k] = v
        metrics["accuracy"] = clip_accuracy(out["logits"], labels, mask)
        metrics["loss"] = total
        return total, (metrics, new_state)

    def predict(self, variables: dict, batch: Batch) -> dict[str, jax.Array]:
        params = variables["params"]
        state = {c: v for c, v in variables.items() if c != "params"}
        out, mask, _ = self._forward(params, state, batch, jax.random.key(0), False, False)
        frame, score = losses.clip_scores(out["logits"], mask, self.quirks)
        prob = jax.nn.softmax(out["logits"], axis=-1)[..., 1]
        # With the alignment evidence (head.max_offset > 0): the alignment space's offset
        # profile as poolable sums, for the clip-level synchrony score (eval.clip_score).
        return dict(frame_score=frame, score=score, logits=out["logits"],
                    prob=jnp.sum(prob * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0),
                    **sync_sums(out))
