"""The evaluation loop: score every window of a split with the eval step, gather the
records from every process, and turn them into reports.

The validation split (``config.data.val_split``) chooses the decision threshold
(``config.eval.threshold``: 'eer' or 'max_bacc' on video scores); the eval split
(``config.data.eval_split``) is scored at that threshold. Video scores are made from the
windows by ``config.eval.clip_score`` (:class:`avdetect.evaluation.ClipScore`: the mean
window score, or the clip-pooled synchrony score), the rule ``avdetect detect`` applies;
with ``config.eval.fit_clip_weights`` the combined score's weights are first fitted on the
real clips the run trained on (:func:`fit_clip_score`) and written into the reports. The
metrics and the report format are :mod:`avdetect.evaluation`'s.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from avdetect import contract, evaluation, phone_sync, sharding
from avdetect.data import metadata
from avdetect.errors import ConfigError
from avdetect.input_pipeline import label_vocabularies, make_eval_iterator
from avdetect.steps import State, Steps


def predict_split(steps: Steps, state: State, config: ml_collections.ConfigDict, split: str,
                  max_batches: int | None = None, desc: str | None = None,
                  trained_reals: bool = False) -> dict[str, np.ndarray]:
    """Window records (valid windows only) of ``split`` gathered from every process
    (``trained_reals``: of the real clips training reads only).

    All processes run the same number of eval steps (a collective program): a process
    whose own batches run out feeds a padding batch (``valid = 0``) until all are done.
    """
    it = make_eval_iterator(config, steps.mesh, split, trained_reals=trained_reals)
    collector = evaluation.Collector()
    multi = jax.process_count() > 1
    template, n = None, 0
    bar = progress(desc or f"eval {split}", None)
    while max_batches is None or n < max_batches:
        local = next(it, None)
        if multi:
            alive = multihost_utils.process_allgather(np.asarray(local is not None, np.int32))
            if not np.any(alive):
                break
            if local is None:
                if template is None:
                    raise ConfigError(f"split {split!r}: process {jax.process_index()} has no eval data at all")
                local = {**template, "valid": np.zeros_like(template["valid"])}
        elif local is None:
            break
        if "label" not in local:
            raise ConfigError(f"split {split!r}: eval batches carry no 'label'")
        local = dict(local)
        local.setdefault("valid", np.ones(len(local["label"]), np.int32))
        template = template or local
        host_fields = {k: local[k] for k in ("video_id", "category", "method")
                       if k in local and not sharding.is_device_field(local[k])}
        if host_fields and multi:
            raise ConfigError(f"split {split!r}: eval fields {sorted(host_fields)} are strings; "
                              "multi-process evaluation needs integer ids")
        out = jax.device_get(steps.eval_step(state, sharding.host_to_global(local, steps.mesh)))
        if "video_id" not in out and "video_id" not in host_fields:
            raise ConfigError(f"split {split!r}: eval batches carry no 'video_id'")
        collector.add({**{k: np.asarray(v) for k, v in out.items()}, **host_fields})
        n += 1
        bar.update(1)
    bar.close()
    return collector.records()


def evaluate_state(steps: Steps, state: State, config: ml_collections.ConfigDict, *,
                   max_batches: int | None = None) -> dict[str, dict]:
    """Reports for the validation split (where the threshold is chosen) and the eval
    split (scored at that threshold): ``{split_name: report}``."""
    eval_cfg = config.get("eval", ml_collections.ConfigDict())
    rule = eval_cfg.get("threshold", "eer")
    fixed = float(eval_cfg.get("fixed_threshold", 0.5))
    cats, methods = label_vocabularies(config)
    clip = clip_rule(config)                   # how windows become a video score
    if clip.fit:
        clip = fit_clip_score(steps, state, config, clip, max_batches)
    test_split, val_split = config.data.eval_split, config.data.get("val_split", None)
    reports = {}
    threshold, source = fixed, "fixed (config.eval.fixed_threshold; no validation split)"
    if val_split and val_split != test_split:
        val = add_phone_stats(predict_split(steps, state, config, val_split, max_batches),
                              config, val_split, clip)
        try:
            threshold = evaluation.video_threshold(val, rule, clip)
            source = f"chosen on split '{val_split}' video scores by rule '{rule}'"
            if val_split in metadata.union_parts(str(config.data.get("train_split", ""))):
                # A refit on train+validation (METHODS.md 8): the validation report is
                # then of fitted clips, and the threshold sits on their scores (AUCs do
                # not depend on it; test accuracies at it may be off).
                source += " (a split this run trained on)"
        except ValueError as e:   # one class only in the validation split
            logging.warning("threshold: %s; using the fixed threshold %s", e, fixed)
            source = f"fixed (validation split '{val_split}' unusable: {e})"
        reports[val_split] = evaluation.evaluate_records(val, threshold=threshold, threshold_source=source,
                                                         split=val_split, category_names=cats,
                                                         method_names=methods, clip_score=clip)
    test = add_phone_stats(predict_split(steps, state, config, test_split, max_batches),
                           config, test_split, clip)
    reports[test_split] = evaluation.evaluate_records(test, threshold=threshold, threshold_source=source,
                                                      split=test_split, category_names=cats,
                                                      method_names=methods, clip_score=clip)
    return reports


def clip_rule(config: ml_collections.ConfigDict) -> evaluation.ClipScore:
    """``config.eval``'s video-score rule; a bad setting raises ConfigError."""
    try:
        return evaluation.ClipScore.from_config(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def fit_clip_score(steps: Steps, state: State, config: ml_collections.ConfigDict,
                   clip: evaluation.ClipScore, max_batches: int | None = None
                   ) -> evaluation.ClipScore:
    """``clip`` with its 'combined' weights fitted on the real clips this run trains on
    (``config.data.train_split`` through the training filters: an identity
    cross-validation's held-out people, an excluded source, are not among them; a
    ``data.mix`` dataset's clips are not either)."""
    split = str(config.data.train_split)
    records = predict_split(steps, state, config, split, max_batches,
                            desc=f"fit clip score on {split} reals", trained_reals=True)
    if clip.phones:
        # The viseme opening table first: the phone statistic of these clips needs it.
        inputs = phone_inputs(config, split, records)
        table = phone_sync.fit_opening_table((v, phone_sync.lip_opening(lips))
                                             for v, lips, _ in inputs.values())
        clip = dataclasses.replace(clip, phone_table=tuple(float(x) for x in table))
        records = add_phone_stats(records, config, split, clip, inputs)
    try:
        return evaluation.fit_clip_weights(records, clip, f"split '{split}' (the clips this "
                                           "run trained on)")
    except ValueError as e:
        raise ConfigError(f"eval.fit_clip_weights: {e}") from e


# ----------------------------------------------------------------------------------
# The phone-to-lip statistic of every scored video (config.eval.phone_sync)
# ----------------------------------------------------------------------------------

def phone_cache_dir(config: ml_collections.ConfigDict) -> str | None:
    """Where heard visemes are kept between evaluations (``config.eval.phone_cache_dir``,
    default ``<data_dir>/avdetect_cache/phone_visemes``; None: not kept)."""
    explicit = config.get("eval", {}).get("phone_cache_dir", None)
    if explicit:
        return str(explicit)
    data_dir = config.data.get("data_dir", None)
    return os.path.join(str(data_dir), "avdetect_cache", "phone_visemes") if data_dir else None


def phone_inputs(config: ml_collections.ConfigDict, split: str,
                 records: Mapping[str, np.ndarray]) -> dict[int, tuple]:
    """{record index: (heard visemes [T, 4], lips [T, 20, 2], T)} of every video in the
    window ``records`` of ``split`` (their ``video_id`` is the record index), read from
    the dataset's shards; the visemes come from :class:`phone_sync.VisemeCache`."""
    if config.data.name == "random":
        raise ConfigError("eval.phone_sync=True needs a built dataset with 'audio' and 'lips' "
                          "streams; the 'random' dataset has neither")
    from avdetect.data import pipeline

    source, _, _ = pipeline.open_split(config.data, split)
    cache = phone_sync.VisemeCache(phone_cache_dir(config))
    ids = np.unique(np.asarray(records["video_id"]).astype(np.int64))
    audio, lips = [], {}
    for r in ids:
        ex = source[int(r)]
        missing = [k for k in ("audio", "lips") if k not in ex]
        if missing:
            name = ex.get("video_id", r)
            name = name.decode() if isinstance(name, bytes) else name
            raise ConfigError(f"eval.phone_sync=True: record {name} of split {split!r} has no "
                              f"{missing} stream (build the dataset with them: shard format "
                              ">= 4)")
        t = int(ex["num_frames"])
        audio.append((np.asarray(ex["audio"]), t))
        lips[int(r)] = np.asarray(ex["lips"])[:t]
    # (pocketsphinx is single-threaded: one process per core for the uncached clips)
    visemes = cache.visemes_many(audio, workers=os.cpu_count() or 1)
    return {int(r): (v, lips[int(r)], t) for r, v, (_, t) in zip(ids, visemes, audio)}


def phone_eval_records(config: ml_collections.ConfigDict) -> list[tuple[str, np.ndarray]]:
    """(split, record indices) of every clip a final evaluation hears phones in: the
    real clips training reads (the weights' fit), then the validation and eval splits."""
    from avdetect.data import pipeline

    train_split = str(config.data.train_split)
    out = [(train_split, pipeline.trained_real_records(
        config.data, pipeline.load_split_index(config.data, train_split)))]
    for split in (config.data.get("val_split", None), config.data.eval_split):
        if split:
            out.append((split, np.arange(len(pipeline.load_split_index(config.data, split)))))
    return out


class PhonePrefetch:
    """A background process, at low priority, that fills the heard-viseme cache for the
    final evaluation while training runs (config.eval.phone_sync with a disk cache):
    recognition costs ~0.45 s of one core per clip, and a training step leaves part of
    the second core idle. :meth:`stop` ends it; the evaluator computes what it left."""

    def __init__(self, config: ml_collections.ConfigDict):
        import multiprocessing

        self._proc = None
        clip = clip_rule(config)
        cache = phone_cache_dir(config)
        if not clip.phones or cache is None or config.data.name == "random":
            return
        work = [(split, ids.tolist()) for split, ids in phone_eval_records(config)]
        ctx = multiprocessing.get_context("spawn")     # a fresh interpreter: no JAX state
        self._proc = ctx.Process(target=phone_sync.warm_cache, daemon=True,
                                 args=(str(config.data.name), config.data.get("data_dir", None),
                                       work, cache))
        self._proc.start()

    @property
    def started(self) -> bool:
        return self._proc is not None

    def join(self, timeout: float | None = None) -> int | None:
        """Waits for the prefetch to finish (``timeout`` seconds at most); its exit code
        (None while it still runs, or when none was started)."""
        if self._proc is None:
            return None
        self._proc.join(timeout)
        return self._proc.exitcode

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
        if self._proc is not None:
            self._proc.join()
        self._proc = None


def add_phone_stats(records: dict[str, np.ndarray], config: ml_collections.ConfigDict,
                    split: str, clip: evaluation.ClipScore, inputs: dict | None = None
                    ) -> dict[str, np.ndarray]:
    """``records`` with each window's ``phone_stat`` (``clip.phones``; else unchanged): its
    video's :func:`phone_sync.phone_sync_stat`, over the whole clip for as-is windows and
    over the span without digital silence (``trim_lead`` / ``trim_trail``) for windows of
    the trimmed view only."""
    if not clip.phones:
        return records
    inputs = phone_inputs(config, split, records) if inputs is None else inputs
    vid = np.asarray(records["video_id"]).astype(np.int64)
    view = records.get("view")
    as_is = None if view is None else (np.asarray(view) & contract.VIEW_AS_IS) != 0
    stat = np.zeros(len(vid), np.float64)

    def of(visemes, lips):
        return phone_sync.phone_sync_stat(visemes, phone_sync.lip_opening(lips), clip.phone_table)

    for r, (visemes, lips, t) in inputs.items():
        mine = vid == r
        stat[mine] = of(visemes, lips)
        if as_is is None:
            continue
        only_trimmed = mine & ~as_is
        if only_trimmed.any():
            i = int(np.argmax(only_trimmed))
            lead, trail = int(records["trim_lead"][i]), int(records["trim_trail"][i])
            stat[only_trimmed] = of(visemes[lead:t - trail], lips[lead:t - trail])
    return {**records, "phone_stat": stat}


class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...


def progress(desc: str, total: int | None, initial: int = 0):
    """A tqdm bar on interactive runs (process 0, stdout a terminal), else a no-op."""
    if jax.process_index() == 0 and sys.stdout.isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
    return _NullBar()
