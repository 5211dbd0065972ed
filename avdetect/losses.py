"""Every loss of the three methods, as pure ``jax.numpy`` functions.

Notation: B clips, T video frames, K teacher classes; ``mask`` [B, T] marks valid frames
(1) and padding (0) and may be None (= all valid); ``labels`` [B] int, 1 = fake, and every
frame carries its clip's label. Formulas of the correlation-distillation reference code
are in papers.md B.2; METHODS.md explains each choice and each ``paper_quirks`` fix.

Correlation distillation (Yu et al., ICME 2024):
  * :func:`frame_cross_entropy` - L_DF, per-frame detection cross-entropy.
  * :func:`student_similarity` - s_t = (cos(a_t, v_t) + 1) / 2.
  * :func:`teacher_soft_label` - r_t from the ASR / VSR posteriors p_t, q_t.
  * :func:`correlation_bce` - L_corr = BCE(s_t, r_t).
  * :func:`margin_metric_loss` - L_met, pulls real curves s to r, pushes fakes away.
CAD (Du et al., 2025; definitions are ours, see METHODS.md):
  * :func:`alignment_kl` - KL alignment of cross-modal temporal distributions.
  * :func:`simsiam_loss` / :func:`negative_cosine` - SimSiam with stop-gradient.
Scores: :func:`clip_scores`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from avdetect.models.layers import masked_mean

Array = jax.Array

# PyTorch's binary_cross_entropy clamps each log term at -100 so a saturated prediction
# gives a finite loss; kept in both modes so s in {0, 1} never yields inf.
BCE_LOG_FLOOR = -100.0
# The reference's "JS" adds this inside the log: log(p/q + 1e-10).
QUIRK_EPS = 1e-10
# ... and divides by q: a probability of exactly 0 (a float32 softmax underflows below
# ~1e-45; an absent teacher side is stored as zeros) makes p/q inf and 0/0 nan. Both
# posteriors are clamped at this floor first, so the quirk is finite on any input (p/q is
# at most 1e30, inside float32's range) and equals the reference wherever every
# probability is >= 1e-30.
QUIRK_PROB_FLOOR = 1e-30


def _frames_mask(mask: Array | None, shape) -> Array:
    return jnp.ones(shape, jnp.float32) if mask is None else mask.astype(jnp.float32)


def _safe_sqrt(x: Array) -> Array:
    """sqrt with a zero (not nan) gradient at 0; the value is exact."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """x / max(||x||, eps) along the last axis (``torch.nn.functional.normalize``)."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


# --------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------

def frame_cross_entropy(logits: Array, labels: Array, mask: Array | None = None,
                        weights: Array | None = None) -> Array:
    """L_DF = mean over valid frames (b, t) of ``-log softmax(logits[b, t])[labels[b]]``.

    logits [B, T, C], labels [B] int -> scalar. With a full mask this is
    ``torch.nn.CrossEntropyLoss`` over the B*T frames, as in the reference. ``weights``
    [B] (the batch's ``sample_weight``) makes it the weighted mean, each frame counting
    its window's weight.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    idx = jnp.broadcast_to(labels.astype(jnp.int32)[:, None], logits.shape[:2])
    nll = -jnp.take_along_axis(logp, idx[..., None], axis=-1)[..., 0]    # [B,T]
    if weights is None:
        return masked_mean(nll, mask)
    w = _frames_mask(mask, nll.shape) * weights.astype(jnp.float32)[:, None]
    return jnp.sum(jnp.where(w > 0, nll, 0.0) * w) / jnp.maximum(jnp.sum(w), 1e-6)


def clip_scores(logits: Array, mask: Array | None = None,
                paper_quirks: bool = False) -> tuple[Array, Array]:
    """Per-frame and clip fake scores from per-frame logits [B, T, 2].

    ``paper_quirks``: the reference's score, the fake-class logit z_fake averaged over time
    (a raw logit is not comparable across clips: adding c to both logits of a frame changes
    it without changing the prediction). Default: the per-frame log-odds
    z_fake - z_real (= logit of the softmax fake probability) averaged over valid frames.
    Returns (frame_score [B, T], score [B]).
    """
    frame = logits[..., 1] if paper_quirks else logits[..., 1] - logits[..., 0]
    return frame, masked_mean(frame, mask, axis=1)


# --------------------------------------------------------------------------------------
# Correlation distillation
# --------------------------------------------------------------------------------------

def student_similarity(a: Array, v: Array) -> Array:
    """s_t = (cos(a_t, v_t) + 1) / 2 in [0, 1]; a, v [B, T, D] -> [B, T]."""
    return (jnp.sum(_l2_normalize(a) * _l2_normalize(v), axis=-1) + 1.0) / 2.0


def js_divergence(p: Array, q: Array) -> Array:
    """True Jensen-Shannon divergence in bits, in [0, 1]: with m = (p + q) / 2,
    ``JS = [KL(p||m) + KL(q||m)] / (2 ln 2)``, KL summed over the class axis (last) with
    0 log 0 = 0. Inputs are clipped at 0 and renormalised to sum 1 (a teacher's rows may
    drift from 1 by rounding). [..., K] -> [...]."""
    p = jnp.clip(p, 0.0, None)
    q = jnp.clip(q, 0.0, None)
    p = p / jnp.maximum(jnp.sum(p, -1, keepdims=True), 1e-30)
    q = q / jnp.maximum(jnp.sum(q, -1, keepdims=True), 1e-30)
    m = 0.5 * (p + q)

    def kl_to_m(x):
        ratio = jnp.where(x > 0, x / jnp.where(m > 0, m, 1.0), 1.0)
        return jnp.sum(jnp.where(x > 0, x * jnp.log(ratio), 0.0), axis=-1)

    return (kl_to_m(p) + kl_to_m(q)) / (2.0 * math.log(2.0))


def symmetric_kl_quirk(p: Array, q: Array) -> Array:
    """The reference's "JS divergence" (``calculate_js_divergence2``), reproduced as is:
    ``D = 1/2 [ mean_c p_c log(p_c/q_c + 1e-10) + mean_c q_c log(q_c/p_c + 1e-10) ]``
    - a symmetric KL *averaged* (not summed) over the K classes, with the epsilon inside
    the log, no mixture distribution. [..., K] -> [...]. p and q are clamped at
    ``QUIRK_PROB_FLOOR`` (1e-30) first: finite for one-hot or zero rows, identical to the
    reference wherever every probability is at least the floor."""
    p = jnp.maximum(p, QUIRK_PROB_FLOOR)
    q = jnp.maximum(q, QUIRK_PROB_FLOOR)
    kl_pq = jnp.mean(p * jnp.log(p / q + QUIRK_EPS), axis=-1)
    kl_qp = jnp.mean(q * jnp.log(q / p + QUIRK_EPS), axis=-1)
    return 0.5 * (kl_pq + kl_qp)


def teacher_soft_label(p: Array, q: Array, paper_quirks: bool = False) -> Array:
    """Teacher correlation r_t from ASR / VSR posteriors p, q [B, T, K] -> [B, T].

    ``paper_quirks``: r = 1 - :func:`symmetric_kl_quirk`, not clipped. The /K average makes
    D small, so r sits near 1 for most teacher pairs; near-disjoint posteriors can still
    drive r below 0, and posteriors that do not sum to 1 (rounding) above 1.
    Default: r = clip(1 - :func:`js_divergence`, 0, 1), a proper similarity in [0, 1]
    (1 = identical posteriors, 0 = disjoint supports). The teachers are frozen: r carries
    no gradient.
    """
    p = jax.lax.stop_gradient(p.astype(jnp.float32))
    q = jax.lax.stop_gradient(q.astype(jnp.float32))
    if paper_quirks:
        return 1.0 - symmetric_kl_quirk(p, q)
    return jnp.clip(1.0 - js_divergence(p, q), 0.0, 1.0)


def binary_cross_entropy(pred: Array, target: Array, mask: Array | None = None) -> Array:
    """``-[r log s + (1 - r) log(1 - s)]`` averaged over valid entries, each log clamped
    at -100 as ``torch.nn.functional.binary_cross_entropy`` does. A soft target r is
    allowed (and, under ``paper_quirks``, may leave [0, 1])."""
    log_s = jnp.maximum(jnp.log(pred), BCE_LOG_FLOOR)
    log_1s = jnp.maximum(jnp.log1p(-pred), BCE_LOG_FLOOR)
    return masked_mean(-(target * log_s + (1.0 - target) * log_1s), mask)


def correlation_bce(s: Array, r: Array, mask: Array | None = None) -> Array:
    """L_corr = BCE(s_t, r_t), mean over valid frames; s, r [B, T]."""
    return binary_cross_entropy(s, jax.lax.stop_gradient(r), mask)


def margin_metric_loss(s: Array, r: Array, labels: Array, mask: Array | None = None,
                       margin: float | None = None, paper_quirks: bool = False) -> Array:
    """L_met: per clip a distance d between the student curve s and teacher curve r
    ([B, T] each), then ``mean_b [(1 - y) d^2 + y max(0, m - d)^2]``.

    ``paper_quirks`` (margin 1.0 by default): ``d = sigmoid(sqrt(sum_t (r_t - s_t)^2))``.
    d >= 0.5 always and d < 1, so the fake term max(0, 1 - d) is never satisfied (it
    always pushes) and the real term never reaches 0; d also grows with the clip length.
    Default (margin 0.5 by default): ``d = sqrt(mean_t (r_t - s_t)^2)``, the RMS gap in
    [0, 1] - zero for a perfectly matched real clip, length-independent, and a fake clip
    stops being pushed once its curve is ``margin`` away on average.
    """
    if margin is None:
        margin = 1.0 if paper_quirks else 0.5
    m = _frames_mask(mask, s.shape)
    sq = jnp.where(m > 0, (jax.lax.stop_gradient(r) - s) ** 2, 0.0)
    if paper_quirks:
        d = jax.nn.sigmoid(_safe_sqrt(jnp.sum(sq, axis=1)))
    else:
        d = _safe_sqrt(jnp.sum(sq, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))
    y = labels.astype(jnp.float32)
    per_clip = (1.0 - y) * d ** 2 + y * jnp.maximum(margin - d, 0.0) ** 2
    return jnp.mean(per_clip)


# --------------------------------------------------------------------------------------
# CAD
# --------------------------------------------------------------------------------------

def negative_cosine(p: Array, z: Array, mask: Array | None = None) -> Array:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), mean over valid frames; [B, T, D]."""
    z = jax.lax.stop_gradient(z)
    cos = jnp.sum(_l2_normalize(p) * _l2_normalize(z), axis=-1)
    return -masked_mean(cos, mask)


def simsiam_loss(p1: Array, z1: Array, p2: Array, z2: Array,
                 mask: Array | None = None) -> Array:
    """Symmetric SimSiam loss ``1/2 D(p1, z2) + 1/2 D(p2, z1)`` (stop-gradient on z).
    Minimum -1 when each prediction points along the other view's projection."""
    return 0.5 * negative_cosine(p1, z2, mask) + 0.5 * negative_cosine(p2, z1, mask)


def temporal_target(t: int, sigma: float, mask: Array | None = None) -> Array:
    """Soft identity target Q[b, t, u] = softmax_u(-(t - u)^2 / (2 sigma^2)) over valid u.

    [B or 1, T, T]. sigma = 0 gives the hard identity (one-hot diagonal)."""
    idx = jnp.arange(t, dtype=jnp.float32)
    d2 = (idx[:, None] - idx[None, :]) ** 2
    logits = -d2 / (2.0 * sigma ** 2) if sigma > 0 else jnp.where(d2 == 0, 0.0, -1e9)
    logits = logits[None]
    if mask is not None:
        logits = jnp.where(mask[:, None, :] > 0, logits, -1e9)
    return jax.nn.softmax(logits, axis=-1)


def _kl_rows(p: Array, log_p: Array, log_q: Array) -> Array:
    """sum_u p (log p - log q) over the last axis, with 0 log 0 = 0."""
    return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def alignment_kl(a: Array, v: Array, labels: Array, mask: Array | None = None,
                 temperature: float = 0.1, sigma: float = 1.0, target: str = "diagonal",
                 clips: str = "real", cross_negatives: bool = False) -> Array:
    """CAD cross-modal KL alignment on projected streams a, v [B, T, D] -> scalar.

    Similarities S[b, t, u] = cos(a_t, v_u) / temperature; the audio->visual distribution
    of audio frame t is ``P_av[t] = softmax_u S[t, u]`` and the visual->audio distribution
    of visual frame t is ``P_va[t] = softmax_u S[u, t]`` (padded frames excluded).

    ``target='diagonal'`` (default): ``1/2 [KL(Q_t || P_av[t]) + KL(Q_t || P_va[t])]`` with
    Q the soft identity of :func:`temporal_target` (width ``sigma`` frames): frame t of one
    modality should point at frame t of the other. ``target='mutual'``: the symmetric KL
    ``1/2 [KL(P_av[t] || P_va[t]) + KL(P_va[t] || P_av[t])]`` between the two directions.
    Averaged over valid frames, then over the clips selected by ``clips``: ``'real'``
    (label 0 only - a fake's modalities may truly disagree, and forcing them to align
    would erase the cue; the methods pass 0 also for the audio-driven fakes of
    ``config.data.synced_manipulations``, whose lips follow their audio:
    :func:`avdetect.methods.base.unsynced`) or ``'all'``. No selected clip -> 0.

    ``cross_negatives`` (diagonal target only): each frame's softmax also runs over the
    *other clips'* frame t of the other modality (``cos(a^b_t, v^c_t)``, c != b, valid
    frames only), with target mass 0 there. In-clip frames teach timing (a shifted
    stream); other clips' same-time frames teach "not this person's speech" (swapped
    audio) - the negatives the baseline's sync loss gains from (METHODS.md 8).
    """
    b, t, _ = a.shape
    m = _frames_mask(mask, (b, t))
    sim = jnp.einsum("btd,bud->btu", _l2_normalize(a), _l2_normalize(v)) / temperature
    key_ok = m[:, None, :] > 0
    rows_av = jnp.where(key_ok, sim, -1e9)
    rows_va = jnp.where(key_ok, jnp.swapaxes(sim, 1, 2), -1e9)
    if cross_negatives:
        if target != "diagonal":
            raise ValueError("alignment cross_negatives needs target='diagonal'")
        # cross[b, t, c] = cos(a^b_t, v^c_t), cross_va[b, t, c] = cos(v^b_t, a^c_t);
        # valid when both frames are real and c != b
        cross = jnp.einsum("btd,ctd->btc", _l2_normalize(a), _l2_normalize(v)) / temperature
        ok = (m[:, :, None] * m.T[None, :, :] * (1.0 - jnp.eye(b))[:, None, :]) > 0
        cross_va = jnp.einsum("btd,ctd->btc", _l2_normalize(v), _l2_normalize(a)) / temperature
        rows_av = jnp.concatenate([rows_av, jnp.where(ok, cross, -1e9)], axis=-1)
        rows_va = jnp.concatenate([rows_va, jnp.where(ok, cross_va, -1e9)], axis=-1)
    # the first T columns are this clip's frames (the extra ones: other clips' frames)
    log_p_av = jax.nn.log_softmax(rows_av, axis=-1)[..., :t]
    log_p_va = jax.nn.log_softmax(rows_va, axis=-1)[..., :t]
    if target == "diagonal":
        q = temporal_target(t, sigma, m)
        log_q = jnp.log(jnp.where(q > 0, q, 1.0))
        per_frame = 0.5 * (_kl_rows(q, log_q, log_p_av) + _kl_rows(q, log_q, log_p_va))
    elif target == "mutual":
        p_av, p_va = jnp.exp(log_p_av), jnp.exp(log_p_va)
        per_frame = 0.5 * (_kl_rows(p_av, log_p_av, log_p_va) +
                           _kl_rows(p_va, log_p_va, log_p_av))
    else:
        raise ValueError(f"unknown alignment target {target!r} (diagonal | mutual)")
    per_clip = masked_mean(per_frame, m, axis=1)                         # [B]
    if clips == "real":
        w = (labels == 0).astype(jnp.float32)
    elif clips == "all":
        w = jnp.ones((b,), jnp.float32)
    else:
        raise ValueError(f"unknown alignment clips {clips!r} (real | all)")
    return jnp.sum(w * per_clip) / jnp.maximum(jnp.sum(w), 1.0)


def sync_infonce(sims: Array, valid: Array, labels: Array, mask: Array | None = None,
                 temperature: float = 0.1, cross: Array | None = None,
                 cross_valid: Array | None = None) -> Array:
    """Offset-contrastive synchrony loss on *real* windows (SyncNet-style, dense): for every
    real frame, a softmax over the audio offsets -K..K of its visual-audio cosine
    similarities (``sims`` [B, T, 2K+1], ``valid`` marks offsets inside the window) - and,
    when given, over the other clips' audio at the same frame (``cross`` [B, T, B'],
    ``cross_valid``) - must put its mass on offset 0 (index K). Fake windows (label 1) do
    not contribute: their audio is not the frame's own (the methods pass 0 also for the
    audio-driven fakes of ``config.data.synced_manipulations``, whose lips do follow their
    audio: :func:`avdetect.methods.base.unsynced`). Mean over the contributing frames
    (0 if none)."""
    k = sims.shape[-1] // 2
    logits = jnp.where(valid > 0, sims / temperature, -1e9)
    if cross is not None:
        logits = jnp.concatenate(
            [logits, jnp.where(cross_valid > 0, cross / temperature, -1e9)], axis=-1)
    logp0 = jax.nn.log_softmax(logits, axis=-1)[..., k]
    frames = _frames_mask(mask, logp0.shape) * valid[..., k]
    weight = frames * (1.0 - labels.astype(jnp.float32))[:, None]
    return -jnp.sum(logp0 * weight) / jnp.maximum(jnp.sum(weight), 1.0)
