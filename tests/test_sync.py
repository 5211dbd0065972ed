"""The real-footage recipe's pieces against independent NumPy references: the offset
profile of SyncFusion, the offset-contrastive loss, and the lip-landmark encoder's
per-clip standardisation and padding behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avdetect import losses
from avdetect.models import lips as lips_lib
from avdetect.models.fusion import SyncFusion, offset_similarity


def _profile_numpy(za, zv, mask, k):
    b, t, _ = za.shape
    sims = np.zeros((b, t, 2 * k + 1))
    valid = np.zeros((b, t, 2 * k + 1))
    for i in range(b):
        for s in range(t):
            for j in range(2 * k + 1):
                u = s + j - k
                if 0 <= u < t and mask[i, s] and mask[i, u]:
                    sims[i, s, j] = zv[i, s] @ za[i, u]
                    valid[i, s, j] = 1
    return sims, valid


def test_offset_similarity_matches_a_loop():
    rng = np.random.default_rng(0)
    za, zv = rng.normal(size=(2, 2, 9, 4))
    mask = np.ones((2, 9))
    mask[1, 6:] = 0
    got_s, got_v = offset_similarity(jnp.asarray(za), jnp.asarray(zv), jnp.asarray(mask), 3)
    want_s, want_v = _profile_numpy(za, zv, mask, 3)
    np.testing.assert_allclose(np.asarray(got_s), want_s, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got_v), want_v)


def test_sync_infonce_matches_numpy_and_ignores_fakes():
    rng = np.random.default_rng(1)
    sims = rng.uniform(-1, 1, (3, 6, 5))
    valid = (rng.uniform(size=(3, 6, 5)) > 0.2).astype(np.float64)
    valid[..., 2] = 1.0
    mask = np.ones((3, 6))
    mask[0, 4:] = 0
    labels = np.array([0, 1, 0])
    got = float(losses.sync_infonce(jnp.asarray(sims), jnp.asarray(valid), jnp.asarray(labels),
                                    jnp.asarray(mask), temperature=0.2))
    terms = []
    for i in range(3):
        if labels[i]:
            continue
        for s in range(6):
            if not mask[i, s]:
                continue
            x = np.where(valid[i, s] > 0, sims[i, s] / 0.2, -np.inf)
            terms.append(-(x[2] - np.log(np.sum(np.exp(x[np.isfinite(x)])))))
    assert got == pytest.approx(np.mean(terms), rel=1e-5)
    # only fakes: nothing to learn from, the loss is 0 (not nan)
    zero = losses.sync_infonce(jnp.asarray(sims), jnp.asarray(valid), jnp.ones(3), None)
    assert float(zero) == 0.0


def test_sync_fusion_valid_frames_ignore_padding():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1, 12, 8)).astype(np.float32)
    v = rng.normal(size=(1, 12, 8)).astype(np.float32)
    fusion = SyncFusion(dim=4, max_offset=3, hidden=8)
    mask_short = np.concatenate([np.ones((1, 9)), np.zeros((1, 3))], 1).astype(np.float32)
    params = fusion.init(jax.random.PRNGKey(0), a, v, mask_short)
    # the padded frames hold garbage in one call and zeros in the other
    a2, v2 = a.copy(), v.copy()
    a2[:, 9:], v2[:, 9:] = 100.0, -50.0
    out1 = fusion.apply(params, a, v, mask_short)
    out2 = fusion.apply(params, a2, v2, mask_short)
    np.testing.assert_allclose(np.asarray(out1["logits"])[:, :9],
                               np.asarray(out2["logits"])[:, :9], atol=1e-5)
    assert out1["sync"].shape == (1, 12, 7)


def test_lip_features_standardise_per_clip_and_mask_padding():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0.3, 0.7, (2, 10, 20, 2)).astype(np.float32)
    f = np.asarray(lips_lib.lip_frame_features(jnp.asarray(pts)))
    centred = pts - pts.mean(2, keepdims=True)
    np.testing.assert_allclose(f[..., :40], centred.reshape(2, 10, 40), atol=1e-6)
    np.testing.assert_allclose(f[..., 42], np.linalg.norm(pts[:, :, 14] - pts[:, :, 18], axis=-1),
                               atol=1e-6)
    mask = np.ones((2, 10), np.float32)
    mask[1, 7:] = 0
    z = np.asarray(lips_lib.standardise_per_clip(jnp.asarray(f), jnp.asarray(mask)))
    for i, n in ((0, 10), (1, 7)):
        ref = (f[i, :n] - f[i, :n].mean(0)) / np.sqrt(f[i, :n].var(0) + 1e-6)
        np.testing.assert_allclose(z[i, :n], ref, rtol=1e-4, atol=1e-4)
    assert np.all(z[1, 7:] == 0)


def test_lip_encoder_same_clip_with_and_without_padding():
    rng = np.random.default_rng(4)
    clip = rng.uniform(0.3, 0.7, (1, 8, 20, 2)).astype(np.float32)
    padded = np.concatenate([clip, rng.uniform(0, 1, (1, 5, 20, 2)).astype(np.float32)], 1)
    mask = np.concatenate([np.ones((1, 8)), np.zeros((1, 5))], 1).astype(np.float32)
    enc = lips_lib.LipEncoder(hidden=16, out_dim=8, layers=2)
    params = enc.init(jax.random.PRNGKey(0), jnp.asarray(clip))
    short = np.asarray(enc.apply(params, jnp.asarray(clip), mask=jnp.ones((1, 8))))
    long = np.asarray(enc.apply(params, jnp.asarray(padded), mask=jnp.asarray(mask)))
    np.testing.assert_allclose(long[:, :8], short, atol=1e-5)
    assert np.all(long[:, 8:] == 0)


def test_sync_infonce_cross_clip_negatives_join_the_softmax():
    rng = np.random.default_rng(5)
    sims = rng.uniform(-1, 1, (2, 4, 3))
    valid = np.ones((2, 4, 3))
    cross = rng.uniform(-1, 1, (2, 4, 2))
    cross_valid = np.array([[0.0, 1.0], [1.0, 0.0]])[:, None, :].repeat(4, 1)  # not itself
    labels = np.array([0, 0])
    got = float(losses.sync_infonce(jnp.asarray(sims), jnp.asarray(valid), jnp.asarray(labels),
                                    None, 0.5, jnp.asarray(cross), jnp.asarray(cross_valid)))
    terms = []
    for i in range(2):
        for s in range(4):
            x = np.concatenate([sims[i, s], cross[i, s][cross_valid[i, s] > 0]]) / 0.5
            terms.append(-(x[1] - np.log(np.sum(np.exp(x)))))
    assert got == pytest.approx(np.mean(terms), rel=1e-5)


def test_sync_fusion_cross_similarities_pair_other_clips_only():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(3, 5, 8)).astype(np.float32)
    v = rng.normal(size=(3, 5, 8)).astype(np.float32)
    fusion = SyncFusion(dim=4, max_offset=2, hidden=8)
    params = fusion.init(jax.random.PRNGKey(0), a, v)
    out = fusion.apply(params, a, v)
    za, zv = np.asarray(out["audio"]), np.asarray(out["visual"])
    want = np.einsum("btd,ctd->btc", zv, za) * (1 - np.eye(3))[:, None, :]
    np.testing.assert_allclose(np.asarray(out["sync_cross"]), want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["sync_cross_valid"])[:, 0], 1 - np.eye(3))


def test_sync_loss_learns_from_the_batch_s_synced_windows():
    # With config.data.synced_manipulations the batch flags av_synced: the baseline's sync
    # term then counts exactly the flagged windows (a real one and an audio-driven fake,
    # not the other fake), as if they were the real ones; without the flag, label 0.
    import types

    import ml_collections

    from avdetect import contract
    from avdetect.methods.baseline import Baseline

    rng = np.random.default_rng(8)
    sims = rng.uniform(-1, 1, (3, 6, 5)).astype(np.float32)
    valid = np.ones((3, 6, 5), np.float32)
    out = {"logits": jnp.zeros((3, 6, 2)), "sync": jnp.asarray(sims),
           "sync_valid": jnp.asarray(valid)}
    mask = jnp.ones((3, 6))
    loss = ml_collections.ConfigDict(dict(sync_temperature=0.2, sync_cross_negatives=False))
    self = types.SimpleNamespace(config=ml_collections.ConfigDict(dict(loss=loss)))
    labels = jnp.asarray([0, 1, 1])

    def sync(batch):
        return float(Baseline.loss_terms(self, out, batch, mask)[0]["sync"])

    def numpy_loss(windows):
        terms = [-(x[2] - np.log(np.exp(x).sum()))
                 for i in windows for x in sims[i] / 0.2]
        return np.mean(terms)

    assert sync({"label": labels}) == pytest.approx(numpy_loss([0]), rel=1e-5)
    flagged = {"label": labels, contract.AV_SYNCED: jnp.asarray([1, 1, 0])}
    assert sync(flagged) == pytest.approx(numpy_loss([0, 1]), rel=1e-5)


def test_centred_sync_space_against_numpy():
    # model.fusion.center: each projected stream loses its mean over the window's valid
    # frames before the unit norm; the profile is then the NumPy loop's on those rows, and
    # a constant added to either stream's features (a voice, a lip shape) changes nothing.
    rng = np.random.default_rng(9)
    a = rng.normal(size=(2, 7, 6)).astype(np.float32)
    v = rng.normal(size=(2, 7, 5)).astype(np.float32)
    mask = np.ones((2, 7), np.float32)
    mask[1, 5:] = 0
    fusion = SyncFusion(dim=4, max_offset=2, hidden=8, center=True)
    params = fusion.init(jax.random.PRNGKey(0), a, v, mask)
    out = fusion.apply(params, a, v, mask)
    p = params["params"]

    def rows(x, layer):
        z = x @ np.asarray(p[layer]["kernel"]) + np.asarray(p[layer]["bias"])
        z = np.stack([(z[i] - z[i][mask[i] > 0].mean(0)) * mask[i][:, None] for i in range(2)])
        return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-6)

    want, want_valid = _profile_numpy(rows(a, "audio_sync"), rows(v, "visual_sync"), mask, 2)
    np.testing.assert_allclose(np.asarray(out["sync"]), want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["sync_valid"]), want_valid)
    shifted = fusion.apply(params, a + rng.normal(size=(2, 1, 6)).astype(np.float32),
                           v + 3.0, mask)
    np.testing.assert_allclose(np.asarray(shifted["sync"]), np.asarray(out["sync"]), atol=1e-4)


def test_lip_distances_and_their_encoder_ignore_pose_and_scale():
    # features='distances': the 8 widths / heights of LIP_DISTANCES (NumPy norms); the
    # encoder's output is unchanged when every frame's points are rotated, moved and
    # scaled alike (distances are rigid-invariant, the clip standardisation removes scale)
    rng = np.random.default_rng(10)
    pts = rng.uniform(0.3, 0.7, (2, 9, 20, 2)).astype(np.float32)
    got = np.asarray(lips_lib.lip_distances(jnp.asarray(pts)))
    want = np.stack([np.linalg.norm(pts[:, :, i] - pts[:, :, j], axis=-1)
                     for i, j in lips_lib.LIP_DISTANCES], -1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    th = 0.4
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    moved = 1.3 * pts @ rot.T + np.float32(0.2)
    enc = lips_lib.LipEncoder(hidden=8, out_dim=4, layers=1, features="distances")
    params = enc.init(jax.random.PRNGKey(0), jnp.asarray(pts))
    a = np.asarray(enc.apply(params, jnp.asarray(pts)))
    b = np.asarray(enc.apply(params, jnp.asarray(moved)))
    np.testing.assert_allclose(a, b, atol=2e-4)
    with pytest.raises(ValueError, match="points or distances"):
        lips_lib.LipEncoder(features="pixels").init(jax.random.PRNGKey(0), jnp.asarray(pts))
