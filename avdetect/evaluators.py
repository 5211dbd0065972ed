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

import sys

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from avdetect import evaluation, sharding
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
    clip = evaluation.ClipScore.from_config(config)   # how windows become a video score
    if clip.fit:
        clip = fit_clip_score(steps, state, config, clip, max_batches)
    test_split, val_split = config.data.eval_split, config.data.get("val_split", None)
    reports = {}
    threshold, source = fixed, "fixed (config.eval.fixed_threshold; no validation split)"
    if val_split and val_split != test_split:
        val = predict_split(steps, state, config, val_split, max_batches)
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
    test = predict_split(steps, state, config, test_split, max_batches)
    reports[test_split] = evaluation.evaluate_records(test, threshold=threshold, threshold_source=source,
                                                      split=test_split, category_names=cats,
                                                      method_names=methods, clip_score=clip)
    return reports


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
    try:
        return evaluation.fit_clip_weights(records, clip, f"split '{split}' (the clips this "
                                           "run trained on)")
    except ValueError as e:
        raise ConfigError(f"eval.fit_clip_weights: {e}") from e


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
