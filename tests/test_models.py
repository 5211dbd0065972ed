"""Encoders, fusion and the CAD head: output shapes, the reference architecture's
parameter counts, and NumPy / SciPy references for the numerically subtle layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from flax import traverse_util

from avdetect.models.audio import SEResNetAudio, WhisperLikeAudio, mfcc_from_logmel
from avdetect.models.cad import CADHead
from avdetect.models.fusion import ConcatFusion, StudentFusion, TalkNetAttention
from avdetect.models.layers import GlobalLayerNorm
from avdetect.models.visual import FaceViT, MouthEncoder, MouthFrontend
from configs import corrdistill

KEY = jax.random.key(0)
B, T = 2, 6
# Compile without LLVM's expensive passes (much faster compiles for these tiny programs;
# numerics unchanged). Small modules are jitted rather than run op by op for the same reason.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit_init(module, *arrays, static=()):
    """``module.init(KEY, *arrays, *static)`` jitted."""
    return jax.jit(lambda *a: module.init(KEY, *a, *static), compiler_options=FAST)(*arrays)


def jit_apply(module, *static):
    """``module.apply(variables, *arrays, *static)`` jitted once, reusable."""
    return jax.jit(lambda v, *a: module.apply(v, *a, *static), compiler_options=FAST)


def out_shape(module, *args, **kw):
    """Output shape of ``module.init_with_output`` without compiling anything."""
    is_struct = [isinstance(a, jax.ShapeDtypeStruct) for a in args]
    structs = [a for a, s in zip(args, is_struct) if s]

    def run(*arrays):
        it = iter(arrays)
        full = [next(it) if s else a for a, s in zip(args, is_struct)]
        return module.init_with_output(KEY, *full, **kw)

    out, _ = jax.eval_shape(run, *structs)
    return jax.tree.map(lambda s: s.shape, out)


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("size,stem", [(88, "per_frame"), (112, "per_frame"), (88, "3d")])
def test_mouth_encoder_shape(size, stem):
    enc = MouthEncoder(8, (8, 16, 32, 64), 1, stem, tcn_blocks=2, head_hidden=24, out_dim=20)
    mouth = jax.ShapeDtypeStruct((B, T, size, size), jnp.uint8)
    assert out_shape(enc, mouth, False) == (B, T, 20)


@pytest.mark.parametrize("features,dim", [("logmel", 80), ("mfcc", 80), ("mfcc", 13)])
def test_seresnet_audio_reduces_time_4x(features, dim):
    enc = SEResNetAudio((1, 2, 1, 1), (8, 16, 24, 32), features=features)
    feats = jax.ShapeDtypeStruct((B, 4 * T, dim), jnp.float32)
    assert out_shape(enc, feats, False) == (B, T, 32)


def test_whisper_like_and_face_vit_shapes():
    feats = jax.ShapeDtypeStruct((B, 4 * T, 80), jnp.float32)
    assert out_shape(WhisperLikeAudio(dim=24, depth=2, heads=4), feats) == (B, T, 24)
    faces = jax.ShapeDtypeStruct((B, T, 40, 40, 3), jnp.uint8)      # resized to 32
    vit = FaceViT(image_size=32, patch=8, dim=24, depth=1, heads=4, out_dim=16)
    assert out_shape(vit, faces) == (B, T, 16)


def test_fusion_and_cad_head_shapes():
    a = jax.ShapeDtypeStruct((B, T, 16), jnp.float32)
    out = out_shape(StudentFusion(dim=16, heads=4), a, a)
    assert out == dict(audio=(B, T, 16), visual=(B, T, 16), fused=(B, T, 32),
                       logits=(B, T, 2))
    assert out_shape(ConcatFusion(hidden=12), a, a)["logits"] == (B, T, 2)
    v = jax.ShapeDtypeStruct((B, T, 24), jnp.float32)
    head = out_shape(CADHead(dim=16, heads=4, xattn_layers=2, proj_dim=12, pred_hidden=8),
                     a, v, a, v)
    assert head["logits"] == (B, T, 2)
    for k in ("align_a", "align_v", "fused_a", "fused_v", "spec_a", "spec_v"):
        assert head[k] == (B, T, 16)
    for k in ("spec_a", "fused_a", "spec_v", "fused_v"):
        assert head["z_" + k] == head["p_" + k] == (B, T, 12)


# --------------------------------------------------------- the reference architecture

def test_full_student_matches_reference_parameter_counts():
    """Per-part counts of the PyTorch reference (peer_baseline.md: visual front end
    11.19 M, V-TCN 1.33 M, conv head 0.69 M, audio 1.35 M, cross-attention 0.20 M each,
    AV self-attention 0.79 M; 15,743,451 in all), derived exactly from its layer list.
    Ours lacks the reference's unused stage-1 downsample conv (64*64 = 4096) and adds
    the Linear(256, 2) classifier (514), which the reference counts separately."""
    from avdetect.methods import build_method
    method = build_method(corrdistill.get_config())
    batch = dict(mouth=jax.ShapeDtypeStruct((1, 2, 88, 88), jnp.uint8),
                 logmel=jax.ShapeDtypeStruct((1, 8, 80), jnp.float32))
    params = jax.eval_shape(method.init, KEY, batch)["params"]
    v, a = params["visual_encoder"], params["audio_encoder"]
    tcn = {k: x for k, x in v.items() if k.startswith("tcn")}
    head = {k: x for k, x in v.items() if k.startswith("head")}
    fusion = params["fusion"]
    assert n_params(v["frontend"]) == 11_185_088 - 4096
    assert n_params(tcn) == 1_328_645
    assert n_params(head) == 689_024
    assert n_params(a) == 1_354_390
    assert n_params(fusion["cross_a2v"]) == n_params(fusion["cross_v2a"]) == 198_272
    assert n_params(fusion["self_av"]) == 789_760
    assert n_params(fusion["classifier"]) == 514
    assert n_params(params) == 15_743_451 - 4096 + 514


# ------------------------------------------------------------ numerical references

def test_mfcc_is_orthonormal_dct_of_logmel():
    logmel = np.random.default_rng(0).normal(size=(2, 12, 80)).astype(np.float32)
    ref = scipy.fft.dct(logmel.astype(np.float64), type=2, norm="ortho", axis=-1)[..., :13]
    np.testing.assert_allclose(mfcc_from_logmel(jnp.asarray(logmel), 13), ref, atol=1e-4)


def test_global_layer_norm_matches_numpy_with_mask():
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.float32)
    gln = GlobalLayerNorm()
    params = {"scale": np.array([1.0, 2.0, 0.5], np.float32),
              "bias": np.array([0.0, 1.0, -1.0], np.float32)}
    got = np.asarray(gln.apply({"params": params}, x, mask))
    for b in range(2):
        valid = x[b][mask[b] > 0]
        ref = (x[b] - valid.mean()) / np.sqrt(valid.var() + 1e-8)
        ref = ref * params["scale"] + params["bias"]
        np.testing.assert_allclose(got[b][mask[b] > 0], ref[mask[b] > 0], rtol=1e-4, atol=1e-5)


def test_per_frame_stem_is_talknets_one_frame_3d_conv():
    """TalkNet feeds B*T one-frame clips to its (5,7,7) Conv3d: our 'per_frame' stem must
    equal the '3d' stem run on one-frame clips, and must not mix neighbouring frames
    (while the real '3d' stem does)."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(1, 4, 16, 16)).astype(np.float32))
    per_frame = MouthFrontend(4, (), (), stem="per_frame")
    three_d = MouthFrontend(4, (), (), stem="3d")
    variables = jit_init(per_frame, x, static=(False,))
    run_pf, run_3d = jit_apply(per_frame, False), jit_apply(three_d, False)
    y = run_pf(variables, x)                                          # [1,4,4] (C=4)
    one_frame = jnp.transpose(x, (1, 0, 2, 3))                        # 4 clips of T=1
    y_ref = run_3d(variables, one_frame)                              # [4,1,4]
    np.testing.assert_allclose(y[0], y_ref[:, 0], rtol=1e-5, atol=1e-6)
    x2 = x.at[:, 1].set(0.0)                                          # change frame 1 only
    assert np.allclose(run_pf(variables, x2)[:, 0], y[:, 0])
    y3, y3b = run_3d(variables, x), run_3d(variables, x2)
    assert not np.allclose(y3b[:, 0], y3[:, 0])                       # frame 0 sees frame 1


def _np_layer_norm(x, g, b, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def _np_talknet_layer(p, src, tar, heads, query):
    """NumPy reimplementation of TalkNet's attentionLayer (eval mode)."""
    q_in, kv_in = (tar, src) if query == "target" else (src, tar)
    att = p["attn"]
    dense = lambda x, d: x @ d["kernel"] + d["bias"]                  # noqa: E731
    q, k, v = dense(q_in, att["query"]), dense(kv_in, att["key"]), dense(kv_in, att["value"])
    t, dim = q.shape[1], q.shape[-1]
    hd = dim // heads
    split = lambda z: z.reshape(z.shape[0], -1, heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
    logits = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(hd)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = (w @ split(v)).transpose(0, 2, 1, 3).reshape(src.shape[0], t, dim)
    x = _np_layer_norm(src + dense(o, att["out"]), p["norm1"]["scale"], p["norm1"]["bias"])
    h = dense(np.maximum(dense(x, p["linear1"]), 0), p["linear2"])
    return _np_layer_norm(x + h, p["norm2"]["scale"], p["norm2"]["bias"])


@pytest.mark.parametrize("query", ["target", "source"])
def test_talknet_attention_matches_numpy(query):
    rng = np.random.default_rng(3)
    src = rng.normal(size=(2, 5, 8)).astype(np.float32)
    tar = rng.normal(size=(2, 5, 8)).astype(np.float32)
    layer = TalkNetAttention(8, heads=2, dropout=0.1, query=query)
    params = jit_init(layer, src, tar)["params"]
    got = jit_apply(layer)({"params": params}, src, tar)              # eval: no dropout
    ref = _np_talknet_layer(jax.tree.map(np.asarray, params), src.astype(np.float64),
                            tar.astype(np.float64), 2, query)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_fusion_ignores_padded_frames():
    """With a frame mask, the valid frames' outputs do not depend on padded frames."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1, 6, 8)).astype(np.float32)
    v = rng.normal(size=(1, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.float32)
    fusion = StudentFusion(dim=8, heads=2)
    variables = jit_init(fusion, a, v, mask)
    run = jit_apply(fusion)
    out1 = run(variables, a, v, mask)["logits"]
    a2, v2 = a.copy(), v.copy()
    a2[:, 4:] += 5.0
    v2[:, 4:] -= 5.0
    out2 = run(variables, a2, v2, mask)["logits"]
    np.testing.assert_allclose(out1[:, :4], out2[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out1[:, 4:], out2[:, 4:])


def test_param_tree_names_are_stable():
    """The names the trainer's regex sharding / freezing rules see."""
    method_cfg = corrdistill.get_config("tiny")
    from avdetect.methods import build_method
    batch = dict(mouth=jax.ShapeDtypeStruct((1, 2, 88, 88), jnp.uint8),
                 logmel=jax.ShapeDtypeStruct((1, 8, 80), jnp.float32))
    variables = jax.eval_shape(build_method(method_cfg).init, KEY, batch)
    top = sorted(variables["params"])
    assert top == ["audio_encoder", "fusion", "visual_encoder"]
    paths = ["/".join(k) for k in traverse_util.flatten_dict(variables["params"])]
    assert "fusion/cross_a2v/attn/query/kernel" in paths
    assert "batch_stats" in variables
