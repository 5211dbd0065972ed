"""Every loss against an independent NumPy / SciPy implementation on fixed inputs,
including the reference code's ``paper_quirks`` formulas, and the stop-gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import expit, log_softmax, softmax
from scipy.stats import entropy
from sklearn.metrics import log_loss

from avdetect import losses

B, T, K, D = 3, 7, 40, 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1234)
    p = rng.dirichlet(np.full(K, 0.3), size=(B, T)).astype(np.float32)
    q = rng.dirichlet(np.full(K, 0.3), size=(B, T)).astype(np.float32)
    q[0, 0] = p[0, 0]                                   # identical posteriors -> r = 1
    mask = np.ones((B, T), np.float32)
    mask[2, 5:] = 0.0                                   # a padded clip
    return dict(
        p=p, q=q, mask=mask,
        a=rng.normal(size=(B, T, D)).astype(np.float32),
        v=rng.normal(size=(B, T, D)).astype(np.float32),
        logits=rng.normal(size=(B, T, 2)).astype(np.float32) * 2,
        labels=np.array([0, 1, 0], np.int32),
        s=rng.uniform(0.05, 0.95, size=(B, T)).astype(np.float32),
        r=rng.uniform(0.0, 1.0, size=(B, T)).astype(np.float32))


def np_masked_mean(x, mask):
    return float(np.sum(x * mask) / np.sum(mask))


def np_cos(a, v):
    return np.sum(a * v, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(v, axis=-1))


# ---------------------------------------------------------------- detection and scores

def test_frame_cross_entropy(data):
    ref = -log_softmax(data["logits"].astype(np.float64), axis=-1)
    nll = np.take_along_axis(ref, np.broadcast_to(data["labels"][:, None, None], (B, T, 1)),
                             -1)[..., 0]
    got = losses.frame_cross_entropy(data["logits"], data["labels"], data["mask"])
    np.testing.assert_allclose(got, np_masked_mean(nll, data["mask"]), rtol=1e-5)
    # no mask = plain mean over all B*T frames (torch CrossEntropyLoss in the reference)
    np.testing.assert_allclose(losses.frame_cross_entropy(data["logits"], data["labels"]),
                               nll.mean(), rtol=1e-5)
    # per-window weights (the batch's sample_weight): the frame-weighted mean, as sklearn's
    # log_loss with sample_weight over the valid frames; all-ones weights change nothing
    w = np.array([0.3, 1.7, 0.9], np.float32)
    got = losses.frame_cross_entropy(data["logits"], data["labels"], data["mask"], w)
    valid = data["mask"] > 0
    probs = softmax(data["logits"].astype(np.float64), axis=-1)[valid]
    frame_labels = np.broadcast_to(data["labels"][:, None], (B, T))[valid]
    frame_w = np.broadcast_to(w[:, None], (B, T))[valid]
    np.testing.assert_allclose(got, log_loss(frame_labels, probs, sample_weight=frame_w,
                                             labels=[0, 1]), rtol=1e-5)
    np.testing.assert_allclose(
        losses.frame_cross_entropy(data["logits"], data["labels"], data["mask"],
                                   np.ones(B, np.float32)),
        np_masked_mean(nll, data["mask"]), rtol=1e-5)


def test_clip_scores_default_and_quirk(data):
    lg, m = data["logits"], data["mask"]
    frame, score = losses.clip_scores(lg, m, paper_quirks=False)
    np.testing.assert_allclose(frame, lg[..., 1] - lg[..., 0], rtol=1e-6)
    np.testing.assert_allclose(score, [np.mean((lg[b, :, 1] - lg[b, :, 0])[m[b] > 0])
                                       for b in range(B)], rtol=1e-5)
    # The reference: mean over time of the logits, then the fake entry (raw logit).
    frame_q, score_q = losses.clip_scores(lg, m, paper_quirks=True)
    np.testing.assert_allclose(frame_q, lg[..., 1], rtol=1e-6)
    np.testing.assert_allclose(score_q, [lg[b][m[b] > 0].mean(0)[1] for b in range(B)],
                               rtol=1e-5)


# ---------------------------------------------------------------- correlation branch

def test_student_similarity(data):
    got = losses.student_similarity(data["a"], data["v"])
    np.testing.assert_allclose(got, (np_cos(data["a"], data["v"]) + 1) / 2, rtol=1e-5)


def test_js_divergence_matches_scipy(data):
    p, q = data["p"].astype(np.float64), data["q"].astype(np.float64)
    # scipy's jensenshannon is the JS *distance* (square root of the divergence).
    ref = jensenshannon(p, q, base=2, axis=-1) ** 2
    np.testing.assert_allclose(losses.js_divergence(data["p"], data["q"]), ref, atol=2e-6)
    assert float(losses.js_divergence(data["p"], data["q"])[0, 0]) == pytest.approx(0, abs=1e-6)
    # disjoint supports reach exactly 1 bit; zeros give no nan
    one_hot = np.eye(K, dtype=np.float32)
    np.testing.assert_allclose(losses.js_divergence(one_hot[0], one_hot[1]), 1.0, rtol=1e-6)


def test_symmetric_kl_quirk_is_the_reference_formula(data):
    p, q = data["p"].astype(np.float64), data["q"].astype(np.float64)
    ref = 0.5 * (np.mean(p * np.log(p / q + 1e-10), -1) + np.mean(q * np.log(q / p + 1e-10), -1))
    np.testing.assert_allclose(losses.symmetric_kl_quirk(data["p"], data["q"]), ref,
                               rtol=1e-4, atol=1e-6)
    # the quirk is not JS: it is (about) the symmetric KL divided by K
    sym_kl = 0.5 * (entropy(p, q, axis=-1) + entropy(q, p, axis=-1))
    np.testing.assert_allclose(ref, sym_kl / K, rtol=1e-3, atol=1e-7)


def test_teacher_soft_label_both_modes(data):
    p, q = data["p"].astype(np.float64), data["q"].astype(np.float64)
    js = jensenshannon(p, q, base=2, axis=-1) ** 2
    np.testing.assert_allclose(losses.teacher_soft_label(data["p"], data["q"]),
                               np.clip(1 - js, 0, 1), atol=2e-6)
    quirk = 1 - 0.5 * (np.mean(p * np.log(p / q + 1e-10), -1) +
                       np.mean(q * np.log(q / p + 1e-10), -1))
    np.testing.assert_allclose(losses.teacher_soft_label(data["p"], data["q"], True), quirk,
                               rtol=1e-5, atol=1e-6)
    # Unclipped under the quirk: near-disjoint peaky posteriors drive r below 0,
    # while the default stays in [0, 1].
    eps = 1e-30                        # peaky softmax outputs reach such values
    pk = np.full(K, eps, np.float32)
    pk[0] = 1.0
    qk = np.full(K, eps, np.float32)
    qk[1] = 1.0
    assert float(losses.teacher_soft_label(pk, qk, True)) < 0.0
    assert float(losses.teacher_soft_label(pk, qk, False)) == pytest.approx(0.0, abs=1e-6)


def test_quirk_finite_on_confident_teachers_and_float32_storage():
    """One-hot-ish posteriors (a confident teacher), exact one-hots and an absent (zero)
    side: the quirk target and loss stay finite; above the documented floor (1e-30) it is
    the reference formula, evaluated here in float64 NumPy."""
    k = 14
    eps = np.array([1e-3, 1e-5, 1e-7], np.float64)[:, None]
    p = np.full((3, k), 0.0) + eps / (k - 1)
    p[:, 0] = 1 - eps[:, 0]
    q = np.roll(p, 1, axis=1)                       # confident in another class
    ref = 1 - 0.5 * (np.mean(p * np.log(p / q + 1e-10), -1) +
                     np.mean(q * np.log(q / p + 1e-10), -1))
    # float32 keeps such rows (float16 flushed 1e-7/13 to 0 and rounded 1 - 1e-5 to 1)
    assert (p.astype(np.float32) > 0).all() and not (p.astype(np.float16) > 0).all()
    got = losses.teacher_soft_label(p.astype(np.float32), q.astype(np.float32), True)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    one_hot = np.eye(k, dtype=np.float32)
    zeros = np.zeros((2, k), np.float32)
    for a, b in ((one_hot[:2], one_hot[1:3]), (one_hot[:2], one_hot[:2]), (one_hot[:2], zeros)):
        r = losses.teacher_soft_label(a, b, True)
        assert np.isfinite(np.asarray(r)).all()
        s = jnp.full(r.shape, 0.5)
        loss = losses.correlation_bce(s, r) + losses.margin_metric_loss(
            s[None], r[None], jnp.array([0]), None, None, True)
        assert np.isfinite(float(loss))
    # identical one-hots: no divergence at all
    np.testing.assert_allclose(losses.teacher_soft_label(one_hot, one_hot, True), 1.0,
                               atol=1e-6)


def test_correlation_bce(data):
    s, r, m = data["s"].astype(np.float64), data["r"].astype(np.float64), data["mask"]
    ref = -(r * np.log(s) + (1 - r) * np.log(1 - s))
    np.testing.assert_allclose(losses.correlation_bce(data["s"], data["r"], m),
                               np_masked_mean(ref, m), rtol=1e-5)
    # torch-style clamp: a saturated prediction gives a finite loss (100 per frame)
    got = losses.binary_cross_entropy(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(got, 100.0, rtol=1e-6)


def np_margin(s, r, y, m, margin, quirks):
    out = []
    for b in range(s.shape[0]):
        diff = (r[b] - s[b])[m[b] > 0]
        if quirks:
            d = expit(np.sqrt(np.sum(diff ** 2)))
        else:
            d = np.sqrt(np.mean(diff ** 2))
        out.append((1 - y[b]) * d ** 2 + y[b] * max(0.0, margin - d) ** 2)
    return float(np.mean(out))


@pytest.mark.parametrize("quirks,margin", [(True, None), (False, None), (False, 0.3)])
def test_margin_metric_loss(data, quirks, margin):
    s, r, y, m = data["s"], data["r"], data["labels"], data["mask"]
    expected_margin = margin if margin is not None else (1.0 if quirks else 0.5)
    got = losses.margin_metric_loss(s, r, y, m, margin, quirks)
    np.testing.assert_allclose(
        got, np_margin(s.astype(np.float64), r.astype(np.float64), y, m, expected_margin,
                       quirks), rtol=1e-5)


def test_margin_quirk_never_satisfied_default_is():
    s = np.full((2, 5), 0.5, np.float32)
    y = np.array([0, 1], np.int32)
    # real clip matching its teacher exactly: the quirk still charges sigmoid(0)^2 = 0.25
    assert float(losses.margin_metric_loss(s[:1], s[:1], y[:1], None, None, True)) == \
        pytest.approx(0.25)
    assert float(losses.margin_metric_loss(s[:1], s[:1], y[:1], None, None, False)) == 0.0
    # fake clip far from its teacher (RMS gap 0.5 >= margin 0.5): satisfied by default
    far = np.zeros((1, 5), np.float32)
    assert float(losses.margin_metric_loss(far, s[:1], y[1:], None, None, False)) == 0.0
    assert float(losses.margin_metric_loss(far, s[:1], y[1:], None, None, True)) > 0.0


def test_teacher_target_carries_no_gradient(data):
    def f(s, r):
        return (losses.correlation_bce(s, r) +
                losses.margin_metric_loss(s, r, jnp.asarray(data["labels"]), None))

    gs, gr = jax.grad(f, argnums=(0, 1))(jnp.asarray(data["s"]), jnp.asarray(data["r"]))
    assert np.all(np.asarray(gr) == 0.0)
    assert np.any(np.asarray(gs) != 0.0)
    gp = jax.grad(lambda p: losses.teacher_soft_label(p, data["q"]).sum())(data["p"])
    assert np.all(np.asarray(gp) == 0.0)


# ---------------------------------------------------------------- CAD

def test_negative_cosine_and_simsiam(data):
    a, v, m = data["a"], data["v"], data["mask"]
    np.testing.assert_allclose(losses.negative_cosine(a, v, m),
                               -np_masked_mean(np_cos(a, v), m), rtol=1e-5)
    a2, v2 = a[:, ::-1], v[:, ::-1]
    ref = 0.5 * -np_masked_mean(np_cos(a, v2), m) + 0.5 * -np_masked_mean(np_cos(a2, v), m)
    np.testing.assert_allclose(losses.simsiam_loss(a, v, a2, v2, m), ref, rtol=1e-5)


def test_simsiam_stop_gradient_stops(data):
    """Zero gradient into the target (z) branch, non-zero into the predictor (p)."""
    p1, z1, p2, z2 = (jnp.asarray(x) for x in (data["a"], data["v"], data["a"][:, ::-1],
                                               data["v"][:, ::-1]))
    grads = jax.grad(losses.simsiam_loss, argnums=(0, 1, 2, 3))(p1, z1, p2, z2)
    assert np.all(np.asarray(grads[1]) == 0.0) and np.all(np.asarray(grads[3]) == 0.0)
    assert np.any(np.asarray(grads[0]) != 0.0) and np.any(np.asarray(grads[2]) != 0.0)


def np_alignment(a, v, y, m, tau, sigma, target, clips):
    per_clip, weights = [], []
    for b in range(a.shape[0]):
        valid = m[b] > 0
        an = a[b][valid] / np.linalg.norm(a[b][valid], axis=-1, keepdims=True)
        vn = v[b][valid] / np.linalg.norm(v[b][valid], axis=-1, keepdims=True)
        sim = an @ vn.T / tau                                   # [t, u] audio t, visual u
        p_av, p_va = softmax(sim, axis=1), softmax(sim.T, axis=1)
        n = int(valid.sum())
        idx = np.arange(n)
        qt = softmax(-(idx[:, None] - idx[None, :]) ** 2 / (2 * sigma ** 2), axis=1)
        if target == "diagonal":
            kl = 0.5 * (entropy(qt, p_av, axis=1) + entropy(qt, p_va, axis=1))
        else:
            kl = 0.5 * (entropy(p_av, p_va, axis=1) + entropy(p_va, p_av, axis=1))
        per_clip.append(kl.mean())
        weights.append(1.0 if clips == "all" else float(y[b] == 0))
    w = np.array(weights)
    return float(np.sum(w * np.array(per_clip)) / max(w.sum(), 1.0))


@pytest.mark.parametrize("target,clips", [("diagonal", "real"), ("diagonal", "all"),
                                          ("mutual", "real")])
def test_alignment_kl(data, target, clips):
    a, v, y, m = data["a"], data["v"], data["labels"], data["mask"]
    got = losses.alignment_kl(a, v, y, m, temperature=0.2, sigma=1.5, target=target,
                              clips=clips)
    ref = np_alignment(a.astype(np.float64), v.astype(np.float64), y, m, 0.2, 1.5, target,
                       clips)
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_alignment_kl_minimal_for_aligned_streams():
    """Perfectly aligned distinct frames score (much) lower than shuffled ones."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 12, 32)).astype(np.float32)
    y = np.zeros(1, np.int32)
    aligned = float(losses.alignment_kl(a, a, y, temperature=0.05, sigma=0.0))
    shuffled = float(losses.alignment_kl(a, a[:, ::-1], y, temperature=0.05, sigma=0.0))
    assert aligned < 0.05 < shuffled
    # a batch of fakes only contributes nothing under clips='real'
    assert float(losses.alignment_kl(a, a[:, ::-1], np.ones(1, np.int32))) == 0.0
