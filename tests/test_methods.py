"""The three methods through the trainer's interface: init / loss / predict /
trainable_mask, jit-compiled, a few optimiser steps on a learnable toy batch; frozen
parameters get exactly zero gradients and updates, LoRA trains only the adapters; bad
batches and configs raise typed errors; every config builds.

Compile time dominates on CPU, so each method is compiled once (init, train step,
predict) at very small widths and cached for the module; dropout is set to 0, keys use
the 'rbg' PRNG and LLVM's expensive passes are skipped (all three only shorten
compiles - none is under test here).
"""

from __future__ import annotations

import functools
import importlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util
from scipy.spatial.distance import jensenshannon

from avdetect.errors import ConfigError
from avdetect.methods import build_method
from avdetect.methods.base import BatchError
from avdetect.data.random_batches import example_batch
from configs import baseline, cad, common, corrdistill

B, T, STEPS = 4, 4, 5
# Compile without LLVM's expensive passes: a fraction of the compile time for these tiny
# programs (the same options the trainer uses for its one-off init); numerics unchanged.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def small(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a tiny config further for tests (fewer ops = faster compiles)."""
    m = config.model
    if config.method == "cad":
        m.head.dropout = 0.0
        return config
    m.visual.update(stem_width=4, widths=(4, 8), head_hidden=8, out_dim=8)
    m.audio.update(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8))
    m.fusion.dropout = 0.0
    if config.method == "corrdistill":
        m.fusion.update(dim=8, heads=2)
    else:
        m.fusion.hidden = 8
    return config


CONFIGS = {"corrdistill": corrdistill, "baseline": baseline, "cad": cad}
# CAD's random stand-in encoders: only the method's mechanics are under test here
# (tests/test_cad_whisper.py runs the pretrained default).
TINY = {"corrdistill": "tiny", "baseline": "tiny", "cad": "tiny,encoders=random"}


def masked_adam(mask, lr=3e-3):
    """The trainer's optimiser shape: Adam on trainable leaves, set_to_zero on frozen."""
    return optax.multi_transform({True: optax.adam(lr), False: optax.set_to_zero()}, mask)


@functools.lru_cache(maxsize=None)
def train_method(name: str) -> dict:
    """Build, init and train STEPS steps one method (cached: compiled once per run)."""
    config = small(CONFIGS[name].get_config(TINY[name]))
    method = build_method(config)
    batch = {k: jnp.asarray(v) for k, v in example_batch(config, B, T, seed=0).items()}
    variables = jax.jit(method.init, compiler_options=FAST)(key(0), batch)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    mask = method.trainable_mask(params)
    tx = masked_adam(mask)

    @functools.partial(jax.jit, compiler_options=FAST)
    def step(p, s, opt_state, rng):
        grad_fn = jax.value_and_grad(
            lambda p_: method.loss({"params": p_, **s}, batch, rng, train=True), has_aux=True)
        (loss, (metrics, new_s)), grads = grad_fn(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), new_s, opt_state, loss, metrics, grads

    p, s, opt_state = params, state, tx.init(params)
    history, first_grads, first_metrics = [], None, None
    for i in range(STEPS):
        p, s, opt_state, loss, metrics, grads = step(p, s, opt_state, key(100 + i))
        history.append(float(loss))
        if first_grads is None:
            first_grads, first_metrics = grads, metrics
    predict = jax.jit(method.predict, compiler_options=FAST)
    return dict(name=name, config=config, method=method, batch=batch,
                init=variables, final={"params": p, **s}, mask=mask, losses=history,
                grads=first_grads, metrics=first_metrics, predict=predict)


@pytest.fixture(params=sorted(CONFIGS))
def run(request):
    return train_method(request.param)


def _leaves(tree):
    return traverse_util.flatten_dict(tree)


# ------------------------------------------------------------------ training

def test_few_steps_reduce_loss(run):
    losses = run["losses"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def test_total_is_weighted_sum_of_terms(run):
    m, w = run["metrics"], run["config"].loss
    expected = {"corrdistill": {"detect", "corr", "metric"}, "baseline": {"detect"},
                "cad": {"detect", "align", "simsiam"}}[run["name"]]
    terms = {k[len("loss_"):] for k in m if k.startswith("loss_")}
    assert terms == expected
    total = sum(float(w["w_" + t]) * float(m["loss_" + t]) for t in terms)
    np.testing.assert_allclose(float(m["loss"]), total, rtol=1e-6)
    assert 0.0 <= float(m["accuracy"]) <= 1.0


def test_detection_loss_honours_the_sample_weight(run):
    # A batch's sample_weight (config.data.real_share) weights each window's detection
    # term: weight on one window alone gives that window's own loss (eval mode, so no
    # batch statistics tie the windows together); all-ones weights change nothing.
    method, batch, variables = run["method"], run["batch"], run["final"]

    def detect(b):
        return float(method.loss(variables, b, key(7), train=False)[1][0]["loss_detect"])

    plain = detect(batch)
    ones = dict(batch, sample_weight=jnp.ones(B, jnp.float32))
    np.testing.assert_allclose(detect(ones), plain, rtol=1e-6)
    per_window = [detect({k: v[i:i + 1] for k, v in batch.items()}) for i in range(B)]
    for i in range(B):
        only = dict(batch, sample_weight=jnp.zeros(B, jnp.float32).at[i].set(2.5))
        np.testing.assert_allclose(detect(only), per_window[i], rtol=1e-5)


def test_teacher_correlation_wiring():
    """The teacher soft label the method used is clip(1 - JS) of the batch's posteriors."""
    run = train_method("corrdistill")
    p = np.asarray(run["batch"]["teacher_audio"], np.float64)
    q = np.asarray(run["batch"]["teacher_video"], np.float64)
    r = np.clip(1 - jensenshannon(p, q, base=2, axis=-1) ** 2, 0, 1)
    np.testing.assert_allclose(float(run["metrics"]["teacher_corr"]), r.mean(), rtol=1e-5)
    assert 0.0 <= float(run["metrics"]["student_sim"]) <= 1.0


def test_batch_stats_are_updated(run):
    init, final = run["init"], run["final"]
    if "batch_stats" not in init:
        assert run["name"] == "cad"              # LayerNorm-only encoders and head
        return
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(init["batch_stats"]), jax.tree.leaves(final["batch_stats"]))]
    assert all(changed)


def test_frozen_and_lora(run):
    """CAD: frozen encoders get exact-zero gradients and updates; with LoRA only the
    adapters of the audio encoder move; the head trains. Two-stream methods: all train."""
    g, mask = _leaves(run["grads"]), _leaves(run["mask"])
    before, after = _leaves(run["init"]["params"]), _leaves(run["final"]["params"])
    if run["name"] != "cad":
        assert all(mask.values())
        return
    frozen = [k for k, m in mask.items() if not m]
    assert frozen and all(k[0] in ("audio_encoder", "visual_encoder") for k in frozen)
    assert {k[0] for k, m in mask.items() if m} == {"lora", "head"}
    for k in frozen:
        assert np.all(np.asarray(g[k]) == 0.0), k
        np.testing.assert_array_equal(before[k], after[k])
    lora_keys = [k for k in mask if k[0] == "lora"]
    assert lora_keys and all(k[1] == "audio_encoder" for k in lora_keys)
    assert any(np.any(np.asarray(g[k]) != 0) for k in lora_keys)
    assert all(not np.array_equal(before[k], after[k]) for k in lora_keys)
    assert any(not np.array_equal(before[k], after[k]) for k in mask if k[0] == "head")


# ------------------------------------------------------------------ prediction

def test_predict_scores(run):
    out = run["predict"](run["final"], run["batch"])
    assert out["frame_score"].shape == (B, T) and out["score"].shape == (B,)
    lg = np.asarray(out["logits"])
    np.testing.assert_allclose(out["frame_score"], lg[..., 1] - lg[..., 0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["score"], np.asarray(out["frame_score"]).mean(1),
                               rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(out["prob"]) >= 0) & (np.asarray(out["prob"]) <= 1))


def test_predict_averages_valid_frames_only(run):
    batch = dict(run["batch"])
    m = np.ones((B, T), np.float32)
    m[0, 2:] = 0.0
    batch["frame_mask"] = jnp.asarray(m)
    out = run["predict"](run["final"], batch)
    fs = np.asarray(out["frame_score"])
    np.testing.assert_allclose(out["score"][0], fs[0, :2].mean(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ errors

def test_bad_batches_raise_batch_error(run):
    method, batch = run["method"], dict(run["batch"])
    vkey = "face" if run["name"] == "cad" else "mouth"
    with pytest.raises(BatchError, match="label"):
        method.loss(run["init"], {k: v for k, v in batch.items() if k != "label"}, key(0))
    with pytest.raises(BatchError, match=vkey):
        method.predict(run["init"], {k: v for k, v in batch.items() if k != vkey})
    short = dict(batch, logmel=batch["logmel"][:, :-1])
    with pytest.raises(BatchError, match="4 per video frame"):
        method.predict(run["init"], short)
    if run["name"] != "cad":
        big = dict(batch, mouth=jnp.zeros((B, T, 96, 96), jnp.uint8))
        with pytest.raises(BatchError, match="88x88"):
            method.predict(run["init"], big)


def test_unknown_method_and_encoder_raise_config_error():
    c = corrdistill.get_config("tiny")
    c.method = "nope"
    with pytest.raises(ConfigError, match="nope"):
        build_method(c)
    c = corrdistill.get_config("tiny")
    c.model.audio.name = "wav2vec_missing"
    with pytest.raises(ConfigError, match="wav2vec_missing"):
        build_method(c)
    c = corrdistill.get_config("tiny")
    c.model.visual.not_a_knob = 3
    with pytest.raises(ConfigError, match="bad config keys"):
        build_method(c)


def test_paper_quirks_is_top_level_and_old_model_configs_still_read():
    """config.paper_quirks switches every method's score; a config exported before the key
    moved (config.loss.paper_quirks) still turns the quirks on, and the default is off."""
    from avdetect.methods.base import paper_quirks
    for mod in (baseline, cad, corrdistill):
        for quirks in (False, True):
            c = mod.get_config("tiny,quirks" if quirks else "tiny")
            assert paper_quirks(c) is quirks and build_method(c).quirks is quirks
            old = c.to_dict()
            old["loss"]["paper_quirks"] = old.pop("paper_quirks")
            old = ml_collections.ConfigDict(old)
            assert "paper_quirks" not in old
            assert paper_quirks(old) is quirks and build_method(old).quirks is quirks
            del old.loss["paper_quirks"]
            assert paper_quirks(old) is False


def test_the_registry_alone_knows_every_encoder_the_configs_name():
    """Importing only avdetect.models.encoders (fresh process, no method module) is enough
    to build every encoder that a config variant names - pretrained ones included."""
    named = {"audio": set(), "visual": set()}
    variants = {cad: ["tiny", "tiny,encoders=random", "tiny,visual=vit", "tiny,clip=/x"],
                baseline: ["tiny", "tiny,real"],
                corrdistill: ["tiny", "tiny,real", "tiny,audio=whisper"]}
    for mod, args in variants.items():
        for arg in args:
            model = mod.get_config(arg).model
            named["audio"].add(model.audio.name)
            named["visual"].add(model.visual.name)
    code = ("import json, sys; from avdetect.models import encoders; "
            "print(json.dumps([encoders.registered_encoders(), "
            "sorted(m for m in sys.modules if m.startswith('avdetect.methods'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=pathlib.Path(__file__).parents[1])
    registry, methods_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert methods_loaded == []
    for kind in ("audio", "visual"):
        assert named[kind] <= set(registry[kind]), (kind, named[kind], registry[kind])
    assert {"whisper", "clip", "face_mesh"} <= set(registry["audio"]) | set(registry["visual"])


# ------------------------------------------------------------------ configs

SCHEMA = {
    "data": {"name", "data_dir", "window", "batch_size", "face_size", "num_workers",
             "train_split", "eval_split", "val_split"},
    "optim": {"name", "lr", "schedule", "decay_rate", "decay_steps", "warmup_steps",
              "weight_decay", "grad_clip"},
    "train": {"steps", "log_every", "eval_every", "ckpt_every", "keep_ckpts", "eval_batches"},
}


@pytest.mark.parametrize("module", ["corrdistill", "cad", "baseline"])
@pytest.mark.parametrize("arg", [None, "full", "tiny", "tiny,window=10,batch=2,quirks"])
def test_configs_follow_the_schema_and_build(module, arg):
    mod = importlib.import_module(f"configs.{module}")
    assert "python -m avdetect.main --config=configs/" in mod.__doc__
    assert "Expected result" in mod.__doc__
    c = mod.get_config(arg)
    assert c.method == module and isinstance(c.seed, int)
    for section, keys in SCHEMA.items():
        assert keys <= set(c[section].keys()), (section, keys - set(c[section].keys()))
    assert c.mesh == [("data", -1), ("model", 1)]
    assert c.sharding_strategy == [(".*", "replicate")]
    assert c.paper_quirks == bool(arg and "quirks" in arg)
    assert "paper_quirks" not in c.loss       # one home: top level
    if arg and "window=10" in arg:
        assert (c.data.window, c.data.batch_size) == (10, 2)
    # the method builds; at tiny size also trace its init (shapes only, no compile)
    method = build_method(c)
    if c.model.visual.get("depth", 1) < 4 and c.model.visual.get("tcn_blocks", 1) < 5:
        shapes = jax.eval_shape(method.init, key(0), example_batch(c, 1, 2))
        assert set(shapes["params"]) >= {"audio_encoder", "visual_encoder"}


def test_parse_arg():
    a = common.parse_arg("tiny,window=25,batch=8,data=x/y", **common.COMMON_ARGS)
    assert (a.tiny, a.window, a.batch, a.data, a.quirks) == (True, 25, 8, "x/y", False)
    with pytest.raises(ConfigError, match="unknown config argument"):
        common.parse_arg("tinyy", **common.COMMON_ARGS)
    with pytest.raises(ConfigError, match="expected int"):
        common.parse_arg("window=abc", **common.COMMON_ARGS)
    with pytest.raises(ConfigError, match="needs a value"):
        common.parse_arg("window", **common.COMMON_ARGS)


def test_margin_placeholder_accepts_overrides():
    c = corrdistill.get_config("tiny")
    assert c.loss.margin is None                 # the mode's default margin
    c.loss.margin = 0.3
    assert c.loss.margin == 0.3
