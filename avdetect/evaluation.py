"""Detection metrics, video-level aggregation, breakdowns and reports.

Conventions (one place, used everywhere):

* label 1 = fake (the positive class); a higher score means "more likely fake";
  a clip is called fake when ``score >= threshold``.
* AUC = area under the ROC curve (ties count one half; equals scikit-learn's
  ``roc_auc_score``). AP = step-wise average precision over distinct score values
  (equals ``average_precision_score``). EER = the point where the false-positive rate
  equals the false-negative rate, linearly interpolated between ROC points.
  ACC and balanced ACC (mean of the real and fake recalls) at the chosen threshold.
* Video level: the eval pipeline cuts every video into windows; a video's score is the
  mean of its windows' scores weighted by each window's number of valid frames (so a
  padded final window counts for what it holds); padding examples (``valid == 0``)
  are dropped first. With ``config.eval.clip_score`` 'sync' / 'combined'
  (:class:`ClipScore`) a SyncFusion model's per-window offset-profile sums are pooled over
  the whole video instead (:func:`pool_sync`, :func:`sync_statistics`), alone or combined
  with the window mean; ``avdetect detect`` applies the same rule.
* Threshold: chosen on the *validation* split's video-level scores, never on the split
  being reported. ``'eer'`` (default) takes the ROC point closest to FPR == FNR;
  ``'max_bacc'`` the point maximising balanced accuracy. Without a validation split a
  fixed threshold from the config is used and the report says so.
* Silence-trimmed view (``config.eval.trim_silence``): FakeAVCeleb-style fakes begin with
  digital silence and separate from reals on that alone (AVH-Align). When the window
  records carry a ``view`` mask (``contract.VIEW_AS_IS`` / ``VIEW_TRIMMED``, from
  ``WindowMaker.eval_windows``), the report holds every figure twice: as-is (the top
  level) and under ``trimmed`` (each video scored on its span without leading/trailing
  digital silence; a clip silent throughout keeps its full span and is listed under
  ``silence.all_silent``), at the same threshold; ``silence`` says how much was trimmed
  from reals and fakes. The Markdown table puts the two side by side.
* Breakdowns (FakeAVCeleb practice): for each fake category (RVFA, FVRA, FVFA) and each
  manipulation (the generation method: ``per_method`` in the report, ``manipulation:`` rows
  in its table), metrics on all real videos plus that group's fakes. A group made of
  real videos only (RVRA, or the 'real' method) has no AUC/AP/EER (one class), only its
  accuracy (the share of real videos called real).
* Per-video scores: the report's ``videos`` lists every video's id (the eval batches'
  ``video_id``: the record index in the split), as-is score and label, so a subset the
  tables do not break out (a source repository, an identity) can be scored afterwards
  (``avdetect.loso``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from avdetect import contract, phone_sync

THRESHOLD_RULES = ("eer", "max_bacc")


# ----------------------------------------------------------------------------------
# Binary metrics over (labels, scores)
# ----------------------------------------------------------------------------------

def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return y, s


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct score, thresholds descending, with a
    first point (0, 0) at threshold +inf. Needs both classes."""
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both real and fake examples")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]   # index of each distinct value's last element
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s[last_of_group]]
    return fpr, tpr, thresholds


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (trapezoids; ties count 1/2)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def average_precision(labels: Any, scores: Any) -> float:
    """AP = sum_k (R_k - R_{k-1}) P_k over distinct thresholds (no interpolation)."""
    y, s = _check(labels, scores)
    if y.sum() == 0:
        raise ValueError("average precision needs at least one fake example")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last_of_group]
    precision = tps / (last_of_group + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(labels: Any, scores: Any) -> tuple[float, float]:
    """``(eer, threshold)``: EER interpolated where FPR == FNR on the ROC, and the
    threshold of the (non-infinite) ROC point nearest that crossing."""
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr                      # starts at 1 (> 0), ends at -1 (<= 0)
    i = int(np.argmax(diff <= 0))         # first ROC point with FNR <= FPR (i >= 1)
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1)
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    j = i if (t >= 0.5 or not np.isfinite(thr[i - 1])) else i - 1
    return float(eer), float(thr[j])


def max_bacc_threshold(labels: Any, scores: Any) -> float:
    """The ROC threshold maximising balanced accuracy (first of equals)."""
    fpr, tpr, thr = roc_curve(labels, scores)
    bacc = 0.5 * (tpr + 1.0 - fpr)
    bacc[0] = -1.0                        # +inf threshold: calls everything real
    return float(thr[int(np.argmax(bacc))])


def choose_threshold(labels: Any, scores: Any, rule: str = "eer") -> float:
    """A decision threshold from (validation) scores by ``rule`` in THRESHOLD_RULES."""
    if rule == "eer":
        return equal_error_rate(labels, scores)[1]
    if rule == "max_bacc":
        return max_bacc_threshold(labels, scores)
    raise ValueError(f"unknown threshold rule {rule!r}; use one of {THRESHOLD_RULES}")


def binary_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Counts, AUC, AP, EER (None with one class), ACC, bACC, TPR, TNR at ``threshold``."""
    y, s = _check(labels, scores)
    n_fake, n_real = int(y.sum()), int(len(y) - y.sum())
    pred = s >= threshold
    out: dict[str, Any] = {"n": int(len(y)), "n_real": n_real, "n_fake": n_fake}
    both = n_fake > 0 and n_real > 0
    out["auc"] = roc_auc(y, s) if both else None
    out["ap"] = average_precision(y, s) if both else None
    out["eer"] = equal_error_rate(y, s)[0] if both else None
    out["acc"] = float(np.mean(pred == (y == 1))) if len(y) else None
    tpr = float(np.mean(pred[y == 1])) if n_fake else None      # fakes caught
    tnr = float(np.mean(~pred[y == 0])) if n_real else None     # reals passed
    out["tpr"], out["tnr"] = tpr, tnr
    out["bacc"] = 0.5 * (tpr + tnr) if both else None
    return out


# ----------------------------------------------------------------------------------
# Collecting predictions and aggregating windows into videos
# ----------------------------------------------------------------------------------

RECORD_KEYS = ("score", "label", "video_id", "n_frames", "category", "method")


class Collector:
    """Accumulates per-batch host arrays; ``records()`` returns the valid windows."""

    def __init__(self):
        self._parts: dict[str, list[np.ndarray]] = {}

    def add(self, batch: Mapping[str, Any]) -> None:
        """``batch``: 'score' [B], 'label' [B], 'video_id' [B], 'valid' [B] (optional),
        'n_frames' [B] (optional), 'category'/'method' [B] (optional), any others kept."""
        n = len(np.asarray(batch["score"]).reshape(-1))
        for k, v in batch.items():
            v = np.asarray(v)
            if v.ndim == 0 or len(v) != n:
                raise ValueError(f"eval field {k!r} has shape {v.shape}, expected [{n}]")
            self._parts.setdefault(k, []).append(v)

    def records(self) -> dict[str, np.ndarray]:
        if not self._parts:
            return {k: np.zeros((0,)) for k in ("score", "label", "video_id")}
        rec = {k: np.concatenate(v) for k, v in self._parts.items()}
        if "valid" in rec:
            keep = rec.pop("valid").astype(bool)
            rec = {k: v[keep] for k, v in rec.items()}
        return rec


def _names(values: np.ndarray, vocabulary: Sequence[str] | None) -> np.ndarray:
    """Readable group names for int ids (via ``vocabulary``), bytes or str values."""
    if values.dtype.kind in "iu":
        if vocabulary is not None:
            return np.array([vocabulary[i] if 0 <= i < len(vocabulary) else str(i) for i in values],
                            dtype=object)
        return values.astype(str).astype(object)
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def _video_groups(video_id: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique video ids, each one's first window, each window's video) - the one
    grouping of windows into videos (byte / object ids compared as text)."""
    vid = np.asarray(video_id)
    keys = vid if vid.dtype.kind != "O" else vid.astype(str)
    return np.unique(keys, return_index=True, return_inverse=True)


def aggregate_videos(records: Mapping[str, np.ndarray], clip_score: "ClipScore | None" = None
                     ) -> dict[str, np.ndarray]:
    """One row per video: its score, label and category/method (taken from its first
    window). The score is the frame-weighted mean window score, or with ``clip_score``
    (:class:`ClipScore`, kind 'sync' / 'combined') the pooled synchrony score of
    :func:`clip_scores` - then ``window_score`` and ``sync_stat`` are kept beside it.
    Raises if a video's windows disagree on the label (a pipeline bug that would corrupt
    every number)."""
    vid = np.asarray(records["video_id"])
    uniq, first, inverse = _video_groups(vid)
    n = len(uniq)
    w = np.asarray(records.get("n_frames", np.ones(len(vid))), dtype=np.float64)
    s = np.asarray(records["score"], dtype=np.float64)
    w_sum = np.bincount(inverse, weights=w, minlength=n)
    ws_sum = np.bincount(inverse, weights=w * s, minlength=n)
    plain = np.bincount(inverse, weights=s, minlength=n) / np.bincount(inverse, minlength=n)
    score = np.where(w_sum > 0, ws_sum / np.where(w_sum > 0, w_sum, 1), plain)
    label = np.asarray(records["label"]).astype(np.int64)
    lo = np.full(n, 2, np.int64)
    hi = np.full(n, -1, np.int64)
    np.minimum.at(lo, inverse, label)
    np.maximum.at(hi, inverse, label)
    if np.any(lo != hi):
        bad = uniq[np.nonzero(lo != hi)[0][0]]
        raise ValueError(f"video {bad!r}: its windows carry different labels")
    out = {"video_id": uniq, "score": score, "label": hi, "n_windows": np.bincount(inverse, minlength=n)}
    for k in ("category", "method"):
        if k in records:
            out[k] = np.asarray(records[k])[first]
    if clip_score is not None and clip_score.kind != "windows":
        out["window_score"] = score
        out["score"], out["sync_stat"] = clip_scores(records, score, clip_score)
        if clip_score.phones:
            out["phone_stat"] = video_phone_stats(records)
    return out


# ----------------------------------------------------------------------------------
# Clip-level synchrony: the offset profile pooled over all windows of a video
# ----------------------------------------------------------------------------------

# Per-window fields a method may output for clip-level pooling (the baseline's SyncFusion:
# the offset profile summed over the window's frames, and the frame count per offset).
POOLED_FIELDS = ("sync_sum", "sync_count")


def pool_sync(video_id: Any, sync_sum: Any, sync_count: Any) -> tuple[np.ndarray, np.ndarray]:
    """(video ids sorted as ``aggregate_videos`` sorts them, [V, 2K+1] clip offset profiles):
    per video, the sum of its windows' ``sync_sum`` over the sum of their ``sync_count``,
    i.e. the mean cosine similarity at each offset over every frame of the clip (SyncNet's
    whole-video averaging), instead of one window's 25 frames."""
    vid = np.asarray(video_id)
    uniq, _, inverse = _video_groups(vid)
    ssum = np.asarray(sync_sum, np.float64)
    scount = np.asarray(sync_count, np.float64)
    if ssum.ndim != 2 or ssum.shape != scount.shape or len(ssum) != len(vid):
        raise ValueError(f"sync_sum {ssum.shape} / sync_count {scount.shape} must both be "
                         f"[windows={len(vid)}, offsets]")
    tot = np.zeros((len(uniq), ssum.shape[1]))
    cnt = np.zeros_like(tot)
    np.add.at(tot, inverse, ssum)
    np.add.at(cnt, inverse, scount)
    return uniq, tot / np.maximum(cnt, 1.0)


def sync_statistics(profiles: Any, temperature: float = 0.1) -> dict[str, np.ndarray]:
    """Clip-level synchrony statistics of [V, 2K+1] offset profiles (offset 0 at index K),
    each oriented so that a higher value means *less* in sync (more likely fake):

    * ``neg_sim0``: minus the similarity at offset 0;
    * ``neg_margin``: the best other offset's similarity minus offset 0's (positive when
      the peak is elsewhere - shifted audio - or when the profile is flat - swapped);
    * ``neg_logp0``: minus the log softmax probability of offset 0 at ``temperature``
      (the sync loss's own view);
    * ``neg_conf0``: the median over offsets minus offset 0's similarity (SyncNet's
      confidence, median minus best distance, read at offset 0);
    * ``abs_argmax``: |offset of the profile's maximum| in frames.
    """
    p = np.asarray(profiles, np.float64)
    k = p.shape[1] // 2
    others = np.delete(p, k, axis=1)
    z = p / temperature
    z = z - z.max(1, keepdims=True)
    logp0 = z[:, k] - np.log(np.exp(z).sum(1))
    med = np.median(p, axis=1)
    return {"neg_sim0": -p[:, k], "neg_margin": others.max(1) - p[:, k],
            "neg_logp0": -logp0, "neg_conf0": med - p[:, k],
            "abs_argmax": np.abs(np.argmax(p, 1) - k).astype(np.float64)}


SYNC_STATS = ("neg_sim0", "neg_margin", "neg_logp0", "neg_conf0", "abs_argmax")
CLIP_SCORE_KINDS = ("windows", "sync", "combined")


@dataclasses.dataclass(frozen=True)
class ClipScore:
    """How a video's score is made from its windows (``config.eval.clip_score`` and
    friends; :meth:`from_config`):

    * ``'windows'``: the frame-weighted mean of the window scores (the default);
    * ``'sync'``: the clip-level synchrony statistic ``stat`` of
      :func:`sync_statistics` on the clip's pooled offset profile;
    * ``'combined'``: ``weights[0] * window mean + weights[1] * stat + weights[2]``. The
      weights come from ``config.eval.clip_weights``, or with ``fit`` (config
      ``eval.fit_clip_weights``) from the training run's own real clips at evaluation
      (:func:`fit_clip_weights`; written into the reports as ``clip_score``, from which
      :meth:`with_report` reads them back, and into an exported file's config).

    With ``phones`` (config ``eval.phone_sync``; 'combined' only) the combined score adds
    ``phone_weight * phone statistic``: :func:`avdetect.phone_sync.phone_sync_stat`, the
    heard phones against the lip opening, with the viseme opening table ``phone_table``
    (config ``eval.phone_weight``, ``eval.phone_table``; fitted with the other weights).
    The window records then carry the per-video ``phone_stat`` (the evaluator and
    ``avdetect detect`` add it: :func:`avdetect.evaluators.add_phone_stats`).
    """

    kind: str = "windows"
    stat: str = "neg_sim0"
    temperature: float = 0.1
    weights: tuple[float, float, float] = (1.0, 1.0, 0.0)
    fit: bool = False
    weights_source: str = "config.eval.clip_weights"
    phones: bool = False
    phone_weight: float = 1.0
    phone_table: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in CLIP_SCORE_KINDS:
            raise ValueError(f"eval.clip_score={self.kind!r}: expected one of {CLIP_SCORE_KINDS}")
        if self.stat not in SYNC_STATS:
            raise ValueError(f"eval.clip_sync_stat={self.stat!r}: expected one of {SYNC_STATS}")
        if len(self.weights) != 3:
            raise ValueError(f"eval.clip_weights={self.weights!r}: expected 3 numbers "
                             "(window mean, sync statistic, bias)")
        if self.phones and self.kind != "combined":
            raise ValueError(f"eval.phone_sync=True adds a term to the combined score: it needs "
                             f"eval.clip_score='combined', not {self.kind!r}")
        if self.phones and not self.fit and len(self.phone_table) != phone_sync.NUM_CLASSES:
            raise ValueError(f"eval.phone_sync=True: eval.phone_table must hold "
                             f"{phone_sync.NUM_CLASSES} numbers (one per viseme class), got "
                             f"{len(self.phone_table)}; or fit it with eval.fit_clip_weights=True")

    @classmethod
    def from_config(cls, config: Any) -> "ClipScore":
        """From ``config.eval`` (keys clip_score, clip_sync_stat, clip_weights) and the
        sync loss's temperature ``config.loss.sync_temperature``; absent keys = defaults."""
        ev = config.get("eval", None)
        ev = {} if ev is None else ev
        loss = config.get("loss", None)
        loss = {} if loss is None else loss
        kind = str(ev.get("clip_score", "windows"))
        return cls(kind=kind,
                   stat=str(ev.get("clip_sync_stat", "neg_sim0")),
                   temperature=float(loss.get("sync_temperature", 0.1)),
                   weights=tuple(float(w) for w in ev.get("clip_weights", (1.0, 1.0, 0.0))),
                   # (fitting concerns the 'combined' weights only; other kinds ignore it)
                   fit=bool(ev.get("fit_clip_weights", False)) and kind == "combined",
                   # (so is the phone term)
                   phones=bool(ev.get("phone_sync", False)) and kind == "combined",
                   phone_weight=float(ev.get("phone_weight", 1.0)),
                   phone_table=tuple(float(x) for x in (ev.get("phone_table", ()) or ())))

    def describe(self) -> dict[str, Any]:
        """The report's ``clip_score`` section (JSON-able)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind != "windows":
            out["stat"] = self.stat
        if self.kind == "combined":
            out.update(weights=[float(w) for w in self.weights],
                       weights_source=self.weights_source)
        if self.phones:
            out.update(phone_weight=float(self.phone_weight),
                       phone_table=[float(x) for x in self.phone_table])
        return out

    def with_report(self, report: Mapping[str, Any] | None, where: str = "") -> "ClipScore":
        """This rule with fitted weights read back from an evaluation report's
        ``clip_score`` section (``where`` names the report in errors); unchanged unless
        :attr:`fit`. Raises ValueError when the weights are to be fitted and the report
        has none."""
        if not self.fit:
            return self
        sec = (report or {}).get("clip_score") or {}
        if sec.get("kind") != "combined" or len(sec.get("weights") or ()) != 3:
            raise ValueError(f"{where or 'the evaluation report'}: holds no fitted clip-score "
                             "weights (eval.fit_clip_weights=True fits them when the run is "
                             "evaluated: evaluate it first, python -m avdetect.main --mode=eval)")
        phone = {}
        if self.phones:
            if "phone_weight" not in sec or len(sec.get("phone_table") or ()) != phone_sync.NUM_CLASSES:
                raise ValueError(f"{where or 'the evaluation report'}: holds no fitted "
                                 "phone-sync weight and table (eval.phone_sync=True): evaluate "
                                 "it again, python -m avdetect.main --mode=eval")
            phone = dict(phone_weight=float(sec["phone_weight"]),
                         phone_table=tuple(float(x) for x in sec["phone_table"]))
        return dataclasses.replace(self, weights=tuple(float(w) for w in sec["weights"]),
                                   fit=False, weights_source=str(sec.get("weights_source", "")),
                                   **phone)


def clip_scores(records: Mapping[str, np.ndarray], window_mean: np.ndarray, spec: ClipScore
                ) -> tuple[np.ndarray, np.ndarray]:
    """(video scores, the sync statistic) per video, videos sorted as
    :func:`aggregate_videos` sorts them (``window_mean``: their mean window scores) - the
    one rule the evaluator and ``avdetect detect`` share for ``spec.kind`` 'sync' /
    'combined'."""
    missing = [k for k in POOLED_FIELDS if k not in records]
    if missing:
        raise ValueError(f"eval.clip_score={spec.kind!r} needs the windows' {missing}: only a "
                         "model that measures an offset profile outputs them (baseline with "
                         "model.fusion.kind='sync', cad with model.head.max_offset > 0)")
    _, profiles = pool_sync(records["video_id"], records["sync_sum"], records["sync_count"])
    stat = sync_statistics(profiles, spec.temperature)[spec.stat]
    if spec.kind == "sync":
        return stat, stat
    w_win, w_sync, bias = spec.weights
    score = w_win * np.asarray(window_mean, np.float64) + w_sync * stat + bias
    if spec.phones:
        score = score + spec.phone_weight * video_phone_stats(records)
    return score, stat


def video_phone_stats(records: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each video's ``phone_stat`` (taken from its first window), videos sorted as
    :func:`aggregate_videos` sorts them; raises ValueError when the records carry none."""
    if "phone_stat" not in records:
        raise ValueError("eval.phone_sync=True: the window records carry no 'phone_stat' "
                         "(avdetect.evaluators.add_phone_stats adds it)")
    _, first, _ = _video_groups(records["video_id"])
    return np.asarray(records["phone_stat"], np.float64)[first]


def zsum_weights(window_mean: Any, stat: Any, *more: Any) -> tuple[float, ...]:
    """'combined' weights from real clips' window means and synchrony statistics (and
    any ``more`` terms: the phone statistic): each term standardised by those clips' mean
    and standard deviation, the terms summed with equal weight - (one weight per term,
    then the bias), no logistic fit, because the window score of clips the classifier
    trained on is overfitted and a fit on them would lean on it (METHODS.md 8). Raises
    ValueError for fewer than 2 clips or a constant term."""
    names = ["window mean", "synchrony statistic"] + ["phone statistic"] * len(more)
    weights, bias = [], 0.0
    for name, x in zip(names, (window_mean, stat, *more)):
        x = np.asarray(x, np.float64)
        if x.size < 2:
            raise ValueError(f"{x.size} real clip(s); the clip-score weights need at least 2")
        sd = float(x.std())
        if not sd > 0:
            raise ValueError(f"the {name} is the same for every real clip; cannot "
                             "standardise it")
        weights.append(1.0 / sd)
        bias -= float(x.mean()) / sd
    return (*weights, bias)


def fit_clip_weights(records: Mapping[str, np.ndarray], spec: ClipScore, source: str
                     ) -> ClipScore:
    """``spec`` with 'combined' weights fitted (:func:`zsum_weights`) on the window
    records of *real* clips (their as-is view); ``source`` says which clips, for the
    report and for errors. The result has ``fit`` False."""
    as_is = view_records(records)
    videos = aggregate_videos(as_is)
    if np.any(videos["label"] != 0):
        raise ValueError(f"{source}: clip-score weights are fitted on real clips only")
    try:
        stat, _ = clip_scores(as_is, videos["score"],
                              dataclasses.replace(spec, kind="sync", fit=False, phones=False))
        phone = (video_phone_stats(as_is),) if spec.phones else ()
        *weights, bias = zsum_weights(videos["score"], stat, *phone)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    extra = {"phone_weight": weights[2]} if spec.phones else {}
    return dataclasses.replace(
        spec, weights=(weights[0], weights[1], bias), fit=False,
        weights_source=f"fitted on {len(videos['score'])} real clips of {source}", **extra)


# ----------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------

def breakdown(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float
              ) -> dict[str, dict[str, Any]]:
    """Metrics per group value: all real examples plus that group's fakes (a group of
    reals only: its own examples)."""
    out = {}
    real = labels == 0
    for g in sorted(set(groups.tolist())):
        members = groups == g
        if np.all(labels[members] == 0):
            keep = members
        else:
            keep = real | (members & (labels == 1))
        out[str(g)] = binary_metrics(labels[keep], scores[keep], threshold)
    return out


def view_records(records: Mapping[str, np.ndarray], trimmed: bool = False
                 ) -> dict[str, np.ndarray] | None:
    """The window records of the as-is view (``trimmed=False``) or of the silence-trimmed
    view; records without a ``view`` field are all as-is and have no trimmed view (None)."""
    if "view" not in records:
        return None if trimmed else dict(records)
    bit = contract.VIEW_TRIMMED if trimmed else contract.VIEW_AS_IS
    keep = (np.asarray(records["view"]).astype(np.int64) & bit) != 0
    return {k: np.asarray(v)[keep] for k, v in records.items()}


def _levels(records: Mapping[str, np.ndarray], threshold: float,
            category_names: Sequence[str] | None, method_names: Sequence[str] | None,
            clip_score: ClipScore | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(window section, video section) of a report from one view's records."""
    videos = aggregate_videos(records, clip_score)
    window = {"overall": binary_metrics(records["label"], records["score"], threshold)}
    video: dict[str, Any] = {"overall": binary_metrics(videos["label"], videos["score"], threshold)}
    if "category" in videos:
        cats = _names(videos["category"], category_names)
        video["per_category"] = breakdown(videos["label"], videos["score"], cats, threshold)
    if "method" in videos:
        meths = _names(videos["method"], method_names)
        video["per_method"] = breakdown(videos["label"], videos["score"], meths, threshold)
    return window, video


def silence_summary(records: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """How much leading/trailing digital silence the videos of a split have, by class:
    ``{'real'|'fake': {'videos', 'with_silence', 'mean_lead_frames', 'mean_trail_frames'},
    'all_silent': [video ids]}`` (from the windows' ``trim_lead``/``trim_trail``)."""
    vid = np.asarray(records["video_id"])
    keys = vid if vid.dtype.kind != "O" else vid.astype(str)
    _, first = np.unique(keys, return_index=True)
    label = np.asarray(records["label"]).astype(np.int64)[first]
    lead = np.asarray(records["trim_lead"]).astype(np.int64)[first]
    trail = np.asarray(records["trim_trail"]).astype(np.int64)[first]
    silent = np.asarray(records["all_silent"]).astype(bool)[first]
    out: dict[str, Any] = {}
    for name, cls in (("real", 0), ("fake", 1)):
        m = (label == cls) & ~silent
        out[name] = {"videos": int((label == cls).sum()),
                     "with_silence": int(((lead + trail > 0) & m).sum()),
                     "mean_lead_frames": float(lead[m].mean()) if m.any() else None,
                     "mean_trail_frames": float(trail[m].mean()) if m.any() else None}
    ids = vid[first][silent]
    out["all_silent"] = [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item")
                         else v for v in ids]
    return out


def evaluate_records(records: Mapping[str, np.ndarray], *, threshold: float, threshold_source: str,
                     split: str = "test", category_names: Sequence[str] | None = contract.CATEGORIES,
                     method_names: Sequence[str] | None = None,
                     clip_score: ClipScore | None = None) -> dict[str, Any]:
    """The full report of one split from its valid window records (with a ``trimmed``
    view and a ``silence`` summary when the records carry ``view``; module docstring).
    ``clip_score``: how videos are scored (:class:`ClipScore`; None = window mean)."""
    if len(records["score"]) == 0:
        raise ValueError(f"split {split!r}: no valid examples to evaluate")
    as_is = view_records(records)
    if len(as_is["score"]) == 0:
        raise ValueError(f"split {split!r}: no as-is windows to evaluate")
    window, video = _levels(as_is, threshold, category_names, method_names, clip_score)
    report: dict[str, Any] = {
        "split": split,
        "threshold": {"value": float(threshold), "source": threshold_source},
        "window": window,
        "video": video,
        "videos": _video_rows(as_is, clip_score, method_names),
    }
    if clip_score is not None:
        report["clip_score"] = clip_score.describe()
    trimmed = view_records(records, trimmed=True)
    if trimmed is not None:
        t_window, t_video = _levels(trimmed, threshold, category_names, method_names, clip_score)
        report["trimmed"] = {"window": t_window, "video": t_video}
        report["silence"] = silence_summary(as_is)
    return report


def _video_rows(records: Mapping[str, np.ndarray], clip_score: ClipScore | None = None,
                method_names: Sequence[str] | None = None) -> dict[str, list]:
    """The report's ``videos`` section: per-video id, score and label (JSON lists), the
    video's method when the records carry one (so any per-method figure can be recomputed
    from the report, e.g. by the window mean), and with a pooled clip score also each
    video's ``window_score`` and ``sync_stat``."""
    videos = aggregate_videos(records, clip_score)
    ids = [v.item() if hasattr(v, "item") else v for v in videos["video_id"]]
    ids = [v.decode() if isinstance(v, bytes) else v for v in ids]   # int record or name
    rows = {"video_id": ids, "score": [float(x) for x in videos["score"]],
            "label": [int(x) for x in videos["label"]]}
    if "method" in videos:
        rows["method"] = [str(m) for m in _names(np.asarray(videos["method"]), method_names)]
    for k in ("window_score", "sync_stat", "phone_stat"):
        if k in videos:
            rows[k] = [float(x) for x in videos[k]]
    return rows


def video_threshold(records: Mapping[str, np.ndarray], rule: str = "eer",
                    clip_score: ClipScore | None = None) -> float:
    """The decision threshold chosen on one split's video-level (as-is) scores."""
    videos = aggregate_videos(view_records(records), clip_score)
    return choose_threshold(videos["label"], videos["score"], rule)


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


TRIMMED_COLUMNS = ("auc", "ap", "eer")     # metrics shown again for the trimmed view
_TITLES = {"n_real": "#real", "n_fake": "#fake", "auc": "AUC", "ap": "AP", "acc": "ACC",
           "bacc": "bACC", "eer": "EER"}


def report_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown table of a report (video level, then per category / manipulation, then the
    window-level overall row); with a trimmed view, AUC, AP and EER each get a
    '(trimmed)' column beside them."""
    trimmed = report.get("trimmed")
    cols: list[tuple[str, bool]] = []
    for c in ("n_real", "n_fake", "auc", "ap", "acc", "bacc", "eer"):
        cols.append((c, False))
        if trimmed is not None and c in TRIMMED_COLUMNS:
            cols.append((c, True))
    head = "| subset | " + " | ".join(_TITLES[c] + (" (trimmed)" if t else "")
                                      for c, t in cols) + " |"
    lines = [f"## Evaluation: split `{report['split']}`", "",
             f"Threshold {report['threshold']['value']:.6g} ({report['threshold']['source']}); "
             "a clip is called fake when score >= threshold. Per-group rows: all real videos "
             "plus the group's fakes."]
    clip = report.get("clip_score") or {}
    if clip.get("kind") == "combined":
        w = clip["weights"]
        lines[-1] += (f" Video score: {w[0]:.4g} x mean window score + {w[1]:.4g} x clip "
                      f"{clip['stat']} + {w[2]:.4g} (weights {clip['weights_source']}).")
    elif clip.get("kind") == "sync":
        lines[-1] += f" Video score: the clip's {clip['stat']}."
    if trimmed is not None:
        lines[-1] += (" '(trimmed)': each video scored on its span without leading/trailing "
                      "digital silence (window row: counts are the as-is windows).")
        sil = report.get("silence") or {}
        def frames(x):
            return "–" if x is None else f"{x:.1f}"
        parts = [f"{k} {sil[k]['with_silence']}/{sil[k]['videos']} (mean lead "
                 f"{frames(sil[k]['mean_lead_frames'])}, trail "
                 f"{frames(sil[k]['mean_trail_frames'])} frames)"
                 for k in ("real", "fake") if k in sil]
        if parts:
            lines += ["", "Videos with digital silence trimmed: " + ", ".join(parts)
                      + f"; silent throughout (kept whole): {len(sil.get('all_silent', []))}."]
    lines += ["", head, "|" + "---|" * (len(cols) + 1)]

    def row(name, level, path):
        m = report[level]
        t = trimmed[level] if trimmed is not None else {}
        for key in path:
            m, t = m.get(key, {}), t.get(key, {})
        cells = [_fmt((t if is_t else m).get(c)) for c, is_t in cols]
        lines.append("| " + name + " | " + " | ".join(cells) + " |")

    row("video: overall", "video", ("overall",))
    # 'per_method' is the stored key; its rows are manipulations (README's glossary).
    for section, title in (("per_category", "category"), ("per_method", "manipulation")):
        for name in report["video"].get(section, {}):
            row(f"{title}: {name}", "video", (section, name))
    row("window: overall", "window", ("overall",))
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike, name: str | None = None
                 ) -> tuple[str, str]:
    """Writes ``eval_<split>.json`` and ``eval_<split>.md``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(os.fspath(out_dir), name or f"eval_{report['split']}")
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(report_markdown(report))
    return base + ".json", base + ".md"


def flat_scalars(report: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix/video_auc: ..., prefix/window_auc: ...}`` for the metric writers (and
    ``prefix/video_auc_trimmed`` ... for a trimmed view)."""
    out = {}
    views = [("", report)] + ([("_trimmed", report["trimmed"])] if report.get("trimmed") else [])
    for suffix, rep in views:
        for level in ("video", "window"):
            for k, v in rep[level]["overall"].items():
                if k in ("auc", "ap", "acc", "bacc", "eer") and v is not None:
                    out[f"{prefix}/{level}_{k}{suffix}"] = float(v)
    out[f"{prefix}/threshold"] = float(report["threshold"]["value"])
    return out

